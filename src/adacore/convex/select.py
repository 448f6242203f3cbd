"""Coresets for convex models: AdaCore, CRAIG, random or all of it, chosen once before training.

The vectors. At parameters w, example i has the exact gradient g_i = phi'(f_i) [x_i; 1] +
alpha [w; 0] and Hessian diagonal h_i = phi''(f_i) [x_i^2; 1] + alpha [1; 0]
(:mod:`adacore.convex.losses`). CRAIG covers the g_i. AdaCore covers preconditioned
gradients u_i = P g_i, with ``hessian``:

``"mean_diagonal"`` (the default)
    u_i = g_i / (hbar + eps)^power entrywise, hbar = (1 / n) sum_i h_i the Hessian diagonal
    averaged over the data (:mod:`adacore.convex.curvature`), power 1/2 by default.
``"mean"``
    u_i = (H + eps I)^-power g_i with H the full population Hessian
    (1 / n) [X, 1]^T diag(phi'') [X, 1] + alpha [I 0; 0 0]; p <= ``FULL_LIMIT``.
``"diagonal"``
    u_i = g_i / (h_i + eps) with each example's own diagonal: the poster's formula and what
    the :class:`adacore.AdaCore` strategy computes on its first round (h_i >= 0 for every
    loss here, so |h_i| = h_i).
``"exact"``
    u_i = (H_i + E)^-1 g_i with the whole per-example Hessian
    H_i = phi''_i [x_i; 1][x_i; 1]^T + alpha [I 0; 0 0] and E = eps I: a rank-one matrix
    plus a diagonal, inverted exactly by Sherman-Morrison in O(d) per example,
    u_i = s_i D^-1 [x_i; 1] + alpha D^-1 [w; 0] with D = diag(alpha + eps, ..., eps) and a
    scalar s_i (:func:`_exact_scale`).

Why the default is not the poster's per-example diagonal. For logistic regression at
w = 0, g_i = -y_i [x_i; 1] / 2 and h_i = [x_i^2 / 4 + alpha; 1 / 4], so "diagonal" covers
-y_i x_ik / (2 (x_ik^2 / 4 + alpha + eps)) coordinate by coordinate. That grows like
1 / x_ik as x_ik shrinks (it peaks, at 1 / (2 sqrt(alpha + eps)), where
|x_ik| = 2 sqrt(alpha + eps), and falls like 2 / x_ik for large entries), so the
near-zero entries, noise, decide the distances (on the standardised scikit-learn sets
70-86% of sum ||u_i||^2 comes from the 16-33% of entries with |x| < 0.25, and the
rank correlation of distances in u with distances in x is -0.17..0.20); and at w = 0
the curvature says nothing about the examples, since phi'' = 1/4 for all of them.
Averaged over the data the curvature is well-conditioned; power 1/2 makes
||u_i - u_j|| the diagonal form of ||g_i - g_j|| in the H^-1 norm, which is what a
gradient error costs in loss to second order: L(w_S) - L* ~ 1/2 Delta^T H^-1 Delta for a
coreset gradient error Delta at the optimum (power 1, the poster's H^-1 g, measures the
error in parameters instead). The selection point mattered more than the preconditioner:
see ``at``. Measured (benchmarks/convex_study.py: 10 sets from scikit-learn's bundled
data and make_classification, raw and standardised, 5 splits, fractions 2-30%, alpha
1e-4..1e-2, weighted L2 logistic regression fitted by scikit-learn), the default's
residual was below the median of 7 random coresets in 42/39/49/50 of 50 (set, split)
pairs at 2/5/10/30% (alpha 1e-3), the poster's diagonal at w = 0 in 39/31/27/21.
Limits: on larger noisy synthetic sets shaped like covtype (23,000 rows, 10% flipped
labels) and ijcnn1 (10,000-40,000 rows, 10% positives), facility location lost to random
at 5-10% whatever the variant, and the default lost at 1-10% (ijcnn1-shaped 10,000 rows,
10%: 0.044 against 0.030; covtype-shaped, 5%: 0.16 against 0.03): its picks near u = 0
(confident examples) stand for the scattered hard ones, and the coreset fits an
overconfident model (``misclassified_share`` shows it). A class larger than
``exact_limit`` goes through random blocks whose few picks each are block medoids, typical
examples: there the variants lost to random in 31 of 32 measured cases, the default by
the most (ijcnn1-shaped 40,000 rows, 10%: 0.25 against 0.005). For such data prefer random coresets, or raise
``exact_limit`` as memory allows.

Where. ``at="newton"`` (the default): ``newton_steps`` damped Newton steps on the full
objective from ``w`` (:func:`adacore.convex.curvature.newton_point`; from w = 0 for
logistic regression the first is twice a ridge regression of y on [x; 1], one pass over
X for the p x p system, counted in the selection time); the selection is made there,
where phi'(f_i) and phi''(f_i) tell confident examples from those near the boundary.
``at="initial"``: at ``w`` itself, w = 0 by default (the poster: for convex models the
preconditioned gradients are Lipschitz in x, so one coreset serves the whole run; CRAIG
as published). ``at="pilot"``: at a pilot solution, ``pilot_epochs`` epochs of
:func:`adacore.convex.solvers.sgd` (its defaults) from w on a uniform sample of
max(256, pilot_fraction * n) examples, seeded by ``seed``. The metadata record the point
(``w``); its time is counted.

How. Per class for the classification losses (labels -1 and +1, budgets split as
:func:`adacore.per_class_budgets` does); the regression losses form one class. A class of
at most ``exact_limit`` examples gets the library's exact lazy-greedy facility location
(for a dense X with only such classes and ``hessian="diagonal"`` at power 1, or CRAIG, the
:class:`adacore.AdaCore` / :class:`adacore.Craig` strategies are called as they are); a
larger class is shuffled and solved in random blocks of about ``block_size`` examples
(:mod:`adacore.convex.blocks`). For a sparse X the vectors of a class are densified when
the largest class's n_c x p fits ``densify_limit`` entries, and otherwise randomly
projected to ``projection_dim`` dimensions (:func:`adacore.probe.projection_matrix`,
Gaussian, seeded) after preconditioning: the sparse part is multiplied by the matrix and
the part shared by every row (alpha [w; 0] and its preconditioned form off the sparsity
pattern) is projected once and added.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from adacore.convex.blocks import BLOCK_OPTIMIZERS, block_facility_location
from adacore.convex.curvature import (FULL_LIMIT, inverse_power, mean_hessian_diag,
                                      newton_point, population_hessian)
from adacore.convex.losses import ConvexLoss, as_features, get_loss
from adacore.convex.solvers import sgd
from adacore.coreset import Coreset
from adacore.probe import projection_matrix
from adacore.selection.budgets import BUDGET_MODES, budget_from_fraction, per_class_budgets
from adacore.selection.per_class import class_seed, per_class_facility_location
from adacore.strategies import AdaCore, Craig, FullData, RandomSubset
from adacore.validation import (InputError, check_choice, check_fraction, check_int,
                                check_positive, check_unit_interval, fail)

__all__ = ["DEFAULT_POWERS", "HESSIANS", "METHODS", "POINTS", "Reselection", "binary_labels",
           "class_labels", "convex_vectors", "select_coreset"]

METHODS = ("adacore", "craig", "random", "full")
POINTS = ("newton", "initial", "pilot")
HESSIANS = ("mean_diagonal", "mean", "diagonal", "exact")
DEFAULT_POWERS = {"mean_diagonal": 0.5, "mean": 0.5, "diagonal": 1.0, "exact": 1.0}
_BLOCK_ROWS = 8192


def binary_labels(y) -> tuple[np.ndarray | object, dict | None]:
    """Any two labels as -1 / +1, as scikit-learn's classifiers take them: the smaller
    (in sorted order) becomes -1, the larger +1; labels already in {-1, +1} stay.

    Returns the mapped labels and ``{str(label): -1 or +1}`` (None when nothing was
    mapped); input that is not a 1-D array of exactly two distinct labels is returned
    as it is, for the loss's own check to refuse with its message.
    """
    try:
        labels = np.asarray(y)
    except (TypeError, ValueError):
        return y, None
    if labels.ndim != 1 or labels.size == 0 or labels.dtype.kind not in "biufUSO":
        return y, None
    try:
        found = np.unique(labels)
    except TypeError:          # objects that do not sort
        return y, None
    if found.size != 2:
        return y, None
    if labels.dtype.kind in "biuf" and set(found.tolist()) == {-1, 1}:
        return y, None
    mapped = np.where(labels == found[1], 1.0, -1.0)
    return mapped, {str(found[0]): -1, str(found[1]): 1}


def class_labels(loss: ConvexLoss, y: np.ndarray) -> np.ndarray:
    """Integer classes for the per-class budgets: -1 / +1, or one class (0) for regression.

    Raises InputError when a binary loss's labels leave a class empty.
    """
    if not loss.binary:
        return np.zeros(y.shape[0], dtype=np.int64)
    labels = y.astype(np.int64)
    for label in (-1, 1):
        if not (labels == label).any():
            raise InputError(f"y: class {label:+d} is empty (all {y.shape[0]} labels are "
                             f"{-label:+d}); a binary loss needs examples of both classes")
    return labels


def _scalars(loss: ConvexLoss, w: np.ndarray, X, y: np.ndarray):
    """phi'(f) and phi''(f) for every example (at w = 0 without a pass over X)."""
    scores = np.zeros(X.shape[0]) if not w.any() else loss._scores(w, X)
    _, first, second = loss.derivatives(scores, y)
    return first, second


