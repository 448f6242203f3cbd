"""GradMatch: the non-negative OMP engine against brute force, and the per-class strategy."""

import itertools

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

import adacore.strategies.gradmatch  # noqa: F401  (registers "gradmatch")
from adacore import InputError, get_strategy
from adacore.selection.omp import nonnegative_omp
from adacore.strategies.gradmatch import GradMatch


def objective(A, b, w, lam):
    residual = b - A @ w
    return float(residual @ residual + lam * w @ w)


def brute_force_ridge_nnls(A, b, lam):
    """min_{w >= 0} ||A w - b||^2 + lam ||w||^2 by enumerating every active set."""
    m = A.shape[1]
    best_w, best_value = np.zeros(m), objective(A, b, np.zeros(m), lam)
    for size in range(1, m + 1):
        for free in itertools.combinations(range(m), size):
            cols = A[:, free]
            w_free = np.linalg.solve(cols.T @ cols + lam * np.eye(size), cols.T @ b)
            if np.any(w_free <= 0):
                continue
            w = np.zeros(m)
            w[list(free)] = w_free
            value = objective(A, b, w, lam)
            if value < best_value:
                best_w, best_value = w, value
    return best_w


# --- the engine -------------------------------------------------------------------------

@pytest.mark.parametrize("lam", [0.0, 0.5, 5.0])
@pytest.mark.parametrize("seed", range(4))
def test_residual_never_increases_and_is_the_regularised_objective(seed, lam):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((8, 40)) * rng.exponential(size=40)
    b = rng.standard_normal(8) + A[:, :5].sum(axis=1)
    support, weights, residuals = nonnegative_omp(A, b, 30, lam=lam, tol=0.0)
    assert residuals.shape == (support.shape[0] + 1,)
    assert residuals[0] == pytest.approx(np.linalg.norm(b), rel=1e-12)
    assert np.all(np.diff(residuals) <= 1e-10 * residuals[0])
    assert residuals[-1] == pytest.approx(
        np.sqrt(objective(A[:, support], b, weights, lam)), rel=1e-9)
    assert support.shape[0] >= 2 and residuals[-1] < residuals[0]
    if lam == 0.0:   # then it is the plain data residual
        assert residuals[-1] == pytest.approx(np.linalg.norm(b - A[:, support] @ weights),
                                              rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("s", [1, 3, 5, 8])
@pytest.mark.parametrize("seed", range(3))
def test_exact_recovery_of_a_sparse_nonnegative_combination(seed, s):
    rng = np.random.default_rng(100 + seed)
    d, m = 200, 40
    A = rng.standard_normal((d, m))
    true_support = rng.choice(m, size=s, replace=False)
    true_weights = rng.uniform(0.5, 2.0, size=s)
    b = A[:, true_support] @ true_weights
    support, weights, residuals = nonnegative_omp(A, b, s + 4, lam=0.0, tol=1e-12)
    assert support.shape[0] == s                          # stopped on the tolerance
    assert set(support.tolist()) == set(true_support.tolist())
    by_column = dict(zip(true_support.tolist(), true_weights))
    np.testing.assert_allclose(weights, [by_column[j] for j in support], atol=1e-6)
    assert residuals[-1] <= 1e-12 * np.linalg.norm(b)


@pytest.mark.parametrize("lam", [0.0, 0.5, 3.0])
@pytest.mark.parametrize("seed", range(4))
def test_refit_is_the_exact_ridge_nnls_on_the_support(seed, lam):
    rng = np.random.default_rng(200 + seed)
    A = rng.standard_normal((6, 12))
    b = rng.standard_normal(6) * 3
    support, weights, _ = nonnegative_omp(A, b, 6, lam=lam, tol=0.0)
    picked = A[:, support]
    np.testing.assert_allclose(weights, brute_force_ridge_nnls(picked, b, lam), atol=1e-8)
    augmented = np.vstack([picked, np.sqrt(lam) * np.eye(support.shape[0])])
    direct, _ = nnls(augmented, np.concatenate([b, np.zeros(support.shape[0])]))
    np.testing.assert_allclose(weights, direct, atol=1e-10)


def test_weights_are_nonnegative_even_when_columns_oppose_each_other():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((5, 60))
    A[:, 30:] = -A[:, :30] + 0.1 * rng.standard_normal((5, 30))   # near-opposite pairs
    for seed in range(10):
        b = np.random.default_rng(seed).standard_normal(5)
        support, weights, _ = nonnegative_omp(A, b, 20, lam=0.1, tol=0.0)
        assert np.all(weights >= 0)
        assert np.unique(support).shape[0] == support.shape[0]


def test_picks_follow_the_largest_positive_correlation_and_ties_go_to_the_lowest_index():
    column = np.array([1.0, 2.0, 0.5])
    A = np.stack([0.5 * column, column, column, 2 * column], axis=1)  # 1 and 2 tie
    A[:, 3] = [0.0, 0.0, 1.0]
    b = 4 * column
    support, _, _ = nonnegative_omp(A, b, 1, lam=0.0)
    assert support.tolist() == [1]
    # a duplicate can never be picked twice, nor its twin once the residual is 0
    support, weights, _ = nonnegative_omp(A, b, 4, lam=0.0, tol=1e-12)
    assert support.tolist() == [1] and weights == pytest.approx([4.0])


def test_target_opposed_or_orthogonal_to_every_column_stops_empty():
    rng = np.random.default_rng(4)
    A = np.abs(rng.standard_normal((4, 10)))
    support, weights, residuals = nonnegative_omp(A, -A.sum(axis=1), 5)
    assert support.size == 0 and weights.size == 0
    assert residuals.tolist() == [pytest.approx(np.linalg.norm(A.sum(axis=1)))]
    A[3] = 0.0
    support, _, _ = nonnegative_omp(A, np.array([0.0, 0.0, 0.0, 1.0]), 5)
    assert support.size == 0
    support, _, residuals = nonnegative_omp(A, np.zeros(4), 5)    # nothing to match
    assert support.size == 0 and residuals.tolist() == [0.0]


def test_torch_input_gives_the_numpy_result():
    rng = np.random.default_rng(5)
    A, b = rng.standard_normal((7, 30)), rng.standard_normal(7)
    from_numpy = nonnegative_omp(A, b, 10)
    from_torch = nonnegative_omp(torch.from_numpy(A), torch.from_numpy(b), 10)
    for left, right in zip(from_numpy, from_torch):
        np.testing.assert_array_equal(left, right)


@pytest.mark.parametrize("call, match", [
    (lambda A, b: nonnegative_omp(np.where(A > 1, np.nan, A), b, 3), "A: .* NaN"),
    (lambda A, b: nonnegative_omp(A, np.r_[b[:-1], np.inf], 3), "b: .* NaN"),
    (lambda A, b: nonnegative_omp(A, b[:-1], 3), "b: got length 3, expected 4"),
    (lambda A, b: nonnegative_omp(A[0], b, 3), "A: .*2-D"),
    (lambda A, b: nonnegative_omp(A, b, 0), r"k: got 0, expected an int in \[1, 9\]"),
    (lambda A, b: nonnegative_omp(A, b, 10), "k: got 10"),
    (lambda A, b: nonnegative_omp(A, b, 2.5), "k: got 2.5"),
    (lambda A, b: nonnegative_omp(A, b, 3, lam=-0.1), "lam: got -0.1"),
    (lambda A, b: nonnegative_omp(A, b, 3, lam=np.nan), "lam"),
    (lambda A, b: nonnegative_omp(A, b, 3, tol=-1e-3), "tol: got -0.001"),
])
def test_omp_rejects_bad_input_naming_the_argument(call, match):
    rng = np.random.default_rng(6)
    with pytest.raises(InputError, match=match):
        call(rng.standard_normal((4, 9)), rng.standard_normal(4))


# --- the strategy -----------------------------------------------------------------------

def problem(seed=0, sizes=(50, 30, 20), d=5):
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(len(sizes)) * 3 + 1, sizes))  # labels 1, 4, 7
    grads = (rng.standard_normal((labels.shape[0], d)) + 0.5).astype(np.float32)
    return grads, labels


