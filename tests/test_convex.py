"""Convex models: closed forms against autograd and Hutchinson, selection, solvers, experiment."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from adacore import InputError, facility_location, hutchinson_diagonal
from adacore.convex import (LOSSES, Reselection, block_facility_location,
                            blocked_facility_location, convex_speed_report, convex_vectors,
                            get_loss, load_convex_data, newton_point, population_hessian,
                            preconditioned_gd, reference_solution, saga, select_coreset, sgd)
from adacore.experiments.convex import (check_settings, read_convex_scenario,
                                        run_convex_experiment)
from adacore.convex.blocks import split_budget
from adacore.selection.per_class import class_seed

REPO = Path(__file__).resolve().parents[1]
BINARY = ("logistic", "squared_hinge")


def problem(loss_name, n=40, d=5, seed=0, sparse=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    if sparse:
        X[rng.random((n, d)) < 0.5] = 0.0
    if loss_name in BINARY:
        y = np.where(X @ rng.standard_normal(d) + 0.5 * rng.standard_normal(n) > 0, 1.0, -1.0)
    else:
        y = X @ rng.standard_normal(d) + 0.3 * rng.standard_normal(n)
    return (sp.csr_matrix(X) if sparse else X), y


def torch_phi(name, scores, y):
    if name == "logistic":
        return torch.nn.functional.softplus(-y * scores)
    if name == "squared_hinge":
        return torch.clamp(1 - y * scores, min=0) ** 2
    return 0.5 * (scores - y) ** 2


def torch_example_loss(loss, x, y_i):
    """l_i(theta) = phi(f_i) + l2 / 2 ||w||^2 as a torch function of theta."""
    def fn(theta):
        coef = theta[:-1] if loss.fit_intercept else theta
        score = x @ coef + (theta[-1] if loss.fit_intercept else 0.0)
        return torch_phi(loss.name, score, y_i) + 0.5 * loss.l2 * (coef @ coef)
    return fn


# -- losses --------------------------------------------------------------------------------

@pytest.mark.parametrize("intercept", [True, False])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_per_example_terms_equal_autograd(name, intercept):
    loss = get_loss(name, alpha=0.3, fit_intercept=intercept)
    X, y = problem(name, n=6, d=4)
    w = np.random.default_rng(1).standard_normal(loss.n_params(4)) * 0.4
    grads = loss.per_example_grads(w, X, y)
    diags = loss.per_example_hessian_diag(w, X, y)
    theta = torch.tensor(w)
    for i in range(X.shape[0]):
        fn = torch_example_loss(loss, torch.tensor(X[i]), torch.tensor(y[i]))
        gradient = torch.autograd.functional.jacobian(fn, theta).numpy()
        hessian = torch.autograd.functional.hessian(fn, theta).numpy()
        np.testing.assert_allclose(grads[i], gradient, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(diags[i], np.diag(hessian), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_hutchinson_agrees_with_closed_form(name):
    loss = get_loss(name, alpha=0.2)
    n = 64
    X, y = problem(name, n=n, d=3, seed=2)
    w = np.random.default_rng(3).standard_normal(4) * 0.5
    # per-example copies of theta: the Hessian of the summed loss is block diagonal, and
    # its diagonal is every example's Hessian diagonal
    copies = torch.tensor(np.tile(w, (n, 1)), requires_grad=True)
    Xt, yt = torch.tensor(X), torch.tensor(y)
    scores = (Xt * copies[:, :3]).sum(dim=1) + copies[:, 3]
    total = (torch_phi(name, scores, yt) + 0.5 * loss.l2 * (copies[:, :3] ** 2).sum(1)).sum()
    generator = torch.Generator().manual_seed(0)
    probes = 4000
    estimate = hutchinson_diagonal(total, [copies], n_samples=probes, generator=generator)[0]
    estimate = estimate.numpy()
    exact = loss.per_example_hessian_diag(w, X, y)
    # one Rademacher probe errs by the row's off-diagonal sum (the Hessian is
    # phi'' [x; 1][x; 1]^T + ridge, phi'' the intercept's diagonal entry)
    rows = np.c_[X, np.ones(n)]
    off_diagonal = np.abs(exact[:, 3:4] * rows) * (np.abs(rows).sum(axis=1, keepdims=True)
                                                   - np.abs(rows))
    assert np.all(np.abs(estimate - exact) <= 5 * off_diagonal / math.sqrt(probes) + 1e-9)
    # summed over 256 entries the noise averages out: 1% catches a 5% error
    assert abs(estimate.sum() - exact.sum()) <= 0.01 * exact.sum()


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_full_terms_are_weighted_means_and_sparse_agrees(name):
    loss = get_loss(name, alpha=0.1)
    X, y = problem(name, n=30, d=6, seed=4, sparse=True)
    dense = X.toarray()
    w = np.random.default_rng(5).standard_normal(7) * 0.3
    s = np.random.default_rng(6).uniform(0.5, 3.0, 30)
    grads = loss.per_example_grads(w, dense, y)
    np.testing.assert_allclose(loss.gradient(w, dense, y, s), (s / s.sum()) @ grads, rtol=1e-12)
    diags = loss.per_example_hessian_diag(w, dense, y)
    np.testing.assert_allclose(loss.hessian_diag(w, dense, y, s), (s / s.sum()) @ diags,
                               rtol=1e-12)
    for method in ("value", "gradient", "hessian_diag"):
        np.testing.assert_allclose(getattr(loss, method)(w, X, y, s),
                                   getattr(loss, method)(w, dense, y, s), rtol=1e-12)
    rows = loss.per_example_grads(w, X, y, regularized=False)
    assert sp.issparse(rows) and rows.nnz == X.nnz + 30       # the intercept column
    np.testing.assert_allclose(rows.toarray() + loss.regularizer_grad(w, 6), grads, rtol=1e-12)
    curvature = loss.per_example_hessian_diag(w, X, y, regularized=False)
    assert sp.issparse(curvature)


def test_lasso_objective_is_sklearns_and_prox_soft_thresholds():
    from sklearn.linear_model import Lasso
    X, y = problem("lasso", n=60, d=8, seed=7)
    loss = get_loss("lasso", alpha=0.05)
    model = Lasso(alpha=0.05, tol=1e-12, max_iter=100000).fit(X, y)
    ours, best = reference_solution(loss, X, y)
    theirs = loss.value(np.append(model.coef_, model.intercept_), X, y)
    assert abs(best - theirs) <= 1e-8 * theirs
    assert np.count_nonzero(ours[:-1] == 0) == np.count_nonzero(model.coef_ == 0)
    np.testing.assert_allclose(loss.prox(np.array([0.3, -0.01, -0.2, 5.0]), 2.0),
                               [0.2, 0.0, -0.1, 5.0], atol=1e-15)    # the intercept: not shrunk


def test_logistic_terms_at_zero_are_the_documented_ones():
    X, y = problem("logistic", n=10, d=3, seed=8)
    loss = get_loss("logistic", alpha=1e-3)
    grads = loss.per_example_grads(np.zeros(4), X, y)
    diags = loss.per_example_hessian_diag(np.zeros(4), X, y)
    np.testing.assert_allclose(grads, -y[:, None] * np.c_[X, np.ones(10)] / 2)
    np.testing.assert_allclose(diags, np.c_[0.25 * X ** 2 + 1e-3, np.full(10, 0.25)])


# -- selection -------------------------------------------------------------------------------

def numpy_newton_point(X, y, alpha, eps, w=None):
    """One damped Newton step of the logistic objective, from closed forms (no library)."""
    A = np.c_[X, np.ones(len(X))]
    w = np.zeros(A.shape[1]) if w is None else w
    margins = y * (A @ w)
    slope = -y / (1 + np.exp(margins))
    curvature = 1 / (1 + np.exp(A @ w)) / (1 + np.exp(-(A @ w)))
    mask = np.r_[np.ones(X.shape[1]), 0.0]
    gradient = A.T @ slope / len(A) + alpha * mask * w
    H = (A * curvature[:, None]).T @ A / len(A) + np.diag(alpha * mask) + eps * np.eye(len(w))
    return w - np.linalg.solve(H, gradient)


def numpy_vectors(X, y, w, alpha, eps, hessian, power):
    """Logistic u_i of each preconditioner, from closed forms (no library)."""
    A = np.c_[X, np.ones(len(X))]
    scores = A @ w
    slope = -y / (1 + np.exp(y * scores))
    curvature = 1 / (1 + np.exp(scores)) / (1 + np.exp(-scores))
    mask = np.r_[np.ones(X.shape[1]), 0.0]
    G = slope[:, None] * A + alpha * mask * w
    D = curvature[:, None] * A ** 2 + alpha * mask
    if hessian == "craig":
        return G
    if hessian == "diagonal":
        return G / (D + eps) ** power
    if hessian == "mean_diagonal":
        return G / (D.mean(axis=0) + eps) ** power
    H = (A * curvature[:, None]).T @ A / len(A) + np.diag(alpha * mask)
    from scipy.linalg import fractional_matrix_power
    return G @ np.real(fractional_matrix_power(H + eps * np.eye(len(w)), -power))


def naive_greedy(U, k):
    """Facility location by the textbook greedy in float64: picks and cluster sizes."""
    distances = np.linalg.norm(U[:, None] - U[None], axis=2)
    similarity = distances.max() - distances
    picks, best = [], np.zeros(len(U))
    for _ in range(k):
        gains = np.maximum(similarity - best[None], 0).sum(axis=1)
        gains[picks] = -1
        picks.append(int(np.argmax(gains)))
        best = np.maximum(best, similarity[picks[-1]])
    nearest = np.argmin(distances[:, picks], axis=1)      # ties: the earlier pick
    return np.array(picks), np.bincount(nearest, minlength=k)


@pytest.mark.parametrize("options,reference", [
    ({}, ("newton", "mean_diagonal", 0.5)),
    (dict(hessian="mean"), ("newton", "mean", 0.5)),
    (dict(at="initial", hessian="diagonal"), ("initial", "diagonal", 1.0)),
    (dict(at="initial", hessian="mean_diagonal", power=1.0), ("initial", "mean_diagonal", 1.0)),
    (dict(method="craig", at="initial"), ("initial", "craig", 1.0)),
    (dict(method="craig"), ("newton", "craig", 1.0)),
])
def test_small_class_path_is_brute_force_facility_location(options, reference):
    """Against references written here: the vectors from closed forms, one pick per class
    is the brute-force 1-medoid, three picks are the textbook greedy, which reaches
    (1 - 1/e) of the brute-force optimum over every 3-subset."""
    from itertools import combinations
    X, y = problem("logistic", n=30, d=3, seed=9)
    alpha, eps = 1e-2, 1e-4
    at, hessian, power = reference
    w = numpy_newton_point(X, y, alpha, eps) if at == "newton" else np.zeros(4)
    U = numpy_vectors(X, y, w, alpha, eps, hessian, power)
    for per_class in (1, 3):
        budgets = {-1: per_class, 1: per_class}
        coreset = select_coreset(X, y, fraction=2 * per_class / 30, alpha=alpha, eps=eps,
                                 budget="equal", **options)
        assert coreset.budgets == budgets
        np.testing.assert_allclose(coreset.metadata["w"], w, rtol=1e-9, atol=1e-12)
        wrong = y * (np.c_[X, np.ones(30)] @ w) < 0
        share = coreset.metadata["misclassified_share"]
        assert share["data"] == pytest.approx(wrong.mean())
        assert share["coreset"] == pytest.approx(coreset.weights[wrong[coreset.indices]].sum()
                                                 / 30)
        for label in (-1, 1):
            members = np.flatnonzero(y == label)
            mine = y[coreset.indices] == label
            picks, weights = coreset.indices[mine], coreset.weights[mine]
            costs = {S: np.linalg.norm(U[members][:, None] - U[members][list(S)][None],
                                       axis=2).min(axis=1).sum()
                     for S in combinations(range(len(members)), per_class)}
            if per_class == 1:
                best = min(costs, key=costs.get)
                assert list(picks) == [members[best[0]]]
                assert list(weights) == [len(members)]
            else:
                order, sizes = naive_greedy(U[members], per_class)
                np.testing.assert_array_equal(picks, members[order])
                np.testing.assert_array_equal(weights, sizes)
                c = np.linalg.norm(U[members][:, None] - U[members][None], axis=2).max()
                value = len(members) * c - costs[tuple(sorted(order))]
                assert value >= (1 - 1 / math.e) * (len(members) * c - min(costs.values()))


def test_newton_point_is_a_damped_newton_step_and_cg_agrees(monkeypatch):
    import adacore.convex.curvature as curvature
    X, y = problem("logistic", n=80, d=5, seed=21)
    loss = get_loss("logistic", alpha=1e-2)
    w0 = np.random.default_rng(4).standard_normal(6) * 0.3
    # the full objective's gradient and Hessian by autograd
    Xt, yt = torch.tensor(X), torch.tensor(y)

    def objective(theta):
        return (torch.nn.functional.softplus(-yt * (Xt @ theta[:5] + theta[5])).mean()
                + 0.5 * 1e-2 * theta[:5] @ theta[:5])

    theta = torch.tensor(w0)
    gradient = torch.autograd.functional.jacobian(objective, theta).numpy()
    hessian = torch.autograd.functional.hessian(objective, theta).numpy()
    expected = w0 - np.linalg.solve(hessian + 1e-3 * np.eye(6), gradient)
    direct, info = newton_point(loss, X, y, w0, eps=1e-3)
    assert info["solver"] == "direct"
    np.testing.assert_allclose(direct, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(population_hessian(loss, w0, X, y), hessian, rtol=1e-10,
                               atol=1e-13)
    np.testing.assert_allclose(newton_point(loss, sp.csr_matrix(X), y, w0, eps=1e-3)[0],
                               expected, rtol=1e-10, atol=1e-12)
    monkeypatch.setattr(curvature, "DIRECT_LIMIT", 0)
    for features in (X, sp.csr_matrix(X)):
        solved, info = newton_point(loss, features, y, w0, eps=1e-3, steps=2)
        assert info["solver"] == "cg" and 0 < info["cg_iterations"] <= 2 * 6 + 2
        twice = numpy_newton_point(X, y, 1e-2, 1e-3, numpy_newton_point(X, y, 1e-2, 1e-3, w0))
        np.testing.assert_allclose(solved, twice, rtol=1e-6, atol=1e-8)


def logistic_residuals(X, y, alpha, coresets):
    """(L(w_S) - L*) / L* on the full set, w_S fitted by scikit-learn with sample_weight."""
    from sklearn.linear_model import LogisticRegression
    loss = get_loss("logistic", alpha=alpha)

    def fitted(rows, weights):
        model = LogisticRegression(C=1 / (alpha * weights.sum()), solver="newton-cholesky",
                                   tol=1e-10, max_iter=1000)
        model.fit(X[rows], y[rows], sample_weight=weights)
        return np.append(model.coef_[0], model.intercept_[0])

    _, best = reference_solution(loss, X, y, w0=fitted(np.arange(len(y)), np.ones(len(y))))
    return [(loss.value(fitted(c.indices, c.weights.astype(float)), X, y) - best) / best
            for c in coresets]


def test_default_beats_random_on_features_of_very_different_scales():
    """The issue's case: columns times 10^U(-3, 3), not standardised. The default (Newton
    point, averaged diagonal, power 1/2) beats the median of five random coresets at 5% and
    10%; the poster's per-example diagonal at w = 0 does not."""
    from sklearn.datasets import make_classification
    X, labels = make_classification(n_samples=1500, n_features=12, n_informative=6,
                                    n_redundant=2, flip_y=0.05, random_state=3)
    X = X * 10.0 ** np.random.default_rng(3).uniform(-3, 3, 12)
    y = 2.0 * labels - 1
    alpha = 1e-3
    for fraction in (0.05, 0.1):
        coresets = [select_coreset(X, y, fraction=fraction, alpha=alpha),
                    select_coreset(X, y, fraction=fraction, alpha=alpha, at="initial",
                                   hessian="diagonal")]
        coresets += [select_coreset(X, y, fraction=fraction, method="random", seed=seed)
                     for seed in range(5)]
        ours, poster, *random = logistic_residuals(X, y, alpha, coresets)
        print(fraction, ours, poster, np.median(random))
        assert ours < np.median(random) < poster


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_vectors_solve_the_per_example_systems(name):
    loss = get_loss(name, alpha=0.05)
    X, y = problem(name, n=12, d=4, seed=10)
    w = np.random.default_rng(2).standard_normal(5) * 0.3
    grads = loss.per_example_grads(w, X, y)
    diags = loss.per_example_hessian_diag(w, X, y)
    eps = 1e-2
    diagonal = convex_vectors(X, y, loss=loss, w=w, eps=eps, hessian="diagonal")
    np.testing.assert_allclose(diagonal, grads / (diags + eps), rtol=2e-5, atol=1e-6)
    exact = convex_vectors(X, y, loss=loss, w=w, eps=eps, hessian="exact")
    hessians = []
    for i in range(12):     # against the autograd Hessian of l_i, plus eps I
        fn = torch_example_loss(loss, torch.tensor(X[i]), torch.tensor(y[i]))
        hessians.append(torch.autograd.functional.hessian(fn, torch.tensor(w)).numpy())
        solved = np.linalg.solve(hessians[-1] + eps * np.eye(5), grads[i])
        np.testing.assert_allclose(exact[i], solved, rtol=1e-4,
                                   atol=1e-4 * np.abs(solved).max())
    # the averaged kinds: the mean of those Hessians, its diagonal, to the power -1/2 or -1
    from scipy.linalg import fractional_matrix_power
    mean = np.mean(hessians, axis=0) + eps * np.eye(5)
    for power in (0.5, 1.0):
        np.testing.assert_allclose(
            convex_vectors(X, y, loss=loss, w=w, eps=eps, power=power),
            grads / np.diag(mean) ** power, rtol=2e-5, atol=1e-6)
        expected = grads @ np.real(fractional_matrix_power(mean, -power))
        np.testing.assert_allclose(
            convex_vectors(X, y, loss=loss, w=w, eps=eps, hessian="mean", power=power),
            expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())
    np.testing.assert_allclose(convex_vectors(X, y, loss=loss, w=w, method="craig"), grads,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hessian", ["mean_diagonal", "mean", "diagonal", "exact"])
@pytest.mark.parametrize("method", ["adacore", "craig"])
def test_sparse_input_selects_as_dense(method, hessian):
    X, y = problem("logistic", n=200, d=6, seed=11, sparse=True)
    w = np.random.default_rng(3).standard_normal(7) * 0.3
    options = dict(fraction=0.1, method=method, hessian=hessian, w=w, alpha=1e-2)
    dense = select_coreset(X.toarray(), y, **options)
    sparse = select_coreset(X, y, **options)
    assert sparse.metadata["vectors"] == "densified"
    np.testing.assert_array_equal(np.sort(sparse.indices), np.sort(dense.indices))
    # a large sparse X is projected instead, reproducibly
    projected = select_coreset(X, y, densify_limit=10, projection_dim=5, seed=4, **options)
    again = select_coreset(X, y, densify_limit=10, projection_dim=5, seed=4, **options)
    assert projected.metadata["vectors"] == "projected"
    np.testing.assert_array_equal(projected.indices, again.indices)
    assert projected.weights.sum() == 200


def test_blocks_are_the_naive_greedy_block_by_block():
    rng = np.random.default_rng(12)
    X = rng.standard_normal((300, 5)).astype(np.float32)
    labels = np.zeros(300, dtype=np.int64)
    coreset = blocked_facility_location(torch.from_numpy(X), labels, {0: 30}, block_size=100,
                                        optimizer="naive")
    order = class_seed(0, 0).permutation(300)
    expected = [part[facility_location(X[part], 10, optimizer="naive").indices]
                for part in np.array_split(order, 3)]
    np.testing.assert_array_equal(coreset.indices, np.concatenate(expected))
    assert coreset.weights.sum() == 300


def test_lazy_blocks_pick_what_naive_blocks_pick():
    vectors = torch.randn(5000, 6, generator=torch.Generator().manual_seed(3))
    for block_size, budget in ((32, 600), (200, 500)):
        naive = block_facility_location(vectors, budget, block_size=block_size,
                                        optimizer="naive")
        lazy = block_facility_location(vectors, budget, block_size=block_size,
                                       optimizer="lazy")
        for a, b in zip(naive, lazy):
            np.testing.assert_array_equal(a, b)


def test_block_engine_budgets_weights_and_determinism():
    vectors = torch.randn(1003, 4, generator=torch.Generator().manual_seed(0))
    for optimizer in ("lazy", "stochastic", "naive"):
        positions, weights, gains, blocks = block_facility_location(
            vectors, 97, block_size=40, optimizer=optimizer, rng=np.random.default_rng(1))
        assert blocks == 26 and positions.shape == (97,) and len(set(positions)) == 97
        assert weights.sum() == 1003 and (weights >= 1).all() and np.isfinite(gains).all()
        again = block_facility_location(vectors, 97, block_size=40, optimizer=optimizer,
                                        rng=np.random.default_rng(1))[0]
        np.testing.assert_array_equal(positions, again)
    parts = split_budget(np.array([5, 5, 4, 4, 1]), 9)
    assert parts.sum() == 9 and (parts >= 1).all() and (parts <= [5, 5, 4, 4, 1]).all()


def test_large_classes_go_to_blocks_and_keep_budgets():
    X, y = problem("logistic", n=3000, d=4, seed=13)
    coreset = select_coreset(X, y, fraction=0.05, exact_limit=500, block_size=50)
    assert coreset.metadata["engines"] == {-1: "blocks", 1: "blocks"}
    assert len(coreset) == 150 and len(set(coreset.indices)) == 150
    for label, budget in coreset.budgets.items():
        members = y[coreset.indices] == label
        assert members.sum() == budget
        assert coreset.weights[members].sum() == (y == label).sum()


def test_pilot_random_and_full():
    X, y = problem("logistic", n=400, d=4, seed=14)
    pilot = select_coreset(X, y, fraction=0.05, at="pilot", pilot_epochs=3)
    assert np.abs(pilot.metadata["w"]).sum() > 0
    initial = select_coreset(X, y, fraction=0.05)
    assert not np.array_equal(np.sort(pilot.indices), np.sort(initial.indices))
    random = select_coreset(X, y, fraction=0.05, method="random", seed=1)
    assert len(random) == 20 and np.isclose(random.weights.sum(), 400)
    full = select_coreset(X, y, fraction=0.05, method="full")
    assert len(full) == 400 and (full.weights == 1).all()
    ridge = select_coreset(X, X @ np.ones(4), fraction=0.05, loss="ridge")
    assert set(ridge.budgets) == {0} and len(ridge) == 20


# -- solvers ---------------------------------------------------------------------------------

@pytest.mark.parametrize("solver,options", [(sgd, dict(epochs=600, batch_size=32)),
                                            (saga, dict(epochs=150)),
                                            (preconditioned_gd, dict(epochs=300))])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_solvers_reach_the_reference(name, solver, options):
    X, y = problem(name, n=300, d=6, seed=15)
    loss = get_loss(name, alpha=1e-2)
    _, best = reference_solution(loss, X, y)
    result = solver(loss, X, y, **options)
    assert abs(result.history[-1][1] - best) <= 1e-4 * best
    assert len(result.history) == options["epochs"] + 1
    times = [t for t, _ in result.history]
    assert times == sorted(times)


def test_weights_act_as_duplicated_rows():
    X, y = problem("squared_hinge", n=50, d=4, seed=16)
    counts = np.random.default_rng(0).integers(1, 4, 50)
    loss = get_loss("squared_hinge", alpha=1e-2)
    w = np.random.default_rng(1).standard_normal(5)
    repeated = np.repeat(np.arange(50), counts)
    assert math.isclose(loss.value(w, X, y, counts), loss.value(w, X[repeated], y[repeated]),
                        rel_tol=1e-12)
    weighted = preconditioned_gd(loss, X, y, sample_weight=2.5 * counts, epochs=300).w
    _, best = reference_solution(loss, X[repeated], y[repeated])
    assert abs(loss.value(weighted, X[repeated], y[repeated]) - best) <= 1e-8 * best


def test_sklearn_logistic_regression_minimises_the_weighted_objective():
    from sklearn.linear_model import LogisticRegression
    X, y = problem("logistic", n=500, d=6, seed=17)
    alpha = 1e-3
    loss = get_loss("logistic", alpha=alpha)
    c = select_coreset(X, y, fraction=0.1, loss=loss)
    Xc, yc, weights = X[c.indices], y[c.indices], c.weights
    # ours: mean_s phi + alpha/2 |w|^2 ; sklearn: C sum_s phi + 1/2 |w|^2  =>  C = 1/(alpha S)
    model = LogisticRegression(C=1.0 / (alpha * weights.sum()), tol=1e-12, max_iter=10000)
    model.fit(Xc, yc, sample_weight=weights)
    theirs = loss.value(np.append(model.coef_[0], model.intercept_[0]), Xc, yc, weights)
    ours = preconditioned_gd(loss, Xc, yc, sample_weight=weights, epochs=400)
    assert abs(theirs - ours.history[-1][1]) <= 1e-7 * theirs
    wrong = LogisticRegression(C=1.0 / alpha, tol=1e-12, max_iter=10000)
    wrong.fit(Xc, yc, sample_weight=weights)
    off = loss.value(np.append(wrong.coef_[0], wrong.intercept_[0]), Xc, yc, weights)
    assert off > theirs * (1 + 1e-4)


def test_reselection_every_r_epochs():
    X, y = problem("logistic", n=600, d=4, seed=18)
    loss = get_loss("logistic", alpha=1e-3)
    first = select_coreset(X, y, fraction=0.1, loss=loss, method="random")
    reselect = Reselection(X, y, every=2, fraction=0.1, loss=loss, method="random")
    result = sgd(loss, X[first.indices], y[first.indices], sample_weight=first.weights,
                 epochs=7, reselect=reselect, monitor=lambda w: loss.value(w, X, y))
    assert len(result.selections) == 3
    assert not np.array_equal(result.selections[0].indices, result.selections[1].indices)
    with pytest.raises(InputError, match="reselect"):
        sgd(loss, X, y, reselect=lambda w: None)


# -- experiment, data, speed --------------------------------------------------------------------

def test_experiment_writes_results(tmp_path):
    settings = {"dataset": "breast_cancer", "methods": ["adacore", "random", "full"],
                "fractions": [0.1, 0.3], "seeds": [0, 1], "epochs": 4, "batch_size": 32,
                "alpha": 1e-3, "target": 0.5}
    results = run_convex_experiment(settings, tmp_path)
    written = json.loads((tmp_path / "results.json").read_text())
    assert written["optimum"] == results["optimum"] > 0
    assert len(written["runs"]) == 2 * (1 + 2 * 2)
    for run in written["runs"]:
        assert run["history"][0][0] == pytest.approx(run["select_seconds"])
        assert all(h[2] >= -1e-9 for h in run["history"])
        assert 0.5 < run["test_accuracy"] <= 1.0
    table = (tmp_path / "results.md").read_text()
    assert "| adacore | 10% |" in table and "| full | 100% |" in table
    for name in ("residual_10pct.png", "residual_30pct.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_libsvm_files_and_one_vs_rest_digits(tmp_path):
    from sklearn.datasets import dump_svmlight_file
    X, y = problem("logistic", n=120, d=7, seed=19, sparse=True)
    path = tmp_path / "train.svm"
    dump_svmlight_file(X, np.where(y > 0, 2, 1), str(path))    # covtype.binary's 1 / 2 labels
    data = load_convex_data("libsvm", path=str(path))
    assert sp.issparse(data.X_train) and set(np.unique(data.y_train)) == {-1.0, 1.0}
    coreset = select_coreset(data.X_train, data.y_train, fraction=0.1)
    assert coreset.metadata["vectors"] == "densified"
    digits = load_convex_data("digits", positive_class=3)
    assert abs(digits.info["positive_share"] - 0.1) < 0.02


def test_scenarios_are_valid_settings():
    for name in ("convex_breast_cancer.toml", "convex_ijcnn1_synthetic.toml"):
        settings = read_convex_scenario(REPO / "experiments" / name)
        assert settings["methods"] and settings == check_settings(settings)


def test_speed_report_reports_times_and_ratio():
    threads = torch.get_num_threads()
    report = convex_speed_report(scale=0.002, repeats=1)
    assert torch.get_num_threads() == threads and report["torch_threads"] == 1
    assert report["n"] == 1162 and report["select_seconds"] > 0
    assert report["ratio"] == pytest.approx(report["select_seconds"] / report["epoch_seconds"])
    assert report["coreset_size"] == round(0.1 * report["n"])


# -- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("call,match", [
    (lambda X, y: select_coreset(X, y + 3 * (np.arange(y.size) % 2), fraction=0.1),
     "y: the logistic loss is binary"),   # four labels (two are mapped to -1/+1)
    (lambda X, y: select_coreset(X, y, fraction=0.1, alpha=-1.0), "alpha"),
    (lambda X, y: select_coreset(np.where(X > 1.5, np.nan, X), y, fraction=0.1), "X: .* NaN"),
    (lambda X, y: select_coreset(X, np.ones_like(y), fraction=0.1), "class -1 is empty"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, loss="hinge"), "loss"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, method="greedy"), "method"),
    (lambda X, y: select_coreset(X, y, fraction=0.0), "fraction"),
    (lambda X, y: sgd("logistic", X, np.where(y > 0, 1.0, 0.0)), "y: "),
    (lambda X, y: get_loss("ridge", alpha=-0.1), "alpha"),
    (lambda X, y: check_settings({"epoch": 3}), "unknown keys"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, power=0.0), "power"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, hessian="exact", power=0.5), "power"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, at="optimum"), "at"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, newton_steps=0), "newton_steps"),
    (lambda X, y: check_settings({"newton_steps": 0}), "newton_steps"),
])
def test_bad_input_names_the_argument(call, match):
    X, y = problem("logistic", n=40, d=3, seed=20)
    with pytest.raises(InputError, match=match):
        call(X, y)