def _exact_scale(loss: ConvexLoss, X, w: np.ndarray, first, second, eps: float) -> np.ndarray:
    """s_i of u_i = H_i^-1 g_i = s_i D^-1 [x_i; 1] + alpha D^-1 [w; 0] (Sherman-Morrison).

    H_i = phi''_i [x_i; 1][x_i; 1]^T + D, D = diag(alpha + eps, ..., eps for the
    intercept); with a_i = [x_i; 1]^T D^-1 [x_i; 1] and b_i = alpha x_i . w / (alpha + eps),
    s_i = (phi'_i - phi''_i b_i) / (1 + phi''_i a_i).
    """
    ridge = loss.l2 + eps
    squares = X.multiply(X).sum(axis=1) if sp.issparse(X) else np.einsum("ij,ij->i", X, X)
    a = np.asarray(squares).reshape(-1) / ridge + (1.0 / eps if loss.fit_intercept else 0.0)
    coef = w[:X.shape[1]]
    b = 0.0
    if loss.l2 and coef.any():
        b = (loss.l2 / ridge) * np.asarray(X @ coef).reshape(-1)
    return (first - second * b) / (1.0 + second * a)


class _Parts:
    """What the class-by-class vectors of one kind need, computed once for all of X.

    Every kind's vector is, for the feature block, ``scale_i * x_i * columns + shared``
    (entrywise; "diagonal" then divides by (phi''_i x_i^2 + alpha + eps)^power) with
    ``base`` its value where x_ik = 0, and ``intercept_i`` in the intercept column;
    ``transform`` (the "mean" kind) then multiplies the whole row by a p x p matrix.
    """

    def __init__(self, loss: ConvexLoss, X, y, w: np.ndarray, kind: str, eps: float,
                 power: float):
        d = X.shape[1]
        first, second = _scalars(loss, w, X, y)
        coef = w[:d]
        shared = loss.l2 * coef
        ridge = loss.l2 + eps
        self.kind, self.power, self.eps, self.second = kind, power, eps, second
        self.columns = self.transform = None
        self.scale, self.shared, self.base, self.intercept = first, shared, shared, first
        if kind == "exact":
            exact = _exact_scale(loss, X, w, first, second, eps)
            self.scale, self.shared = exact / ridge, shared / ridge
            self.base, self.intercept = self.shared, exact / eps
        elif kind == "diagonal":
            self.base = shared / ridge ** power
            self.intercept = first / (second + eps) ** power
        elif kind == "mean_diagonal":
            factors = (mean_hessian_diag(loss, w, X, y, second) + eps) ** -power
            self.columns = factors[:d]
            self.shared = self.base = shared * self.columns
            if loss.fit_intercept:
                self.intercept = first * factors[d]
        elif kind == "mean":
            self.transform = inverse_power(population_hessian(loss, w, X, y, second),
                                           power, eps)