@pytest.mark.parametrize("budget", ["proportional", "equal"])
def test_per_class_picks_are_the_engine_on_each_class_sum(budget):
    grads, labels = problem()
    strategy = GradMatch(0.2, budget=budget)
    coreset = strategy.select(grads, labels)
    requested = strategy.budgets(labels)
    assert coreset.metadata["requested"] == sum(requested.values()) == 20
    assert coreset.metadata["requested_budgets"] == requested
    start = 0
    for label, budget_c in requested.items():
        members = np.flatnonzero(labels == label)
        vectors = grads[members].astype(np.float64)
        support, weights, residuals = nonnegative_omp(vectors.T, vectors.sum(axis=0),
                                                      budget_c)
        keep = weights > 0
        end = start + int(keep.sum())
        np.testing.assert_array_equal(coreset.indices[start:end], members[support[keep]])
        np.testing.assert_allclose(coreset.weights[start:end], weights[keep], rtol=1e-12)
        np.testing.assert_allclose(coreset.gains[start:end], -np.diff(residuals)[keep],
                                   rtol=1e-12)
        assert np.all(labels[coreset.indices[start:end]] == label)
        assert coreset.budgets[label] == end - start <= budget_c
        start = end
    assert start == len(coreset)
    assert np.unique(coreset.indices).shape[0] == len(coreset)
    assert np.all(coreset.weights > 0) and np.all(coreset.gains >= 0)
    assert coreset.method == "gradmatch"


