"""Image datasets as uint8 tensors, stratified splits, and a seeded on-device batch loader.

Every data set is read from its *released* file format into an :class:`ImageSplit` of
``uint8`` images ``(N, C, H, W)`` and ``int64`` labels, so that model inputs are ``x / 255`` in
[0, 1] and normalisation happens inside the model.

Data sets (``DATASET_NAMES``):

* ``digits`` -- scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes); pixel
  values 0..16 are scaled to 0..255.  A fixed stratified split: 50 test images per class (500),
  then ``val_per_class`` (default 20, 200 in all) validation images per class, the remaining 1097
  for training.
* ``fashion-mnist`` -- gzipped IDX files (60000 / 10000 images of 28x28, 10 classes).
* ``cifar10`` / ``cifar100`` -- the CIFAR "python version" pickles.
* ``svhn`` -- the cropped-digit MATLAB files ``train_32x32.mat`` / ``test_32x32.mat``.

``load_cifar10c`` reads one corruption and severity of CIFAR-10-C for the corruption evaluation.

Validation splits are taken from the training set only (model selection never sees the test set):
``val_per_class`` images of every class, chosen uniformly at random with ``numpy`` seeded by
``seed`` (FRL takes 300 per class on CIFAR-10, ``FRL_VAL_PER_CLASS``).  The remaining training
images keep their original order.

:class:`BatchLoader` keeps a split on the device as uint8 and yields float32 batches in [0, 1];
random crop (zero padding) and horizontal flip are one vectorised gather per batch.  All
randomness of an epoch is drawn on the CPU from a ``torch.Generator`` seeded by ``(seed, epoch)``,
so an epoch's batches are identical on every device and every run, and each sample's augmentation
does not depend on how the data is sharded across processes.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from deep.download import DatasetError, RemoteFile, fetch_files

DATASET_NAMES = ("digits", "fashion-mnist", "cifar10", "cifar100", "svhn")

#: Per-class validation size used by FRL on CIFAR-10 (4700 train / 300 validation per class).
FRL_VAL_PER_CLASS = 300

#: The 15 benchmark corruptions of CIFAR-10-C (Hendrycks & Dietterich, 2019).
CIFAR10C_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic_transform",
    "pixelate",
    "jpeg_compression",
)
#: The 4 extra corruptions shipped in the same archive (held out in the benchmark).
CIFAR10C_EXTRA_CORRUPTIONS = ("gaussian_blur", "saturate", "spatter", "speckle_noise")
CIFAR10C_SEVERITIES = (1, 2, 3, 4, 5)

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

DIGITS_TEST_PER_CLASS = 50
DIGITS_VAL_PER_CLASS = 20
DIGITS_SPLIT_SEED = 0

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049


class MissingFilesError(DatasetError):
    """Some of a data set's files are not where they are expected (``--download`` fetches them)."""


class ClassTooSmallError(ValueError):
    """A per-class sample size larger than the smallest class of the split it is drawn from.

    Carries the numbers, so that a command line can name its own option and the split
    (:meth:`describe`) instead of the Python parameter.
    """

    def __init__(self, parameter: str, requested: int, class_label: object, available: int):
        self.parameter = parameter
        self.requested = int(requested)
        self.class_label = class_label
        self.available = int(available)
        super().__init__(self.describe(f"{parameter} ="))

    def describe(self, option: str, where: str = "here") -> str:
        """The message with ``option`` (e.g. ``"--train-per-class"``) and ``where`` the images are
        counted (e.g. ``"after the validation split"``).

        Args:
            option: how the caller names the size, printed before the requested number (the
                constructor uses ``"<parameter> ="``).
            where: where the images were counted, printed after the available number.

        Returns:
            ``"<option> <requested>, but class <label> has only <available> images <where>:
            choose at most <available>"``.
        """
        return (
            f"{option} {self.requested}, but class {self.class_label} has only {self.available} "
            f"images {where}: choose at most {self.available}"
        )

    def renamed(self, parameter: str) -> ClassTooSmallError:
        """The same error for the caller's parameter name.

        Args:
            parameter: the name the message uses (e.g. ``"val_per_class"``).

        Returns:
            A new :class:`ClassTooSmallError` with the same numbers and class.
        """
        return ClassTooSmallError(parameter, self.requested, self.class_label, self.available)


