"""Coresets for convex models: AdaCore, CRAIG, random or all of it, chosen once before training.

The vectors. At parameters w, example i has the exact gradient g_i = phi'(f_i) [x_i; 1] +
alpha [w; 0] and Hessian diagonal h_i = phi''(f_i) [x_i^2; 1] + alpha [1; 0]
(:mod:`adacore.convex.losses`). CRAIG covers the g_i. AdaCore covers
u_i = g_i / (h_i + eps) (``hessian="diagonal"``, the default), which is what the
:class:`adacore.AdaCore` strategy computes on its first round (h_i >= 0 for every loss
here, so |h_i| = h_i), or, with ``hessian="exact"``, u_i = (H_i + E)^-1 g_i with the
whole per-example Hessian H_i = phi''_i [x_i; 1][x_i; 1]^T + alpha [I 0; 0 0] and
E = eps I: a rank-one matrix plus a diagonal, inverted exactly by Sherman-Morrison in
O(d) per example, u_i = s_i D^-1 [x_i; 1] + alpha D^-1 [w; 0] with D = diag(alpha + eps,
..., eps) and a scalar s_i (:func:`_exact_scale`). The exact form is a multiple of the
example's features, so it does not blow up on small entries as the diagonal form does.

Where. By default at the initial weights, w = 0 (the poster: for convex models the
preconditioned gradients are Lipschitz in x, so one coreset serves the whole run). There,
for logistic regression, g_i = -y_i [x_i; 1] / 2 and h_i = [x_i^2 / 4 + alpha; 1 / 4], so
CRAIG covers the (label-signed) features and AdaCore covers
-y_i x_ik / (2 (x_ik^2 / 4 + alpha + eps)) coordinate by coordinate: it preconditions by
the feature scale, which equalises the coordinates (a feature's unit no longer matters)
but grows like 1 / x_ik for small nonzero entries (largest, about
1 / (2 sqrt(alpha + eps)), at |x_ik| = 2 sqrt(alpha + eps); ``eps`` bounds it). With
``at="pilot"`` the selection is made instead at a pilot solution: ``pilot_epochs`` epochs
of :func:`adacore.convex.solvers.sgd` (its defaults) from w on a uniform sample of
max(256, pilot_fraction * n) examples, seeded by ``seed``; its time is counted.

How. Per class for the classification losses (labels -1 and +1, budgets split as
:func:`adacore.per_class_budgets` does); the regression losses form one class. A class of
at most ``exact_limit`` examples gets the library's exact lazy-greedy facility location
(for a dense X with only such classes, the :class:`adacore.AdaCore` / :class:`adacore.Craig`
strategies are called as they are); a larger class is shuffled and solved in random blocks
of about ``block_size`` examples (:mod:`adacore.convex.blocks`). For a sparse X the vectors
of a class are densified when the largest class's n_c x p fits ``densify_limit`` entries,
and otherwise randomly projected to ``projection_dim`` dimensions
(:func:`adacore.probe.projection_matrix`, Gaussian, seeded) after preconditioning: the
sparse part is multiplied by the matrix and the part shared by every row (alpha [w; 0] and
its preconditioned form off the sparsity pattern) is projected once and added.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
import torch

from adacore.convex.blocks import BLOCK_OPTIMIZERS, block_facility_location
from adacore.convex.losses import ConvexLoss, as_features, get_loss
from adacore.convex.solvers import sgd
from adacore.coreset import Coreset
from adacore.probe import projection_matrix
from adacore.selection.budgets import BUDGET_MODES, budget_from_fraction, per_class_budgets
from adacore.selection.per_class import class_seed, per_class_facility_location
from adacore.strategies import AdaCore, Craig, FullData, RandomSubset
from adacore.validation import (InputError, check_choice, check_fraction, check_int,
                                check_positive, check_unit_interval, fail)

__all__ = ["HESSIANS", "METHODS", "POINTS", "Reselection", "class_labels", "convex_vectors",
           "select_coreset"]

METHODS = ("adacore", "craig", "random", "full")
POINTS = ("initial", "pilot")
HESSIANS = ("diagonal", "exact")


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


def _vector_parts(loss: ConvexLoss, coef: np.ndarray, first, second, exact, kind: str,
                  eps: float):
    """(row scale, shared row, value off a sparse pattern, intercept column).

    "gradient" (CRAIG): g_i = phi'_i [x_i; 1] + alpha [w; 0], i.e. scale_i x_i + shared.
    "exact" (AdaCore, exact inverse): H_i^-1 g_i = s_i D^-1 [x_i; 1] + alpha D^-1 [w; 0],
    again scale_i x_i + shared. "diagonal" (AdaCore, the strategy's formula):
    (phi'_i x_i + alpha w) / (phi''_i x_i^2 + alpha + eps) entrywise, which is
    alpha w / (alpha + eps) where x_ik = 0.
    """
    shared = loss.l2 * coef
    ridge = loss.l2 + eps
    if kind == "gradient":
        return first, shared, shared, first
    if kind == "exact":
        return exact / ridge, shared / ridge, shared / ridge, exact / eps
    return first, shared, shared / ridge, first / (second + eps)


def _dense_vectors(X: np.ndarray, members: np.ndarray, parts, second, loss: ConvexLoss,
                   kind: str, eps: float) -> torch.Tensor:
    """The vectors of ``kind`` for the rows ``members`` of a dense X, float32, (n_c, p).

    One gather of the rows and one scaled write into the float32 result (NumPy casts on
    the way out), plus one pass for the shared row and two for the diagonal's divisor.
    """
    rows = np.take(X, members, axis=0)
    d = rows.shape[1]
    scale, shared, _, intercept = parts
    out = np.empty((members.shape[0], loss.n_params(d)), dtype=np.float32)
    weights_part = out[:, :d]
    np.multiply(rows, scale[members, None], out=weights_part, casting="same_kind")
    if shared.any():
        weights_part += shared.astype(np.float32)
    if kind == "diagonal":      # rows is a fresh copy: square it in place
        np.multiply(rows, rows, out=rows)
        rows *= second[members, None]
        rows += loss.l2 + eps
        np.divide(weights_part, rows, out=weights_part, casting="same_kind")
    if loss.fit_intercept:
        out[:, d] = intercept[members]
    return torch.from_numpy(out)


def _sparse_vectors(X, members: np.ndarray, parts, second, loss: ConvexLoss, kind: str,
                    eps: float, matrix: np.ndarray | None) -> torch.Tensor:
    """The same for a CSR X: densified (``matrix`` None) or projected by ``matrix``."""
    rows = X[members]
    d = rows.shape[1]
    per_row = np.diff(rows.indptr)
    scale, shared, base, intercept = parts
    intercept = intercept[members]
    values = rows.data * np.repeat(scale[members], per_row) + shared[rows.indices]
    if kind == "diagonal":
        values /= (rows.data * rows.data * np.repeat(second[members], per_row)
                   + (loss.l2 + eps))
    correction = sp.csr_matrix((values - base[rows.indices], rows.indices, rows.indptr),
                               shape=rows.shape)
    if matrix is None:
        dense = correction.toarray() + base
        if loss.fit_intercept:
            dense = np.hstack([dense, intercept[:, None]])
        return torch.from_numpy(dense).float()
    projected = np.asarray(correction @ matrix[:d]) + base @ matrix[:d]
    if loss.fit_intercept:
        projected += intercept[:, None] * matrix[d]
    return torch.from_numpy(np.ascontiguousarray(projected)).float()


def _pilot(loss, X, y, w, seed, fraction, epochs):
    n = X.shape[0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x9110]))
    size = min(n, max(256, int(round(fraction * n))))
    sample = np.sort(rng.choice(n, size=size, replace=False))
    return sgd(loss, X[sample], y[sample], w0=w, epochs=epochs, seed=seed).w


def _check_options(fraction, method, at, hessian, seed, eps, budget, exact_limit,
                   block_size, optimizer, epsilon, projection_dim, densify_limit,
                   pilot_fraction, pilot_epochs):
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
                             ("pilot_epochs", pilot_epochs, 1)):
        check_int(name, value, low)
    return check_fraction("fraction", fraction)


def select_coreset(X, y, *, fraction: float, loss: str | ConvexLoss = "logistic",
                   method: str = "adacore", alpha: float = 1e-5, seed: int = 0,
                   at: str = "initial", w=None, fit_intercept: bool = True,
                   hessian: str = "diagonal", eps: float = 1e-4,
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
        {-1, +1} for 'logistic' and 'squared_hinge' (both classes present), reals for
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
    at : {"initial", "pilot"}
        Select at ``w``, or at a pilot solution started from ``w``.
    w : array, shape (p,), optional
        Parameters (intercept last); default zeros.
    fit_intercept : bool
    hessian : {"diagonal", "exact"}
        AdaCore's preconditioner: the Hessian diagonal, u = g / (h + eps) (the poster's and
        the strategy's formula), or the exact per-example Hessian, u = (H_i + eps I)^-1 g_i
        (rank one plus a ridge, inverted in closed form; see the module docstring).
    eps : float
        AdaCore's damping, > 0.
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
        ``select_seconds`` (everything, pilot included), ``at``, ``loss``, ``engines``
        (label -> "exact" / "blocks"), ``vectors`` ("dense", "densified", "projected"),
        ``gradient_error`` (relative error of the weighted sum of the vectors selected on).
    """
    start = time.perf_counter()
    fraction = _check_options(fraction, method, at, hessian, seed, eps, budget, exact_limit,
                              block_size, optimizer, epsilon, projection_dim, densify_limit,
                              pilot_fraction, pilot_epochs)
    loss = get_loss(loss, alpha=alpha, fit_intercept=fit_intercept)
    X = as_features(X)
    y = loss.check_labels(y, X.shape[0])
    w = np.zeros(loss.n_params(X.shape[1])) if w is None else loss.check_weights(w, X.shape[1])
    labels = class_labels(loss, y)
    if method in ("random", "full"):
        strategy = (RandomSubset(fraction, budget=budget, seed=seed) if method == "random"
                    else FullData())
        coreset = strategy.select(None, labels)
    else:
        if at == "pilot":
            w = _pilot(loss, X, y, w, seed, pilot_fraction, pilot_epochs)
        kind = "gradient" if method == "craig" else hessian
        coreset = _facility_location(loss, X, y, labels, w, fraction, kind, seed, eps,
                                     budget, exact_limit, block_size, optimizer, epsilon,
                                     projection_dim, densify_limit)
        coreset.metadata["preconditioner"] = None if method == "craig" else hessian
    coreset.method = method
    coreset.metadata.update({"select_seconds": time.perf_counter() - start, "at": at,
                             "loss": loss.name, "alpha": loss.alpha, "w": w})
    return coreset


def _facility_location(loss, X, y, labels, w, fraction, kind, seed, eps, budget,
                       exact_limit, block_size, optimizer, epsilon, projection_dim,
                       densify_limit) -> Coreset:
    classes, sizes = np.unique(labels, return_counts=True)
    small = sizes.max() <= exact_limit
    if not sp.issparse(X) and small and kind != "exact":
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
    first, second = _scalars(loss, w, X, y)
    exact_scale = _exact_scale(loss, X, w, first, second, eps) if kind == "exact" else None
    parts = _vector_parts(loss, w[:X.shape[1]], first, second, exact_scale, kind, eps)
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
            vectors = _sparse_vectors(X, members, parts, second, loss, kind, eps, matrix)
        else:
            vectors = _dense_vectors(X, members, parts, second, loss, kind, eps)
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
                   hessian: str = "diagonal", w=None, alpha: float = 1e-5,
                   fit_intercept: bool = True, eps: float = 1e-4) -> np.ndarray:
    """The per-example vectors that :func:`select_coreset` covers, as a dense array.

    CRAIG's g_i, AdaCore's g_i / (h_i + eps) (``hessian="diagonal"``) or
    (H_i + eps I)^-1 g_i (``hessian="exact"``), computed by the same code as the
    selection's large-class path (float32; a sparse X is densified, so keep it small).

    Returns
    -------
    ndarray, shape (n, p), float32
    """
    check_choice("method", method, ("adacore", "craig"))
    check_choice("hessian", hessian, HESSIANS)
    check_positive("eps", eps)
    loss = get_loss(loss, alpha=alpha, fit_intercept=fit_intercept)
    X = as_features(X)
    y = loss.check_labels(y, X.shape[0])
    w = np.zeros(loss.n_params(X.shape[1])) if w is None else loss.check_weights(w, X.shape[1])
    kind = "gradient" if method == "craig" else hessian
    first, second = _scalars(loss, w, X, y)
    exact_scale = _exact_scale(loss, X, w, first, second, eps) if kind == "exact" else None
    parts = _vector_parts(loss, w[:X.shape[1]], first, second, exact_scale, kind, eps)
    everyone = np.arange(X.shape[0])
    if sp.issparse(X):
        return _sparse_vectors(X, everyone, parts, second, loss, kind, eps, None).numpy()
    return _dense_vectors(X, everyone, parts, second, loss, kind, eps).numpy()


class Reselection:
    """Reselect a coreset of the full data at the current parameters, every ``every`` epochs.

    A solver (:mod:`adacore.convex.solvers`) calls it with its current w at epochs
    every, 2 every, ... and trains on ``X[c.indices]`` with weights ``c.weights`` from then
    on. Each round is a fresh :func:`select_coreset` at w (``at="initial"``), with seed
    ``seed + round`` (new random subsets and blocks); AdaCore's smoothing of the curvature
    across rounds is not applied (for convex models each round's Hessian diagonal is
    exact).

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
                                 w=w, **self.options)
        coreset.round = self.rounds + 1
        return coreset
