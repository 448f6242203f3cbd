"""The incremental OMP refit against the from-scratch one it replaced.

The reference below is the engine as it was: every step's weights solved anew by
``scipy.optimize.nnls`` on the augmented system [A_S; sqrt(lam) I] w = [b; 0], in NumPy.
The problems are continuous random draws (no exact ties between scores, so the support is
determined), including the cases the Gram form has to get right: lam = 0, near-duplicate
columns, columns that lose their weight (and regain it), the tolerance stop, k larger than
the useful support.
"""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from adacore.selection import omp
from adacore.selection.omp import nonnegative_omp


def augmented_nnls(columns, b, lam):
    s = columns.shape[1]
    system = np.vstack([columns, np.sqrt(lam) * np.eye(s)])
    weights, _ = nnls(system, np.concatenate([b, np.zeros(s)]), maxiter=max(100, 10 * s))
    return weights


def reference_omp(A, b, k, lam, tol):
    """The from-scratch engine; also returns every step's weights."""
    norm = float(np.linalg.norm(b))
    picked = np.zeros(A.shape[1], dtype=bool)
    support, steps, weights = [], [], np.zeros(0)
    residual, norms = b.copy(), [norm]
    while len(support) < k and norms[-1] > tol * norm:
        scores = A.T @ residual
        scores[picked] = -np.inf
        best = int(np.argmax(scores))
        if not scores[best] > 0:
            break
        picked[best] = True
        support.append(best)
        weights = augmented_nnls(A[:, support], b, lam)
        residual = b - A[:, support] @ weights
        norms.append(float(np.sqrt(residual @ residual + lam * weights @ weights)))
        steps.append(weights)
    return np.asarray(support, dtype=np.int64), weights, np.asarray(norms), steps