def test_full_budget_without_penalty_matches_the_gradient_sum():
    grads, labels = problem(1)
    coreset = GradMatch(1.0, lam=0.0, tol=1e-6).select(grads, labels)
    assert coreset.metadata["gradient_error"] < 1e-5
    assert max(coreset.metadata["class_fit_error"].values()) <= 1e-6
    assert set(coreset.metadata["stop_reasons"].values()) == {"tolerance"}
    # more budget matches better: the error of a 5% coreset is larger
    small = GradMatch(0.05, lam=0.0).select(grads, labels)
    assert small.metadata["gradient_error"] > 10 * coreset.metadata["gradient_error"]


def degenerate_problem():
    """Class 0 is ordinary; class 1 stops after one pick; class 2 sums to zero."""
    rng = np.random.default_rng(7)
    ordinary = np.abs(rng.standard_normal((12, 2))) + 0.1
    # after picking (4, 0) the ridge-shrunk weight leaves a residual along +x, which
    # both other members oppose
    one_pick = np.array([[4.0, 0.0], [-1.0, 1.0], [-1.0, -1.0]])
    zero_sum = np.array([[1.0, 2.0], [-1.0, -2.0], [3.0, 1.0], [-3.0, -1.0]])
    grads = np.vstack([ordinary, one_pick, zero_sum]).astype(np.float32)
    labels = np.repeat([0, 1, 2], [12, 3, 4])
    return grads, labels


def test_early_stop_is_reported_and_never_topped_up_by_default():
    grads, labels = degenerate_problem()
    strategy = GradMatch(0.6, lam=0.5, budget="equal")
    requested = strategy.budgets(labels)
    assert requested == {0: 4, 1: 3, 2: 4}
    coreset = strategy.select(grads, labels)
    meta = coreset.metadata
    assert meta["requested"] == 11 and meta["filled"] == {}
    assert meta["omp_stopped_early"] == {1: 1}
    assert meta["stop_reasons"] == {0: "budget", 1: "no_positive_correlation",
                                    2: "zero_target"}
    # class 2 sums to zero: nothing to match, so it is drawn uniformly (recorded)
    assert meta["zero_target"] == {2: 4}
    assert coreset.budgets == {0: 4, 1: 1, 2: 4}
    assert len(coreset) == 9
    assert coreset.indices[4] == 12                      # the (4, 0) member of class 1
    # its ridge weight <a, b> / (|a|^2 + lam)
    assert coreset.weights[4] == pytest.approx(8.0 / 16.5)
    assert sorted(coreset.indices[5:].tolist()) == [15, 16, 17, 18]
    np.testing.assert_array_equal(coreset.weights[5:], 4 / 4)       # n_c / k_c
    assert np.all(np.isnan(coreset.gains[5:]))