def _dense_vectors(X: np.ndarray, members: np.ndarray, parts: _Parts,
                   loss: ConvexLoss) -> torch.Tensor:
    """The vectors of ``parts`` for the rows ``members`` of a dense X, float32, (n_c, p).

    One gather of the rows and one scaled write into the float32 result (NumPy casts on
    the way out), plus one pass for the shared row and two for the diagonal's divisor;
    the "mean" kind goes through float64 blocks of rows times its matrix.
    """
    if parts.transform is not None:
        return _transformed_dense(X, members, parts, loss)
    rows = np.take(X, members, axis=0)
    d = rows.shape[1]
    out = np.empty((members.shape[0], loss.n_params(d)), dtype=np.float32)
    weights_part = out[:, :d]
    if parts.columns is not None:
        np.multiply(rows, parts.columns, out=rows)
    np.multiply(rows, parts.scale[members, None], out=weights_part, casting="same_kind")
    if parts.shared.any():
        weights_part += parts.shared.astype(np.float32)
    if parts.kind == "diagonal":      # rows is a fresh copy: square it in place
        np.multiply(rows, rows, out=rows)
        rows *= parts.second[members, None]
        rows += loss.l2 + parts.eps
        if parts.power != 1.0:
            np.power(rows, parts.power, out=rows)
        np.divide(weights_part, rows, out=weights_part, casting="same_kind")
    if loss.fit_intercept:
        out[:, d] = parts.intercept[members]
    return torch.from_numpy(out)


