"""GLISTER: picks against a from-scratch Taylor-gain reference, budgets, sampling, inputs."""

import math

import numpy as np
import pytest
import torch

from adacore.selection.budgets import budget_from_fraction, per_class_budgets
from adacore.selection.per_class import class_seed
from adacore.strategies.base import get_strategy
from adacore.strategies.glister import Glister
from adacore.validation import InputError


def problem(seed=0, n=90, m=25, p=5, classes=3):
    rng = np.random.default_rng(seed)
    grads = rng.standard_normal((n, p)).astype(np.float32)
    labels = rng.integers(0, classes, n)
    val_grads = (rng.standard_normal((m, p)) + 0.3).astype(np.float32)
    val_diag = (rng.random((m, p)) * 0.25).astype(np.float32)
    return grads, labels, val_grads, val_diag


def brute_force(grads, val_grads, val_diag, eta, lam, k):
    """Greedy on the Taylor gain, recomputing the validation gradient from scratch."""
    grads = grads.astype(np.float64)
    v0 = val_grads.astype(np.float64).sum(axis=0)
    diag = 0.0 if val_diag is None else val_diag.astype(np.float64).sum(axis=0)
    picked, gains = [], []
    for _ in range(k):
        step = grads[picked].sum(axis=0)                 # sum of the gradients stepped on
        v = v0 - eta * diag * step                       # grad L_val at theta - eta * step
        scores = eta * grads @ v - lam * grads @ step
        scores[picked] = -np.inf
        j = int(np.argmax(scores))
        picked.append(j)
        gains.append(scores[j])
    return np.array(picked), np.array(gains)


def reference(grads, labels, val_grads, val_diag, fraction, eta, lam, per_class=True,
              mode="proportional"):
    if not per_class:
        k = budget_from_fraction(fraction, labels.shape[0])
        return brute_force(grads, val_grads, val_diag, eta, lam, k)
    indices, gains = [], []
    for label, k in per_class_budgets(labels, budget_from_fraction(fraction, labels.shape[0]),
                                      mode).items():
        members = np.flatnonzero(labels == label)
        order, class_gains = brute_force(grads[members], val_grads, val_diag, eta, lam, k)
        indices.append(members[order])
        gains.append(class_gains)
    return np.concatenate(indices), np.concatenate(gains)


@pytest.mark.parametrize("with_hessian", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.3])
@pytest.mark.parametrize("per_class", [True, False])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_picks_and_gains_match_from_scratch_taylor_greedy(with_hessian, lam, per_class, seed):
    grads, labels, val_grads, val_diag = problem(seed)
    diag = val_diag if with_hessian else None
    eta = 0.5
    coreset = Glister(0.2, eta=eta, lam=lam, per_class=per_class).select(
        grads, labels, val_grads=val_grads, val_hessian_diag=diag)
    indices, gains = reference(grads, labels, val_grads, diag, 0.2, eta, lam, per_class)
    np.testing.assert_array_equal(coreset.indices, indices)
    np.testing.assert_allclose(coreset.gains, gains, rtol=1e-4, atol=1e-4)


def test_validation_gradient_update_changes_the_picks():
    changed = 0
    for seed in range(5):
        grads, labels, val_grads, val_diag = problem(seed)
        first = Glister(0.2, eta=0.5).select(grads, labels, val_grads=val_grads)
        second = Glister(0.2, eta=0.5).select(grads, labels, val_grads=val_grads,
                                              val_hessian_diag=val_diag)
        changed += not np.array_equal(first.indices, second.indices)
        assert second.metadata["validation_update"] == "hessian_diag"
        assert first.metadata["validation_update"] == "first_order"
    assert changed >= 3


@pytest.mark.parametrize("per_class", [True, False])
def test_first_order_greedy_is_top_k_of_alignment(per_class):
    grads, labels, val_grads, _ = problem(3, n=200)
    v = val_grads.astype(np.float64).sum(axis=0)
    alignment = grads.astype(np.float64) @ v
    coreset = Glister(0.1, eta=0.01, per_class=per_class).select(grads, labels,
                                                                 val_grads=val_grads)
    if per_class:
        budgets = per_class_budgets(labels, budget_from_fraction(0.1, 200))
        expected = np.concatenate([
            members[np.argsort(-alignment[members], kind="stable")[:k]]
            for members, k in ((np.flatnonzero(labels == c), k) for c, k in budgets.items())])
    else:
        expected = np.argsort(-alignment, kind="stable")[:20]
    np.testing.assert_array_equal(coreset.indices, expected)
    np.testing.assert_allclose(coreset.gains, 0.01 * alignment[expected], rtol=1e-5, atol=1e-6)


