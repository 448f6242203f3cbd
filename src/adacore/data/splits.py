"""Held-out splits carved from a dataset: stratified by class, reproducible by seed."""

from __future__ import annotations

import numbers

import numpy as np
import torch

from adacore.data.records import Dataset
from adacore.validation import InputError, fail


def check_seed(name: str, seed) -> int:
    """A non-negative integer seed."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise fail(name, seed, "a non-negative int")
    return int(seed)


def check_open_fraction(name: str, fraction) -> float:
    """A fraction strictly between 0 and 1."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
            or not 0.0 < float(fraction) < 1.0:
        raise fail(name, fraction, "a number in (0, 1)")
    return float(fraction)


def split_indices(labels: torch.Tensor, *, fraction: float, seed: int,
                  stratified: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Partition ``range(n)`` into a kept part and a held-out part of ``round(fraction*n)``.

    Stratified: every class gives up ``fraction`` of its examples, the rounding shared out
    by largest remainder so the total is exact; otherwise a uniform random subset.

    Parameters
    ----------
    labels : torch.Tensor
        int64 labels ``(n,)``.
    fraction : float
        Share of examples held out, in (0, 1).
    seed : int
        Seed of the random choice; the same seed gives the same partition.
    stratified : bool, default True
        Keep class proportions in both parts.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Sorted int64 indices of the kept and the held-out examples; together they
        cover ``range(n)`` exactly once.
    """
    fraction = check_open_fraction("fraction", fraction)
    seed = check_seed("seed", seed)
    if not isinstance(stratified, bool):
        raise fail("stratified", stratified, "True or False")
    y = labels.detach().cpu().numpy()
    n = y.shape[0]
    n_held = int(round(fraction * n))
    if not 1 <= n_held <= n - 1:
        raise InputError(f"fraction: {fraction} of {n} examples holds out {n_held}, "
                         f"expected both parts non-empty")
    rng = np.random.default_rng(seed)
    if not stratified:
        held = rng.permutation(n)[:n_held]
    else:
        classes, counts = np.unique(y, return_counts=True)
        quotas = fraction * counts
        per_class = np.floor(quotas).astype(np.int64)
        # Largest remainder, ties to the smaller class label (stable sort).
        order = np.argsort(-(quotas - per_class), kind="stable")
        per_class[order[: n_held - int(per_class.sum())]] += 1
        held = np.concatenate([
            rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, per_class)])
    mask = np.zeros(n, dtype=bool)
    mask[held] = True
    return (torch.from_numpy(np.flatnonzero(~mask)), torch.from_numpy(np.flatnonzero(mask)))


def train_val_split(dataset: Dataset, *, val_fraction: float, seed: int,
                    stratified: bool = True) -> tuple[Dataset, Dataset]:
    """Carve a validation set out of a training set.

    Parameters
    ----------
    dataset : Dataset
        The training set.
    val_fraction : float
        Share of it moved to validation, in (0, 1); ``round(val_fraction * n)`` examples.
    seed : int
        Seed of the choice.
    stratified : bool, default True
        Keep class proportions in both parts (see :func:`split_indices`).

    Returns
    -------
    (Dataset, Dataset)
        The remaining training set and the validation set, each in the original order.
    """
    if not isinstance(dataset, Dataset):
        raise fail("dataset", dataset, "an adacore.data.Dataset")
    val_fraction = check_open_fraction("val_fraction", val_fraction)
    keep, held = split_indices(dataset.y, fraction=val_fraction, seed=seed,
                               stratified=stratified)
    return dataset.subset(keep), dataset.subset(held)