def _transformed_dense(X, members, parts: _Parts, loss: ConvexLoss) -> torch.Tensor:
    d = X.shape[1]
    T = parts.transform
    offset = parts.shared @ T[:d]              # alpha [w; 0] times the matrix, every row
    out = np.empty((members.shape[0], T.shape[1]), dtype=np.float32)
    for start in range(0, members.shape[0], _BLOCK_ROWS):
        block = members[start:start + _BLOCK_ROWS]
        rows = np.take(X, block, axis=0) * parts.scale[block, None]
        part = rows @ T[:d] + offset
        if loss.fit_intercept:
            part += parts.intercept[block, None] * T[d]
        out[start:start + block.shape[0]] = part
    return torch.from_numpy(out)


def _sparse_vectors(X, members: np.ndarray, parts: _Parts, loss: ConvexLoss,
                    matrix: np.ndarray | None) -> torch.Tensor:
    """The same for a CSR X: densified (``matrix`` None) or projected by ``matrix``."""
    rows = X[members]
    d = rows.shape[1]
    per_row = np.diff(rows.indptr)
    intercept = parts.intercept[members]
    values = rows.data * np.repeat(parts.scale[members], per_row)
    if parts.columns is not None:
        values *= parts.columns[rows.indices]
    values += parts.shared[rows.indices]
    if parts.kind == "diagonal":
        values /= (rows.data * rows.data * np.repeat(parts.second[members], per_row)
                   + (loss.l2 + parts.eps)) ** parts.power
    correction = sp.csr_matrix((values - parts.base[rows.indices], rows.indices, rows.indptr),
                               shape=rows.shape)
    if parts.transform is not None:     # a linear map: fold it into the projection
        matrix = parts.transform if matrix is None else parts.transform @ matrix
    if matrix is None:
        dense = correction.toarray() + parts.base
        if loss.fit_intercept:
            dense = np.hstack([dense, intercept[:, None]])
        return torch.from_numpy(dense).float()
    projected = np.asarray(correction @ matrix[:d]) + parts.base @ matrix[:d]
    if loss.fit_intercept:
        projected += intercept[:, None] * matrix[d]
    return torch.from_numpy(np.ascontiguousarray(projected)).float()


def _pilot(loss, X, y, w, seed, fraction, epochs):
    n = X.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9110]))
    size = min(n, max(256, int(round(fraction * n))))
    sample = np.sort(rng.choice(n, size=size, replace=False))
    return sgd(loss, X[sample], y[sample], w0=w, epochs=epochs, seed=seed).w


