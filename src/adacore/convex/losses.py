"""Convex losses of linear models, with exact per-example gradients and Hessian diagonals.

Every loss here is a generalised linear loss phi(f_i, y_i) of the score
f_i = <x_i, w> + b, so its per-example gradient is phi'(f_i) [x_i; 1] and its per-example
Hessian is phi''(f_i) [x_i; 1][x_i; 1]^T, whose diagonal is phi''(f_i) [x_i^2; 1].

The objective, for sample weights s_i >= 0 (all 1 by default) with S = sum_i s_i, is the
weighted *mean*

    F(w, b) = (1 / S) sum_i s_i phi(f_i, y_i) + alpha / 2 ||w||^2      (ridge-type losses)
    F(w, b) = (1 / S) sum_i s_i phi(f_i, y_i) + alpha ||w||_1          (LASSO)

so that F does not change when the weights are rescaled (a coreset's weights summing to n,
or normalised to mean 1, give the same objective) and the per-example loss is
l_i = phi(f_i, y_i) + alpha / 2 ||w||^2, with F = (1 / S) sum_i s_i l_i. The intercept b
(last entry of the parameter vector when ``fit_intercept``) is never regularised. The l1
term of LASSO is not differentiable: its per-example terms are those of the smooth part
(alpha plays no part in them) and the solvers take it through :meth:`ConvexLoss.prox`.

Labels: the classification losses take y in {-1, +1} (and nothing else; for {0, 1} labels
pass ``2 * y - 1``); the regression losses take any finite real y.

X is a dense NumPy array or a SciPy sparse matrix (used as CSR, never densified).

Mapping to scikit-learn, with ``sample_weight=s`` and S = sum_i s_i (S = n for unit
weights, and for the coresets here, whose weights sum to n):
``LogisticRegression(C=1 / (alpha * S))`` minimises alpha S times our logistic F (its
objective is 1/2 ||w||^2 + C sum_i s_i phi_i, intercept unpenalised; tested);
``Ridge(alpha=S * alpha)`` minimises 2 S times our ridge F; ``Lasso(alpha=alpha)``
minimises exactly our LASSO F (1 / (2 S) sum_i s_i (y_i - f_i)^2 + alpha ||w||_1; tested
with unit weights). ``LinearSVC(loss="squared_hinge", C=1 / (alpha S))`` has our
squared-hinge objective except that liblinear also penalises the intercept.
"""

from __future__ import annotations

import abc
from typing import ClassVar

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, log_expit

from adacore.validation import InputError, check_choice, check_positive, fail

__all__ = ["ConvexLoss", "LOSSES", "LassoLoss", "LogisticLoss", "RidgeLoss",
           "SquaredHingeLoss", "as_features", "get_loss"]


def as_features(X, name: str = "X"):
    """X as a float64 C-ordered ndarray or a float64 CSR matrix, checked finite and 2-D."""
    if sp.issparse(X):
        if X.ndim != 2:
            raise fail(name, X, "a 2-D sparse matrix")
        X = sp.csr_matrix(X, dtype=np.float64)
        values = X.data
    else:
        try:
            X = np.asarray(X)
        except (TypeError, ValueError) as error:
            raise fail(name, X, "a 2-D numeric array or a SciPy sparse matrix") from error
        if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
            raise fail(name, X, "a 2-D numeric array or a SciPy sparse matrix")
        if X.ndim != 2:
            raise fail(name, X, "a 2-D array (examples x features)")
        X = np.ascontiguousarray(X, dtype=np.float64)
        values = X
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise fail(name, X, "at least one example and one feature")
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise InputError(f"{name}: {bad} entries are NaN or inf, expected finite features")
    return X


def _as_vector(name: str, value, length: int) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise fail(name, value, f"a numeric vector of length {length}") from error
    if array.shape != (length,):
        raise fail(name, value, f"a vector of length {length}")
    if not np.isfinite(array).all():
        raise InputError(f"{name}: NaN or inf entries, expected finite values")
    return array


