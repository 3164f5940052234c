"""Writers of small data sets in the exact released file formats (SPEC §6), for tests.

Each writer returns the images it wrote as ``(x, y)`` with ``x`` uint8 ``(N, C, H, W)`` and ``y``
int64, built *before* being laid out in the file format, so a test can compare a loader's output
with them.  The CIFAR pickles are written the way the Python 2 release files are: protocol 2,
byte-string keys and class names, numpy arrays referenced through ``numpy.core.multiarray``.
"""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np

CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


class _Py2Pickler(pickle._Pickler):
    """Pickles ``bytes`` as Python 2 ``str`` (BINSTRING opcodes), as the CIFAR release files do."""

    dispatch = pickle._Pickler.dispatch.copy()

    def _save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = _save_py2_str


def _py2(obj):
    """Python 2 ``str`` everywhere a Python 3 ``str`` is (keys, class names, file names)."""
    if isinstance(obj, str):
        return obj.encode("latin1")
    if isinstance(obj, dict):
        return {_py2(k): _py2(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_py2(v) for v in obj]
    return obj


def write_py2_pickle(path: str | Path, obj: dict) -> None:
    """Write ``obj`` as a Python 2 protocol-2 pickle (``str`` as byte strings)."""
    import io

    buf = io.BytesIO()
    _Py2Pickler(buf, protocol=2).dump(_py2(obj))
    data = buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    Path(path).write_bytes(data)


def random_images(n: int, shape: tuple[int, ...], num_classes: int, seed: int):
    """``n`` random uint8 images and labels that cycle through all classes (balanced)."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    y = np.arange(n, dtype=np.int64) % num_classes
    rng.shuffle(y)
    return x, y


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    """N x 3072 rows: the 1024 red, then green, then blue values, each 32x32 plane row-major."""
    return np.ascontiguousarray(x.reshape(x.shape[0], 3 * 32 * 32))


def write_cifar10(
    root: str | Path,
    *,
    per_batch: int = 20,
    n_test: int = 30,
    subfolder: bool = True,
    seed: int = 0,
    classes: list[str] | None = None,
):
    """CIFAR-10 python version: ``data_batch_1..5``, ``test_batch``, ``batches.meta``.

    Written under ``root/cifar-10-batches-py`` (``subfolder=True``, as the archive unpacks) or
    ``root``.
    Returns ``((x_train, y_train), (x_test, y_test))``.
    """
    classes = classes or CIFAR10_CLASSES
    folder = Path(root) / "cifar-10-batches-py" if subfolder else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = random_images(5 * per_batch + n_test, (3, 32, 32), len(classes), seed)
    for i in range(5):
        sl = slice(i * per_batch, (i + 1) * per_batch)
        write_py2_pickle(
            folder / f"data_batch_{i + 1}",
            {
                "batch_label": f"training batch {i + 1} of 5",
                "labels": [int(v) for v in y[sl]],
                "data": _cifar_rows(x[sl]),
                "filenames": [f"img_{j}.png" for j in range(sl.start, sl.stop)],
            },
        )
    test = slice(5 * per_batch, None)
    write_py2_pickle(
        folder / "test_batch",
        {
            "batch_label": "testing batch 1 of 1",
            "labels": [int(v) for v in y[test]],
            "data": _cifar_rows(x[test]),
            "filenames": [f"test_{j}.png" for j in range(n_test)],
        },
    )
    write_py2_pickle(
        folder / "batches.meta",
        {"num_cases_per_batch": per_batch, "label_names": list(classes), "num_vis": 3072},
    )
    return (x[: 5 * per_batch], y[: 5 * per_batch]), (x[test], y[test])


def write_cifar100(
    root: str | Path,
    *,
    n_train: int = 200,
    n_test: int = 100,
    subfolder: bool = True,
    seed: int = 0,
):
    """CIFAR-100 python version: ``train``, ``test``, ``meta`` (fine and coarse label names)."""
    folder = Path(root) / "cifar-100-python" if subfolder else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = random_images(n_train + n_test, (3, 32, 32), 100, seed)
    for name, sl in (("train", slice(0, n_train)), ("test", slice(n_train, None))):
        write_py2_pickle(
            folder / name,
            {
                "filenames": [f"{name}_{j}.png" for j in range(len(y[sl]))],
                "batch_label": f"{name}ing batch 1 of 1",
                "fine_labels": [int(v) for v in y[sl]],
                "coarse_labels": [int(v) // 5 for v in y[sl]],
                "data": _cifar_rows(x[sl]),
            },
        )
    write_py2_pickle(
        folder / "meta",
        {
            "fine_label_names": [f"fine_{c}" for c in range(100)],
            "coarse_label_names": [f"coarse_{c}" for c in range(20)],
        },
    )
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def write_svhn(root: str | Path, *, n_train: int = 50, n_test: int = 30, seed: int = 0):
    """SVHN digits ``train_32x32.mat`` / ``test_32x32.mat``: ``X`` 32x32x3xN, ``y`` 1..10."""
    import scipy.io

    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = random_images(n_train + n_test, (3, 32, 32), 10, seed)
    for name, sl in (
        ("train_32x32.mat", slice(0, n_train)),
        ("test_32x32.mat", slice(n_train, None)),
    ):
        mat_x = np.ascontiguousarray(x[sl].transpose(2, 3, 1, 0))  # (N,C,H,W) -> (H,W,C,N)
        mat_y = np.where(y[sl] == 0, 10, y[sl]).astype(np.uint8).reshape(-1, 1)
        scipy.io.savemat(folder / name, {"X": mat_x, "y": mat_y})
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def write_cifar10c(
    root: str | Path,
    corruptions: tuple[str, ...] = ("gaussian_noise",),
    *,
    per_severity: int = 10,
    subfolder: bool = True,
    seed: int = 0,
):
    """CIFAR-10-C: ``labels.npy`` and ``<corruption>.npy`` (5 x per_severity, 32, 32, 3) uint8.

    Returns ``{corruption: (x, y)}`` with ``x`` as (5 x per_severity, 3, 32, 32) in file row order.
    """
    folder = Path(root) / "CIFAR-10-C" if subfolder else Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = np.tile(rng.integers(0, 10, size=per_severity), 5).astype(np.uint8)
    np.save(folder / "labels.npy", labels)
    out = {}
    for c in corruptions:
        x = rng.integers(0, 256, size=(5 * per_severity, 32, 32, 3), dtype=np.uint8)
        np.save(folder / f"{c}.npy", x)
        out[c] = (x.transpose(0, 3, 1, 2), labels.astype(np.int64))
    return out


def idx_bytes(array: np.ndarray) -> bytes:
    """IDX encoding of a uint8 array of 1 (labels, magic 2049) or 3 (images, 2051) dimensions."""
    magic = {1: 2049, 3: 2051}[array.ndim]
    header = struct.pack(f">{1 + array.ndim}I", magic, *array.shape)
    return header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()


def write_fashion_mnist(root: str | Path, *, n_train: int = 60, n_test: int = 20, seed: int = 0):
    """Gzipped IDX files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` of 28x28 images."""
    folder = Path(root)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = random_images(n_train + n_test, (28, 28), 10, seed)
    for prefix, sl in (("train", slice(0, n_train)), ("t10k", slice(n_train, None))):
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x[sl])))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(
            gzip.compress(idx_bytes(y[sl].astype(np.uint8)))
        )
    return (x[:n_train, None], y[:n_train]), (x[n_train:, None], y[n_train:])
