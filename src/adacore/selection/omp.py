"""Non-negative orthogonal matching pursuit with a ridge-regularised refit.

The engine behind GradMatch: approximate a target vector ``b`` by a non-negative
combination of a few columns of ``A``. It knows nothing of models or labels.

Each step picks the unpicked column with the largest positive inner product with the
residual, then refits the weights of every picked column by

    min_w ||A_S w - b||^2 + lam ||w||^2   subject to w >= 0,

the non-negative least-squares problem on the augmented system [A_S; sqrt(lam) I] w =
[b; 0], solved exactly.

How the refit is solved: consecutive refits differ by one column, so
:class:`_GramRefit` keeps the Gram form G_S = A_S^T A_S + lam I and A_S^T b (one row
and column more per pick) and runs Lawson and Hanson's active-set method on it,
warm-started from the previous step's solution, with a Cholesky factor of the passive
block (the picks with weight > 0) that a column entering extends by one append and a
column leaving shrinks by one O(s^2) downdate. In the common step the new pick enters
and nothing leaves: O(d s + s^2), where a solve from scratch is an NNLS on a
(d + s) x s system. The duals and the residual are computed from A_S itself, and every
refit ends with iterative refinement against them, so the weights are those of a solve
on the augmented system to rounding, not of the normal equations. A refit the Gram
form cannot be trusted with (a column almost dependent on the passive ones, which
takes lam = 0 or tiny against the columns' squared lengths; a refinement that does not
settle) is solved from scratch by
``scipy.optimize.nnls`` on the augmented system, as every refit was before;
``_pursue(..., refit="scratch")`` still solves them all that way, the reference of the
tests and of ``benchmarks/omp_refit.py``. The two agree to rounding wherever the
minimiser is unique, which it always is when lam > 0 (a weight within rounding of 0 is
taken for 0). With lam = 0 and more picks than rows, an exact fit can have many
minimisers and the two may return different ones, with the same fit.

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
from scipy.linalg.blas import dtpsv
from scipy.linalg.lapack import dtpqrt, dtpttr, dtrttp
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
    are > 0 (:class:`adacore.strategies.gradmatch.GradMatch` does). Each refit is
    solved incrementally (the module docstring): the weights are the refit's unique
    minimiser to rounding when lam > 0; with lam = 0 and more picks than rows of A,
    one of the minimisers.
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


def _pursue(matrix: torch.Tensor, target: torch.Tensor, k: int, lam: float, tol: float,
            *, refit: str = "incremental") -> OMPResult:
    """The pursuit on validated tensors; ``refit="scratch"`` is the reference refit.

    ``refit`` only changes how each step's weights are computed, not what:
    ``"incremental"`` (:class:`_GramRefit`) or ``"scratch"`` (:class:`_ScratchRefit`, the
    solver before it, for ``benchmarks/omp_refit.py``).
    """
    m = matrix.shape[1]
    target_cpu = target.cpu().numpy()
    target_norm = float(np.linalg.norm(target_cpu))
    stop_at = tol * target_norm
    picked = torch.zeros(m, dtype=torch.bool, device=matrix.device)
    support: list[int] = []
    solver = _REFITS[refit](target_cpu, k, lam)
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
        support.append(best)
        weights, residual = solver.add(matrix[:, best].cpu().numpy())
        fit = float(residual @ residual) + lam * float(weights @ weights)
        residual_norms.append(float(np.sqrt(fit)))
    return OMPResult(np.asarray(support, dtype=np.int64), weights,
                     np.asarray(residual_norms, dtype=np.float64))


class _ScratchRefit:
    """Each refit solved from scratch by ``scipy.optimize.nnls`` (the reference)."""

    def __init__(self, target: np.ndarray, capacity: int, lam: float):
        self.target, self.lam = target, lam
        self.columns = np.empty((target.shape[0], capacity), dtype=np.float64)
        self.size = 0

    def add(self, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append a picked column; return the refit's weights and b - A_S w."""
        self.columns[:, self.size] = column
        self.size += 1
        picked = self.columns[:, :self.size]
        weights = _ridge_nnls(picked, self.target, self.lam)
        return weights, self.target - picked @ weights