def test_fill_reaches_the_budget_exactly_and_is_recorded():
    grads, labels = degenerate_problem()
    plain = GradMatch(0.6, lam=0.5, budget="equal").select(grads, labels)
    coreset = GradMatch(0.6, lam=0.5, budget="equal", fill=True, seed=3).select(grads, labels)
    meta = coreset.metadata
    assert len(coreset) == meta["requested"] == 11
    assert coreset.budgets == meta["requested_budgets"] == {0: 4, 1: 3, 2: 4}
    assert meta["filled"] == {1: 2} and meta["zero_target"] == {2: 4}
    assert meta["omp_stopped_early"] == {1: 1}             # still said, though filled
    np.testing.assert_array_equal(coreset.indices[:5], plain.indices[:5])  # OMP picks first
    assert np.unique(coreset.indices).shape[0] == 11
    class1, class2 = coreset.indices[5:7], coreset.indices[7:]
    assert set(class1.tolist()) == {13, 14}
    assert set(class2.tolist()) == {15, 16, 17, 18}
    np.testing.assert_allclose(coreset.weights[5:7], plain.weights[4])  # class's mean OMP weight
    np.testing.assert_allclose(coreset.weights[7:], 4 / 4)              # n_c / k_c: no OMP pick
    assert np.all(np.isnan(coreset.gains[5:])) and not np.any(np.isnan(coreset.gains[:5]))


def test_fill_is_uniform_over_the_unpicked_members():
    rng = np.random.default_rng(8)
    zero_sum = rng.standard_normal((10, 3))
    grads = np.vstack([zero_sum, -zero_sum]).astype(np.float32)     # one class, sum 0
    labels = np.zeros(20, dtype=np.int64)
    counts = np.zeros(20)
    for seed in range(400):
        coreset = GradMatch(0.25, fill=seed % 2 == 0, seed=seed).select(grads, labels)
        assert coreset.metadata["zero_target"] == {0: 5}   # with or without the fill
        np.testing.assert_array_equal(coreset.weights, 20 / 5)   # n_c / k_c: no OMP pick
        counts[coreset.indices] += 1
    expected = 400 * 5 / 20
    # a chi-square test at about the 0.1% level for 19 degrees of freedom
    assert np.sum((counts - expected) ** 2 / expected) < 43.8


def test_same_seed_same_coreset_and_state_dict_resumes_the_fill():
    grads, labels = degenerate_problem()

    def run(strategy):
        return strategy.select(grads, labels)

    first = GradMatch(0.6, budget="equal", fill=True, seed=11)
    twin = GradMatch(0.6, budget="equal", fill=True, seed=11)
    a1, b1 = run(first), run(twin)
    np.testing.assert_array_equal(a1.indices, b1.indices)
    np.testing.assert_array_equal(a1.weights, b1.weights)
    a2 = run(first)
    resumed = GradMatch(0.6, budget="equal", fill=True, seed=11)
    resumed.load_state_dict(twin.state_dict())
    b2 = run(resumed)
    assert a2.round == b2.round == 2
    np.testing.assert_array_equal(a2.indices, b2.indices)
    fills = {tuple(GradMatch(0.6, budget="equal", fill=True, seed=s).select(
        grads, labels).indices) for s in range(6)}
    assert len(fills) > 1                                 # the seed does reach the draw
    zero_sum = np.random.default_rng(9).standard_normal((10, 3))
    one_class = np.vstack([zero_sum, -zero_sum]).astype(np.float32)
    rounds = GradMatch(0.25, fill=True, seed=11)
    draws = {tuple(rounds.select(one_class, np.zeros(20)).indices) for _ in range(4)}
    assert len(draws) > 1                                 # each round draws afresh


def test_torch_and_numpy_vectors_select_the_same():
    grads, labels = problem(2)
    from_numpy = GradMatch(0.1).select(grads, labels)
    from_torch = GradMatch(0.1).select(torch.from_numpy(grads), torch.from_numpy(labels))
    np.testing.assert_array_equal(from_numpy.indices, from_torch.indices)
    np.testing.assert_array_equal(from_numpy.weights, from_torch.weights)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_vectors_select_what_the_cpu_selects():
    grads, labels = problem(3)
    on_cpu = GradMatch(0.1).select(grads, labels)
    on_gpu = GradMatch(0.1).select(torch.from_numpy(grads).cuda(), labels)
    np.testing.assert_array_equal(on_cpu.indices, on_gpu.indices)
    np.testing.assert_allclose(on_cpu.weights, on_gpu.weights, rtol=1e-9)


