"""Convex models: closed forms against autograd and Hutchinson, selection, solvers, experiment."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from adacore import AdaCore, Craig, InputError, facility_location, hutchinson_diagonal
from adacore.convex import (LOSSES, Reselection, block_facility_location,
                            blocked_facility_location, check_settings, convex_speed_report,
                            convex_vectors, get_loss, load_convex_data, preconditioned_gd,
                            read_convex_scenario, reference_solution, run_convex_experiment,
                            saga, select_coreset, sgd)
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

def test_adacore_and_craig_are_the_library_strategies():
    X, y = problem("logistic", n=120, d=5, seed=9)
    loss = get_loss("logistic", alpha=1e-3)
    w = np.random.default_rng(0).standard_normal(6) * 0.2
    grads = loss.per_example_grads(w, X, y)
    ours = select_coreset(X, y, fraction=0.1, loss=loss, w=w)
    theirs = AdaCore(0.1).select(grads, y.astype(int),
                                 hessian_diag=loss.per_example_hessian_diag(w, X, y))
    np.testing.assert_array_equal(ours.indices, theirs.indices)
    np.testing.assert_array_equal(ours.weights, theirs.weights)
    craig = select_coreset(X, y, fraction=0.1, loss=loss, w=w, method="craig")
    np.testing.assert_array_equal(craig.indices, Craig(0.1).select(grads, y.astype(int)).indices)
    assert not np.array_equal(ours.indices, craig.indices)
    assert ours.weights.sum() == 120 and set(ours.budgets) == {-1, 1}


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_vectors_solve_the_per_example_systems(name):
    loss = get_loss(name, alpha=0.05)
    X, y = problem(name, n=12, d=4, seed=10)
    w = np.random.default_rng(2).standard_normal(5) * 0.3
    grads = loss.per_example_grads(w, X, y)
    diags = loss.per_example_hessian_diag(w, X, y)
    eps = 1e-2
    diagonal = convex_vectors(X, y, loss=loss, w=w, eps=eps)
    np.testing.assert_allclose(diagonal, grads / (diags + eps), rtol=2e-5, atol=1e-6)
    exact = convex_vectors(X, y, loss=loss, w=w, eps=eps, hessian="exact")
    for i in range(12):     # against the autograd Hessian of l_i, plus eps I
        fn = torch_example_loss(loss, torch.tensor(X[i]), torch.tensor(y[i]))
        hessian = torch.autograd.functional.hessian(fn, torch.tensor(w)).numpy()
        solved = np.linalg.solve(hessian + eps * np.eye(5), grads[i])
        np.testing.assert_allclose(exact[i], solved, rtol=1e-4,
                                   atol=1e-4 * np.abs(solved).max())
    np.testing.assert_allclose(convex_vectors(X, y, loss=loss, w=w, method="craig"), grads,
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hessian", ["diagonal", "exact"])
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
    (lambda X, y: select_coreset(X, y + 1, fraction=0.1), "y: the logistic loss is binary"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, alpha=-1.0), "alpha"),
    (lambda X, y: select_coreset(np.where(X > 1.5, np.nan, X), y, fraction=0.1), "X: .* NaN"),
    (lambda X, y: select_coreset(X, np.ones_like(y), fraction=0.1), "class -1 is empty"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, loss="hinge"), "loss"),
    (lambda X, y: select_coreset(X, y, fraction=0.1, method="greedy"), "method"),
    (lambda X, y: select_coreset(X, y, fraction=0.0), "fraction"),
    (lambda X, y: sgd("logistic", X, np.where(y > 0, 1.0, 0.0)), "y: "),
    (lambda X, y: get_loss("ridge", alpha=-0.1), "alpha"),
    (lambda X, y: check_settings({"epoch": 3}), "unknown keys"),
])
def test_bad_input_names_the_argument(call, match):
    X, y = problem("logistic", n=40, d=3, seed=20)
    with pytest.raises(InputError, match=match):
        call(X, y)


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
