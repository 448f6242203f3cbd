"""How a total budget k is split across classes."""

from __future__ import annotations

import math

import numpy as np

from adacore.validation import check_choice, check_fraction, check_int

BUDGET_MODES = ("proportional", "equal")


def budget_from_fraction(fraction: float, n: int) -> int:
    """k = round(fraction * n) (halves round up), at least 1."""
    fraction = check_fraction("fraction", fraction)
    return max(1, math.floor(fraction * n + 0.5))


def per_class_budgets(labels: np.ndarray, k: int, mode: str = "proportional") -> dict[int, int]:
    """Split ``k`` picks across the classes present in ``labels``.

    ``proportional``: class c gets its quota k * n_c / n rounded by the largest-remainder
    method (ties to the lower label); any class left at 0 then gets 1, taken from the
    class most above its quota. ``equal``: k / C each, a class smaller than its share
    gives all it has and the rest is shared among the others (ties to larger classes,
    then lower labels). No class gets more than it holds, every class at least 1, so
    the total is max(k, number of classes).

    Parameters
    ----------
    labels : ndarray of int, shape (n,)
    k : int
        Total budget, 1 <= k <= n.
    mode : {"proportional", "equal"}

    Returns
    -------
    dict
        label -> budget, in increasing label order.
    """
    check_choice("budget", mode, BUDGET_MODES)
    classes, sizes = np.unique(labels, return_counts=True)
    n = int(sizes.sum())
    k = check_int("k", k, 1, n)
    k = max(k, classes.shape[0])
    if mode == "proportional":
        budgets = _largest_remainder(sizes, k)
    else:
        budgets = _water_fill(sizes, k)
    return {int(label): int(b) for label, b in zip(classes, budgets)}


def _largest_remainder(sizes: np.ndarray, k: int) -> np.ndarray:
    quotas = k * sizes / sizes.sum()
    budgets = np.floor(quotas).astype(np.int64)
    remainders = quotas - budgets
    # stable sort on -remainder: ties go to the lower label
    extra = np.argsort(-remainders, kind="stable")[: k - int(budgets.sum())]
    budgets[extra] += 1
    for empty in np.flatnonzero(budgets == 0):
        surplus = np.where(budgets > 1, budgets - quotas, -np.inf)
        donor = int(np.argmax(surplus))
        budgets[donor] -= 1
        budgets[empty] = 1
    return budgets


def _water_fill(sizes: np.ndarray, k: int) -> np.ndarray:
    budgets = np.zeros_like(sizes)
    remaining = k
    open_classes = np.ones(sizes.shape[0], dtype=bool)
    while remaining > 0:
        active = np.flatnonzero(open_classes)
        share, leftover = divmod(remaining, active.shape[0])
        room = sizes[active] - budgets[active]
        if share > 0 and np.any(room <= share):
            full = active[room <= share]          # these take all they have
            budgets[full] = sizes[full]
            open_classes[full] = False
            remaining = k - int(budgets.sum())
            continue
        budgets[active] += share
        # leftover: one more each to the largest classes, then lower labels
        order = active[np.lexsort((active, -sizes[active]))]
        budgets[order[:leftover]] += 1
        remaining = 0
    return budgets