def test_registered_under_its_name():
    strategy = get_strategy("gradmatch", fraction=0.1, lam=0.25, fill=True)
    assert isinstance(strategy, GradMatch)
    assert (strategy.lam, strategy.tol, strategy.fill) == (0.25, 1e-4, True)


@pytest.mark.parametrize("options, match", [
    ({"fraction": 0.0}, "fraction: got 0.0"),
    ({"fraction": 1.5}, "fraction: got 1.5"),
    ({"fraction": 0.1, "lam": -1.0}, "lam: got -1.0"),
    ({"fraction": 0.1, "tol": -1.0}, "tol: got -1.0"),
    ({"fraction": 0.1, "fill": "yes"}, "fill: got 'yes'"),
    ({"fraction": 0.1, "budget": "fair"}, "budget"),
])
def test_strategy_rejects_bad_options(options, match):
    with pytest.raises(InputError, match=match):
        GradMatch(**options)


def test_strategy_rejects_bad_inputs_naming_the_argument():
    grads, labels = problem()
    bad = grads.copy()
    bad[3, 1] = np.nan
    strategy = GradMatch(0.1)
    with pytest.raises(InputError, match="grads: 1 entries are NaN"):
        strategy.select(bad, labels)
    with pytest.raises(InputError, match="labels: got 99 labels, expected 100"):
        strategy.select(grads, labels[:-1])
    with pytest.raises(InputError, match="grads"):
        strategy.select(None, labels)
    with pytest.raises(InputError, match="unexpected inputs"):
        strategy.select(grads, labels, hessian_diag=grads)


def dropping_problem():
    """Picked first, (0.9, 0.9, 0.3) is later refit to weight 0 by (1, 0, 0) and (0, 1, 0)."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.9, 0.9, 0.3], [-0.9, -0.9, -0.3]])


def test_a_pick_can_lose_its_weight_and_the_coreset_then_drops_it():
    members = dropping_problem()
    support, weights, residuals = nonnegative_omp(members.T, members.sum(axis=0), 4,
                                                  lam=0.0, tol=1e-12)
    assert support.tolist() == [2, 0, 1]
    np.testing.assert_allclose(weights, [0.0, 1.0, 1.0], atol=1e-12)
    assert residuals[-1] <= 1e-12

    labels = np.array([5, 5, 5, 5, 9, 9])
    grads = np.vstack([members, [[0.0, 0.0, 1.0], [0.0, 0.0, 2.0]]]).astype(np.float32)
    coreset = GradMatch(1.0, lam=0.0, tol=1e-9).select(grads, labels)
    assert coreset.metadata["zero_weight_dropped"] == {5: 1}
    assert coreset.indices[:2].tolist() == [0, 1]        # row 2 was picked, then dropped
    np.testing.assert_allclose(coreset.weights[:2], [1.0, 1.0], atol=1e-7)
    assert coreset.budgets[5] == 2 and np.all(coreset.weights > 0)
    assert coreset.metadata["omp_stopped_early"] == {5: 3, 9: 1}

    filled = GradMatch(1.0, lam=0.0, tol=1e-9, fill=True).select(grads, labels)
    assert filled.budgets == {5: 4, 9: 2}                 # the dropped pick may come back
    assert filled.metadata["filled"] == {5: 2, 9: 1}


def test_all_zero_gradients_never_give_an_empty_round():
    """A model that fits everything (all-zero gradients): every class drawn uniformly."""
    labels = np.repeat(np.arange(3), [30, 20, 10])
    coreset = GradMatch(0.1).select(np.zeros((60, 4), np.float32), labels)
    assert coreset.metadata["zero_target"] == coreset.metadata["requested_budgets"] \
        == coreset.budgets == {0: 3, 1: 2, 2: 1}
    for label, size in zip(range(3), (30, 20, 10)):
        picked = labels[coreset.indices] == label
        assert coreset.weights[picked].sum() == pytest.approx(size)
    again = GradMatch(0.1).select(np.zeros((60, 4), np.float32), labels)
    np.testing.assert_array_equal(coreset.indices, again.indices)


# --- per_gradient: CORDS's PerClassPerGradient slice ------------------------------------

def last_layer_problem(seed=0, classes=3, features=4, sizes=(14, 10, 8), bias=True):
    """Softmax cross-entropy last-layer vectors built from their factors (p - y, h)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.repeat(np.arange(classes), sizes))
    logits = rng.standard_normal((labels.shape[0], classes)) * 2
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    residual = p - np.eye(classes)[labels]
    h = np.abs(rng.standard_normal((labels.shape[0], features)))
    weight_part = (residual[:, :, None] * h[:, None, :]).reshape(labels.shape[0], -1)
    grads = np.hstack([weight_part, residual]) if bias else weight_part
    return grads.astype(np.float32), labels, residual, h