def test_full_population_hessian_refuses_a_large_p(monkeypatch):
    import adacore.convex.select as select
    monkeypatch.setattr(select, "FULL_LIMIT", 3)
    X, y = problem("logistic", n=40, d=3, seed=20)
    with pytest.raises(InputError, match="hessian: 'mean' .* p = 4 exceeds 3"):
        select_coreset(X, y, fraction=0.1, hessian="mean")
    assert len(select_coreset(X, y, fraction=0.1)) == 4      # the diagonal has no limit


def test_bad_libsvm_file_names_the_path(tmp_path):
    path = tmp_path / "broken.svm"
    path.write_text("1 3:0.5 7:1\n-1 this is not libsvm\n")
    with pytest.raises(InputError, match="broken.svm"):
        load_convex_data("libsvm", path=str(path))
    with pytest.raises(InputError, match="no file"):
        load_convex_data("libsvm", path=str(tmp_path / "missing.svm"))


def test_cli_compare_task_convex(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    scenario = Path(__file__).parent.parent / "experiments" / "convex_breast_cancer.toml"
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "compare", "--task", "convex",
                             "--config", str(scenario), "--seeds", "0", "--methods",
                             "adacore,random,full", "--out", str(tmp_path)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    text = (tmp_path / "results.md").read_text()
    assert "| adacore |" in text and "| full |" in text and "| craig |" not in text
    missing = subprocess.run([sys.executable, "-m", "adacore.cli", "compare", "--task", "convex",
                              "--out", str(tmp_path / "x")], capture_output=True, text=True,
                             timeout=300)
    assert missing.returncode == 2 and "--config" in missing.stderr


@pytest.mark.parametrize("labels", [("no", "yes"), (0, 1), (3.5, 7.0)])
def test_select_coreset_takes_any_two_labels_like_scikit_learn(labels):
    """Any two labels map to -1/+1 in sorted order (recorded), and select what the
    -1/+1 labels select."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((120, 4))
    signs = np.where(rng.random(120) < 0.4, -1.0, 1.0)
    y = np.where(signs > 0, labels[1], labels[0])
    if isinstance(labels[0], str):
        y = y.astype(object)
    mapped = select_coreset(X, y, fraction=0.1, loss="logistic", alpha=1e-3)
    reference = select_coreset(X, signs, fraction=0.1, loss="logistic", alpha=1e-3)
    np.testing.assert_array_equal(mapped.indices, reference.indices)
    assert mapped.metadata["label_map"] == {str(labels[0]): -1, str(labels[1]): 1}
    assert "label_map" not in reference.metadata
    with pytest.raises(InputError, match="y"):
        select_coreset(X, np.arange(120) % 3, fraction=0.1, loss="logistic")
