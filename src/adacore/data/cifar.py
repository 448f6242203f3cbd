"""CIFAR-10 from the standard ``cifar-10-batches-py`` folder, unpickled safely."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from adacore.data.files import existing_dir
from adacore.data.records import Dataset, Splits
from adacore.data.safe_pickle import NUMPY_ARRAY_GLOBALS, safe_load
from adacore.validation import InputError, fail

NUM_CLASSES = 10
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
IMAGE_SHAPE = (3, 32, 32)
BATCH_MAX_BYTES = 256 << 20  # a real batch file is about 31 MB

# Per-channel mean and standard deviation of the 50,000 CIFAR-10 training images,
# pixels in [0, 1] (the population std, not the often-quoted 0.2023/0.1994/0.2010,
# which are the mean of per-image stds).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def load_cifar10(root, *, normalize: bool = False) -> Splits:
    """Load CIFAR-10 from a ``cifar-10-batches-py`` folder.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``data_batch_1`` ... ``data_batch_5`` and ``test_batch``
        (the folder itself, or its parent containing ``cifar-10-batches-py``).
    normalize : bool, default False
        False: pixels in [0, 1]. True: each channel standardised with
        :data:`CIFAR10_MEAN` and :data:`CIFAR10_STD`.

    Returns
    -------
    Splits
        train (50,000 for the full set) and test, images float32 ``(n, 3, 32, 32)``,
        labels int64; ``val`` is None.
    """
    if not isinstance(normalize, bool):
        raise fail("normalize", normalize, "True or False")
    folder = existing_dir("root", root)
    if not (folder / TEST_BATCH).is_file() and (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    train = _load_batches(folder, TRAIN_BATCHES, normalize)
    test = _load_batches(folder, (TEST_BATCH,), normalize)
    return Splits(train=train, val=None, test=test)


def read_cifar_batch(path) -> tuple[torch.Tensor, torch.Tensor]:
    """Read one CIFAR-10 batch file.

    Parameters
    ----------
    path : str or os.PathLike
        A pickle of a dict with ``b'data'`` (uint8 array ``(n, 3072)``, channel-major
        rows of 32x32 pixels) and ``b'labels'`` (n integers in 0..9).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        uint8 images ``(n, 3, 32, 32)`` and int64 labels ``(n,)``.
    """
    content = safe_load(path, allowed=NUMPY_ARRAY_GLOBALS, encoding="bytes",
                        max_bytes=BATCH_MAX_BYTES)
    source = Path(path)
    if not isinstance(content, dict):
        raise InputError(f"{source}: holds a {type(content).__name__}, expected a dict "
                         f"with b'data' and b'labels'")
    data = _entry(content, "data", source)
    labels = _entry(content, "labels", source)
    size = int(np.prod(IMAGE_SHAPE))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != size or data.shape[0] == 0:
        got = f"{data.dtype} array {data.shape}" if isinstance(data, np.ndarray) \
            else type(data).__name__
        raise InputError(f"{source}: b'data' is a {got}, expected a uint8 array (n, {size})")
    try:
        label_array = np.asarray(labels)
    except (TypeError, ValueError, OverflowError):
        label_array = np.asarray([], dtype=object)
    if label_array.shape != (data.shape[0],) or not np.issubdtype(label_array.dtype,
                                                                  np.integer):
        raise InputError(f"{source}: b'labels' must be {data.shape[0]} integers "
                         f"(one per image), got {type(labels).__name__} of shape "
                         f"{label_array.shape}")
    if label_array.min() < 0 or label_array.max() >= NUM_CLASSES:
        raise InputError(f"{source}: labels in [{label_array.min()}, {label_array.max()}], "
                         f"expected 0..{NUM_CLASSES - 1}")
    images = torch.from_numpy(np.ascontiguousarray(data).reshape(-1, *IMAGE_SHAPE))
    return images, torch.from_numpy(label_array.astype(np.int64))


def _entry(content: dict, key: str, source: Path):
    for candidate in (key.encode(), key):  # Python 2 files have bytes keys
        if candidate in content:
            return content[candidate]
    raise InputError(f"{source}: no {key!r} entry, expected a CIFAR-10 batch dict "
                     f"with b'data' and b'labels'")


def _load_batches(folder: Path, names, normalize: bool) -> Dataset:
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise InputError(f"root: {folder} lacks {', '.join(missing)}, expected a "
                         f"cifar-10-batches-py folder")
    pairs = [read_cifar_batch(folder / name) for name in names]
    x = torch.cat([images for images, _ in pairs]).to(torch.float32).div_(255.0)
    y = torch.cat([labels for _, labels in pairs])
    if normalize:
        mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
        x = x.sub_(mean).div_(std)
    return Dataset(x, y, NUM_CLASSES, "cifar10")