def sliced_reference(residual, h, labels, budgets, lam, bias=True):
    """OMP per class on class c's own output only: (p_c - y_c) h and (p_c - y_c)."""
    out = []
    for label, budget_c in budgets.items():
        members = np.flatnonzero(labels == label)
        r_c = residual[members, label:label + 1]
        block = np.hstack([r_c * h[members], r_c]) if bias else r_c * h[members]
        block = block.astype(np.float32).astype(np.float64)   # the strategy's input precision
        support, weights, _ = nonnegative_omp(block.T, block.sum(axis=0), budget_c, lam=lam)
        keep = weights > 0
        out.append((members[support[keep]], weights[keep]))
    return out


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("lam", [0.0, 0.5])
@pytest.mark.parametrize("seed", range(3))
def test_per_gradient_is_omp_on_each_class_own_output_slice(seed, lam, bias):
    grads, labels, residual, h = last_layer_problem(seed, bias=bias)
    strategy = GradMatch(0.25, lam=lam, per_gradient=True, bias=bias)
    coreset = strategy.select(grads, labels)
    expected = sliced_reference(residual, h, labels, strategy.budgets(labels), lam, bias)
    np.testing.assert_array_equal(coreset.indices, np.concatenate([e[0] for e in expected]))
    np.testing.assert_allclose(coreset.weights, np.concatenate([e[1] for e in expected]),
                               rtol=1e-6)
    assert coreset.metadata["per_gradient"] is True
    assert coreset.metadata["num_classes"] == 3
    assert coreset.metadata["slice_width"] == (5 if bias else 4)


def test_per_gradient_changes_the_picks_and_the_whole_vector_mode_is_unchanged():
    grads, labels, _, _ = last_layer_problem(4, sizes=(30, 30, 30))
    whole = GradMatch(0.2).select(grads, labels)
    sliced = GradMatch(0.2, per_gradient=True).select(grads, labels)
    assert not np.array_equal(whole.indices, sliced.indices)
    assert whole.metadata["per_gradient"] is False and "slice_width" not in whole.metadata
    # the default matches whole vectors: the engine on each class's full block
    members = np.flatnonzero(labels == 0)
    block = grads[members].astype(np.float64)
    support, weights, _ = nonnegative_omp(block.T, block.sum(axis=0), 6, lam=0.5)
    np.testing.assert_array_equal(whole.indices[:6], members[support[weights > 0]])


@pytest.mark.parametrize("per_gradient", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.5])
def test_the_incremental_refit_selects_what_the_scratch_refit_selected(lam, per_gradient,
                                                                       monkeypatch):
    """A round as it was, with scipy's nnls from scratch at every OMP step, and as it is."""
    from adacore.selection import omp

    grads, labels, _, _ = last_layer_problem(9, features=6, sizes=(90, 70, 60))
    current = GradMatch(0.3, lam=lam, per_gradient=per_gradient).select(grads, labels)
    monkeypatch.setitem(omp._REFITS, "incremental", omp._ScratchRefit)
    before = GradMatch(0.3, lam=lam, per_gradient=per_gradient).select(grads, labels)
    np.testing.assert_array_equal(current.indices, before.indices)
    np.testing.assert_allclose(current.weights, before.weights, rtol=1e-8)
    np.testing.assert_allclose(current.gains, before.gains, rtol=1e-7,
                               atol=1e-10 * np.max(before.gains))
    assert current.metadata["stop_reasons"] == before.metadata["stop_reasons"]
    assert current.metadata["zero_weight_dropped"] == before.metadata["zero_weight_dropped"]


