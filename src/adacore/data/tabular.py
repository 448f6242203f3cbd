"""scikit-learn's bundled digits (8x8 images), read from disk with no download."""

from __future__ import annotations

import torch

from adacore.data.records import Dataset, Splits
from adacore.data.splits import check_open_fraction, split_indices
from adacore.validation import fail

DIGITS_NUM_CLASSES = 10


def load_digits_splits(*, test_fraction: float = 0.2, seed: int = 0,
                       flatten: bool = True) -> Splits:
    """The 1,797 scikit-learn digits, split stratified into train and test.

    Parameters
    ----------
    test_fraction : float, default 0.2
        Share held out as the test set, in (0, 1).
    seed : int, default 0
        Seed of the split.
    flatten : bool, default True
        True: 64 features per example; False: images ``(n, 1, 8, 8)``.

    Returns
    -------
    Splits
        float32 pixels scaled from 0..16 to [0, 1], int64 labels; ``val`` is None.
    """
    from sklearn.datasets import load_digits  # deferred: importing sklearn costs ~1 s

    test_fraction = check_open_fraction("test_fraction", test_fraction)
    if not isinstance(flatten, bool):
        raise fail("flatten", flatten, "True or False")
    bunch = load_digits()
    x = torch.from_numpy(bunch.images).to(torch.float32).div_(16.0)
    x = x.reshape(x.shape[0], 64) if flatten else x.unsqueeze(1)
    everything = Dataset(x, torch.from_numpy(bunch.target).to(torch.int64),
                         DIGITS_NUM_CLASSES, "digits")
    train, test = split_indices(everything.y, fraction=test_fraction, seed=seed)
    return Splits(train=everything.subset(train), val=None, test=everything.subset(test))
