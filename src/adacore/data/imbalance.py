"""Long-tailed versions of a balanced training set (exponential profile)."""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from adacore.data.records import Dataset
from adacore.data.splits import check_seed
from adacore.validation import fail


def long_tail_counts(n_max: int, num_classes: int, ratio: float) -> list[int]:
    """Examples kept per class: ``floor(n_max * ratio ** (-c / (C - 1)))``, at least 1.

    Class 0 keeps ``n_max``, class ``C - 1`` keeps ``n_max / ratio`` (rounded down).

    Parameters
    ----------
    n_max : int
        Size of the largest (head) class.
    num_classes : int
        Number of classes ``C``.
    ratio : float
        Imbalance ratio, largest / smallest class, >= 1.

    Returns
    -------
    list of int
        Target size of each class, in class order.
    """
    if num_classes == 1:
        return [n_max]
    # The tiny offset keeps exact products (5000 / 100 = 50) from flooring to 49.
    return [max(1, math.floor(n_max * ratio ** (-c / (num_classes - 1)) + 1e-9))
            for c in range(num_classes)]


def make_imbalanced(dataset: Dataset, *, ratio: float, seed: int) -> Dataset:
    """Subsample ``dataset`` to an exponential long-tail class profile.

    Class ``c`` keeps ``min(count_c, floor(n_max * ratio ** (-c / (C - 1))))`` examples,
    ``n_max`` being the size of the largest class and ``C = dataset.num_classes``; so on a
    balanced set the head class keeps everything and the tail class ``n_max / ratio``.
    Apply it to the training split only; the test set stays balanced.

    Parameters
    ----------
    dataset : Dataset
        The (usually balanced) training set.
    ratio : float
        Imbalance ratio, a finite number >= 1 (1 keeps everything).
    seed : int
        Seed of which examples each class keeps.

    Returns
    -------
    Dataset
        The kept examples in their original order, named ``"<name>-imbalanced-<ratio>"``.
    """
    if not isinstance(dataset, Dataset):
        raise fail("dataset", dataset, "an adacore.data.Dataset")
    if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) \
            or not math.isfinite(ratio) or ratio < 1:
        raise fail("ratio", ratio, "a finite number >= 1")
    rng = np.random.default_rng(check_seed("seed", seed))
    y = dataset.y.cpu().numpy()
    counts = np.bincount(y, minlength=dataset.num_classes)
    targets = long_tail_counts(int(counts.max()), dataset.num_classes, float(ratio))
    kept = [rng.choice(np.flatnonzero(y == c), size=min(int(counts[c]), target),
                       replace=False) for c, target in enumerate(targets)]
    indices = np.sort(np.concatenate(kept))
    return dataset.subset(torch.from_numpy(indices),
                          name=f"{dataset.name}-imbalanced-{float(ratio):g}")
