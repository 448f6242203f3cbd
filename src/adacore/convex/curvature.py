"""Population curvature of a convex objective: its Hessian, powers of it, a Newton step.

For the objective F(w) = (1 / n) sum_i phi(f_i, y_i) + alpha / 2 ||w||^2 of
:mod:`adacore.convex.losses` (LASSO: its smooth part, alpha not entering), the Hessian
averaged over the data is

    H(w) = (1 / n) [X, 1]^T diag(phi''(f)) [X, 1] + alpha [I 0; 0 0]

(the Gauss-Newton matrix of these losses: for a generalised linear loss it is the exact
Hessian). Unlike a single example's Hessian, phi''_i [x_i; 1][x_i; 1]^T + ..., a rank-one
matrix whose diagonal phi''_i x_i^2 vanishes on the small entries of x_i, H is
well-conditioned on any data with some spread, so its inverse powers do not explode.

:func:`newton_point` takes Newton steps w <- w - (H(w) + eps I)^-1 grad F(w) on the full
data: directly (the p x p matrix in row blocks, then a symmetric solve) for
p <= :data:`DIRECT_LIMIT`, else by conjugate gradients with Hessian-vector products and a
Jacobi preconditioner (two passes over X per iteration, to a relative residual of
:data:`CG_TOLERANCE` or :data:`CG_ITERATIONS` iterations); both solve the same system.
For logistic regression from w = 0 the first step is twice the ridge regression of y on
[x; 1] (penalty 4 alpha, intercept free): a cheap solution that already knows the
direction of the separating hyperplane, so that at it the per-example terms phi'(f_i)
and phi''(f_i) tell examples near the boundary from those far from it (at w = 0 they are
the same for every example).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.linalg import eigh, solve
from scipy.linalg.blas import dsyrk
from scipy.sparse.linalg import LinearOperator, cg

from adacore.convex.losses import ConvexLoss

__all__ = ["CG_ITERATIONS", "CG_TOLERANCE", "DIRECT_LIMIT", "FULL_LIMIT", "inverse_power",
           "mean_hessian_diag", "newton_point", "population_hessian"]

DIRECT_LIMIT = 256       # largest p whose Newton system is formed and solved directly
FULL_LIMIT = 4096        # largest p for a full p x p population preconditioner
CG_ITERATIONS = 200
CG_TOLERANCE = 1e-8
_BLOCK_ROWS = 8192


def _second(loss: ConvexLoss, w: np.ndarray, X, y: np.ndarray) -> np.ndarray:
    scores = np.zeros(X.shape[0]) if not w.any() else loss._scores(w, X)
    return loss.derivatives(scores, y)[2]


def mean_hessian_diag(loss: ConvexLoss, w: np.ndarray, X, y: np.ndarray,
                      second: np.ndarray | None = None) -> np.ndarray:
    """diag H(w): the per-example Hessian diagonals averaged over the data, shape (p,).

    ``second`` (phi'' per example) may be passed when already known; a dense X is read in
    blocks of rows (no (n, d) temporary of squares).
    """
    if second is None:
        second = _second(loss, w, X, y)
    n, d = X.shape
    if sp.issparse(X):
        squares = np.asarray(X.power(2).T @ second).reshape(-1)
    else:
        squares = np.zeros(d)
        for start in range(0, n, _BLOCK_ROWS):
            rows = X[start:start + _BLOCK_ROWS]
            squares += (rows * rows).T @ second[start:start + _BLOCK_ROWS]
    diagonal = np.append(squares, second.sum()) if loss.fit_intercept else squares
    diagonal /= n
    diagonal[:d] += loss.l2
    return diagonal


def population_hessian(loss: ConvexLoss, w: np.ndarray, X, y: np.ndarray,
                       second: np.ndarray | None = None) -> np.ndarray:
    """H(w) of the module docstring as a dense (p, p) float64 array.

    ``second`` (phi'' per example) may be passed when already known. Dense X is read in
    blocks of rows, so that no (n, p) temporary is made.
    """
    if second is None:
        second = _second(loss, w, X, y)
    n, d = X.shape
    p = loss.n_params(d)
    H = np.zeros((p, p))
    if sp.issparse(X):
        H[:d, :d] = (X.T @ X.multiply(second[:, None]).tocsr()).toarray()
    else:
        roots = np.sqrt(second)     # phi'' >= 0 for every loss here
        gram = np.zeros((d, d), order="F")
        for start in range(0, n, _BLOCK_ROWS):
            scaled = X[start:start + _BLOCK_ROWS] * roots[start:start + _BLOCK_ROWS, None]
            # the upper triangle of scaled^T scaled (half of a general product's work)
            gram = dsyrk(1.0, scaled.T, beta=1.0, c=gram, overwrite_c=True)
        H[:d, :d] = np.triu(gram) + np.triu(gram, 1).T
    if loss.fit_intercept:
        column = np.asarray(X.T @ second).reshape(-1)
        H[:d, d] = H[d, :d] = column
        H[d, d] = second.sum()
    H /= n
    H[np.arange(d), np.arange(d)] += loss.l2
    return H


def inverse_power(H: np.ndarray, power: float, eps: float) -> np.ndarray:
    """(H + eps I)^-power for a symmetric positive semi-definite H (eigendecomposition)."""
    values, vectors = eigh(H)
    values = np.maximum(values, 0.0) + eps      # round-off can leave -1e-17 on a PSD H
    return (vectors * values ** -power) @ vectors.T


def newton_point(loss: ConvexLoss, X, y: np.ndarray, w: np.ndarray, *, steps: int = 1,
                 eps: float = 1e-4) -> tuple[np.ndarray, dict]:
    """``steps`` damped Newton steps on the full objective from ``w``.

    Each step is w <- w - (H(w) + eps I)^-1 grad F(w) with grad F the gradient of the
    smooth part (LASSO's l1 term is left out: its step is the least-squares one).

    Returns
    -------
    (w, info) : the point, and {"solver": "direct" or "cg", "cg_iterations": total CG
    iterations (0 for the direct solver)}.
    """
    w = np.array(w, dtype=np.float64)
    p = w.shape[0]
    direct = p <= DIRECT_LIMIT
    iterations = 0
    for _ in range(steps):
        second = _second(loss, w, X, y)
        gradient = loss._smooth_value_and_gradient(w, X, y)[1]
        if direct:
            H = population_hessian(loss, w, X, y, second)
            H[np.arange(p), np.arange(p)] += eps
            step = solve(H, gradient, assume_a="pos")
        else:
            step, used = _cg_step(loss, X, second, gradient, eps)
            iterations += used
        w = w - step
    return w, {"solver": "direct" if direct else "cg", "cg_iterations": iterations}


def _cg_step(loss: ConvexLoss, X, second: np.ndarray, gradient: np.ndarray, eps: float):
    n, d = X.shape
    p = gradient.shape[0]
    ridge = loss.l2 * loss._regulariser_mask(d) + eps
    weights = second / n

    def times(v):
        return loss._transpose_times(X, weights * loss._scores(v, X)) + ridge * v

    squares = X.power(2) if sp.issparse(X) else X * X
    diagonal = loss._transpose_times(squares, weights) + ridge
    used = [0]

    def count(_):
        used[0] += 1

    step, _ = cg(LinearOperator((p, p), matvec=times, dtype=np.float64), gradient,
                 M=LinearOperator((p, p), matvec=lambda v: v / diagonal, dtype=np.float64),
                 rtol=CG_TOLERANCE, atol=0.0, maxiter=CG_ITERATIONS, callback=count)
    return step, used[0]
