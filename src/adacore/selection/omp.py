"""Non-negative orthogonal matching pursuit with a ridge-regularised refit.

The engine behind GradMatch: approximate a target vector ``b`` by a non-negative
combination of a few columns of ``A``. It knows nothing of models or labels.

Each step picks the unpicked column with the largest positive inner product with the
residual, then refits the weights of every picked column by

    min_w ||A_S w - b||^2 + lam ||w||^2   subject to w >= 0,

solved exactly as the non-negative least-squares problem on the augmented system
[A_S; sqrt(lam) I] w = [b; 0] (``scipy.optimize.nnls``).

The residual this module reports is the augmented system's,
sqrt(||b - A_S w||^2 + lam ||w||^2), the square root of the objective above. Two
reasons: the pursuit *is* plain OMP on the augmented system (for an unpicked column the
augmented inner product equals A_j^T (b - A_S w), because its weight is 0), and this
residual can never increase from one step to the next (the previous weights, padded
with a 0, stay feasible), whereas the data residual ||b - A_S w|| alone can grow by a
little when lam > 0. With lam = 0 the two coincide.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from scipy.optimize import nnls

from adacore.validation import InputError, as_tensor, check_int, check_positive


class OMPResult(NamedTuple):
    """What :func:`nonnegative_omp` returns; unpacks as ``support, weights, residuals``.

    Attributes
    ----------
    support : ndarray of int64, shape (s,)
        Picked column numbers, in selection order, s <= k.
    weights : ndarray of float64, shape (s,)
        The final refit's weights, ``weights[t]`` for ``support[t]``; all >= 0, and some
        may be exactly 0 (a column can lose its weight when later columns join).
    residual_norms : ndarray of float64, shape (s + 1,)
        ``residual_norms[0]`` = ||b|| (nothing picked), ``residual_norms[t]`` the
        (augmented) residual norm after t picks; non-increasing up to the refit's
        rounding.
    """

    support: np.ndarray
    weights: np.ndarray
    residual_norms: np.ndarray


def nonnegative_omp(A, b, k: int, *, lam: float = 0.5, tol: float = 1e-4) -> OMPResult:
    """Greedy non-negative sparse approximation b ~ A[:, S] w, |S| <= k, w >= 0.

    Parameters
    ----------
    A : array or tensor, shape (d, m)
        The candidates, one per *column* (for per-example vectors stored as rows of an
        (m, d) array ``X``, pass ``X.T``; a transposed tensor is not copied). Computed in
        float64 on A's device when A is a tensor (the inner products run there; each
        refit runs on the CPU, it only involves the d x s picked block).
    b : array or tensor, shape (d,)
        The target.
    k : int
        Largest number of picks, 1 <= k <= m.
    lam : float
        Ridge penalty of the refit, >= 0 (0: plain non-negative least squares).
    tol : float
        Relative tolerance, >= 0: stop once the residual norm <= tol * ||b||.

    Returns
    -------
    OMPResult
        ``(support, weights, residual_norms)``. The pursuit stops after ``k`` picks, when
        the residual norm falls to ``tol * ||b||`` (at once for b = 0), or when no
        unpicked column has a positive inner product with the residual.

    Notes
    -----
    Picks use raw inner products A_j^T r (columns are not normalised, so long columns
    are favoured); ties go to the lowest column number. A picked column stays in the
    support even when a later refit sets its weight to 0, and is never picked again.
    A caller building a coreset must drop those zero-weight picks, since coreset weights
    are > 0 (:class:`adacore.strategies.gradmatch.GradMatch` does).
    """
    matrix = as_tensor("A", A, ndim=2, dtype=torch.float64)
    target = as_tensor("b", b, ndim=1, dtype=torch.float64, device=matrix.device)
    if target.shape[0] != matrix.shape[0]:
        raise InputError(f"b: got length {target.shape[0]}, expected {matrix.shape[0]} "
                         f"(the number of rows of A, shape {tuple(matrix.shape)})")
    k = check_int("k", k, 1, matrix.shape[1])
    lam = check_positive("lam", lam, allow_zero=True)
    tol = check_positive("tol", tol, allow_zero=True)
    return _pursue(matrix, target, k, lam, tol)


def _pursue(matrix: torch.Tensor, target: torch.Tensor, k: int, lam: float,
            tol: float) -> OMPResult:
    d, m = matrix.shape
    target_cpu = target.cpu().numpy()
    target_norm = float(np.linalg.norm(target_cpu))
    stop_at = tol * target_norm
    picked = torch.zeros(m, dtype=torch.bool, device=matrix.device)
    support: list[int] = []
    columns = np.empty((d, k), dtype=np.float64)   # the picked block, on the CPU
    weights = np.zeros(0, dtype=np.float64)
    residual = target_cpu.copy()
    residual_norms = [target_norm]
    while len(support) < k and residual_norms[-1] > stop_at:
        scores = matrix.T @ torch.from_numpy(residual).to(matrix.device)
        scores.masked_fill_(picked, -np.inf)
        best = int(torch.argmax(scores))            # first maximum: lowest index on ties
        if not float(scores[best]) > 0.0:
            break
        picked[best] = True
        columns[:, len(support)] = matrix[:, best].cpu().numpy()
        support.append(best)
        weights = _ridge_nnls(columns[:, :len(support)], target_cpu, lam)
        residual = target_cpu - columns[:, :len(support)] @ weights
        fit = float(residual @ residual) + lam * float(weights @ weights)
        residual_norms.append(float(np.sqrt(fit)))
    return OMPResult(np.asarray(support, dtype=np.int64), weights,
                     np.asarray(residual_norms, dtype=np.float64))


def _ridge_nnls(columns: np.ndarray, target: np.ndarray, lam: float) -> np.ndarray:
    """argmin_{w >= 0} ||columns w - target||^2 + lam ||w||^2, via the augmented system."""
    s = columns.shape[1]
    if lam > 0:
        system = np.vstack([columns, np.sqrt(lam) * np.eye(s)])
        rhs = np.concatenate([target, np.zeros(s)])
    else:
        system, rhs = columns, target
    try:
        weights, _ = nnls(system, rhs, maxiter=max(100, 10 * s))
    except RuntimeError as error:   # the active-set method ran out of iterations
        raise RuntimeError(f"nonnegative_omp: the refit on {s} picked columns did not "
                           f"converge ({error})") from error
    return weights