def draw(kind, seed, d):
    """(A, b) of one kind; b = the sum of A's columns, GradMatch's target, unless said."""
    rng = np.random.default_rng(seed)
    m = 80
    if kind == "gaussian":                   # columns of very different lengths
        A = rng.standard_normal((d, m)) * np.exp(rng.standard_normal(m))
    elif kind == "clustered":                # near-collinear groups: weights move around
        centres = rng.standard_normal((d, 4)) * 3
        A = centres[:, rng.integers(4, size=m)] + 0.3 * rng.standard_normal((d, m))
    elif kind == "positive":                 # one orthant: picks lose their weight often
        A = np.abs(rng.standard_normal((d, m))) + 0.2
        return A, A @ rng.uniform(0, 1, m) + rng.standard_normal(d)
    else:                                    # last-layer gradients (p - y) (x) h, C = 3
        h = np.abs(rng.standard_normal((m, d // 3)))
        p = rng.dirichlet(np.ones(3), size=m)
        A = ((p - np.eye(3)[0])[:, :, None] * h[:, None, :]).reshape(m, -1).T
    return A, A.sum(axis=1)


KINDS = ["gaussian", "clustered", "positive", "last_layer"]


def assert_same_weights(weights, expected):
    scale = max(float(np.max(expected, initial=0.0)), 1e-300)
    np.testing.assert_allclose(weights, expected, rtol=1e-8, atol=1e-10 * scale)


def assert_same_refit(picked, b, lam, weights, expected):
    """The same weights where the minimiser is unique: lam > 0, or A_S of full column
    rank (here: no more picks than rows). With lam = 0 and more picks than rows, the
    minimisers of an exact fit form a polytope, and a warm start may end at another
    vertex than a cold one: then the same fit, both exact minimisers."""
    if lam > 0 or picked.shape[1] <= picked.shape[0]:
        assert_same_weights(weights, expected)
    else:
        np.testing.assert_allclose(picked @ weights, picked @ expected, rtol=0,
                                   atol=1e-9 * np.linalg.norm(b))
        assert np.all(weights >= 0)


@pytest.fixture
def solvers(monkeypatch):
    """The Gram-form solvers the pursuit makes, recorded (for their counters)."""
    made = []

    class Recorded(omp._GramRefit):
        def __init__(self, *args):
            super().__init__(*args)
            made.append(self)

    monkeypatch.setitem(omp._REFITS, "incremental", Recorded)
    return made


@pytest.mark.parametrize("lam", [0.0, 1e-3, 0.5, 5.0])
@pytest.mark.parametrize("d", [6, 30])
@pytest.mark.parametrize("kind", KINDS)
def test_same_support_and_weights_as_the_from_scratch_refit(kind, d, lam, solvers):
    tol = 1e-9 if lam == 0 else 1e-4       # lam = 0 fits exactly: stop there, not on noise
    for seed in range(5):
        A, b = draw(kind, seed, d)
        support, weights, norms = nonnegative_omp(A, b, 40, lam=lam, tol=tol)
        ref_support, ref_weights, ref_norms, _ = reference_omp(A, b, 40, lam, tol)
        np.testing.assert_array_equal(support, ref_support)
        assert_same_refit(A[:, support], b, lam, weights, ref_weights)
        np.testing.assert_allclose(norms, ref_norms, rtol=1e-9, atol=1e-12 * ref_norms[0])
    # the fast path did the work: no step was handed to the from-scratch solve
    assert sum(solver.scratch_solves for solver in solvers) == 0


@pytest.mark.parametrize("kind", KINDS)
def test_every_step_is_the_augmented_nnls(kind):
    """The solver fed the reference's picks: each step's weights and residual."""
    columns_lost = columns_regained = 0
    for lam in (0.0, 0.5):
        for seed in range(4):
            A, b = draw(kind, 10 + seed, 30)
            support, _, _, steps = reference_omp(A, b, 40, lam, 1e-9 if lam == 0 else 0.0)
            solver = omp._GramRefit(b, len(support), lam)
            previous = np.zeros(0)
            for t, (column, expected) in enumerate(zip(support, steps)):
                weights, residual = solver.add(A[:, column])
                picked = A[:, support[:t + 1]]
                assert_same_refit(picked, b, lam, weights, expected)
                np.testing.assert_allclose(residual, b - picked @ weights, rtol=0,
                                           atol=1e-12 * np.linalg.norm(b))
                assert np.all(weights >= 0)
                columns_lost += int(np.sum((previous > 0) & (weights[:-1] == 0)))
                columns_regained += int(np.sum((previous == 0) & (weights[:-1] > 0)))
                previous = weights
            assert solver.scratch_solves == 0
    assert columns_lost > 0 and columns_regained > 0     # the active set moved both ways


def test_tolerance_stop_and_more_budget_than_useful_support():
    rng = np.random.default_rng(3)
    A = rng.standard_normal((40, 120))
    b = A[:, [5, 17, 60]] @ np.array([1.0, 2.0, 0.5])           # exact in 3 columns
    support, weights, norms = nonnegative_omp(A, b, 100, lam=0.0, tol=1e-10)
    ref = reference_omp(A, b, 100, 0.0, 1e-10)
    np.testing.assert_array_equal(support, ref[0])
    assert sorted(support.tolist()) == [5, 17, 60] and norms[-1] <= 1e-10 * norms[0]
    assert_same_weights(weights, ref[1])
    # soon no column correlates positively with the residual: stops before k
    positive = np.abs(rng.standard_normal((5, 50)))
    b = positive[:, 0] + positive[:, 1] - 3 * positive.mean(axis=1)
    support, weights, norms = nonnegative_omp(positive, b, 50, lam=0.5, tol=0.0)
    ref = reference_omp(positive, b, 50, 0.5, 0.0)
    np.testing.assert_array_equal(support, ref[0])
    assert 0 < support.shape[0] < 50
    assert_same_weights(weights, ref[1])


@pytest.mark.parametrize("gap", [1e-7, 1e-9, 1e-12])
def test_a_near_duplicate_without_penalty_falls_back_to_the_scratch_solve(gap):
    """lam = 0 and a column a hair from a passive one: its Cholesky append would be
    ill-conditioned, so the step is solved from scratch, and every step is still the
    augmented NNLS (the twins' weights are then as well determined as scipy makes them)."""
    rng = np.random.default_rng(4)
    a, others = rng.standard_normal(8), rng.standard_normal((8, 6))
    b = 2 * a + others @ rng.uniform(0.5, 1.0, 6) + 0.3 * rng.standard_normal(8)
    residual = b - a * (a @ b) / (a @ a)                  # once a alone is fitted
    twin = a + gap * residual / np.linalg.norm(residual)  # so its dual is gap |r| > 0
    sequence = np.column_stack([a, twin, others])
    solver = omp._GramRefit(b, 8, 0.0)
    for t in range(8):
        weights, residual = solver.add(sequence[:, t])
        expected, _ = nnls(sequence[:, :t + 1], b, maxiter=100)
        if t == 1:
            assert solver.scratch_solves == 1      # the twin: refused by the factor
        np.testing.assert_allclose(weights, expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(residual, b - sequence[:, :t + 1] @ weights, atol=1e-12)
        assert np.all(weights >= 0)


def test_the_fallback_and_a_failed_refactor_keep_the_result(monkeypatch):
    """Steps handed to the scratch solve (one in three) and factors refused (one in
    two) change nothing: the next step restarts from the scratch solution's set."""
    calls = {"polish": 0, "refactor": 0}
    polish, refactor = omp._GramRefit._polish, omp._GramRefit._refactor

    def flaky_polish(self):
        calls["polish"] += 1
        if calls["polish"] % 3 == 0:
            raise omp._Unstable
        return polish(self)

    def flaky_refactor(self):
        calls["refactor"] += 1
        if calls["refactor"] % 2 == 0:
            self.factored = False
            raise omp._Unstable
        refactor(self)

    monkeypatch.setattr(omp._GramRefit, "_polish", flaky_polish)
    monkeypatch.setattr(omp._GramRefit, "_refactor", flaky_refactor)
    for kind in KINDS:
        A, b = draw(kind, 20, 12)
        for lam in (0.0, 0.5):
            support, weights, norms = nonnegative_omp(A, b, 30, lam=lam, tol=1e-9)
            ref_support, ref_weights, ref_norms, _ = reference_omp(A, b, 30, lam, 1e-9)
            np.testing.assert_array_equal(support, ref_support)
            assert_same_refit(A[:, support], b, lam, weights, ref_weights)
            np.testing.assert_allclose(norms, ref_norms, rtol=1e-9, atol=1e-12 * norms[0])
    assert calls["polish"] > 20 and calls["refactor"] > 20


def test_every_append_refused_is_the_scratch_refit(monkeypatch, solvers):
    monkeypatch.setattr(omp, "_PIVOT_FLOOR", np.inf)
    A, b = draw("clustered", 5, 12)
    support, weights, norms = nonnegative_omp(A, b, 30, lam=0.5)
    ref_support, ref_weights, ref_norms, _ = reference_omp(A, b, 30, 0.5, 1e-4)
    np.testing.assert_array_equal(support, ref_support)
    assert_same_weights(weights, ref_weights)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-12)
    assert solvers[0].scratch_solves == support.shape[0] == 30


def test_dropping_a_column_from_the_factor_is_the_factor_of_the_smaller_block():
    rng = np.random.default_rng(6)
    B = rng.standard_normal((30, 12))
    solver = omp._GramRefit(np.zeros(30), 12, 0.1)
    for j in range(12):
        solver.columns[:, j] = B[:, j]
    solver.gram[:12, :12] = B.T @ B + 0.1 * np.eye(12)
    solver.size = 12
    solver.passive = list(rng.permutation(12))
    solver._refactor()
    for order in (3, 0, 9, 8, 1):            # the middle, the front, the end
        solver._drop(order)
        p = len(solver.passive)
        upper, _ = omp.dtpttr(p, solver.packed[:p * (p + 1) // 2], uplo="U")
        upper = np.triu(upper)
        block = solver.gram[np.ix_(solver.passive, solver.passive)]
        np.testing.assert_allclose(upper.T @ upper, block, rtol=1e-12, atol=1e-12)
        assert np.all(np.diag(upper) > 0)


def test_deterministic_and_the_torch_path_agrees():
    A, b = draw("clustered", 7, 30)
    first = nonnegative_omp(A, b, 40, lam=0.5)
    second = nonnegative_omp(torch.from_numpy(A), torch.from_numpy(b), 40, lam=0.5)
    for left, right in zip(first, second):
        np.testing.assert_array_equal(left, right)