# --------------------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageSplit:
    """Images ``x`` (uint8, ``(N, C, H, W)``, CPU) with labels ``y`` (int64, ``(N,)``).

    Args:
        x: the images, uint8 (N, C, H, W) on the 0..255 scale.
        y: the labels, int64 (N,).
    """

    x: torch.Tensor
    y: torch.Tensor

    def __post_init__(self) -> None:
        if self.x.dtype != torch.uint8 or self.x.dim() != 4:
            raise ValueError(
                "x must be a uint8 tensor of shape (N, C, H, W), "
                f"got {self.x.dtype} {tuple(self.x.shape)}"
            )
        if self.y.dtype != torch.int64 or self.y.dim() != 1:
            raise ValueError(
                f"y must be an int64 tensor of shape (N,), got {self.y.dtype} {tuple(self.y.shape)}"
            )
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} images but y has {self.y.shape[0]} labels")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def subset(self, indices: np.ndarray | torch.Tensor) -> ImageSplit:
        """The images at ``indices`` (in that order).

        Args:
            indices: positions into the split.

        Returns:
            A new :class:`ImageSplit`.
        """
        index = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return ImageSplit(self.x[index], self.y[index])


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop after ``crop_pad`` zero padding (0 = none); flip.

    Args:
        crop_pad: zero padding on each side before the random crop (0: no crop).
        flip: random horizontal flips.
    """

    crop_pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.crop_pad, int) or self.crop_pad < 0:
            raise ValueError(f"crop_pad must be an integer >= 0, got {self.crop_pad!r}")

    @property
    def active(self) -> bool:
        return self.crop_pad > 0 or bool(self.flip)


@dataclass
class ImageDataset:
    """A data set with its train / validation / test splits and the defaults used to train on it.

    Args:
        name: the data set's name.
        classes: the class names, in label order.
        train, val, test: the splits (``val`` may be empty).
        mean, std: per-channel statistics for the models' first layer.
        augment: the training augmentation.
        eps, step_size: the l_inf budget and attack step on the [0, 1] scale.
        eps_l2: the l_2 budget.
    """

    name: str
    classes: list[str]
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: Augment = field(default_factory=Augment)
    eps: float = 8 / 255
    step_size: float = 2 / 255
    eps_l2: float = 0.5

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.train.x.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.train.x.shape[2])

    def attack_budget(
        self, norm: str, eps: float | None = None, step_size: float | None = None
    ) -> tuple[float, float]:
        """``(eps, step_size)`` of the ``norm`` threat model; given values are kept.

        l_inf: the data set's ``eps`` and ``step_size``. l_2: ``eps_l2`` (:data:`L2_EPS`) and the
        step rule ``step_size = eps / 5`` (:data:`L2_STEP_FRACTION`) applied to the eps in use.

        Args:
            norm: ``"linf"`` or ``"l2"``.
            eps: a budget to keep (None: the data set's).
            step_size: a step to keep (None: the data set's, or the l_2 rule's).

        Returns:
            ``(eps, step_size)``.
        """
        if norm == "linf":
            return (
                self.eps if eps is None else float(eps),
                self.step_size if step_size is None else float(step_size),
            )
        if norm != "l2":
            raise ValueError(f"norm must be one of linf, l2, got {norm!r}")
        eps = self.eps_l2 if eps is None else float(eps)
        return eps, (L2_STEP_FRACTION * eps if step_size is None else float(step_size))


@dataclass(frozen=True)
class _Defaults:
    eps: float
    step_size: float
    augment: Augment
    mean: tuple[float, ...] | None  # None: computed from the training images
    std: tuple[float, ...] | None


# Published normalisation constants are kept for the 32x32 sets so that released robust
# checkpoints (trained with them) load unchanged; the small sets compute theirs exactly from
# their training images.
_DEFAULTS = {
    "digits": _Defaults(0.1, 0.025, Augment(0, False), None, None),
    "fashion-mnist": _Defaults(0.1, 0.025, Augment(0, False), None, None),
    "cifar10": _Defaults(
        8 / 255, 2 / 255, Augment(4, True), (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
    ),
    "cifar100": _Defaults(
        8 / 255, 2 / 255, Augment(4, True), (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
    ),
    "svhn": _Defaults(
        8 / 255, 2 / 255, Augment(4, False), (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
    ),
}


#: l_2 budgets on the [0, 1] pixel scale. CIFAR-10/100 and SVHN: 0.5, FRL Appendix A.1.2 (and the
#: radius of FRL's randomized-smoothing figure). digits (8x8 = 64 pixels): 0.5, the l_2 size of an
#: l_inf-0.1 change of 25 pixels; Fashion-MNIST (28x28): 1.0, that of an l_inf-0.1 change of 100
#: pixels (the l_inf default, 0.1, spread over a garment's outline rather than every pixel).
L2_EPS = {"digits": 0.5, "fashion-mnist": 1.0, "cifar10": 0.5, "cifar100": 0.5, "svhn": 0.5}

#: The l_2 step rule: step = eps / 5 (FRL Appendix A.1.2 evaluates eps 0.5 with step 0.1).
L2_STEP_FRACTION = 0.2


# --------------------------------------------------------------------------------------------------
# Where the files come from (fetched by deep.download)
# --------------------------------------------------------------------------------------------------


_FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"

SOURCES: dict[str, tuple[RemoteFile, ...]] = {
    "digits": (),  # bundled with scikit-learn
    "fashion-mnist": (
        RemoteFile(_FASHION_URL + "train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        RemoteFile(_FASHION_URL + "train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        RemoteFile(_FASHION_URL + "t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        RemoteFile(_FASHION_URL + "t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    ),
    "cifar10": (
        RemoteFile(
            "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
            "c58f30108f718f92721af3b95e74349a",
            extracts_to="cifar-10-batches-py",
        ),
    ),
    "cifar100": (
        RemoteFile(
            "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
            "eb9058c3a382ffc7106e4002c42a8d85",
            extracts_to="cifar-100-python",
        ),
    ),
    "svhn": (
        RemoteFile(
            "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
            "e26dedcc434d2e4c54c9b2d4a06d8373",
        ),
        RemoteFile(
            "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
            "eb5a983be6a315427106f1b164d9cef3",
        ),
    ),
    "cifar10c": (
        RemoteFile(
            "https://zenodo.org/record/2535967/files/CIFAR-10-C.tar",
            "56bf5dcef84df0e2308c6dcbcbbd8499",
            extracts_to="CIFAR-10-C",
        ),
    ),
}


def default_data_dir(name: str) -> Path:
    """Default ``--data-dir``: Debian's folder for Fashion-MNIST, ``./data/<name>`` otherwise.

    Args:
        name: a data set name (or ``"cifar10c"``).

    Returns:
        The folder.
    """
    _check_name(name, (*DATASET_NAMES, "cifar10c"))
    if name == "fashion-mnist":
        return Path("/usr/share/datasets/fashion-mnist")
    return Path("data") / name


def download_dataset(
    name: str,
    data_dir: str | Path,
    *,
    url_base: str | None = None,
    checksums: Mapping[str, str] | None = None,
    progress: bool | None = None,
) -> None:
    """Fetch the official files of ``name`` into ``data_dir``, verify their MD5, unpack archives.

    Atomic: a file is written to a temporary name in ``data_dir`` and renamed only after its
    checksum matched; an archive is unpacked into a temporary folder that is renamed into place.
    A failure leaves no partial file and raises :class:`DatasetError` saying what happened.
    ``url_base`` replaces the folder part of every URL (mirrors, tests); ``checksums`` maps file
    names to MD5s that replace the published ones.  ``digits`` is bundled with scikit-learn:
    nothing to fetch.

    Args:
        name: a data set name.
        data_dir: where to put the files.
        url_base: replaces the folder part of every URL.
        checksums: file name -> MD5, replacing the published ones.
        progress: show progress (None: on a terminal).
    """
    _check_name(name, tuple(SOURCES))
    fetch_files(
        SOURCES[name],
        Path(data_dir),
        url_base=url_base,
        checksums=checksums,
        progress=progress,
    )


def _check_name(name: str, allowed: Sequence[str]) -> None:
    if name not in allowed:
        raise ValueError(f"dataset name must be one of {', '.join(allowed)}; got {name!r}")


#: The command-line option that names each data set's folder.
_DIR_OPTIONS = {"cifar10c": "--cifar10c-dir"}


def _missing(
    name: str, folder: Path, files: Sequence[str], *, subfolder: str | None = None
) -> MissingFilesError:
    where = f"{folder}" + (f" (or its {subfolder}/ subfolder)" if subfolder else "")
    urls = ", ".join(f.url for f in SOURCES.get(name, ()))
    return MissingFilesError(
        f"{name}: missing file(s) {', '.join(files)} in {where}. "
        f"They come from the official release ({urls}). Pass --download (or call "
        f"deep.data.download_dataset({name!r}, {str(folder)!r})) to fetch and verify them, "
        f"or point {_DIR_OPTIONS.get(name, '--data-dir')} at a folder that holds them."
    )


# --------------------------------------------------------------------------------------------------
# File readers
# --------------------------------------------------------------------------------------------------


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (the CIFAR files hold nothing else)."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),
    }

    def find_class(self, module: str, name: str):  # noqa: D102
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a data file")


def _read_pickle(path: Path) -> dict[str, object]:
    """A CIFAR pickle (Python 2, read with latin1; bytes keys accepted) as a dict with str keys."""
    try:
        with open(path, "rb") as f:
            obj = _ArrayUnpickler(f, encoding="latin1").load()
    except FileNotFoundError:
        raise
    except Exception as err:  # any failure to unpickle means a truncated or corrupt file
        raise DatasetError(
            f"{path}: corrupt or truncated pickle ({type(err).__name__}: {err})"
        ) from err
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {_as_str(k): v for k, v in obj.items()}


def _as_str(value: object) -> object:
    return value.decode("latin1") if isinstance(value, bytes) else value


def _cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 3, 32, 32) and labels of one CIFAR batch (``data`` rows: R, G, B 32x32 planes)."""
    batch = _read_pickle(path)
    if "data" not in batch or label_key not in batch:
        raise DatasetError(f"{path}: expected keys 'data' and {label_key!r}, found {sorted(batch)}")
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(f"{path}: 'data' must be uint8 N x 3072, got {data.dtype} {data.shape}")
    if labels.shape != (data.shape[0],):
        raise DatasetError(f"{path}: {data.shape[0]} images but {labels.size} labels")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(f"{path}: labels must lie in 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _find_folder(
    name: str, data_dir: Path, subfolder: str, marker: str, files: Sequence[str]
) -> Path:
    """``data_dir`` if it holds ``marker``, else ``data_dir/subfolder``; checks all ``files``."""
    folder = data_dir if (data_dir / marker).exists() else data_dir / subfolder
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise _missing(name, data_dir, missing, subfolder=subfolder)
    return folder


def _read_cifar10(data_dir: Path) -> tuple[list[str], ImageSplit, ImageSplit]:
    train_files = [f"data_batch_{i}" for i in range(1, 6)]
    folder = _find_folder(
        "cifar10",
        data_dir,
        "cifar-10-batches-py",
        "batches.meta",
        [*train_files, "test_batch", "batches.meta"],
    )
    meta = _read_pickle(folder / "batches.meta")
    classes = _class_names(folder / "batches.meta", meta, "label_names")
    train = _concat([_cifar_batch(folder / f, "labels", len(classes)) for f in train_files])
    test = _cifar_batch(folder / "test_batch", "labels", len(classes))
    return classes, _to_split(*train), _to_split(*test)


def _read_cifar100(data_dir: Path) -> tuple[list[str], ImageSplit, ImageSplit]:
    folder = _find_folder(
        "cifar100", data_dir, "cifar-100-python", "meta", ["train", "test", "meta"]
    )
    meta = _read_pickle(folder / "meta")
    classes = _class_names(folder / "meta", meta, "fine_label_names")
    train = _cifar_batch(folder / "train", "fine_labels", len(classes))
    test = _cifar_batch(folder / "test", "fine_labels", len(classes))
    return classes, _to_split(*train), _to_split(*test)


def _class_names(path: Path, meta: dict[str, object], key: str) -> list[str]:
    names = meta.get(key)
    if not isinstance(names, list | tuple) or not names:
        raise DatasetError(f"{path}: expected a non-empty list {key!r} of class names")
    return [str(_as_str(n)) for n in names]


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN cropped digits: ``X`` 32x32x3xN uint8, ``y`` 1..10 with 10 meaning digit 0."""
    import scipy.io

    try:
        mat = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises ValueError/TypeError/MatReadError on damaged files
        raise DatasetError(
            f"{path}: corrupt or truncated MATLAB file ({type(err).__name__}: {err})"
        ) from err
    if "X" not in mat or "y" not in mat:
        raise DatasetError(f"{path}: expected variables 'X' and 'y'")
    x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        raise DatasetError(f"{path}: 'X' must be uint8 32x32x3xN, got {x.dtype} {x.shape}")
    if y.shape != (x.shape[3],):
        raise DatasetError(f"{path}: {x.shape[3]} images but {y.size} labels")
    if y.size and (y.min() < 1 or y.max() > 10):
        raise DatasetError(f"{path}: labels must lie in 1..10")
    return np.ascontiguousarray(x.transpose(3, 2, 0, 1)), (y % 10).astype(np.int64)


def _read_svhn(data_dir: Path) -> tuple[list[str], ImageSplit, ImageSplit]:
    files = ["train_32x32.mat", "test_32x32.mat"]
    missing = [f for f in files if not (data_dir / f).is_file()]
    if missing:
        raise _missing("svhn", data_dir, missing)
    train, test = (_read_svhn_mat(data_dir / f) for f in files)
    return [str(d) for d in range(10)], _to_split(*train), _to_split(*test)


def _read_idx_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
        return gzip.decompress(raw) if path.suffix == ".gz" else raw
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetError(f"{path}: corrupt or truncated gzip file ({err})") from err


def read_idx(path: str | Path, magic: int) -> np.ndarray:
    """An IDX array (uint8): big-endian uint32 magic (2051 images, 2049 labels), sizes, then data.

    Raises :class:`DatasetError` naming the file on a wrong magic number or a payload whose size
    does not match the header.

    Args:
        path: the IDX file (gzipped or not).
        magic: the expected magic number.

    Returns:
        The uint8 array, (N, rows, cols) for images or (N,) for labels.
    """
    path = Path(path)
    buf = _read_idx_bytes(path)
    ndim = {IDX_IMAGES_MAGIC: 3, IDX_LABELS_MAGIC: 1}[magic]
    header = 4 * (1 + ndim)
    if len(buf) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(buf)} bytes)")
    found, *dims = struct.unpack(f">{1 + ndim}I", buf[:header])
    if found != magic:
        raise DatasetError(f"{path}: wrong IDX magic number {found} (expected {magic})")
    expected = int(np.prod(dims, dtype=np.int64))
    if len(buf) - header != expected:
        raise DatasetError(
            f"{path}: IDX payload has {len(buf) - header} bytes, "
            f"header {tuple(dims)} needs {expected}"
        )
    return np.frombuffer(buf, dtype=np.uint8, offset=header).reshape(dims).copy()


def _read_fashion_mnist(data_dir: Path) -> tuple[list[str], ImageSplit, ImageSplit]:
    splits = []
    for prefix in ("train", "t10k"):
        paths = []
        for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
            gz = data_dir / f"{prefix}-{kind}.gz"
            plain = data_dir / f"{prefix}-{kind}"
            if not gz.is_file() and not plain.is_file():
                raise _missing("fashion-mnist", data_dir, [gz.name])
            paths.append(gz if gz.is_file() else plain)
        images = read_idx(paths[0], IDX_IMAGES_MAGIC)
        labels = read_idx(paths[1], IDX_LABELS_MAGIC)
        if images.shape[0] != labels.shape[0]:
            raise DatasetError(
                f"{paths[0]} holds {images.shape[0]} images but "
                f"{paths[1]} holds {labels.shape[0]} labels"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DatasetError(f"{paths[1]}: labels must lie in 0..9")
        splits.append(_to_split(images[:, None], labels.astype(np.int64)))
    return list(FASHION_MNIST_CLASSES), splits[0], splits[1]


def _digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits, values 0..16 scaled to 0..255 (rounded), shape (N, 1, 8, 8)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, bunch.target.astype(np.int64)


def _concat(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _to_split(x: np.ndarray, y: np.ndarray) -> ImageSplit:
    return ImageSplit(
        torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y.astype(np.int64))
    )


def load_cifar10c(data_dir: str | Path, corruption: str, severity: int) -> ImageSplit:
    """CIFAR-10-C images of one ``corruption`` at ``severity`` in 1..5.

    ``data_dir`` holds (or its ``CIFAR-10-C/`` subfolder holds) ``labels.npy`` and
    ``<corruption>.npy``: N x 32 x 32 x 3 uint8 with the five severities stacked in equal blocks
    (released: 50000 = 5 x 10000), so severity s is rows ``(s-1) N/5 : s N/5``.

    Args:
        data_dir: the CIFAR-10-C folder or its parent.
        corruption: the corruption's name, e.g. ``"fog"``.
        severity: 1..5.

    Returns:
        The images and labels as an :class:`ImageSplit`.
    """
    names = CIFAR10C_CORRUPTIONS + CIFAR10C_EXTRA_CORRUPTIONS
    if corruption not in names:
        raise ValueError(f"corruption must be one of {', '.join(names)}; got {corruption!r}")
    if isinstance(severity, bool) or severity not in CIFAR10C_SEVERITIES:
        raise ValueError(f"severity must be an integer in 1..5, got {severity!r}")
    data_dir = Path(data_dir)
    folder = _find_folder(
        "cifar10c", data_dir, "CIFAR-10-C", "labels.npy", ["labels.npy", f"{corruption}.npy"]
    )
    images = _load_npy(folder / f"{corruption}.npy")
    labels = _load_npy(folder / "labels.npy")
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (32, 32, 3):
        raise DatasetError(
            f"{folder / f'{corruption}.npy'}: expected uint8 N x 32 x 32 x 3, "
            f"got {images.dtype} {images.shape}"
        )
    if images.shape[0] % 5 or labels.shape != (images.shape[0],):
        raise DatasetError(
            f"{folder}: {corruption}.npy has {images.shape[0]} images and "
            f"labels.npy {labels.shape}; "
            "expected 5 equal severity blocks and one label per image"
        )
    block = images.shape[0] // 5
    rows = slice((severity - 1) * block, severity * block)
    x = np.ascontiguousarray(images[rows].transpose(0, 3, 1, 2))
    y = np.asarray(labels[rows]).astype(np.int64)
    if y.size and (y.min() < 0 or y.max() > 9):
        raise DatasetError(f"{folder / 'labels.npy'}: labels must lie in 0..9")
    return _to_split(x, y)


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DatasetError(f"{path}: corrupt or truncated .npy file ({err})") from err


# --------------------------------------------------------------------------------------------------
# Splits
# --------------------------------------------------------------------------------------------------


def _stratified_indices(y: np.ndarray, n_per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted indices of ``n_per_class`` samples of every class present (uniform random choice)."""
    if not isinstance(n_per_class, int | np.integer) or n_per_class < 0:
        raise ValueError(f"n_per_class must be an integer >= 0, got {n_per_class!r}")
    classes, counts = np.unique(y, return_counts=True)
    if counts.size and n_per_class > counts.min():
        raise ClassTooSmallError("n_per_class", n_per_class, classes[counts.argmin()], counts.min())
    chosen = [rng.choice(np.flatnonzero(y == c), size=n_per_class, replace=False) for c in classes]
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def stratified_indices(split: ImageSplit, n_per_class: int, *, seed: int = 0) -> np.ndarray:
    """Sorted indices into ``split`` of :func:`stratified_subset`'s images (same seed, same
    choice): for reporting which images of the split a per-sample result belongs to.

    Args:
        split: the images.
        n_per_class: images per class.
        seed: the choice's seed.

    Returns:
        Sorted int64 indices into ``split``.
    """
    rng = np.random.default_rng(seed)
    return _stratified_indices(split.y.numpy(), n_per_class, rng)


def stratified_subset(split: ImageSplit, n_per_class: int, *, seed: int = 0) -> ImageSplit:
    """``n_per_class`` images of every class (seeded uniform choice), in their original order.

    Args:
        split: the images.
        n_per_class: images per class.
        seed: the choice's seed.

    Returns:
        The subset, an :class:`ImageSplit`.
    """
    return split.subset(stratified_indices(split, n_per_class, seed=seed))


def stratified_split(
    split: ImageSplit, n_per_class: int, *, seed: int = 0
) -> tuple[ImageSplit, ImageSplit]:
    """``(rest, held_out)``: ``n_per_class`` images per class (seeded) held out, and the rest.

    The two are disjoint, their union is ``split``, and both keep the original order.

    Args:
        split: the images.
        n_per_class: images per class to hold out.
        seed: the choice's seed.

    Returns:
        ``(rest, held_out)``, two :class:`ImageSplit`.
    """
    rng = np.random.default_rng(seed)
    held = _stratified_indices(split.y.numpy(), n_per_class, rng)
    if held.size == 0:
        return split, split.subset(held)
    keep = np.ones(len(split), dtype=bool)
    keep[held] = False
    return split.subset(np.flatnonzero(keep)), split.subset(held)


# --------------------------------------------------------------------------------------------------
# load_dataset
# --------------------------------------------------------------------------------------------------

_READERS = {
    "fashion-mnist": _read_fashion_mnist,
    "cifar10": _read_cifar10,
    "cifar100": _read_cifar100,
    "svhn": _read_svhn,
}


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    val_per_class: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> ImageDataset:
    """Load ``name`` (one of ``DATASET_NAMES``) with its defaults (eps, step size, augmentation).

    ``val_per_class`` images of every class move from the training set to ``val`` (seeded by
    ``seed``); ``None`` means the data set's default: 20 for ``digits``, 0 otherwise (FRL uses 300
    on CIFAR-10, ``FRL_VAL_PER_CLASS``).
    ``data_dir`` defaults to :func:`default_data_dir`; with ``download=True`` missing files are
    fetched first (:func:`download_dataset`).

    Args:
        name: ``"digits"``, ``"fashion-mnist"``, ``"cifar10"``, ``"cifar100"`` or ``"svhn"``.
        data_dir: the folder holding the released files.
        val_per_class: images per class moved to the validation split (None: the default).
        seed: the validation split's seed.
        download: fetch missing files first.

    Returns:
        An :class:`ImageDataset` (``train``, ``val``, ``test`` splits of uint8 images, the class
        names, and the data set's eps, step size and augmentation).

    Raises:
        MissingFilesError: listing missing files and where they come from.
        DatasetError: naming a truncated or corrupt file.
        ValueError: for an unknown name or a bad ``val_per_class``.
    """
    _check_name(name, DATASET_NAMES)
    if val_per_class is not None and (
        isinstance(val_per_class, bool) or not isinstance(val_per_class, int) or val_per_class < 0
    ):
        raise ValueError(f"val_per_class must be None or an integer >= 0, got {val_per_class!r}")
    defaults = _DEFAULTS[name]
    if name == "digits":
        x, y = _digits_images()
        rest, test = stratified_split(
            _to_split(x, y), DIGITS_TEST_PER_CLASS, seed=DIGITS_SPLIT_SEED
        )
        classes = [str(d) for d in range(10)]
        n_val = DIGITS_VAL_PER_CLASS if val_per_class is None else val_per_class
    else:
        folder = Path(data_dir) if data_dir is not None else default_data_dir(name)
        try:
            classes, rest, test = _READERS[name](folder)
        except MissingFilesError:
            if not download:
                raise
            download_dataset(name, folder)
            classes, rest, test = _READERS[name](folder)
        n_val = 0 if val_per_class is None else val_per_class
    try:
        train, val = stratified_split(rest, n_val, seed=seed)
    except ClassTooSmallError as exc:
        raise exc.renamed("val_per_class") from None
    mean, std = defaults.mean, defaults.std
    if mean is None or std is None:
        mean, std = channel_mean_std(train.x if name == "digits" else rest.x)
    return ImageDataset(
        name=name,
        classes=classes,
        train=train,
        val=val,
        test=test,
        mean=tuple(mean),
        std=tuple(std),
        augment=defaults.augment,
        eps=defaults.eps,
        step_size=defaults.step_size,
        eps_l2=L2_EPS[name],
    )


def channel_mean_std(x: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean and (population) std of uint8 images on the [0, 1] scale.

    The moment sums S1, S2 are exact integers, so the variance ``(n S2 - S1^2) / n^2`` has no
    cancellation error.

    Args:
        x: uint8 images (N, C, H, W).

    Returns:
        ``(means, stds)``, one float per channel each.
    """
    means, stds = [], []
    chunk = 1 << 22
    for c in range(x.shape[1]):
        values = x[:, c].reshape(-1).numpy()
        n, s1, s2 = values.size, 0, 0
        for start in range(0, n, chunk):
            v = values[start : start + chunk].astype(np.int64)
            s1 += int(v.sum())
            s2 += int((v * v).sum())
        means.append(s1 / n / 255.0)
        stds.append(float(np.sqrt((n * s2 - s1 * s1) / (n * n))) / 255.0)
    return tuple(means), tuple(stds)


# --------------------------------------------------------------------------------------------------
# Batches on the device
# --------------------------------------------------------------------------------------------------


def crop_and_flip(
    x: torch.Tensor,
    pad: int,
    offset_y: torch.Tensor,
    offset_x: torch.Tensor,
    flip: torch.Tensor,
) -> torch.Tensor:
    """Per-sample crop of the zero-padded images at ``(offset_y, offset_x)`` in ``0..2 pad``, then a
    horizontal flip where ``flip`` is True; one gather for the whole batch (no loop over samples).

    Args:
        x: ``(B, C, H, W)`` of any dtype.
        pad: zero padding on each side.
        offset_y, offset_x: per-sample crop offsets (B,) in ``0..2 pad``.
        flip: per-sample bool (B,).

    Returns:
        The cropped (and flipped) batch, with the shape, dtype and device of ``x``.
    """
    b, c, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad)) if pad else x
    dev = x.device
    rows = offset_y.view(b, 1) + torch.arange(h, device=dev).view(1, h)  # (B, H)
    cols_fwd = torch.arange(w, device=dev).view(1, w)
    cols = offset_x.view(b, 1) + torch.where(
        flip.view(b, 1), (w - 1) - cols_fwd, cols_fwd
    )  # (B, W)
    return padded[
        torch.arange(b, device=dev).view(b, 1, 1, 1),
        torch.arange(c, device=dev).view(1, c, 1, 1),
        rows.view(b, 1, h, 1),
        cols.view(b, 1, 1, w),
    ]


def epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed mixed from ``(seed, epoch)`` (numpy's SeedSequence hashing).

    Args:
        seed: the run's seed.
        epoch: the epoch.

    Returns:
        The seed, a non-negative int below 2^63.
    """
    state = np.random.SeedSequence(
        [int(seed) & 0xFFFFFFFF, int(epoch) & 0xFFFFFFFF]
    ).generate_state(2)
    return int(((int(state[0]) << 32) | int(state[1])) & 0x7FFFFFFFFFFFFFFF)


class BatchLoader:
    """Mini-batches of a split held on ``device``: ``(x float32 in [0, 1], y int64)``.

    Shuffling and augmentation are drawn per epoch on the CPU from a ``torch.Generator`` seeded
    by ``epoch_seed(seed, epoch)`` (call :meth:`set_epoch`), so ``(seed, epoch)`` alone fixes an
    epoch's batches.  With ``world_size > 1`` every rank takes the disjoint shard
    ``rank::world_size`` of one shared permutation, padded by wrapping around to a multiple of
    ``world_size`` (as ``torch.utils.data.DistributedSampler`` does; ``drop_last`` truncates
    instead), so all ranks get the same number of batches.  Each sample's crop and flip belong to
    its position in the shared permutation, so they do not depend on ``world_size``.

    Args:
        split: the images (uint8) and labels.
        batch_size: images per batch, >= 1.
        device: where the images are held and the batches made.
        shuffle: a new permutation every epoch.
        augment: random crop and flip (None: none).
        seed: fixes, with the epoch, the permutation and the augmentation.
        rank: this process's rank.
        world_size: the number of processes.
        drop_last: truncate to whole batches instead of padding.
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        *,
        device: str | torch.device = "cpu",
        shuffle: bool = False,
        augment: Augment | None = None,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        drop_last: bool = False,
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if not isinstance(world_size, int) or world_size < 1:
            raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
        if not isinstance(rank, int) or not 0 <= rank < world_size:
            raise ValueError(f"rank must be an integer in 0..{world_size - 1}, got {rank!r}")
        if augment is not None and not isinstance(augment, Augment):
            raise ValueError(f"augment must be None or an Augment, got {type(augment).__name__}")
        self.device = torch.device(device)
        self.x = split.x.to(self.device)
        self.y = split.y.to(self.device)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment if augment is not None and augment.active else None
        self.seed = int(seed)
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        n = len(split)
        self.total_size = (n // world_size if drop_last else -(-n // world_size)) * world_size
        self.num_samples = self.total_size // world_size  # per rank

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose shuffle and augmentation are drawn next.

        Args:
            epoch: the epoch, 0-based (the training loop passes ``trainer.epoch``); with the seed
                it fixes the permutation, the crops and the flips (:func:`epoch_seed`).
        """
        self.epoch = int(epoch)

    @property
    def state(self) -> dict[str, int]:
        """Everything that fixes an epoch's batches besides the data: ``{"seed", "epoch"}``."""
        return {"seed": self.seed, "epoch": self.epoch}

    def __len__(self) -> int:
        if self.drop_last:
            return self.num_samples // self.batch_size
        return -(-self.num_samples // self.batch_size)

    def _epoch_plan(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """This rank's sample indices and, with augmentation, its (offset_y, offset_x, flip)."""
        n = int(self.y.shape[0])
        gen = torch.Generator().manual_seed(epoch_seed(self.seed, self.epoch))
        order = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
        aug = None
        if self.augment is not None:
            pad = self.augment.crop_pad
            offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=gen)
            flips = torch.rand(n, generator=gen) < 0.5
            if not self.augment.flip:
                flips.zero_()
            aug = torch.cat([offsets, flips.long().view(n, 1)], dim=1)  # by position in `order`
        if self.total_size > n:  # wrap around so that every rank gets the same count
            reps = -(-self.total_size // max(n, 1))
            positions = torch.arange(n).repeat(reps)[: self.total_size]
        else:
            positions = torch.arange(self.total_size)
        positions = positions[self.rank : self.total_size : self.world_size]
        index = order[positions]
        return index, (aug[positions] if aug is not None else None)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.total_size == 0:
            return
        index, aug = self._epoch_plan()
        index = index.to(self.device)
        if aug is not None:
            aug = aug.to(self.device)
        for b in range(len(self)):
            sl = slice(b * self.batch_size, (b + 1) * self.batch_size)
            idx = index[sl]
            x = self.x[idx]
            if aug is not None:
                a = aug[sl]
                x = crop_and_flip(x, self.augment.crop_pad, a[:, 0], a[:, 1], a[:, 2].bool())
            yield x.to(torch.float32).div_(255.0), self.y[idx]


__all__ = [
    "CIFAR10C_CORRUPTIONS",
    "CIFAR10C_EXTRA_CORRUPTIONS",
    "DATASET_NAMES",
    "FASHION_MNIST_CLASSES",
    "FRL_VAL_PER_CLASS",
    "L2_EPS",
    "L2_STEP_FRACTION",
    "SOURCES",
    "Augment",
    "BatchLoader",
    "ClassTooSmallError",
    "DatasetError",
    "ImageDataset",
    "ImageSplit",
    "MissingFilesError",
    "RemoteFile",
    "channel_mean_std",
    "crop_and_flip",
    "default_data_dir",
    "download_dataset",
    "epoch_seed",
    "load_cifar10c",
    "load_dataset",
    "read_idx",
    "stratified_indices",
    "stratified_split",
    "stratified_subset",
]