def _check_power(hessian: str, power) -> float:
    """The preconditioner's exponent: the kind's default for None, else a number in (0, 1]."""
    if power is None:
        return DEFAULT_POWERS[hessian]
    if isinstance(power, bool) or not isinstance(power, (int, float)) \
            or not 0.0 < float(power) <= 1.0:
        raise fail("power", power, "None or a number in (0, 1]")
    if hessian == "exact" and float(power) != 1.0:
        raise fail("power", power, "1 (or None) for hessian='exact', whose closed form is "
                                   "the inverse")
    return float(power)


def _check_full(hessian: str, n_params: int) -> None:
    if hessian == "mean" and n_params > FULL_LIMIT:
        raise InputError(f"hessian: 'mean' forms a p x p matrix, and p = {n_params} exceeds "
                         f"{FULL_LIMIT}; use hessian='mean_diagonal' (O(n p))")


def _check_options(fraction, method, at, hessian, power, seed, eps, budget, exact_limit,
                   block_size, optimizer, epsilon, projection_dim, densify_limit,
                   pilot_fraction, pilot_epochs, newton_steps):
    check_choice("method", method, METHODS)
    check_choice("at", at, POINTS)
    check_choice("hessian", hessian, HESSIANS)
    check_choice("budget", budget, BUDGET_MODES)
    check_choice("optimizer", optimizer, BLOCK_OPTIMIZERS)
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) \
            or not 0.0 < float(epsilon) < 1.0:
        raise fail("epsilon", epsilon, "a number in (0, 1)")
    check_positive("eps", eps)
    check_unit_interval("pilot_fraction", pilot_fraction)
    for name, value, low in (("seed", seed, 0), ("exact_limit", exact_limit, 1),
                             ("block_size", block_size, 2),
                             ("projection_dim", projection_dim, 1),
                             ("densify_limit", densify_limit, 1),
                             ("pilot_epochs", pilot_epochs, 1),
                             ("newton_steps", newton_steps, 1)):
        check_int(name, value, low)
    return check_fraction("fraction", fraction), _check_power(hessian, power)


