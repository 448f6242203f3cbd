"""A tight reference solve, to measure the others against: SciPy's L-BFGS-B.

The smooth losses are minimised directly. LASSO's l1 term is made smooth by the usual
split w = u - v with u, v >= 0, alpha ||w||_1 = alpha sum(u + v) at the optimum, which
L-BFGS-B handles through its bounds.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import minimize

from adacore.convex.losses import as_features, get_loss

__all__ = ["reference_solution"]


def reference_solution(loss, X, y, *, sample_weight=None, w0=None, tol: float = 1e-13,
                       max_iterations: int = 20000) -> tuple[np.ndarray, float]:
    """Minimise F to (near) machine precision; returns (w, F(w)).

    Parameters
    ----------
    loss : str or ConvexLoss
    X : array or sparse matrix, shape (n, d)
    y : array, shape (n,)
    sample_weight : array, shape (n,), optional
    w0 : array, shape (p,), optional
        Starting point (default zeros).
    tol : float
        L-BFGS-B's ``ftol`` and ``gtol``.
    max_iterations : int

    Returns
    -------
    (w, value) : the parameters and the objective there.
    """
    loss = get_loss(loss)
    X = as_features(X)
    y = loss.check_labels(y, X.shape[0])
    sample_weight = loss.check_sample_weight(sample_weight, X.shape[0])
    d, p = X.shape[1], loss.n_params(X.shape[1])
    start = np.zeros(p) if w0 is None else loss.check_weights(w0, d, "w0")
    options = {"ftol": tol, "gtol": tol, "maxiter": max_iterations, "maxcor": 30}
    if not loss.uses_l1:
        def smooth(w):
            return loss._smooth_value_and_gradient(w, X, y, sample_weight)

        found = minimize(smooth, start, jac=True, method="L-BFGS-B", options=options)
        w = found.x
    else:
        free = p - d       # the intercept is not split

        def split(z):
            w = np.concatenate([z[:d] - z[d:2 * d], z[2 * d:]])
            value, gradient = loss._smooth_value_and_gradient(w, X, y, sample_weight)
            value += loss.alpha * float(z[:2 * d].sum())
            g = gradient[:d]
            return value, np.concatenate([g + loss.alpha, -g + loss.alpha, gradient[d:]])

        z0 = np.concatenate([np.maximum(start[:d], 0), np.maximum(-start[:d], 0), start[d:]])
        bounds = [(0.0, None)] * (2 * d) + [(None, None)] * free
        found = minimize(split, z0, jac=True, method="L-BFGS-B", bounds=bounds,
                         options=options)
        z = found.x
        w = np.concatenate([z[:d] - z[d:2 * d], z[2 * d:]])
    return w, loss._value(w, X, y, sample_weight)