def test_first_order_picks_do_not_depend_on_eta_and_gains_scale():
    grads, labels, val_grads, _ = problem(4)
    small = Glister(0.2, eta=0.01).select(grads, labels, val_grads=val_grads)
    large = Glister(0.2, eta=2.0).select(grads, labels, val_grads=val_grads)
    np.testing.assert_array_equal(small.indices, large.indices)
    np.testing.assert_allclose(large.gains, 200 * small.gains, rtol=1e-5)


def test_ties_go_to_the_lowest_index_and_duplicates_are_penalised():
    base = np.array([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]], dtype=np.float32)
    grads = np.concatenate([base, base])                 # rows 3..5 duplicate rows 0..2
    labels = np.zeros(6, dtype=int)
    val_grads = np.array([[2.0, 1.0]], dtype=np.float32)
    plain = Glister(0.5, eta=1.0).select(grads, labels, val_grads=val_grads)
    np.testing.assert_array_equal(plain.indices, [0, 3, 2])   # 2 = 2 > 1.5
    curved = Glister(0.5, eta=1.0).select(grads, labels, val_grads=val_grads,
                                          val_hessian_diag=np.array([[1.5, 0.0]]))
    # after row 0 the first coordinate of v drops to 0.5: row 1 (gain 1) beats 3 (0.5)
    np.testing.assert_array_equal(curved.indices, [0, 1, 4])


def test_weights_are_all_one_and_budgets_exact():
    grads, labels, val_grads, val_diag = problem(5, n=301, classes=4)
    labels[:10] = 7                                      # a small class
    for mode in ("proportional", "equal"):
        coreset = Glister(0.1, budget=mode).select(grads, labels, val_grads=val_grads,
                                                   val_hessian_diag=val_diag)
        budgets = per_class_budgets(labels, budget_from_fraction(0.1, 301), mode)
        assert coreset.budgets == budgets
        assert coreset.weights.dtype == np.float64
        np.testing.assert_array_equal(coreset.weights, np.ones(len(coreset)))
        assert np.unique(coreset.indices).shape[0] == len(coreset)
        start = 0
        for label, k in budgets.items():                # class blocks, in label order
            assert np.all(labels[coreset.indices[start:start + k]] == label)
            start += k
        assert start == len(coreset)
        assert coreset.method == "glister" and coreset.round == 1


def test_global_greedy_uses_the_total_budget():
    grads, labels, val_grads, _ = problem(6, n=101)
    coreset = Glister(0.13, per_class=False).select(grads, labels, val_grads=val_grads)
    assert len(coreset) == budget_from_fraction(0.13, 101)
    classes, counts = np.unique(labels[coreset.indices], return_counts=True)
    assert coreset.budgets == dict(zip(classes.tolist(), counts.tolist()))


def stochastic_reference(grads, labels, val_grads, val_diag, fraction, eta, epsilon, seed,
                         round_index):
    """The documented sampling protocol, then the best from-scratch gain in the sample."""
    v0 = val_grads.astype(np.float64).sum(axis=0)
    diag = val_diag.astype(np.float64).sum(axis=0)
    out = []
    for label, k in per_class_budgets(labels, budget_from_fraction(fraction, labels.shape[0])
                                      ).items():
        members = np.flatnonzero(labels == label)
        g = grads[members].astype(np.float64)
        rng = class_seed(seed, label, round_index)
        size = max(1, math.ceil(members.shape[0] / k * math.log(1 / epsilon)))
        open_mask = np.ones(members.shape[0], dtype=bool)
        picked = []
        for _ in range(k):
            candidates = np.flatnonzero(open_mask)
            if size < candidates.shape[0]:
                candidates = np.sort(rng.choice(candidates, size, replace=False))
            v = v0 - eta * diag * g[picked].sum(axis=0)
            j = int(candidates[np.argmax(eta * g[candidates] @ v)])
            picked.append(j)
            open_mask[j] = False
        out.append(members[picked])
    return np.concatenate(out)