def select_coreset(X, y, *, fraction: float, loss: str | ConvexLoss = "logistic",
                   method: str = "adacore", alpha: float = 1e-5, seed: int = 0,
                   at: str = "newton", w=None, fit_intercept: bool = True,
                   hessian: str = "mean_diagonal", power: float | None = None,
                   eps: float = 1e-4, newton_steps: int = 1,
                   budget: str = "proportional", exact_limit: int = 4096,
                   block_size: int = 32, optimizer: str = "lazy",
                   epsilon: float = 0.01, projection_dim: int = 256,
                   densify_limit: int = 1 << 24, pilot_fraction: float = 0.05,
                   pilot_epochs: int = 5) -> Coreset:
    """Select a weighted coreset of (X, y) for a convex loss (see the module docstring).

    Parameters
    ----------
    X : array or sparse matrix, shape (n, d)
        Finite features (NaN or inf: InputError).
    y : array, shape (n,)
        For 'logistic' and 'squared_hinge' any two labels (0/1, strings, ...), mapped
        to -1 / +1 in sorted order (the smaller is -1) and recorded in
        ``metadata["label_map"]``, as scikit-learn's classifiers take them; reals for
        'ridge' and 'lasso'.
    fraction : float
        Share of the examples to select, in (0, 1]: k = round(fraction * n).
    loss : str or ConvexLoss
        'logistic', 'squared_hinge', 'ridge', 'lasso', or a loss object (which then
        carries its own alpha and fit_intercept).
    method : {"adacore", "craig", "random", "full"}
    alpha : float
        Regularisation strength, >= 0.
    seed : int
        Seeds the random subsets, the blocks, the projection and the pilot.
    at : {"newton", "initial", "pilot"}
        Where the gradients (and curvature) are taken, for AdaCore and CRAIG alike:
        after ``newton_steps`` Newton steps from ``w`` on the full objective (the default,
        chosen on measurements: see the module docstring), at ``w`` itself (the poster's
        "select once before training", and CRAIG as published), or at an SGD pilot
        solution on a sample.
    w : array, shape (p,), optional
        Parameters (intercept last); default zeros.
    fit_intercept : bool
    hessian : {"mean_diagonal", "mean", "diagonal", "exact"}
        AdaCore's preconditioner (module docstring): the Hessian diagonal averaged over
        the data (default), the full averaged Hessian (p <= 4096), each example's own
        diagonal (the poster's and the strategy's formula), or each example's whole
        Hessian.
    power : float, optional
        u = P^-power g for P the chosen curvature plus eps, in (0, 1]; None: 1/2 for the
        averaged kinds (the H^-1 norm of a gradient error, which bounds the loss
        residual to second order), 1 for the per-example kinds (the poster's H^-1 g;
        "exact" takes only 1).
    eps : float
        AdaCore's damping, > 0, added to the curvature (and to the Newton system).
    newton_steps : int
        Newton steps for ``at="newton"``, >= 1.
    budget : {"proportional", "equal"}
        How k is split across classes.
    exact_limit : int
        Largest class solved exactly (lazy greedy on its full similarity matrix).
    block_size, optimizer, epsilon
        Block size and optimizer ("lazy", "naive" or "stochastic") of the block engine for larger
        classes, and the stochastic optimizer's accuracy.
    projection_dim, densify_limit
        Sparse X: densify when the largest class has at most ``densify_limit`` entries of
        vectors, else project to ``projection_dim`` dimensions.
    pilot_fraction, pilot_epochs
        The pilot solve for ``at="pilot"``.

    Returns
    -------
    Coreset
        Indices into X (class by class, -1 first), weights (cluster sizes: summing to n
        for adacore and craig; n_c / k_c for random; 1 for full), and metadata:
        ``select_seconds`` (everything, Newton steps or pilot included), ``at``, ``w``
        (the point the vectors were taken at), ``newton`` (the solver of the Newton
        system and its seconds), ``loss``, ``preconditioner`` and ``power``,
        ``misclassified_share`` (binary losses: {"data", "coreset"}, see
        :func:`_misclassified_share`), ``engines``
        (label -> "exact" / "blocks"), ``vectors`` ("dense", "densified", "projected"),
        ``gradient_error`` (relative error of the weighted sum of the vectors selected on).
    """
    start = time.perf_counter()
    fraction, power = _check_options(fraction, method, at, hessian, power, seed, eps, budget,
                                     exact_limit, block_size, optimizer, epsilon,
                                     projection_dim, densify_limit, pilot_fraction,
                                     pilot_epochs, newton_steps)
    loss = get_loss(loss, alpha=alpha, fit_intercept=fit_intercept)
    X = as_features(X)
    label_map = None
    if loss.binary:
        y, label_map = binary_labels(y)
    y = loss.check_labels(y, X.shape[0])
    w = np.zeros(loss.n_params(X.shape[1])) if w is None else loss.check_weights(w, X.shape[1])
    labels = class_labels(loss, y)
    newton = None
    if method in ("random", "full"):
        strategy = (RandomSubset(fraction, budget=budget, seed=seed) if method == "random"
                    else FullData())
        coreset = strategy.select(None, labels)
    else:
        if method == "adacore":
            _check_full(hessian, loss.n_params(X.shape[1]))
        if at == "pilot":
            w = _pilot(loss, X, y, w, seed, pilot_fraction, pilot_epochs)
        elif at == "newton":
            began = time.perf_counter()
            w, newton = newton_point(loss, X, y, w, steps=newton_steps, eps=eps)
            newton["seconds"] = time.perf_counter() - began
        kind = "gradient" if method == "craig" else hessian
        coreset = _facility_location(loss, X, y, labels, w, fraction, kind, power, seed, eps,
                                     budget, exact_limit, block_size, optimizer, epsilon,
                                     projection_dim, densify_limit)
        coreset.metadata["preconditioner"] = None if method == "craig" else hessian
        coreset.metadata["power"] = None if method == "craig" else power
        if loss.binary:
            coreset.metadata["misclassified_share"] = _misclassified_share(loss, X, y, w,
                                                                           coreset)
    coreset.method = method
    if label_map is not None:
        coreset.metadata["label_map"] = label_map
    coreset.metadata.update({"select_seconds": time.perf_counter() - start, "at": at,
                             "newton": newton, "loss": loss.name, "alpha": loss.alpha,
                             "w": w})
    return coreset