class _Unstable(Exception):
    """The Gram form cannot be trusted for this refit: solve it from scratch."""


# a column joins the Cholesky factor only if its squared distance (in the augmented
# system) to the span of the passive columns is above this share of its squared length:
# nearer to dependent, the normal equations would lose the accuracy of the from-scratch
# solve (only possible with lam = 0 or lam tiny against the columns' lengths)
_PIVOT_FLOOR = 1e-12
# iterative refinement against the true residual: stop once a correction is below this
# share of the largest weight, give up (and solve from scratch) after _POLISH_STEPS
_POLISH_TOL = 1e-11
_POLISH_STEPS = 4
_EPS = float(np.finfo(np.float64).eps)


class _GramRefit:
    """The refit in Gram form, warm-started from the previous step's passive set.

    Holds G = A_S^T A_S + lam I and c = A_S^T b for the s picked columns (one row and
    column appended per pick, from A_S^T A_j), and an upper Cholesky factor R
    (R^T R = G_PP) of the passive block, the picks with weight > 0, packed by columns:
    appending a column to R is a copy of p + 1 numbers and the triangular solves (BLAS
    ``dtpsv``) read the leading part in place. Lawson-Hanson's active-set method runs
    on it. The entering column is the one with the largest dual A_j^T r - lam w_j
    (at first the new pick, whose dual is its score); it joins R by one append, and the
    weights of the passive set are two triangular solves away. When that solve would
    make a weight negative, the method moves to the boundary and the columns that reach
    0 leave R (one O(p^2) downdate each, :meth:`_drop`). In the common step the new
    pick enters and nobody leaves: O(d s + s^2) instead of an NNLS from scratch.

    The duals and the residual come from A_S itself (r = b - A_S w, then A_S^T r), not
    from c - G w, and each refit ends with iterative refinement against them (the
    correction G_PP^-1 (A_P^T r - lam w_P)), which makes the weights as accurate as
    those of a solve on the augmented system rather than of the normal equations.

    When the Gram form cannot be trusted (a column too near the span of the passive
    ones, a factor that fails, a refinement that does not settle or makes a weight
    non-positive, the iteration cap) the step is solved from scratch like
    :class:`_ScratchRefit`, and the next step starts from that solution's passive set.
    """

    def __init__(self, target: np.ndarray, capacity: int, lam: float):
        self.target, self.lam = target, lam
        self.target_norm = float(np.linalg.norm(target))
        self.columns = np.empty((target.shape[0], capacity), dtype=np.float64)
        self.gram = np.empty((capacity, capacity), dtype=np.float64)
        self.rhs = np.empty(capacity, dtype=np.float64)
        self.lengths = np.empty(capacity, dtype=np.float64)   # sqrt(G_jj)
        self.weights = np.zeros(capacity, dtype=np.float64)
        self.residual = target.copy()                          # b - A_S w
        self.packed = np.empty(capacity * (capacity + 1) // 2, dtype=np.float64)
        self.passive: list[int] = []     # pick positions, in the factor's order
        self.factored = True             # ``packed`` holds the passive block's factor
        self.size = 0
        self.scratch_solves = 0          # steps handed to the from-scratch solve

    def add(self, column: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Append a picked column; return the refit's weights and b - A_S w."""
        s = self.size
        self.columns[:, s] = column
        cross = column @ self.columns[:, :s]
        self.gram[s, :s] = cross
        self.gram[:s, s] = cross
        self.gram[s, s] = float(column @ column) + self.lam
        self.lengths[s] = np.sqrt(self.gram[s, s])
        self.rhs[s] = float(column @ self.target)
        self.weights[s] = 0.0
        self.size = s + 1
        try:
            if not self.factored:
                self._refactor()
            self._active_set(float(column @ self.residual))
        except _Unstable:
            self._from_scratch()
        return self.weights[:self.size].copy(), self.residual.copy()

    def _slack(self) -> np.ndarray:
        """Per pick, a bound on the rounding of its dual: (s + d) eps |A_j| (|b| + sum_i
        |A_i| w_i), |.| the augmented lengths; a dual below it is taken for <= 0."""
        s, d = self.size, self.columns.shape[0]
        lengths = self.lengths[:s]
        return (s + d) * _EPS * lengths * (self.target_norm + lengths @ self.weights[:s])

    def _floor(self) -> np.ndarray:
        """Per pick, the weight below which it is taken for 0: its whole contribution
        to the fit, w_j |A_j|, under half the residual's rounding (then its dual, about
        |A_j|^2 w_j, stays under the slack and it does not come back at once)."""
        return 0.5 * self._slack() / self.lengths[:self.size] ** 2

    def _active_set(self, new_dual: float) -> None:
        """Lawson-Hanson from the previous solution, whose duals are all <= 0 but the
        new pick's (``new_dual``, its A_j^T r); leaves ``weights`` and ``residual``."""
        s = self.size
        if not new_dual > self._slack()[s - 1]:
            return                                  # it stays at 0: nothing changes
        entering = s - 1
        blocked = np.zeros(s, dtype=bool)
        dual = slack = None
        for _ in range(3 * s + 10):
            if self._enter(entering):
                blocked[:] = False
                dual, slack = self._polish()
            elif dual is None:
                return                              # the new pick stays at 0
            else:
                # Lawson-Hanson's test: the entering weight must come out positive,
                # which rounding can deny to a column whose dual was barely positive;
                # the weights did not move, nor did the duals
                blocked[entering] = True
            dual[self.passive] = -np.inf
            dual[blocked] = -np.inf
            dual[~(dual > slack)] = -np.inf
            entering = int(np.argmax(dual))         # first maximum: lowest position
            if dual[entering] == -np.inf:
                return
        raise _Unstable

    def _enter(self, position: int) -> bool:
        """Put pick ``position`` in the passive set and solve on it, moving to the
        boundary while a weight would turn non-positive (at or under its floor); False,
        and nothing changed, if the entering weight itself would."""
        weights, floor = self.weights, self._floor()
        self._append(position)
        solution = self._solve(self.rhs[self.passive])
        if not solution[-1] > floor[position]:
            self.passive.pop()
            return False
        while True:
            index = np.asarray(self.passive)
            tiny = solution <= floor[index]           # within rounding of 0: taken for 0
            solution[tiny] = np.minimum(solution[tiny], 0.0)
            negative = solution <= 0
            if not negative.any():
                weights[index] = solution
                return True
            current = weights[index]
            ratios = current[negative] / (current[negative] - solution[negative])
            leaving = int(np.flatnonzero(negative)[np.argmin(ratios)])
            moved = current + ratios.min() * (solution - current)
            moved[leaving] = 0.0
            weights[index] = np.maximum(moved, 0.0)
            for order in np.flatnonzero(weights[index] <= 0)[::-1]:
                self._drop(int(order))
            if not self.passive:
                return True
            solution = self._solve(self.rhs[self.passive])

    def _polish(self) -> tuple[np.ndarray, np.ndarray]:
        """Refine the passive weights against the true residual; return every pick's
        dual A_j^T r - lam w_j and its rounding slack (widened by the last correction,
        which the duals predate). A weight the refinement leaves within its floor of 0
        leaves the passive set (it was 0 up to rounding); one it makes clearly
        negative means the Gram solve was not to be trusted."""
        s = self.size
        columns, weights = self.columns[:, :s], self.weights[:s]
        residual = self.target - columns @ weights
        dual = residual @ columns - self.lam * weights
        slack = self._slack()
        while self.passive:
            index = np.asarray(self.passive)
            for _ in range(_POLISH_STEPS):
                correction = self._solve(dual[index])
                weights[index] += correction
                residual = self.target - columns @ weights
                if np.max(np.abs(correction)) <= _POLISH_TOL * np.max(weights[index]):
                    break
                dual = residual @ columns - self.lam * weights
            else:
                raise _Unstable
            floor = self._floor()[index]
            if np.any(weights[index] < -floor):
                raise _Unstable
            # the duals predate the last correction: widen the slack by its reach
            slack = self._slack() + self.lengths[:s] * (self.lengths[index]
                                                        @ np.abs(correction))
            vanished = np.flatnonzero(weights[index] <= floor)
            if not vanished.size:
                break
            weights[index[vanished]] = 0.0
            for order in vanished[::-1]:
                self._drop(int(order))
            residual = self.target - columns @ weights
            dual = residual @ columns - self.lam * weights
        self.residual = residual
        return dual, slack

    def _append(self, position: int) -> None:
        """Extend R by pick ``position``'s column: R^T r = G_P,j, rho^2 = G_jj - r.r."""
        p = len(self.passive)
        diagonal = self.gram[position, position]
        start = p * (p + 1) // 2
        if p:
            column = dtpsv(p, self.packed, self.gram[self.passive, position], lower=0,
                           trans=1, overwrite_x=1)
            pivot = diagonal - float(column @ column)
            self.packed[start:start + p] = column
        else:
            pivot = diagonal
        if not pivot > _PIVOT_FLOOR * diagonal:
            raise _Unstable
        self.packed[start + p] = np.sqrt(pivot)
        self.passive.append(position)

    def _drop(self, order: int) -> None:
        """Remove the ``order``-th passive column from R in O(p^2).

        R without that column is triangular but for row ``order``, which sits above the
        trailing block R_33 (the later columns): R_33' is the triangle of the QR of
        [R_33; that row] (LAPACK ``dtpqrt``: one dense row under a triangle), so that
        R_33'^T R_33' = R_33^T R_33 + r r^T, the trailing block of G without the column.
        """
        p = len(self.passive)
        upper, info = dtpttr(p, self.packed[:p * (p + 1) // 2], uplo="U")
        if info != 0:
            raise _Unstable
        kept = np.delete(np.triu(upper), order, axis=1)[:p - 1]   # row ``order`` moves out
        tail = p - 1 - order
        if tail:
            row = upper[order:order + 1, order + 1:].copy(order="F")
            triangle = np.asfortranarray(upper[order + 1:, order + 1:])
            triangle, _, _, info = dtpqrt(0, 1, triangle, row, overwrite_a=1,
                                          overwrite_b=1)
            if info != 0:
                raise _Unstable
            triangle = np.triu(triangle)
            signs = np.sign(np.diag(triangle))
            if not np.all(signs != 0):
                raise _Unstable
            triangle *= signs[:, None]                          # a positive diagonal
            kept[order:, order:] = triangle
        del self.passive[order]
        if p > 1:
            packed, info = dtrttp(np.asfortranarray(kept), uplo="U")
            if info != 0:
                raise _Unstable
            self.packed[:packed.shape[0]] = packed

    def _refactor(self) -> None:
        """R afresh for the passive block (after columns left it, or a scratch solve)."""
        self.factored = False
        p = len(self.passive)
        if p:
            index = np.asarray(self.passive)
            block = self.gram[np.ix_(index, index)]
            try:
                lower = np.linalg.cholesky(block)
            except np.linalg.LinAlgError as error:
                raise _Unstable from error
            if not np.all(np.diag(lower) ** 2 > _PIVOT_FLOOR * np.diag(block)):
                raise _Unstable
            packed, info = dtrttp(lower.T, uplo="U")
            if info != 0:
                raise _Unstable
            self.packed[:packed.shape[0]] = packed
        self.factored = True

    def _solve(self, vector: np.ndarray) -> np.ndarray:
        """G_PP^-1 vector by R^T y = vector, R x = y."""
        p = len(self.passive)
        forward = dtpsv(p, self.packed, vector, lower=0, trans=1, overwrite_x=1)
        return dtpsv(p, self.packed, forward, lower=0, trans=0, overwrite_x=1)

    def _from_scratch(self) -> None:
        s = self.size
        self.scratch_solves += 1
        picked = self.columns[:, :s]
        self.weights[:s] = _ridge_nnls(picked, self.target, self.lam)
        self.passive = np.flatnonzero(self.weights[:s] > 0).tolist()
        try:
            self._refactor()
        except _Unstable:
            pass                    # ``factored`` stays False: the next step retries
        self.residual = self.target - picked @ self.weights[:s]


_REFITS = {"incremental": _GramRefit, "scratch": _ScratchRefit}


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
