"""Per-class budgets: exact totals, caps, minimums, largest remainder."""

import itertools

import numpy as np
import pytest

from adacore.selection import budget_from_fraction, per_class_budgets


def labels_of(sizes):
    return np.repeat(np.arange(len(sizes)), sizes)


@pytest.mark.parametrize("sizes", [[100, 10, 1, 3], [5, 5, 5], [1000, 1], [7, 3, 9, 2, 40]])
@pytest.mark.parametrize("mode", ["proportional", "equal"])
def test_totals_caps_and_minimums(sizes, mode):
    labels = labels_of(sizes)
    for k in range(1, sum(sizes) + 1):
        budgets = per_class_budgets(labels, k, mode)
        values = np.array(list(budgets.values()))
        assert values.sum() == max(k, len(sizes))
        assert np.all(values >= 1) and np.all(values <= sizes)


def test_proportional_is_largest_remainder_when_no_minimum_binds():
    sizes = np.array([50, 30, 20])
    labels = labels_of(sizes)
    for k in range(3, 101):
        budgets = np.array(list(per_class_budgets(labels, k).values()))
        quotas = k * sizes / sizes.sum()
        assert np.all(np.abs(budgets - quotas) < 1)
        # largest remainder maximises fidelity: no single move gets closer to the quotas
        for a, b in itertools.permutations(range(3), 2):
            moved = budgets.copy()
            moved[a] -= 1
            moved[b] += 1
            assert np.abs(moved - quotas).sum() >= np.abs(budgets - quotas).sum() - 1e-12


def test_equal_shares_and_water_filling():
    labels = labels_of([100, 10, 1, 3])
    assert per_class_budgets(labels, 40, "equal") == {0: 26, 1: 10, 2: 1, 3: 3}
    assert per_class_budgets(labels_of([10, 10, 10]), 7, "equal") == {0: 3, 1: 2, 2: 2}


def test_budget_from_fraction_rounds_and_validates():
    assert budget_from_fraction(0.01, 50000) == 500
    assert budget_from_fraction(0.015, 100) == 2   # 1.5 rounds up
    assert budget_from_fraction(1e-9, 100) == 1
    for bad in (0, -0.1, 1.5, float("nan"), "0.1", True):
        with pytest.raises(ValueError, match="fraction"):
            budget_from_fraction(bad, 100)


def test_labels_need_not_be_contiguous():
    labels = np.array([7, 7, 7, -2, -2, 40])
    assert per_class_budgets(labels, 3) == {-2: 1, 7: 1, 40: 1}