def _misclassified_share(loss: ConvexLoss, X, y, w, coreset: Coreset) -> dict:
    """Health signal: the share of examples with y f(w) < 0 at the selection point, in the
    data and, weighted, in the coreset. A coreset far below the data (measured: 2% against
    30% on a noisy 23,000-row set) stands for hard examples by easy ones and fits an
    overconfident model."""
    wrong = y * loss._scores(w, X) < 0
    weights = coreset.weights.astype(np.float64)
    return {"data": float(wrong.mean()),
            "coreset": float(weights[wrong[coreset.indices]].sum() / weights.sum())}


def _facility_location(loss, X, y, labels, w, fraction, kind, power, seed, eps, budget,
                       exact_limit, block_size, optimizer, epsilon, projection_dim,
                       densify_limit) -> Coreset:
    classes, sizes = np.unique(labels, return_counts=True)
    small = sizes.max() <= exact_limit
    strategy_kind = kind == "gradient" or (kind == "diagonal" and power == 1.0)
    if not sp.issparse(X) and small and strategy_kind:
        # the library's strategies, called as they are
        grads = loss.per_example_grads(w, X, y)
        if kind == "diagonal":
            strategy = AdaCore(fraction, eps=eps, budget=budget, seed=seed)
            coreset = strategy.select(grads, labels,
                                      hessian_diag=loss.per_example_hessian_diag(w, X, y))
        else:
            coreset = Craig(fraction, budget=budget, seed=seed).select(grads, labels)
        coreset.metadata.update({"engines": {int(c): "exact" for c in classes},
                                 "vectors": "dense"})
        return coreset
    budgets = per_class_budgets(labels, budget_from_fraction(fraction, labels.shape[0]), budget)
    parts = _Parts(loss, X, y, w, kind, eps, power)
    p = loss.n_params(X.shape[1])
    if sp.issparse(X):
        project = int(sizes.max()) * p > densify_limit
        matrix = (projection_matrix(p, projection_dim, seed).numpy().astype(np.float64)
                  if project else None)
        space = "projected" if project else "densified"
    else:
        space = "dense"
    indices, weights, gains, engines, blocks = [], [], [], {}, {}
    full_sum = estimate = 0.0
    for label, k in budgets.items():
        members = np.flatnonzero(labels == label)
        exact = members.shape[0] <= exact_limit
        rng = class_seed(seed, label)
        if not exact:
            members = rng.permutation(members)     # random blocks
        if sp.issparse(X):
            vectors = _sparse_vectors(X, members, parts, loss, matrix)
        else:
            vectors = _dense_vectors(X, members, parts, loss)
        # sums as matrix-vector products: a column sum of a tall matrix is slow in torch
        class_sum = torch.ones(vectors.shape[0]) @ vectors
        # centred (in place), for the float32 distances; the weights of a class sum to
        # its size, so the weighted sum of the picks shifts by the same n_c * mean
        vectors -= class_sum / vectors.shape[0]
        if exact:
            part = per_class_facility_location(vectors, np.full(members.shape[0], label),
                                               {label: k}, seed=seed, round_index=1)
            positions, class_weights, class_gains = part.indices, part.weights, part.gains
        else:
            positions, class_weights, class_gains, blocks[label] = block_facility_location(
                vectors, k, block_size=block_size, optimizer=optimizer, epsilon=epsilon,
                rng=rng)
        engines[label] = "exact" if exact else "blocks"
        full_sum = full_sum + class_sum.double()
        estimate = estimate + class_sum.double() + (
            torch.from_numpy(class_weights).float() @ vectors[torch.from_numpy(positions)]
        ).double()
        indices.append(members[positions])
        weights.append(class_weights)
        gains.append(class_gains)
    weights_all = np.concatenate(weights)
    norm = float(torch.linalg.vector_norm(full_sum))
    error = float(torch.linalg.vector_norm(full_sum - estimate))
    return Coreset(indices=np.concatenate(indices), weights=weights_all,
                   gains=np.concatenate(gains), budgets=budgets,
                   metadata={"engines": engines, "vectors": space, "blocks": blocks,
                             "block_size": block_size, "optimizer": optimizer,
                             "gradient_error": error / norm if norm > 0 else error,
                             "max_weight_over_mean": float(weights_all.max()
                                                           / weights_all.mean()),
                             "singleton_clusters": int((weights_all == 1).sum())})


