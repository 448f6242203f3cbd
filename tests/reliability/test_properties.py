"""Property tests of the selection engine and the strategies, for any valid input.

Every test states a promise of the public contract (DESIGN sections 2 and 4) and checks
it on inputs hypothesis draws: small float32 arrays from a bounded range, 1-4 classes
with arbitrary integer labels, any fraction in (0, 1]. The strategies are kept simple
(sizes, then elements) so that a failure shrinks to a handful of points.
"""

from __future__ import annotations

import io
import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial.distance import cdist

import adacore
from adacore.selection import budget_from_fraction, per_class_budgets

RELIABILITY = settings.get_profile("reliability")

VALUES = st.floats(-100.0, 100.0, width=32, allow_nan=False, allow_infinity=False)
CURVATURE = st.floats(-10.0, 10.0, width=32, allow_nan=False, allow_infinity=False)
FRACTIONS = st.floats(0.0, 1.0, exclude_min=True, allow_nan=False)
OPTIMIZERS = ("naive", "lazy", "stochastic")
STRATEGY_NAMES = ("adacore", "craig", "random", "gradmatch", "rs2")
PER_CLASS = ("adacore", "craig", "random", "gradmatch")


@st.composite
def point_sets(draw, max_n: int = 60, max_d: int = 6) -> np.ndarray:
    n = draw(st.integers(1, max_n))
    d = draw(st.integers(1, max_d))
    return draw(hnp.arrays(np.float32, (n, d), elements=VALUES))


@st.composite
def problems(draw, max_n: int = 60, max_d: int = 6, max_classes: int = 4):
    """(vectors, labels, hessian_diag): one selection problem."""
    X = draw(point_sets(max_n, max_d))
    classes = draw(st.lists(st.integers(-1000, 1000), min_size=1, max_size=max_classes,
                            unique=True))
    labels = draw(hnp.arrays(np.int64, X.shape[0], elements=st.sampled_from(classes)))
    hessian = draw(hnp.arrays(np.float32, X.shape, elements=CURVATURE))
    return X, labels, hessian


def select(name: str, X, labels, hessian, fraction: float, **options) -> adacore.Coreset:
    strategy = adacore.get_strategy(name, fraction=fraction, **options)
    return run_round(strategy, name, X, labels, hessian)


def run_round(strategy, name, X, labels, hessian) -> adacore.Coreset:
    if name == "adacore":
        return strategy.select(X, labels, hessian_diag=hessian)
    if name == "infobatch":   # prunes by loss: scores drawn per round, some unseen (inf)
        scores = np.abs(hessian.astype(np.float64)).sum(axis=1)
        scores[::5] = np.inf
        return strategy.select(None, labels, losses=scores)
    return strategy.select(X, labels)


def class_counts(labels: np.ndarray) -> dict[int, int]:
    classes, counts = np.unique(labels, return_counts=True)
    return {int(c): int(m) for c, m in zip(classes, counts)}


def assert_valid_indices(coreset: adacore.Coreset, n: int) -> None:
    indices = coreset.indices
    assert indices.dtype == np.int64 and indices.ndim == 1
    assert np.unique(indices).shape[0] == indices.shape[0], "repeated indices"
    assert np.all((0 <= indices) & (indices < n)), "index out of range"
    assert coreset.weights.dtype == np.float64 and coreset.weights.shape == indices.shape
    assert coreset.gains.dtype == np.float64 and coreset.gains.shape == indices.shape
    assert np.all(np.isfinite(coreset.weights)) and np.all(coreset.weights > 0)


def assert_same(a: adacore.Coreset, b: adacore.Coreset) -> None:
    """Bit-for-bit equal selections (NaN gains compare equal)."""
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.weights, b.weights)
    np.testing.assert_array_equal(a.gains, b.gains)
    assert a.budgets == b.budgets


def objective(X: np.ndarray, subset) -> float:
    """F(S) in float64 from SciPy's distances, independent of the engine."""
    distances = cdist(X, X)
    similarity = distances.max() - distances
    return float(similarity[:, list(subset)].max(axis=1).sum())


# ---------------------------------------------------------------- the engine