def test_stochastic_greedy_is_seeded_and_best_within_its_sample():
    grads, labels, val_grads, val_diag = problem(7, n=240)
    inputs = dict(val_grads=val_grads, val_hessian_diag=val_diag)
    strategy = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3)
    first = strategy.select(grads, labels, **inputs)
    np.testing.assert_array_equal(
        first.indices, stochastic_reference(grads, labels, val_grads, val_diag, 0.1, 0.5, 0.1,
                                            3, 1))
    again = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3).select(
        grads, labels, **inputs)
    np.testing.assert_array_equal(first.indices, again.indices)
    other_seed = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=4).select(
        grads, labels, **inputs)
    naive = Glister(0.1, eta=0.5).select(grads, labels, **inputs)
    assert not np.array_equal(first.indices, other_seed.indices)
    assert not np.array_equal(first.indices, naive.indices)
    # the second round draws anew, and a resumed strategy draws what an unbroken one would
    state = strategy.state_dict()
    second = strategy.select(grads, labels, **inputs)
    np.testing.assert_array_equal(
        second.indices, stochastic_reference(grads, labels, val_grads, val_diag, 0.1, 0.5, 0.1,
                                             3, 2))
    resumed = Glister(0.1, eta=0.5, greedy="stochastic", epsilon=0.1, seed=3)
    resumed.load_state_dict(state)
    np.testing.assert_array_equal(resumed.select(grads, labels, **inputs).indices,
                                  second.indices)


def test_torch_inputs_and_registry():
    grads, labels, val_grads, val_diag = problem(8)
    from_numpy = Glister(0.2).select(grads, labels, val_grads=val_grads,
                                     val_hessian_diag=val_diag)
    strategy = get_strategy("glister", fraction=0.2)
    assert isinstance(strategy, Glister) and strategy.requires == ("grads", "val_grads")
    from_torch = strategy.select(torch.from_numpy(grads), torch.from_numpy(labels),
                                 val_grads=torch.from_numpy(val_grads),
                                 val_hessian_diag=torch.from_numpy(val_diag).double())
    np.testing.assert_array_equal(from_numpy.indices, from_torch.indices)


@pytest.mark.parametrize("options, match", [
    (dict(eta=0.0), "eta"), (dict(eta=-1.0), "eta"), (dict(eta=float("nan")), "eta"),
    (dict(lam=-0.1), "lam"), (dict(greedy="lazy"), "greedy.*'naive'"),
    (dict(epsilon=0.0), "epsilon"), (dict(epsilon=1.0), "epsilon"),
    (dict(per_class="yes"), "per_class"), (dict(budget="even"), "budget"),
])
def test_bad_options(options, match):
    with pytest.raises(InputError, match=match):
        Glister(0.1, **options)


def test_bad_inputs_name_the_argument_and_do_not_advance_the_round():
    grads, labels, val_grads, val_diag = problem(9)
    strategy = Glister(0.1)
    nan_val = val_grads.copy()
    nan_val[2, 1] = np.nan
    nan_diag = val_diag.copy()
    nan_diag[0, 0] = np.inf
    cases = [
        (dict(), "val_grads: GLISTER needs"),
        (dict(val_grads=None), "val_grads"),
        (dict(val_grads=nan_val), "val_grads: 1 entries are NaN"),
        (dict(val_grads=val_grads[:, :3]), "val_grads: got width 3, expected 5"),
        (dict(val_grads=val_grads[0]), "val_grads.*2-D"),
        (dict(val_grads=val_grads, val_hessian_diag=val_diag[:, :4]), "val_hessian_diag"),
        (dict(val_grads=val_grads, val_hessian_diag=nan_diag), "val_hessian_diag: 1 entries"),
        (dict(val_grads=val_grads, hessian_diag=val_diag), "unexpected inputs"),
    ]
    for inputs, match in cases:
        with pytest.raises(InputError, match=match):
            strategy.select(grads, labels, **inputs)
    with pytest.raises(InputError, match="grads"):
        strategy.select(None, labels, val_grads=val_grads)
    with pytest.raises(InputError, match="labels"):
        strategy.select(grads, labels[:-1], val_grads=val_grads)
    assert strategy.round_ == 0


def test_stochastic_ties_go_to_the_lowest_sampled_index():
    labels = np.zeros(60, dtype=int)
    grads = np.ones((60, 3), dtype=np.float32)           # every gain ties
    val_grads = np.ones((4, 3), dtype=np.float32)
    zero_diag = np.zeros_like(val_grads)
    coreset = Glister(0.1, greedy="stochastic", epsilon=0.5, seed=1).select(
        grads, labels, val_grads=val_grads)
    expected = stochastic_reference(grads, labels, val_grads, zero_diag, 0.1, 0.01, 0.5, 1, 1)
    np.testing.assert_array_equal(coreset.indices, expected)
    assert not np.array_equal(coreset.indices, np.arange(6))   # it did sample