def convex_vectors(X, y, *, loss: str | ConvexLoss = "logistic", method: str = "adacore",
                   hessian: str = "mean_diagonal", power: float | None = None, w=None,
                   alpha: float = 1e-5, fit_intercept: bool = True,
                   eps: float = 1e-4) -> np.ndarray:
    """The per-example vectors that :func:`select_coreset` covers, as a dense array.

    CRAIG's g_i or AdaCore's preconditioned u_i of ``hessian`` and ``power`` (module
    docstring), at ``w`` as given (no Newton step: for the default selection's vectors
    pass ``w=coreset.metadata["w"]``), computed by the same code as the selection's
    large-class path (float32; a sparse X is densified, so keep it small).

    Returns
    -------
    ndarray, shape (n, p), float32
    """
    check_choice("method", method, ("adacore", "craig"))
    check_choice("hessian", hessian, HESSIANS)
    power = _check_power(hessian, power)
    check_positive("eps", eps)
    loss = get_loss(loss, alpha=alpha, fit_intercept=fit_intercept)
    X = as_features(X)
    y = loss.check_labels(y, X.shape[0])
    w = np.zeros(loss.n_params(X.shape[1])) if w is None else loss.check_weights(w, X.shape[1])
    kind = "gradient" if method == "craig" else hessian
    if kind == "mean":
        _check_full(kind, loss.n_params(X.shape[1]))
    parts = _Parts(loss, X, y, w, kind, eps, power)
    everyone = np.arange(X.shape[0])
    if sp.issparse(X):
        return _sparse_vectors(X, everyone, parts, loss, None).numpy()
    return _dense_vectors(X, everyone, parts, loss).numpy()


class Reselection:
    """Reselect a coreset of the full data at the current parameters, every ``every`` epochs.

    A solver (:mod:`adacore.convex.solvers`) calls it with its current w at epochs
    every, 2 every, ... and trains on ``X[c.indices]`` with weights ``c.weights`` from then
    on. Each round is a fresh :func:`select_coreset` at w (``at="initial"``: training has
    moved w already, so no Newton step is taken), with seed ``seed + round`` (new random
    subsets and blocks); AdaCore's smoothing of the curvature across rounds is not applied
    (for convex models each round's curvature is exact).

    Parameters
    ----------
    X, y
        The full training data.
    every : int
        Reselection period in epochs, >= 1.
    **options
        Keyword arguments of :func:`select_coreset` (``fraction``, ``loss``, ``method``,
        ``seed``, ...); ``at`` and ``w`` are set per round.
    """

    def __init__(self, X, y, *, every: int, **options):
        self.every = check_int("every", every, 1)
        for name in ("at", "w"):
            if name in options:
                raise InputError(f"{name}: set by each round of a Reselection, not by the "
                                 f"caller")
        if "fraction" not in options:
            raise InputError("fraction: a Reselection needs the fraction to select")
        loss = get_loss(options.pop("loss", "logistic"), alpha=options.pop("alpha", 1e-5),
                        fit_intercept=options.pop("fit_intercept", True))
        self.X = as_features(X)
        self.y = loss.check_labels(y, self.X.shape[0])
        self.loss = loss
        self.seed = check_int("seed", options.pop("seed", 0), 0)
        self.options = options
        self.rounds = 0

    def __call__(self, w) -> Coreset:
        self.rounds += 1
        coreset = select_coreset(self.X, self.y, loss=self.loss, seed=self.seed + self.rounds,
                                 at="initial", w=w, **self.options)
        coreset.round = self.rounds + 1
        return coreset