@RELIABILITY
@given(X=point_sets(), data=st.data(), optimizer=st.sampled_from(OPTIMIZERS))
def test_facility_location_is_a_valid_coreset(X, data, optimizer):
    n = X.shape[0]
    k = data.draw(st.integers(1, n), label="k")
    coreset = adacore.facility_location(X, k, optimizer=optimizer)
    assert len(coreset) == k
    assert_valid_indices(coreset, n)
    # cluster sizes: whole numbers, each pick in its own cluster, covering all n points
    assert np.all(coreset.weights >= 1) and np.all(coreset.weights == np.round(coreset.weights))
    assert coreset.weights.sum() == n
    assert np.all(np.isfinite(coreset.gains)) and np.all(coreset.gains >= 0)


@RELIABILITY
@given(X=point_sets(), data=st.data())
def test_lazy_equals_naive(X, data):
    k = data.draw(st.integers(1, X.shape[0]), label="k")
    naive = adacore.facility_location(X, k, optimizer="naive")
    lazy = adacore.facility_location(X, k, optimizer="lazy")
    np.testing.assert_array_equal(lazy.indices, naive.indices)
    np.testing.assert_array_equal(lazy.gains, naive.gains)
    np.testing.assert_array_equal(lazy.weights, naive.weights)


@RELIABILITY
@given(X=point_sets(), data=st.data())
def test_greedy_gains_sum_to_the_objective_and_never_increase(X, data):
    k = data.draw(st.integers(1, X.shape[0]), label="k")
    coreset = adacore.facility_location(X, k, optimizer="naive")
    value = objective(X.astype(np.float64), coreset.indices)
    scale = float(cdist(X, X).max()) * X.shape[0]
    # the engine runs in float32: allow its rounding, far below any real gap
    assert abs(coreset.gains.sum() - value) <= 1e-4 * scale + 1e-6
    assert np.all(np.diff(coreset.gains) <= 1e-4 * scale + 1e-6)


@RELIABILITY
@given(X=point_sets(max_n=9, max_d=3), data=st.data())
def test_greedy_is_within_1_minus_1_over_e_of_brute_force(X, data):
    n = X.shape[0]
    k = data.draw(st.integers(1, min(n, 3)), label="k")
    optimum = max(objective(X, s) for s in itertools.combinations(range(n), k))
    scale = float(cdist(X, X).max()) * n
    for optimizer in ("naive", "lazy"):
        chosen = adacore.facility_location(X, k, optimizer=optimizer)
        assert objective(X, chosen.indices) >= (1 - 1 / math.e) * optimum - 1e-4 * scale - 1e-6


@RELIABILITY
@given(X=point_sets(), data=st.data(), seed=st.integers(0, 2 ** 32 - 1))
def test_stochastic_is_deterministic_under_a_seed(X, data, seed):
    k = data.draw(st.integers(1, X.shape[0]), label="k")
    first = adacore.facility_location(X, k, optimizer="stochastic", seed=seed)
    again = adacore.facility_location(X, k, optimizer="stochastic", seed=seed)
    assert_same(first, again)
    assert_valid_indices(first, X.shape[0])


# ---------------------------------------------------------------- budgets


@RELIABILITY
@given(labels=hnp.arrays(np.int64, st.integers(1, 200), elements=st.integers(0, 5)),
       data=st.data(), mode=st.sampled_from(("proportional", "equal")))
def test_per_class_budgets_are_exact_and_capped(labels, data, mode):
    sizes = class_counts(labels)
    n = labels.shape[0]
    k = data.draw(st.integers(1, n), label="k")
    budgets = per_class_budgets(labels, k, mode)
    assert list(budgets) == sorted(sizes), "one budget per class, in label order"
    assert sum(budgets.values()) == max(k, len(sizes))
    for label, budget in budgets.items():
        assert 1 <= budget <= sizes[label], (label, budget, sizes[label])
    if mode == "proportional" and all(k * m / n >= 1 for m in sizes.values()):
        # largest remainder: every class within one of its exact quota
        for label, budget in budgets.items():
            assert abs(budget - k * sizes[label] / n) < 1
    if mode == "equal":
        # water filling: a class below its size is at most one below any other class
        top = max(budgets.values())
        for label, budget in budgets.items():
            assert budget == sizes[label] or budget >= top - 1


@RELIABILITY
@given(fraction=FRACTIONS, n=st.integers(1, 10 ** 6))
def test_budget_from_fraction_rounds_half_up_within_range(fraction, n):
    k = budget_from_fraction(fraction, n)
    assert 1 <= k <= n
    exact = fraction * n
    assert k == 1 or abs(k - exact) <= 0.5 + 1e-9


