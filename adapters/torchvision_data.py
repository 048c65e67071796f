"""CIFAR-10 through torchvision: its own binary format or an ImageFolder tree, decoded once.

Either layout under the data root works:

* ``<root>/cifar10/{train,test}/<class>/*.jpg|png`` (ImageFolder; the bundled offline copy), or
* ``<root>/cifar-10-batches-py`` (torchvision's format; downloaded when ``download=True``).

The decoded split is cached as uint8 arrays (``<cache>/datasets/cifar10-<hex16>.npz``, loaded with
``allow_pickle=False``) so every later run skips JPEG decoding. Like every cached artifact it carries
a SHA-256 sidecar (``cifar10-<hex16>.json``, written after it, atomically); a damaged or unfinished
copy is detected when loaded, deleted with one warning and decoded again from the source. The digest
of the arrays identifies the data in cache keys.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ebyd_bench.benchmark.cache import (DATASETS_DIR, checksum_problem, checksum_sidecar, open_checksummed,
                                        save_checksummed)
from ebyd_bench.benchmark.errors import DataError
from ebyd_bench.benchmark.io import cache_lock
from ebyd_bench.benchmark.registries import DATASETS

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageSplit:
    """A split as uint8 NHWC images and int64 labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class ImageDataset:
    name: str
    train: ImageSplit
    test: ImageSplit
    classes: tuple[str, ...]
    source: str  # "imagefolder:<path>" or "torchvision:<path>"
    digest: str  # sha256 over all arrays
    note: str = ""  # caveat to publish next to numbers (e.g. JPEG re-encoding)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _read_imagefolder(split_dir: Path, classes: tuple[str, ...]) -> ImageSplit:
    from PIL import Image
    from ebyd_bench.benchmark.progress import progress

    found = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    if tuple(found) != classes:
        raise DataError(f"{split_dir}: expected class folders {list(classes)}, found {found}")
    files: list[tuple[Path, int]] = []
    for label, cls in enumerate(classes):
        files += [(p, label) for p in sorted((split_dir / cls).iterdir()) if p.suffix.lower() in _IMAGE_SUFFIXES]
    images = np.empty((len(files), 32, 32, 3), dtype=np.uint8)
    for i, (path, _) in enumerate(progress(files, desc=f"decoding {split_dir.name}", unit="img", leave=False)):
        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
        if arr.shape != (32, 32, 3):
            raise DataError(f"{path}: expected a 32x32 RGB image, got shape {arr.shape}")
        images[i] = arr
    return ImageSplit(images, np.array([label for _, label in files], dtype=np.int64))


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """Reads the official CIFAR-10 python batches without executing arbitrary code: the only
    globals it resolves are numpy's array reconstruction helpers."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise DataError(f"refusing to load {module}.{name} from a CIFAR-10 batch file")
        return super().find_class(module, name)


def _read_batches(folder: Path, names: list[str]) -> ImageSplit:
    images, labels = [], []
    for name in names:
        path = folder / name
        if not path.is_file():
            raise DataError(f"CIFAR-10 batch missing: {path}")
        with open(path, "rb") as f:
            batch = _ArrayOnlyUnpickler(f, encoding="latin1").load()
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch.get("labels", batch.get("fine_labels")), dtype=np.int64))
    return ImageSplit(np.ascontiguousarray(np.concatenate(images)), np.concatenate(labels))


def _read_torchvision(root: Path, train: bool, download: bool) -> ImageSplit:
    """torchvision's ``cifar-10-batches-py`` layout (fetched by torchvision when ``download``)."""
    if download and not (root / "cifar-10-batches-py").is_dir():
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", str(root),
                                     md5="c58f30108f718f92721af3b95e74349a")
    names = [f"data_batch_{i}" for i in range(1, 6)] if train else ["test_batch"]
    return _read_batches(root / "cifar-10-batches-py", names)


def _locate(data_root: Path) -> tuple[str, Path]:
    folder = data_root / "cifar10"
    if (folder / "train").is_dir() and (folder / "test").is_dir():
        return "imagefolder", folder
    for candidate in (data_root, folder):
        if (candidate / "cifar-10-batches-py").is_dir():
            return "torchvision", candidate
    return "missing", folder