class ConvexLoss(abc.ABC):
    """A convex loss of a linear model; see the module docstring for the objective.

    Parameters
    ----------
    alpha : float, default 1e-5
        Regularisation strength, >= 0 (l2 for logistic, squared hinge and ridge; l1 for
        LASSO).
    fit_intercept : bool, default True
        Whether the parameter vector ends with an unregularised intercept.

    The public methods validate their arguments; the underscored ones (used by the
    solvers on every step) trust them.
    """

    name: ClassVar[str] = ""
    binary: ClassVar[bool] = False
    # sup of phi'': bounds the per-example smoothness, phi''max ||[x; 1]||^2 + alpha
    curvature_bound: ClassVar[float] = 1.0
    uses_l1: ClassVar[bool] = False

    def __init__(self, alpha: float = 1e-5, *, fit_intercept: bool = True):
        self.alpha = check_positive("alpha", alpha, allow_zero=True)
        if not isinstance(fit_intercept, bool):
            raise fail("fit_intercept", fit_intercept, "True or False")
        self.fit_intercept = fit_intercept

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(alpha={self.alpha!r}, "
                f"fit_intercept={self.fit_intercept!r})")

    # -- the scalar loss in the score, vectorised over examples -----------------------
    @abc.abstractmethod
    def derivatives(self, scores: np.ndarray, y: np.ndarray):
        """(phi, phi', phi'') at the scores f, each of shape (n,)."""

    def slope(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """phi' alone (what a gradient step needs)."""
        return self.derivatives(scores, y)[1]

    @property
    def l2(self) -> float:
        return 0.0 if self.uses_l1 else self.alpha

    @property
    def l1(self) -> float:
        return self.alpha if self.uses_l1 else 0.0

    def n_params(self, n_features: int) -> int:
        return n_features + int(self.fit_intercept)

    # -- validation --------------------------------------------------------------------
    def check_labels(self, y, n: int | None = None, name: str = "y") -> np.ndarray:
        """Labels as float64; {-1, +1} only for the classification losses."""
        try:
            labels = np.asarray(y, dtype=np.float64)
        except (TypeError, ValueError) as error:
            raise fail(name, y, "a 1-D numeric array of labels") from error
        if labels.ndim != 1:
            raise fail(name, y, "a 1-D array of labels")
        if n is not None and labels.shape[0] != n:
            raise InputError(f"{name}: got {labels.shape[0]} labels for {n} examples, "
                             f"expected one label per row of X")
        if not np.isfinite(labels).all():
            raise InputError(f"{name}: NaN or inf labels, expected finite values")
        if self.binary and not np.isin(labels, (-1.0, 1.0)).all():
            found = np.unique(labels)
            shown = ", ".join(f"{v:g}" for v in found[:6]) + (", ..." if found.size > 6 else "")
            raise InputError(f"{name}: the {self.name} loss is binary and takes labels in "
                             f"{{-1, +1}}, got values {{{shown}}} (for 0/1 labels pass "
                             f"2 * y - 1; for more classes, one-vs-rest labels)")
        return labels

    def check_weights(self, w, n_features: int, name: str = "w") -> np.ndarray:
        return _as_vector(name, w, self.n_params(n_features))

    def check_sample_weight(self, sample_weight, n: int) -> np.ndarray | None:
        if sample_weight is None:
            return None
        weights = _as_vector("sample_weight", sample_weight, n)
        if (weights < 0).any() or weights.sum() <= 0:
            raise fail("sample_weight", sample_weight, "weights >= 0 with a positive sum")
        return weights

    def _checked(self, w, X, y, sample_weight=None):
        X = as_features(X)
        y = self.check_labels(y, X.shape[0])
        w = self.check_weights(w, X.shape[1])
        return w, X, y, self.check_sample_weight(sample_weight, X.shape[0])

    # -- linear algebra shared by every method ----------------------------------------
    def _split(self, w: np.ndarray):
        return (w[:-1], w[-1]) if self.fit_intercept else (w, 0.0)

    def _scores(self, w: np.ndarray, X) -> np.ndarray:
        coef, intercept = self._split(w)
        return np.asarray(X @ coef).reshape(-1) + intercept

    def _transpose_times(self, X, r: np.ndarray) -> np.ndarray:
        """[X, 1]^T r (or X^T r): the parameter-space image of per-example scalars."""
        product = np.asarray(X.T @ r).reshape(-1)
        return np.append(product, r.sum()) if self.fit_intercept else product

    def _regulariser_mask(self, n_features: int) -> np.ndarray:
        """1 on the regularised coordinates, 0 on the intercept."""
        mask = np.ones(self.n_params(n_features))
        if self.fit_intercept:
            mask[-1] = 0.0
        return mask

    @staticmethod
    def _mean_weights(sample_weight, n: int) -> np.ndarray:
        if sample_weight is None:
            return np.full(n, 1.0 / n)
        return sample_weight / sample_weight.sum()

    # -- the objective (fast paths, no validation) ------------------------------------
    def _value(self, w, X, y, sample_weight=None) -> float:
        phi = self.derivatives(self._scores(w, X), y)[0]
        coef = self._split(w)[0]
        penalty = 0.5 * self.l2 * float(coef @ coef) + self.l1 * float(np.abs(coef).sum())
        return float(self._mean_weights(sample_weight, X.shape[0]) @ phi) + penalty

    def _smooth_value_and_gradient(self, w, X, y, sample_weight=None):
        """The smooth part's value (no l1 term) and its gradient."""
        phi, d1, _ = self.derivatives(self._scores(w, X), y)
        mean = self._mean_weights(sample_weight, X.shape[0])
        coef = self._split(w)[0]
        value = float(mean @ phi) + 0.5 * self.l2 * float(coef @ coef)
        gradient = self._transpose_times(X, mean * d1)
        gradient[:coef.shape[0]] += self.l2 * coef
        return value, gradient

    def _hessian_diag(self, w, X, y, sample_weight=None) -> np.ndarray:
        d2 = self.derivatives(self._scores(w, X), y)[2]
        mean = self._mean_weights(sample_weight, X.shape[0])
        squares = X.power(2) if sp.issparse(X) else X * X
        diag = self._transpose_times(squares, mean * d2)
        return diag + self.l2 * self._regulariser_mask(X.shape[1])

    def prox(self, w: np.ndarray, step) -> np.ndarray:
        """Proximal map of step * (the non-smooth term): soft-thresholding of the
        regularised coordinates by step * alpha for LASSO, the identity otherwise.
        ``step`` may be a scalar or a per-coordinate vector."""
        if not self.uses_l1 or self.alpha == 0.0:
            return w
        threshold = np.broadcast_to(np.asarray(step, dtype=np.float64) * self.alpha, w.shape)
        out = np.sign(w) * np.maximum(np.abs(w) - threshold, 0.0)
        if self.fit_intercept:
            out[-1] = w[-1]
        return out

    # -- public, validated --------------------------------------------------------------
    def value(self, w, X, y, sample_weight=None) -> float:
        """The objective F (LASSO: with its l1 term) at parameters ``w``.

        Parameters
        ----------
        w : array, shape (d,) or (d + 1,) with ``fit_intercept`` (intercept last)
        X : array or sparse matrix, shape (n, d)
        y : array, shape (n,)
        sample_weight : array, shape (n,), optional
            Non-negative weights s_i; F is their weighted mean loss plus the penalty.
        """
        return self._value(*self._checked(w, X, y, sample_weight))

    def gradient(self, w, X, y, sample_weight=None) -> np.ndarray:
        """Gradient of the smooth part of F (all of F except LASSO's l1 term), shape (p,)."""
        return self._smooth_value_and_gradient(*self._checked(w, X, y, sample_weight))[1]

    def hessian_diag(self, w, X, y, sample_weight=None) -> np.ndarray:
        """Diagonal of the Hessian of the smooth part of F, shape (p,)."""
        return self._hessian_diag(*self._checked(w, X, y, sample_weight))

    def per_example_grads(self, w, X, y, *, regularized: bool = True):
        """Gradients of the per-example losses l_i, one row per example.

        Parameters
        ----------
        w, X, y
            As for :meth:`value`.
        regularized : bool, default True
            True: gradients of l_i = phi_i + alpha / 2 ||w||^2, that is
            phi'(f_i) [x_i; 1] + alpha [w; 0], as a dense (n, p) array (for a sparse X
            this allocates n x p floats). False: the data term phi'(f_i) [x_i; 1] alone,
            dense for a dense X and CSR (the pattern of [X, 1]) for a sparse X; the
            regulariser's part, the same for every example, is :meth:`regularizer_grad`.

        Returns
        -------
        ndarray or CSR matrix, shape (n, p), float64
        """
        w, X, y, _ = self._checked(w, X, y)
        d1 = self.derivatives(self._scores(w, X), y)[1]
        rows = self._scaled_rows(X, d1)
        if not regularized:
            return rows
        dense = rows.toarray() if sp.issparse(rows) else rows
        return dense + self.regularizer_grad(w, X.shape[1])

    def per_example_hessian_diag(self, w, X, y, *, regularized: bool = True):
        """Diagonals of the per-example Hessians of l_i, one row per example.

        phi''(f_i) [x_i^2; 1] + alpha [1; 0] (``regularized``), or the data term alone
        (dense or CSR, as in :meth:`per_example_grads`); for LASSO alpha does not enter.
        For the squared hinge phi'' = 2 * 1[y_i f_i < 1] (its generalised Hessian; the
        kink at the margin has measure zero).
        """
        w, X, y, _ = self._checked(w, X, y)
        d2 = self.derivatives(self._scores(w, X), y)[2]
        rows = self._scaled_rows(X.power(2) if sp.issparse(X) else X * X, d2)
        if not regularized:
            return rows
        dense = rows.toarray() if sp.issparse(rows) else rows
        return dense + self.l2 * self._regulariser_mask(X.shape[1])

    def regularizer_grad(self, w, n_features: int) -> np.ndarray:
        """alpha [w; 0]: the gradient of alpha / 2 ||w||^2 (zero for LASSO)."""
        coef = self._split(np.asarray(w, dtype=np.float64))[0]
        out = np.zeros(self.n_params(n_features))
        out[:n_features] = self.l2 * coef
        return out

    def _scaled_rows(self, X, scale: np.ndarray):
        """Rows of [X, 1] (or X) times ``scale``: dense stays dense, sparse stays CSR."""
        if sp.issparse(X):
            rows = sp.csr_matrix(X.multiply(scale[:, None]))
            if self.fit_intercept:
                rows = sp.hstack([rows, sp.csr_matrix(scale[:, None])], format="csr")
            return rows
        rows = X * scale[:, None]
        return np.hstack([rows, scale[:, None]]) if self.fit_intercept else rows

    def decision_function(self, w, X) -> np.ndarray:
        """The scores f = X w + b."""
        X = as_features(X)
        return self._scores(self.check_weights(w, X.shape[1]), X)

    def predict(self, w, X) -> np.ndarray:
        """Labels in {-1, +1} (sign of the score, 0 -> +1) for classification, scores
        otherwise."""
        scores = self.decision_function(w, X)
        return np.where(scores >= 0, 1.0, -1.0) if self.binary else scores


class LogisticLoss(ConvexLoss):
    """phi = log(1 + exp(-y f)), y in {-1, +1}; phi' = -y sigmoid(-y f),
    phi'' = sigmoid(f) sigmoid(-f) (at w = 0: phi' = -y / 2, phi'' = 1 / 4)."""

    name = "logistic"
    binary = True
    curvature_bound = 0.25

    def derivatives(self, scores, y):
        margins = y * scores
        return -log_expit(margins), -y * expit(-margins), expit(scores) * expit(-scores)

    def slope(self, scores, y):
        return -y * expit(-y * scores)


class SquaredHingeLoss(ConvexLoss):
    """phi = max(0, 1 - y f)^2, y in {-1, +1} (the L2-SVM of LinearSVC's squared hinge);
    phi' = -2 y max(0, 1 - y f), phi'' = 2 * 1[y f < 1]."""

    name = "squared_hinge"
    binary = True
    curvature_bound = 2.0

    def derivatives(self, scores, y):
        slack = np.maximum(1.0 - y * scores, 0.0)
        return slack * slack, -2.0 * y * slack, 2.0 * (slack > 0)

    def slope(self, scores, y):
        return -2.0 * y * np.maximum(1.0 - y * scores, 0.0)


class RidgeLoss(ConvexLoss):
    """phi = (f - y)^2 / 2 with the l2 penalty alpha / 2 ||w||^2."""

    name = "ridge"

    def derivatives(self, scores, y):
        residual = scores - y
        return 0.5 * residual * residual, residual, np.ones_like(residual)

    def slope(self, scores, y):
        return scores - y


class LassoLoss(RidgeLoss):
    """phi = (f - y)^2 / 2 with the l1 penalty alpha ||w||_1 (through :meth:`prox`)."""

    name = "lasso"
    uses_l1 = True


LOSSES: dict[str, type[ConvexLoss]] = {
    cls.name: cls for cls in (LogisticLoss, SquaredHingeLoss, RidgeLoss, LassoLoss)}


def get_loss(loss: str | ConvexLoss, *, alpha: float = 1e-5,
             fit_intercept: bool = True) -> ConvexLoss:
    """The loss named ``loss`` ('logistic', 'squared_hinge', 'ridge', 'lasso'), or ``loss``
    itself when it already is a :class:`ConvexLoss`."""
    if isinstance(loss, ConvexLoss):
        return loss
    check_choice("loss", loss, LOSSES)
    return LOSSES[loss](alpha, fit_intercept=fit_intercept)
