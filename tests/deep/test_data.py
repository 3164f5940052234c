"""deep.data: released-format readers, splits, and the on-device BatchLoader."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from deep.data import (
    CIFAR10C_CORRUPTIONS,
    DATASET_NAMES,
    Augment,
    BatchLoader,
    ClassTooSmallError,
    DatasetError,
    ImageSplit,
    MissingFilesError,
    crop_and_flip,
    default_data_dir,
    load_cifar10c,
    load_dataset,
    stratified_split,
    stratified_subset,
)
from tests.deep import fake_datasets as fake

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ------------------------------------------------------------------------------------------------
# Readers of the released formats
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("subfolder", [True, False])
def test_cifar10_reads_release_pickles_from_folder_or_parent(tmp_path, subfolder):
    (x_tr, y_tr), (x_te, y_te) = fake.write_cifar10(tmp_path, subfolder=subfolder)
    ds = load_dataset("cifar10", tmp_path)
    assert ds.classes == fake.CIFAR10_CLASSES
    assert torch.equal(ds.train.x, torch.from_numpy(x_tr))
    assert torch.equal(ds.train.y, torch.from_numpy(y_tr))
    assert torch.equal(ds.test.x, torch.from_numpy(x_te))
    assert torch.equal(ds.test.y, torch.from_numpy(y_te))
    assert len(ds.val) == 0
    assert (ds.num_classes, ds.in_channels, ds.image_size) == (10, 3, 32)
    assert ds.train.x.dtype == torch.uint8 and ds.train.y.dtype == torch.int64
    # contract defaults for CIFAR
    assert ds.augment == Augment(crop_pad=4, flip=True)
    assert ds.eps == pytest.approx(8 / 255) and ds.step_size == pytest.approx(2 / 255)
    assert ds.mean == pytest.approx((0.4914, 0.4822, 0.4465))


def test_cifar10_pixel_layout_is_rgb_planes_row_major(tmp_path):
    """Hand check: data column c*1024 + r*32 + col holds channel c, row r, column col."""
    fake.write_cifar10(tmp_path, subfolder=False)
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[0, 1 * 1024 + 3 * 32 + 5] = 200  # green, row 3, column 5
    data[1, 2 * 1024 + 31 * 32 + 0] = 77  # blue, row 31, column 0
    fake.write_py2_pickle(tmp_path / "data_batch_1", {"data": data, "labels": [4, 9]})
    ds = load_dataset("cifar10", tmp_path)
    x0, x1 = ds.train.x[0], ds.train.x[1]
    assert x0[1, 3, 5] == 200 and int(x0.sum()) == 200
    assert x1[2, 31, 0] == 77 and int(x1.sum()) == 77
    assert ds.train.y[:2].tolist() == [4, 9]


def test_cifar_reader_accepts_python3_pickles_with_bytes_keys(tmp_path):
    fake.write_cifar10(tmp_path, subfolder=False)
    data = np.full((1, 3072), 9, dtype=np.uint8)
    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": data, b"labels": [3]}, f, protocol=4)
    ds = load_dataset("cifar10", tmp_path)
    assert len(ds.train) == 4 * 20 + 1
    assert 3 in ds.train.y.tolist()


def test_cifar100_reads_train_test_meta(tmp_path):
    (x_tr, y_tr), (x_te, y_te) = fake.write_cifar100(tmp_path)
    ds = load_dataset("cifar100", tmp_path, val_per_class=1)
    assert ds.classes == [f"fine_{c}" for c in range(100)]
    assert len(ds.train) + len(ds.val) == len(y_tr) and len(ds.val) == 100
    assert torch.equal(ds.test.x, torch.from_numpy(x_te))
    assert torch.equal(ds.test.y, torch.from_numpy(y_te))
    assert ds.num_classes == 100 and ds.augment == Augment(4, True)


def test_svhn_reads_mat_files_and_maps_label_10_to_0(tmp_path):
    import scipy.io

    (x_tr, y_tr), (x_te, y_te) = fake.write_svhn(tmp_path)
    ds = load_dataset("svhn", tmp_path)
    assert torch.equal(ds.train.x, torch.from_numpy(x_tr))
    assert torch.equal(ds.train.y, torch.from_numpy(y_tr))
    assert torch.equal(ds.test.y, torch.from_numpy(y_te))
    assert ds.classes == [str(d) for d in range(10)]
    assert ds.augment == Augment(crop_pad=4, flip=False)
    # hand check of the MATLAB layout X[row, col, channel, n] and of label 10 meaning digit 0
    X = np.zeros((32, 32, 3, 2), dtype=np.uint8)
    X[3, 5, 1, 0] = 123
    scipy.io.savemat(tmp_path / "test_32x32.mat", {"X": X, "y": np.array([[10], [7]], np.uint8)})
    test = load_dataset("svhn", tmp_path).test
    assert test.x[0, 1, 3, 5] == 123 and int(test.x.sum()) == 123
    assert test.y.tolist() == [0, 7]


def test_cifar10c_severity_blocks(tmp_path):
    written = fake.write_cifar10c(tmp_path, ("fog", "gaussian_noise"), per_severity=6)
    x_all, y_all = written["fog"]
    for s in (1, 3, 5):
        split = load_cifar10c(tmp_path, "fog", s)
        rows = slice((s - 1) * 6, s * 6)
        assert torch.equal(split.x, torch.from_numpy(np.ascontiguousarray(x_all[rows])))
        assert torch.equal(split.y, torch.from_numpy(y_all[rows]))
    inner = load_cifar10c(tmp_path / "CIFAR-10-C", "gaussian_noise", 2)
    assert inner.x.shape == (6, 3, 32, 32)
    assert len(CIFAR10C_CORRUPTIONS) == 15 and "fog" in CIFAR10C_CORRUPTIONS


@pytest.mark.parametrize("severity", [0, 6, 2.5, True])
def test_cifar10c_rejects_bad_severity(tmp_path, severity):
    fake.write_cifar10c(tmp_path)
    with pytest.raises(ValueError, match="severity"):
        load_cifar10c(tmp_path, "gaussian_noise", severity)


def test_cifar10c_rejects_unknown_corruption_and_bad_shapes(tmp_path):
    fake.write_cifar10c(tmp_path, subfolder=False)
    with pytest.raises(ValueError, match="corruption"):
        load_cifar10c(tmp_path, "rain", 1)
    np.save(tmp_path / "gaussian_noise.npy", np.zeros((7, 32, 32, 3), np.uint8))
    with pytest.raises(DatasetError, match="gaussian_noise.npy"):
        load_cifar10c(tmp_path, "gaussian_noise", 1)
    (tmp_path / "gaussian_noise.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(DatasetError, match="gaussian_noise.npy"):
        load_cifar10c(tmp_path, "gaussian_noise", 1)


def test_fashion_mnist_reads_gzipped_idx(tmp_path):
    (x_tr, y_tr), (x_te, y_te) = fake.write_fashion_mnist(tmp_path)
    ds = load_dataset("fashion-mnist", tmp_path)
    assert torch.equal(ds.train.x, torch.from_numpy(x_tr))
    assert torch.equal(ds.train.y, torch.from_numpy(y_tr))
    assert torch.equal(ds.test.x, torch.from_numpy(x_te))
    assert ds.classes[6] == "Shirt" and ds.num_classes == 10
    assert (ds.in_channels, ds.image_size) == (1, 28)
    assert ds.augment == Augment(0, False) and ds.eps == 0.1 and ds.step_size == 0.025
    # mean / std against float64 numpy on the training images
    pixels = x_tr.astype(np.float64) / 255.0
    assert ds.mean[0] == pytest.approx(pixels.mean(), rel=1e-12)
    assert ds.std[0] == pytest.approx(pixels.std(), rel=1e-10)


def _write_idx(path: Path, payload: bytes) -> None:
    path.write_bytes(gzip.compress(payload))


@pytest.mark.parametrize(
    "file, payload, message",
    [
        (
            "train-images-idx3-ubyte.gz",
            struct.pack(">4I", 2049, 60, 28, 28) + bytes(60 * 784),
            "magic",
        ),
        (
            "train-images-idx3-ubyte.gz",
            struct.pack(">4I", 2051, 60, 28, 28) + bytes(60 * 784 - 5),
            "payload",
        ),
        ("train-labels-idx1-ubyte.gz", struct.pack(">2I", 2049, 59) + bytes(59), "59 labels"),
        ("t10k-labels-idx1-ubyte.gz", struct.pack(">I", 2049), "header"),
    ],
)
def test_fashion_mnist_idx_errors_name_the_file(tmp_path, file, payload, message):
    fake.write_fashion_mnist(tmp_path)
    _write_idx(tmp_path / file, payload)
    with pytest.raises(DatasetError, match=message) as err:
        load_dataset("fashion-mnist", tmp_path)
    assert file in str(err.value)


def test_fashion_mnist_corrupt_gzip_names_the_file(tmp_path):
    fake.write_fashion_mnist(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(DatasetError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("fashion-mnist", tmp_path)


@pytest.mark.skipif(
    not (FASHION_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason="real Fashion-MNIST not installed in /usr/share/datasets/fashion-mnist "
    "(Debian package dataset-fashion-mnist)",
)
def test_real_fashion_mnist():
    assert default_data_dir("fashion-mnist") == FASHION_DIR
    ds = load_dataset("fashion-mnist")
    assert ds.train.x.shape == (60000, 1, 28, 28) and ds.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(ds.train.y).tolist() == [6000] * 10
    assert torch.bincount(ds.test.y).tolist() == [1000] * 10
    # the published normalisation constants of Fashion-MNIST
    assert ds.mean[0] == pytest.approx(0.2860, abs=1e-4)
    assert ds.std[0] == pytest.approx(0.3530, abs=1e-4)
    # first test image and label read independently with gzip + struct
    with gzip.open(FASHION_DIR / "t10k-images-idx3-ubyte.gz") as f:
        header = struct.unpack(">4I", f.read(16))
        first = np.frombuffer(f.read(784), dtype=np.uint8).reshape(28, 28)
    with gzip.open(FASHION_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        f.read(8)
        label = f.read(1)[0]
    assert header == (2051, 10000, 28, 28)
    assert np.array_equal(ds.test.x[0, 0].numpy(), first) and int(ds.test.y[0]) == label


def test_digits_fixed_stratified_split():
    from sklearn.datasets import load_digits

    ds = load_dataset("digits")
    assert (len(ds.train), len(ds.val), len(ds.test)) == (1097, 200, 500)
    assert torch.bincount(ds.test.y).tolist() == [50] * 10
    assert torch.bincount(ds.val.y).tolist() == [20] * 10
    assert ds.train.x.shape[1:] == (1, 8, 8) and ds.augment == Augment(0, False)
    assert ds.eps == 0.1 and ds.step_size == 0.025
    # the three parts together are exactly scikit-learn's images, scaled 0..16 -> 0..255
    bunch = load_digits()
    expected = np.rint(bunch.images * 255 / 16).astype(np.uint8).reshape(len(bunch.target), -1)
    expected = np.concatenate([expected, bunch.target[:, None].astype(np.uint8)], axis=1)
    parts = [ds.train, ds.val, ds.test]
    got = np.concatenate(
        [np.concatenate([p.x.reshape(len(p), -1).numpy(), p.y[:, None].numpy()], 1) for p in parts]
    )
    assert np.array_equal(np.unique(got, axis=0), np.unique(expected, axis=0))
    assert got.shape == expected.shape
    assert int(ds.train.x.max()) == 255 and int(ds.train.x.min()) == 0
    # fixed: the test set does not depend on the seed; the validation set does
    other = load_dataset("digits", seed=5, val_per_class=30)
    assert torch.equal(other.test.x, ds.test.x)
    assert torch.bincount(other.val.y).tolist() == [30] * 10
    assert not torch.equal(load_dataset("digits", seed=5).val.x, ds.val.x)


def test_load_dataset_validates_arguments(tmp_path):
    assert DATASET_NAMES == ("digits", "fashion-mnist", "cifar10", "cifar100", "svhn")
    with pytest.raises(ValueError, match="dataset name"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="val_per_class"):
        load_dataset("digits", val_per_class=-1)
    with pytest.raises(ValueError, match="val_per_class = 200, but class"):
        load_dataset("digits", val_per_class=200)
    assert default_data_dir("cifar10") == Path("data") / "cifar10"


# ------------------------------------------------------------------------------------------------
# Missing and corrupt files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, expected",
    [
        ("cifar10", ["data_batch_1", "test_batch", "batches.meta", "cifar-10-python.tar.gz"]),
        ("cifar100", ["train", "meta", "cifar-100-python.tar.gz"]),
        ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
        ("fashion-mnist", ["train-images-idx3-ubyte.gz"]),
    ],
)
def test_missing_files_error_lists_files_source_and_download(tmp_path, name, expected):
    with pytest.raises(MissingFilesError) as err:
        load_dataset(name, tmp_path)
    message = str(err.value)
    assert str(tmp_path) in message and "--download" in message
    for item in expected:
        assert item in message


def test_missing_single_file_is_named(tmp_path):
    fake.write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(MissingFilesError, match="data_batch_4") as err:
        load_dataset("cifar10", tmp_path)
    assert "data_batch_1" not in str(err.value)
    fake.write_cifar10c(tmp_path / "c")
    with pytest.raises(MissingFilesError, match="fog.npy"):
        load_cifar10c(tmp_path / "c", "fog", 1)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "unsafe", "not-a-dict", "bad-shape"])
def test_corrupt_cifar_pickle_names_the_file(tmp_path, damage):
    fake.write_cifar10(tmp_path, subfolder=False)
    path = tmp_path / "data_batch_3"
    if damage == "truncate":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"\x00\x01 this is not a pickle")
    elif damage == "unsafe":  # a pickle that would call a function is refused, not run
        path.write_bytes(pickle.dumps(__import__("collections").OrderedDict(a=1), protocol=2))
    elif damage == "not-a-dict":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    else:
        fake.write_py2_pickle(path, {"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]})
    with pytest.raises(DatasetError, match="data_batch_3"):
        load_dataset("cifar10", tmp_path)


def test_corrupt_svhn_mat_names_the_file(tmp_path):
    fake.write_svhn(tmp_path)
    path = tmp_path / "train_32x32.mat"
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(DatasetError, match="train_32x32.mat"):
        load_dataset("svhn", tmp_path)


# ------------------------------------------------------------------------------------------------
# Stratified splits
# ------------------------------------------------------------------------------------------------


def _ids_split(counts: list[int]) -> ImageSplit:
    """A split whose image i is filled with i (mod 256), with labels of the given class counts."""
    y = np.repeat(np.arange(len(counts)), counts)
    np.random.default_rng(1).shuffle(y)
    n = len(y)
    x = torch.arange(n).remainder(256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 1, 2, 2)
    return ImageSplit(x.contiguous(), torch.from_numpy(y))


@pytest.mark.parametrize("n_per_class", [0, 1, 7, 11])
def test_stratified_split_exact_counts_disjoint_union(n_per_class):
    split = _ids_split([11, 30, 17, 25])
    rest, held = stratified_split(split, n_per_class, seed=3)
    assert torch.bincount(held.y, minlength=4).tolist() == [n_per_class] * 4
    assert torch.bincount(rest.y, minlength=4).tolist() == [
        11 - n_per_class,
        30 - n_per_class,
        17 - n_per_class,
        25 - n_per_class,
    ]
    ids_rest = rest.x[:, 0, 0, 0].long().tolist()
    ids_held = held.x[:, 0, 0, 0].long().tolist()
    assert set(ids_rest).isdisjoint(ids_held)
    assert sorted(ids_rest + ids_held) == list(range(len(split)))
    assert ids_rest == sorted(ids_rest) and ids_held == sorted(ids_held)  # original order kept
    # labels travel with their images
    assert torch.equal(split.y[torch.tensor(ids_held, dtype=torch.long)], held.y)


def test_stratified_split_is_seeded():
    split = _ids_split([40, 40, 40])
    a = stratified_split(split, 5, seed=0)[1].x
    assert torch.equal(a, stratified_split(split, 5, seed=0)[1].x)
    assert not torch.equal(a, stratified_split(split, 5, seed=1)[1].x)
    sub = stratified_subset(split, 5, seed=0)
    assert torch.equal(sub.x, a)
    with pytest.raises(ValueError, match="n_per_class"):
        stratified_subset(split, 41)
    with pytest.raises(ValueError, match="n_per_class"):
        stratified_subset(split, -1)


def test_too_large_sample_names_the_smallest_class_and_its_size():
    split = _ids_split([11, 30, 7, 25])
    with pytest.raises(ClassTooSmallError) as info:
        stratified_subset(split, 8)
    err = info.value
    assert (err.requested, int(err.class_label), err.available) == (8, 2, 7)
    assert isinstance(err, ValueError) and str(err).startswith("n_per_class = 8, but class 2")
    assert err.describe("--n", "after the split") == (
        "--n 8, but class 2 has only 7 images after the split: choose at most 7"
    )
    stratified_subset(split, 7)  # the largest size it names is accepted


def test_validation_split_comes_from_training_set_only(tmp_path):
    (x_tr, _), (x_te, _) = fake.write_cifar10(tmp_path, per_batch=30)
    ds = load_dataset("cifar10", tmp_path, val_per_class=4, seed=2)
    assert torch.bincount(ds.val.y).tolist() == [4] * 10
    train_rows = {bytes(r) for r in x_tr.reshape(len(x_tr), -1)}
    val_rows = [bytes(r) for r in ds.val.x.reshape(len(ds.val), -1).numpy()]
    fit_rows = [bytes(r) for r in ds.train.x.reshape(len(ds.train), -1).numpy()]
    assert set(val_rows) <= train_rows and set(val_rows).isdisjoint(fit_rows)
    assert len(val_rows) + len(fit_rows) == len(x_tr)
    # --val-per-class 0 (FAAL's setting: no held-out images): every training image is trained on
    whole = load_dataset("cifar10", tmp_path, val_per_class=0, seed=2)
    assert len(whole.val) == 0
    assert sorted(bytes(r) for r in whole.train.x.reshape(len(x_tr), -1).numpy()) == sorted(
        train_rows
    )


# ------------------------------------------------------------------------------------------------
# crop_and_flip and BatchLoader
# ------------------------------------------------------------------------------------------------


def _naive_crop_flip(img: np.ndarray, pad: int, oy: int, ox: int, flip: bool) -> np.ndarray:
    """Per-sample reference: zero-pad, cut the window at (oy, ox), mirror the columns."""
    c, h, w = img.shape
    padded = np.pad(img, ((0, 0), (pad, pad), (pad, pad)))
    out = padded[:, oy : oy + h, ox : ox + w]
    return out[:, :, ::-1] if flip else out


@pytest.mark.parametrize("pad", [0, 1, 4])
def test_crop_and_flip_matches_naive_reference(pad):
    rng = np.random.default_rng(pad)
    x = rng.integers(0, 256, size=(16, 3, 9, 7), dtype=np.uint8)
    oy = rng.integers(0, 2 * pad + 1, size=16)
    ox = rng.integers(0, 2 * pad + 1, size=16)
    flip = rng.random(16) < 0.5
    got = crop_and_flip(
        torch.from_numpy(x), pad, torch.from_numpy(oy), torch.from_numpy(ox), torch.from_numpy(flip)
    )
    want = np.stack([_naive_crop_flip(x[i], pad, oy[i], ox[i], flip[i]) for i in range(16)])
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)


def _id_split(n: int, size: int = 6, seed: int = 0) -> ImageSplit:
    """Random images labelled by their index (a batch tells which image each row came from)."""
    x = np.random.default_rng(seed).integers(0, 256, size=(n, 3, size, size), dtype=np.uint8)
    return ImageSplit(torch.from_numpy(x), torch.arange(n))


def _epoch(loader: BatchLoader, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    loader.set_epoch(epoch)
    xs, ys = zip(*list(loader))
    return torch.cat(xs), torch.cat(ys)


def test_loader_without_augmentation_returns_the_data_scaled():
    split = _id_split(23)
    loader = BatchLoader(split, 5)
    batches = list(loader)
    assert len(loader) == len(batches) == 5 and [len(b[1]) for b in batches] == [5, 5, 5, 5, 3]
    x, y = _epoch(loader, 0)
    assert x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(y, torch.arange(23))
    assert torch.equal(x, split.x.double().div(255).float())
    assert len(BatchLoader(split, 5, drop_last=True)) == 4
    assert [len(b[1]) for b in BatchLoader(split, 5, drop_last=True)] == [5] * 4


def test_loader_shuffle_is_a_permutation_reproducible_per_seed_and_epoch():
    split = _id_split(50)
    a = BatchLoader(split, 8, shuffle=True, seed=3)
    x0, y0 = _epoch(a, 0)
    assert sorted(y0.tolist()) == list(range(50)) and y0.tolist() != list(range(50))
    assert torch.equal(x0, split.x[y0].float() / 255)
    b = BatchLoader(split, 8, shuffle=True, seed=3)
    assert torch.equal(_epoch(b, 0)[1], y0)
    assert not torch.equal(_epoch(a, 1)[1], y0)
    assert not torch.equal(_epoch(BatchLoader(split, 8, shuffle=True, seed=4), 0)[1], y0)
    assert torch.equal(_epoch(a, 0)[1], y0)  # going back to epoch 0 reproduces it
    assert a.state == {"seed": 3, "epoch": 0}


@pytest.mark.parametrize("augment", [Augment(4, True), Augment(2, False), Augment(0, True)])
def test_augmentation_is_a_true_translation_and_flip(augment):
    split = _id_split(40)
    loader = BatchLoader(split, 16, shuffle=True, augment=augment, seed=1)
    x, y = _epoch(loader, 2)
    assert x.shape == (40, 3, 6, 6) and x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    pad = augment.crop_pad
    used_offsets, used_flips = set(), set()
    for img, i in zip(x, y.tolist()):
        got = np.rint(img.numpy() * 255).astype(np.uint8)
        source = split.x[i].numpy()
        matches = [
            (oy, ox, fl)
            for oy in range(2 * pad + 1)
            for ox in range(2 * pad + 1)
            for fl in ((False, True) if augment.flip else (False,))
            if np.array_equal(got, _naive_crop_flip(source, pad, oy, ox, fl))
        ]
        assert matches, f"sample {i} is not a translation/flip of its source image"
        used_offsets.add(matches[0][:2])
        used_flips.add(matches[0][2])
    if pad:
        assert len(used_offsets) > 5  # offsets really vary
    assert used_flips == ({False, True} if augment.flip else {False})


def test_augmentation_reproducible_per_epoch_and_differs_across_epochs():
    split = _id_split(30)
    make = lambda: BatchLoader(split, 7, shuffle=True, augment=Augment(4, True), seed=9)  # noqa: E731
    x1, y1 = _epoch(make(), 5)
    x2, y2 = _epoch(make(), 5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    loader = make()
    x3, y3 = _epoch(loader, 6)
    order = torch.argsort(y3)
    assert not torch.equal(x1[torch.argsort(y1)], x3[order])
    # without shuffling the order is fixed but the augmentation still changes with the epoch
    plain = BatchLoader(split, 7, augment=Augment(4, True), seed=9)
    a, ya = _epoch(plain, 0)
    b, yb = _epoch(plain, 1)
    assert torch.equal(ya, yb) and not torch.equal(a, b)


@pytest.mark.parametrize("n, world, drop_last", [(10, 3, False), (10, 3, True), (12, 4, False)])
def test_rank_shards_cover_the_data_with_equal_batch_counts(n, world, drop_last):
    split = _id_split(n)
    loaders = [
        BatchLoader(split, 2, shuffle=True, seed=7, rank=r, world_size=world, drop_last=drop_last)
        for r in range(world)
    ]
    shards = [_epoch(loader, 1)[1].tolist() for loader in loaders]
    assert len({len(loader) for loader in loaders}) == 1
    assert len({len(s) for s in shards}) == 1
    everything = sum(shards, [])
    if drop_last:  # the shards are truncated to n // world, then partial batches are dropped
        assert len(loaders[0]) == (n // world) // 2
        assert len(everything) == len(loaders[0]) * 2 * world == len(set(everything))
    else:
        assert set(everything) == set(range(n))
        assert len(everything) == -(-n // world) * world  # padded like DistributedSampler
    # one shared permutation: the shards interleave into the single-process order
    single = _epoch(BatchLoader(split, 2, shuffle=True, seed=7), 1)[1].tolist()
    interleaved = [shards[i % world][i // world] for i in range(len(everything))]
    assert interleaved[: min(n, len(everything))] == single[: min(n, len(everything))]


def test_augmentation_of_a_sample_does_not_depend_on_world_size():
    split = _id_split(12)
    aug = Augment(4, True)
    x1, y1 = _epoch(BatchLoader(split, 12, shuffle=True, augment=aug, seed=2), 3)
    for rank in range(2):
        xr, yr = _epoch(
            BatchLoader(split, 4, shuffle=True, augment=aug, seed=2, rank=rank, world_size=2), 3
        )
        for img, i in zip(xr, yr.tolist()):
            assert torch.equal(img, x1[y1.tolist().index(i)])


def test_loader_edge_cases_and_validation():
    empty = ImageSplit(torch.zeros(0, 3, 4, 4, dtype=torch.uint8), torch.zeros(0, dtype=torch.long))
    loader = BatchLoader(empty, 4, shuffle=True, augment=Augment(4, True))
    assert len(loader) == 0 and list(loader) == []
    split = _id_split(5)
    for kwargs, word in [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, world_size=0), "world_size"),
        (dict(batch_size=2, rank=2, world_size=2), "rank"),
        (dict(batch_size=2, augment=(4, True)), "augment"),
    ]:
        with pytest.raises(ValueError, match=word):
            BatchLoader(split, **kwargs)
    with pytest.raises(ValueError, match="crop_pad"):
        Augment(-1, False)
    with pytest.raises(ValueError, match="uint8"):
        ImageSplit(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="labels"):
        ImageSplit(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