@DATASETS.register("cifar10")
def load_cifar10(data_root: str | os.PathLike, cache_dir: str | os.PathLike | None = None,
                 download: bool = False) -> ImageDataset:
    """Load CIFAR-10 from ``data_root``; decode once and reuse the uint8 cache in ``cache_dir``."""
    root = Path(data_root).expanduser()
    layout, path = _locate(root)
    if layout == "missing" and not download:
        raise DataError(
            f"CIFAR-10 not found under {root}: expected {root / 'cifar10'}/{{train,test}}/<class>/ "
            f"or {root / 'cifar-10-batches-py'} (set --data-root / EBYD_DATA_ROOT, or allow download)")
    if layout == "missing":
        layout, path = "torchvision", root
    source = f"{layout}:{path.resolve()}"
    cached = _cached_arrays(source, cache_dir)
    if cached is None:
        if layout == "imagefolder":
            train, test = _read_imagefolder(path / "train", CIFAR10_CLASSES), _read_imagefolder(path / "test", CIFAR10_CLASSES)
        else:
            train, test = _read_torchvision(path, True, download), _read_torchvision(path, False, download)
        arrays = {"train_x": train.images, "train_y": train.labels, "test_x": test.images, "test_y": test.labels}
        if cache_dir is not None:
            _store_arrays(source, cache_dir, arrays)
    else:
        arrays = cached
    train = ImageSplit(arrays["train_x"], arrays["train_y"])
    test = ImageSplit(arrays["test_x"], arrays["test_y"])
    note = "JPEG-re-encoded CIFAR-10 (ImageFolder copy), not bit-identical to the original" if layout == "imagefolder" else ""
    return ImageDataset("cifar10", train, test, CIFAR10_CLASSES, source,
                        _digest(train.images, train.labels, test.images, test.labels), note)


#: static metadata a grid is checked against when it is loaded, before any data is read (an attack's
#: ``target`` must be a class, ``defense_size`` must leave training images)
load_cifar10.num_classes = len(CIFAR10_CLASSES)  # type: ignore[attr-defined]
load_cifar10.train_size = 50_000  # type: ignore[attr-defined]


def _array_cache_path(source: str, cache_dir: str | os.PathLike) -> Path:
    return Path(cache_dir) / DATASETS_DIR / f"cifar10-{hashlib.sha256(source.encode()).hexdigest()[:16]}.npz"


_ARRAY_NAMES = ("train_x", "train_y", "test_x", "test_y")


def _cached_arrays(source: str, cache_dir: str | os.PathLike | None) -> dict[str, np.ndarray] | None:
    """The decoded arrays from the cache; None when absent, or when damaged (then deleted with one
    warning, so the caller decodes the source again and stores a fresh copy)."""
    if cache_dir is None:
        return None
    path = _array_cache_path(source, cache_dir)
    arrays, problem = _read_checked(path)  # without the lock: many workers may load at once
    if arrays is not None or problem is None:
        return arrays
    with cache_lock(path):  # a writer may have been replacing it: look again before calling it damaged
        arrays, problem = _read_checked(path)
        if arrays is not None or problem is None:
            return arrays
        log.warning("decoded dataset cache %s cannot be used (%s); rebuilding it from %s", path, problem, source)
        checksum_sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)
    return None


def _read_checked(path: Path) -> tuple[dict[str, np.ndarray] | None, str | None]:
    """``(arrays, None)``, ``(None, why not)``, or ``(None, None)`` when there is no cached copy."""
    f, problem = open_checksummed(path)
    if f is None:
        return None, problem
    try:
        with f, np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in _ARRAY_NAMES}, None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:  # checksummed, yet unreadable
        return None, f"unreadable: {exc}"


def _store_arrays(source: str, cache_dir: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    path = _array_cache_path(source, cache_dir)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)

    with cache_lock(path):
        if checksum_problem(path) is not None:  # absent (or damaged meanwhile): write it with its sidecar
            save_checksummed(path, write, {"dataset": "cifar10", "source": source})