def test_per_gradient_in_logit_space_matches_the_class_column():
    _, labels, residual, _ = last_layer_problem(5)
    logit_grads = residual.astype(np.float32)
    strategy = GradMatch(0.25, per_gradient=True)
    coreset = strategy.select(logit_grads, labels)
    assert coreset.metadata["slice_width"] == 1
    start = 0
    for label, budget_c in strategy.budgets(labels).items():
        members = np.flatnonzero(labels == label)
        column = logit_grads[members, label:label + 1].astype(np.float64)
        support, weights, _ = nonnegative_omp(column.T, column.sum(axis=0), budget_c, lam=0.5)
        kept = members[support[weights > 0]]
        np.testing.assert_array_equal(coreset.indices[start:start + kept.shape[0]], kept)
        start += kept.shape[0]
    assert start == len(coreset)


def test_per_gradient_num_classes_names_an_absent_top_class():
    grads, labels, residual, h = last_layer_problem(6, classes=3, sizes=(14, 10, 8))
    keep = labels < 2                                     # class 2 absent from these labels
    grads, labels, residual, h = grads[keep], labels[keep], residual[keep], h[keep]
    strategy = GradMatch(0.25, per_gradient=True, num_classes=3)
    coreset = strategy.select(grads, labels)
    expected = sliced_reference(residual, h, labels, strategy.budgets(labels), 0.5)
    np.testing.assert_array_equal(coreset.indices, np.concatenate([e[0] for e in expected]))
    assert coreset.metadata["num_classes"] == 3


@pytest.mark.parametrize("options, data, match", [
    (dict(per_gradient=True), "odd_width", r"grads: got width 14, expected C \* D \+ C "
                                           r"\(with the bias\) for C = 3 classes"),
    (dict(per_gradient=True, bias=False), "odd_width", r"grads: got width 14, expected "
                                                       r"C \* D \(no bias\)"),
    (dict(per_gradient=True, num_classes=2), "full", r"labels: got labels in \[0, 2\], "
                                                     r"expected class indices in \[0, 1\]"),
    (dict(per_gradient=True), "negative", r"labels: got labels in \[-1, 2\]"),
])
def test_per_gradient_rejects_a_layout_it_cannot_slice(options, data, match):
    grads, labels, _, _ = last_layer_problem(7)
    if data == "odd_width":
        grads = grads[:, :14]
    elif data == "negative":
        labels = labels.copy()
        labels[labels == 0] = -1
    strategy = GradMatch(0.25, **options)
    with pytest.raises(InputError, match=match):
        strategy.select(grads, labels)
    assert strategy.round_ == 0
    # width C without a bias reads as D = 1: the slice is still the class's column
    _, labels, residual, _ = last_layer_problem(7)
    no_bias = GradMatch(0.25, per_gradient=True, bias=False).select(
        residual.astype(np.float32), labels)
    with_bias = GradMatch(0.25, per_gradient=True).select(residual.astype(np.float32), labels)
    np.testing.assert_array_equal(no_bias.indices, with_bias.indices)


@pytest.mark.parametrize("options, match", [
    ({"per_gradient": "yes"}, "per_gradient: got 'yes'"),
    ({"num_classes": 0}, "num_classes: got 0"),
    ({"num_classes": 2.5}, "num_classes"),
    ({"bias": 1}, "bias: got 1"),
])
def test_per_gradient_options_are_checked(options, match):
    with pytest.raises(InputError, match=match):
        GradMatch(0.1, **options)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_per_gradient_selects_what_the_cpu_selects():
    grads, labels, _, _ = last_layer_problem(8)
    on_cpu = GradMatch(0.25, per_gradient=True).select(grads, labels)
    on_gpu = GradMatch(0.25, per_gradient=True).select(torch.from_numpy(grads).cuda(), labels)
    np.testing.assert_array_equal(on_cpu.indices, on_gpu.indices)
    np.testing.assert_allclose(on_cpu.weights, on_gpu.weights, rtol=1e-9)