# ---------------------------------------------------------------- strategies


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS, budget=st.sampled_from(("proportional", "equal")))
def test_strategy_coreset_is_valid_with_exact_budgets(name, problem, fraction, budget):
    X, labels, hessian = problem
    n = X.shape[0]
    sizes = class_counts(labels)
    coreset = select(name, X, labels, hessian, fraction, budget=budget)
    assert_valid_indices(coreset, n)
    assert coreset.method == name and coreset.round == 1
    # the budgets a coreset reports are what it holds, class by class (GradMatch also
    # lists a class it took nothing from, with 0)
    assert {c: b for c, b in coreset.budgets.items() if b} == class_counts(labels[coreset.indices])
    assert sum(coreset.budgets.values()) == len(coreset)
    requested = per_class_budgets(labels, budget_from_fraction(fraction, n), budget)
    if name == "rs2":   # one pool, not per class: the total is exact
        k = budget_from_fraction(fraction, n)
        assert len(coreset) == k
        np.testing.assert_array_equal(coreset.weights, np.full(k, n / k))
    elif name == "gradmatch":
        assert_gradmatch_reports_its_shortfall(coreset, requested)
    else:
        assert coreset.budgets == requested
    if name in ("adacore", "craig", "random"):
        # the weights of each class's picks add up to the class's size
        for label, size in sizes.items():
            in_class = labels[coreset.indices] == label
            assert coreset.weights[in_class].sum() == pytest.approx(size, rel=1e-12)
    if name in ("adacore", "craig"):
        assert np.all(coreset.weights == np.round(coreset.weights))


def assert_gradmatch_reports_its_shortfall(coreset, requested):
    """GradMatch may select fewer than asked, never more, and says where and why."""
    meta = coreset.metadata
    assert meta["requested_budgets"] == requested
    assert meta["requested"] == sum(requested.values())
    stopped, dropped, filled = (meta["omp_stopped_early"], meta["zero_weight_dropped"],
                                meta["filled"])
    assert not filled, "the fill is off by default"
    for label, wanted in requested.items():
        held = coreset.budgets.get(label, 0)
        assert held <= wanted
        if meta["stop_reasons"][label] == "zero_target":    # nothing to match: drawn
            assert held == wanted == meta["zero_target"][label] and label not in stopped
            continue
        assert held == stopped.get(label, wanted) - dropped.get(label, 0), (label, meta)
        if meta["stop_reasons"][label] == "zero_weights":   # the ridge zeroed every pick
            assert held == 0 and meta["zero_weights"][label] == stopped.get(label, wanted)
            continue
        assert (label in stopped) == (meta["stop_reasons"][label] != "budget")


@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS)
def test_gradmatch_with_fill_meets_its_budgets(problem, fraction):
    X, labels, _ = problem
    coreset = adacore.GradMatch(fraction, fill=True).select(X, labels)
    assert_valid_indices(coreset, X.shape[0])
    requested = per_class_budgets(labels, budget_from_fraction(fraction, X.shape[0]))
    assert coreset.budgets == requested
    for label, wanted in requested.items():
        if label in coreset.metadata["zero_target"]:
            continue
        omp_kept = (coreset.metadata["omp_stopped_early"].get(label, wanted)
                    - coreset.metadata["zero_weight_dropped"].get(label, 0))
        assert coreset.metadata["filled"].get(label, 0) == wanted - omp_kept


def preconditioned(name, X, hessian) -> np.ndarray:
    """The vectors the first round solves on: g, or g / (|H| + eps) for AdaCore."""
    X = X.astype(np.float64)
    if name == "craig":
        return X
    return X / (np.abs(hessian.astype(np.float64)) + 1e-4)


@pytest.mark.parametrize("name", ("craig", "adacore"))
@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS)
def test_gradient_error_is_within_the_facility_location_bound(name, problem, fraction):
    """||sum_i u_i - sum_j w_j u_j|| <= sum_i min_{j in S, same class} ||u_i - u_j||."""
    X, labels, hessian = problem
    coreset = select(name, X, labels, hessian, fraction)
    U = preconditioned(name, X, hessian)
    error = np.linalg.norm(U.sum(axis=0) - coreset.weights @ U[coreset.indices])
    bound, slack = 0.0, 0.0
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        picks = coreset.indices[labels[coreset.indices] == label]
        bound += cdist(U[members], U[picks]).min(axis=1).sum()
        # float32 distances can send a point to a pick a rounding error further away
        slack += 1e-3 * members.shape[0] * float(np.abs(U[members]).max() * U.shape[1])
    assert error <= bound + slack + 1e-9
    # the reported relative error is this error
    total = np.linalg.norm(U.sum(axis=0))
    reported = coreset.metadata.get("preconditioned_gradient_error",
                                    coreset.metadata["gradient_error"])
    if total > 1e-3 * slack + 1e-6:
        assert reported == pytest.approx(error / total, rel=1e-3, abs=1e-4 * slack / total)


