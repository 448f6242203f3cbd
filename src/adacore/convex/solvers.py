"""Weighted solvers for the convex losses: mini-batch SGD, SAGA, diagonally preconditioned GD.

Each minimises the weighted objective of :mod:`adacore.convex.losses`,
F(w) = (1 / S) sum_j s_j phi_j(w) + alpha / 2 ||w||^2 (LASSO: + alpha ||w||_1, through a
proximal step), on the rows it is given (a coreset's rows and weights, or the full data
with unit weights), and records a history of (seconds, objective) pairs: the clock runs
during training (and reselection) only, never while the monitor evaluates the objective
(by default on the training rows; pass ``monitor`` to follow the FULL training set).

Sampling: SGD and SAGA visit the rows in a fresh seeded permutation every epoch, in
mini-batches, and weight each row by nu_j = s_j / mean(s) (mean 1), so the mini-batch
gradient (1 / B) sum_b nu_b grad phi_b is unbiased for the weighted mean.

Step sizes (defaults; ``lr`` overrides): with L the smoothness of F (phi''max times the
largest eigenvalue of the weighted second moment of [x; 1], estimated by power iteration on
at most 2,000 rows) and L_max = max_j nu_j phi''max ||[x_j; 1]||^2, a mini-batch of B rows
has expected smoothness about L + L_max / B (Gower et al., 2019, "SGD: general analysis and
improved rates"); SGD starts at 1 / (L + L_max / B) and SAGA uses 1 / (3 (L + L_max / B)).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import scipy.sparse as sp

from adacore.convex.losses import ConvexLoss, as_features, get_loss
from adacore.validation import check_choice, check_int, check_positive, fail

__all__ = ["SCHEDULES", "SOLVERS", "SolverResult", "preconditioned_gd", "saga", "sgd",
           "smoothness", "solve"]

SCHEDULES = ("constant", "linear", "inverse")
_POWER_ROWS = 2000
_POWER_STEPS = 30


@dataclass
class SolverResult:
    """What a solver returns.

    Attributes
    ----------
    w : ndarray, shape (p,)
        Final parameters (intercept last when the loss fits one).
    history : list of (seconds, objective)
        At the start and after every epoch (iteration for :func:`preconditioned_gd`);
        seconds start at ``start_seconds`` and count training and reselection only.
    epochs : int
    lr : float or None
        The initial step size (None for the line-search method).
    selections : list
        The coresets of the reselection rounds, in order (empty without reselection).
    seconds : float
        Training (and reselection) time, monitoring excluded.
    """

    w: np.ndarray
    history: list = field(default_factory=list)
    epochs: int = 0
    lr: float | None = None
    selections: list = field(default_factory=list)
    seconds: float = 0.0


class _Clock:
    """Wall time that excludes monitoring."""

    def __init__(self, start_seconds: float):
        self.offset = float(start_seconds)
        self.started = time.perf_counter()
        self.paused = 0.0

    def seconds(self) -> float:
        return self.offset + time.perf_counter() - self.started - self.paused

    def record(self, history: list, monitor: Callable, w: np.ndarray, *,
               initial: bool = False) -> None:
        """Append (seconds, monitor(w)); the initial point is stamped at the offset (the
        setup before it is counted in the first epoch)."""
        now = self.offset if initial else self.seconds()
        before = time.perf_counter()
        history.append((now, float(monitor(w))))
        self.paused += time.perf_counter() - before


class _Problem:
    """Validated training rows, weights and loss, shared by the solvers."""

    def __init__(self, loss, X, y, sample_weight, w0):
        self.loss: ConvexLoss = get_loss(loss)
        self.set_rows(X, y, sample_weight)
        p = self.loss.n_params(self.X.shape[1])
        self.w = (np.zeros(p) if w0 is None
                  else self.loss.check_weights(w0, self.X.shape[1], "w0").copy())

    def set_rows(self, X, y, sample_weight) -> None:
        self.X = as_features(X)
        self.y = self.loss.check_labels(y, self.X.shape[0])
        weights = self.loss.check_sample_weight(sample_weight, self.X.shape[0])
        self.sample_weight = weights
        self.nu = np.ones(self.X.shape[0]) if weights is None else weights / weights.mean()

    def objective(self, w) -> float:
        return self.loss._value(w, self.X, self.y, self.sample_weight)


def smoothness(loss: ConvexLoss, X, nu: np.ndarray, *, seed: int = 0) -> tuple[float, float]:
    """(L, L_max) of the module docstring for rows X with mean-1 weights nu."""
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, _POWER_ROWS, replace=False)) if n > _POWER_ROWS else None
    sample = X[rows] if rows is not None else X
    weights = nu[rows] if rows is not None else nu
    vector = rng.standard_normal(loss.n_params(X.shape[1]))
    eigenvalue = 0.0
    for _ in range(_POWER_STEPS):
        vector /= np.linalg.norm(vector) or 1.0
        image = loss._transpose_times(sample, weights * loss._scores(vector, sample))
        eigenvalue = float(vector @ image) / sample.shape[0]
        vector = image
    squares = X.multiply(X).sum(axis=1) if sp.issparse(X) else np.einsum("ij,ij->i", X, X)
    norms = np.asarray(squares).reshape(-1) + float(loss.fit_intercept)
    bound = loss.curvature_bound
    # the power estimate approaches the eigenvalue from below: 10% of margin
    return (1.1 * bound * eigenvalue + loss.l2, float(bound * (nu * norms).max()) + loss.l2)


def _check_common(epochs, batch_size, lr, seed, monitor, reselect, start_seconds):
    epochs = check_int("epochs", epochs, 1)
    if batch_size is not None:
        batch_size = check_int("batch_size", batch_size, 1)
    if lr is not None:
        lr = check_positive("lr", lr)
    seed = check_int("seed", seed, 0)
    if monitor is not None and not callable(monitor):
        raise fail("monitor", monitor, "a callable w -> objective, or None")
    if reselect is not None:
        every = getattr(reselect, "every", None)
        if not callable(reselect) or not isinstance(every, int) or every < 1:
            raise fail("reselect", reselect, "None or a callable w -> Coreset with an int "
                                             "attribute every >= 1 (adacore.convex.Reselection)")
    start_seconds = check_positive("start_seconds", start_seconds, allow_zero=True)
    return epochs, batch_size, lr, seed, start_seconds


def _reselect(problem: _Problem, reselect, epoch: int, selections: list) -> bool:
    """Swap in a new coreset at the current parameters when an R-epoch boundary is hit."""
    if reselect is None or epoch == 0 or epoch % reselect.every != 0:
        return False
    coreset = reselect(problem.w)
    problem.set_rows(reselect.X[coreset.indices], reselect.y[coreset.indices],
                     coreset.weights)
    selections.append(coreset)
    return True


def _step_size(schedule: str, lr: float, step: int, total: int, per_epoch: int) -> float:
    if schedule == "constant":
        return lr
    if schedule == "linear":
        return lr * (1.0 - step / total)
    return lr / (1.0 + step / per_epoch)


def sgd(loss, X, y, *, sample_weight=None, w0=None, epochs: int = 10,
        batch_size: int = 128, lr: float | None = None, schedule: str = "linear",
        seed: int = 0, monitor: Callable | None = None, reselect=None,
        start_seconds: float = 0.0) -> SolverResult:
    """Mini-batch (proximal) SGD on the weighted objective.

    Parameters
    ----------
    loss : str or ConvexLoss
        A loss object (:func:`adacore.convex.get_loss`); a name uses its defaults.
    X : array or sparse matrix, shape (n, d)
        Training rows (a coreset's rows ``X[c.indices]``, or the full data).
    y : array, shape (n,)
    sample_weight : array, shape (n,), optional
        The coreset's weights (any positive scale: F is a weighted mean).
    w0 : array, shape (p,), optional
        Starting parameters (default zeros).
    epochs : int
    batch_size : int
    lr : float, optional
        Initial step size (default: see the module docstring).
    schedule : {"linear", "constant", "inverse"}
        Step at step t of T: lr (1 - t / T), lr, or lr / (1 + t / steps_per_epoch).
    seed : int
        Seeds the permutations.
    monitor : callable, optional
        w -> objective recorded in the history (default: F on the training rows).
    reselect : Reselection, optional
        Every ``reselect.every`` epochs, select a new coreset at the current w and train
        on it from then on.
    start_seconds : float
        Added to every time in the history (e.g. the time of the first selection).

    Returns
    -------
    SolverResult
    """
    epochs, batch_size, lr, seed, start_seconds = _check_common(
        epochs, batch_size, lr, seed, monitor, reselect, start_seconds)
    check_choice("schedule", schedule, SCHEDULES)
    clock = _Clock(start_seconds)
    problem = _Problem(loss, X, y, sample_weight, w0)
    monitor = monitor or problem.objective
    history, selections = [], []
    clock.record(history, monitor, problem.w, initial=True)
    rng = np.random.default_rng(seed)
    loss_, w = problem.loss, problem.w
    step, base_lr = 0, lr
    for epoch in range(epochs):
        if _reselect(problem, reselect, epoch, selections) or epoch == 0:
            n = problem.X.shape[0]
            batch = min(batch_size, n)
            per_epoch = math.ceil(n / batch)
            if lr is None:
                smooth, smooth_max = smoothness(loss_, problem.X, problem.nu, seed=seed)
                base_lr = 1.0 / (smooth + smooth_max / batch)
            total = per_epoch * epochs
            step = epoch * per_epoch
        order = rng.permutation(n)
        for start in range(0, n, batch):
            rows = order[start:start + batch]
            X_b = problem.X[rows]
            d1 = loss_.slope(loss_._scores(w, X_b), problem.y[rows])
            gradient = loss_._transpose_times(X_b, problem.nu[rows] * d1) / rows.shape[0]
            gradient[:X_b.shape[1]] += loss_.l2 * w[:X_b.shape[1]]
            eta = _step_size(schedule, base_lr, step, total, per_epoch)
            w = loss_.prox(w - eta * gradient, eta)
            step += 1
        problem.w = w
        clock.record(history, monitor, w)
    return SolverResult(w=w, history=history, epochs=epochs, lr=base_lr,
                        selections=selections, seconds=clock.seconds() - start_seconds)


def saga(loss, X, y, *, sample_weight=None, w0=None, epochs: int = 10,
         batch_size: int = 16, lr: float | None = None, seed: int = 0,
         monitor: Callable | None = None, reselect=None,
         start_seconds: float = 0.0) -> SolverResult:
    """Mini-batch (proximal) SAGA (Defazio et al., 2014) on the weighted objective.

    The table holds one scalar per row, nu_j phi'(f_j) at the last visit (a linear
    model's per-example gradient is that scalar times [x_j; 1]); it is filled by one full
    pass at the start and after each reselection (counted in the time). The regulariser's
    gradient is exact at every step. Arguments as for :func:`sgd` (no schedule: SAGA
    converges at a constant step, 1 / (3 (L + L_max / B)) by default).
    """
    epochs, batch_size, lr, seed, start_seconds = _check_common(
        epochs, batch_size, lr, seed, monitor, reselect, start_seconds)
    clock = _Clock(start_seconds)
    problem = _Problem(loss, X, y, sample_weight, w0)
    monitor = monitor or problem.objective
    history, selections = [], []
    clock.record(history, monitor, problem.w, initial=True)
    rng = np.random.default_rng(seed)
    loss_, w = problem.loss, problem.w
    eta = lr
    for epoch in range(epochs):
        if _reselect(problem, reselect, epoch, selections) or epoch == 0:
            n = problem.X.shape[0]
            batch = min(batch_size, n)
            if lr is None:
                smooth, smooth_max = smoothness(loss_, problem.X, problem.nu, seed=seed)
                eta = 1.0 / (3.0 * (smooth + smooth_max / batch))
            table = problem.nu * loss_.slope(loss_._scores(w, problem.X), problem.y)
            average = loss_._transpose_times(problem.X, table) / n
        d = problem.X.shape[1]
        order = rng.permutation(n)
        for start in range(0, n, batch):
            rows = order[start:start + batch]
            X_b = problem.X[rows]
            fresh = problem.nu[rows] * loss_.slope(loss_._scores(w, X_b), problem.y[rows])
            change = loss_._transpose_times(X_b, fresh - table[rows])
            gradient = change / rows.shape[0] + average
            gradient[:d] += loss_.l2 * w[:d]
            w = loss_.prox(w - eta * gradient, eta)
            average += change / n
            table[rows] = fresh
        problem.w = w
        clock.record(history, monitor, w)
    return SolverResult(w=w, history=history, epochs=epochs, lr=eta, selections=selections,
                        seconds=clock.seconds() - start_seconds)


def preconditioned_gd(loss, X, y, *, sample_weight=None, w0=None, epochs: int = 100,
                      seed: int = 0, monitor: Callable | None = None, reselect=None,
                      start_seconds: float = 0.0, lr: float | None = None,
                      batch_size: int | None = None) -> SolverResult:
    """Full-batch gradient descent preconditioned by the Hessian diagonal, with line search.

    Each iteration ("epoch") computes the gradient g and the exact diagonal D of the
    Hessian of the smooth part (floored at 1e-10 of its largest entry), and steps to
    w+ = prox_{t alpha / D}(w - t g / D) (the prox is the identity without an l1 term),
    a Newton step with the diagonal for the Hessian. t starts at min(1, 2 t_previous) and
    halves until the sufficient decrease of a proximal-Newton step holds:
    F_s(w+) <= F_s(w) + g . (w+ - w) + sum_k D_k (w+ - w)_k^2 / (2 t), F_s the smooth part,
    so the full objective decreases monotonically. ``lr`` caps t (default 1);
    ``batch_size`` is accepted for a uniform interface and ignored. Other arguments as for
    :func:`sgd`.
    """
    epochs, _, lr, seed, start_seconds = _check_common(
        epochs, batch_size, lr, seed, monitor, reselect, start_seconds)
    clock = _Clock(start_seconds)
    problem = _Problem(loss, X, y, sample_weight, w0)
    monitor = monitor or problem.objective
    history, selections = [], []
    clock.record(history, monitor, problem.w, initial=True)
    loss_, w = problem.loss, problem.w
    cap = 1.0 if lr is None else lr
    t = cap
    for epoch in range(epochs):
        _reselect(problem, reselect, epoch, selections)
        X_, y_, s_ = problem.X, problem.y, problem.sample_weight
        value, gradient = loss_._smooth_value_and_gradient(w, X_, y_, s_)
        diag = loss_._hessian_diag(w, X_, y_, s_)
        diag = np.maximum(diag, 1e-10 * max(float(diag.max()), 1e-300))
        t = min(cap, 2.0 * t)
        for _ in range(60):
            candidate = loss_.prox(w - t * gradient / diag, t / diag)
            move = candidate - w
            bound = value + float(gradient @ move) + float(diag @ (move * move)) / (2.0 * t)
            trial = loss_._smooth_value_and_gradient(candidate, X_, y_, s_)[0]
            if trial <= bound + 1e-12 * abs(value):
                break
            t *= 0.5
        else:
            candidate = w  # no decrease to be had at float precision: stay
        w = candidate
        problem.w = w
        clock.record(history, monitor, w)
    return SolverResult(w=w, history=history, epochs=epochs, lr=None, selections=selections,
                        seconds=clock.seconds() - start_seconds)


SOLVERS: dict[str, Callable[..., SolverResult]] = {
    "sgd": sgd, "saga": saga, "precond_gd": preconditioned_gd}


def solve(solver: str, loss, X, y, **options) -> SolverResult:
    """Run the solver named ``solver`` ('sgd', 'saga', 'precond_gd') with ``options``."""
    check_choice("solver", solver, SOLVERS)
    return SOLVERS[solver](loss, X, y, **options)