@pytest.mark.parametrize("name", STRATEGY_NAMES)
@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS, seed=st.integers(0, 2 ** 31 - 1))
def test_same_seed_same_coreset(name, problem, fraction, seed):
    X, labels, hessian = problem
    options = {"seed": seed}
    if name in ("adacore", "craig"):
        options["optimizer"] = "stochastic"   # the one facility optimizer that draws
    first = select(name, X, labels, hessian, fraction, **options)
    again = select(name, X, labels, hessian, fraction, **options)
    assert_same(first, again)


def through_checkpoint(state: dict) -> dict:
    """A state dict as a resumed run sees it: torch.save, then a weights-only load."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("name", (*STRATEGY_NAMES, "infobatch"))
@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS, seed=st.integers(0, 2 ** 31 - 1),
       rounds=st.integers(2, 4), data=st.data())
def test_resumed_strategy_selects_what_an_unbroken_one_would(name, problem, fraction, seed,
                                                             rounds, data):
    X, labels, hessian = problem
    options = {"fraction": fraction, "seed": seed}
    if name in ("adacore", "craig"):
        options["optimizer"] = "stochastic"
    if name == "infobatch":   # round 4 of 4 anneals: rounds 1-3 prune
        options["epochs"] = 4
    hessians = [hessian] + [data.draw(hnp.arrays(np.float32, X.shape, elements=CURVATURE),
                                      label=f"hessian round {r}") for r in range(2, rounds + 1)]
    unbroken = adacore.get_strategy(name, **options)
    expected = [run_round(unbroken, name, X, labels, h) for h in hessians]
    broken_at = data.draw(st.integers(1, rounds - 1), label="resume after round")
    first = adacore.get_strategy(name, **options)
    for h in hessians[:broken_at]:
        run_round(first, name, X, labels, h)
    resumed = adacore.get_strategy(name, **options)
    resumed.load_state_dict(through_checkpoint(first.state_dict()))
    for h, want in zip(hessians[broken_at:], expected[broken_at:]):
        got = run_round(resumed, name, X, labels, h)
        assert got.round == want.round
        assert_same(got, want)


@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS)
def test_craig_equals_adacore_with_unit_curvature(problem, fraction):
    """|H| + eps = 1 everywhere divides every vector by exactly 1: CRAIG's problem.

    (beta2 = 0 keeps Hbar = sqrt(H^2) = |H| exact in float32.)
    """
    X, labels, _ = problem
    halves = np.full(X.shape, -0.5, dtype=np.float32)
    ada = adacore.AdaCore(fraction, beta2=0.0, eps=0.5).select(X, labels, hessian_diag=halves)
    craig = adacore.Craig(fraction).select(X, labels)
    np.testing.assert_array_equal(ada.indices, craig.indices)
    np.testing.assert_array_equal(ada.weights, craig.weights)


@RELIABILITY
@given(problem=problems(), fraction=FRACTIONS)
def test_selection_does_not_modify_its_inputs(problem, fraction):
    X, labels, hessian = problem
    copies = X.copy(), labels.copy(), hessian.copy()
    for name in STRATEGY_NAMES:
        select(name, X, labels, hessian, fraction)
    for original, copy in zip((X, labels, hessian), copies):
        np.testing.assert_array_equal(original, copy)


def test_failing_examples_shrink_to_the_smallest_case():
    """The strategies shrink well: a planted failure (a class of 3 or more members,
    vectors of 4 or more columns) comes back as 3 zero rows of 4 columns in class 0."""
    from hypothesis import find

    def planted_failure(problem) -> bool:
        X, labels, _ = problem
        return X.shape[1] >= 4 and np.unique(labels, return_counts=True)[1].max() >= 3

    X, labels, hessian = find(problems(), planted_failure,
                              settings=settings(max_examples=2000, database=None))
    assert X.shape == (3, 4) and not X.any() and not hessian.any()
    assert labels.tolist() == [0, 0, 0]
