"""Convex models: exact per-example terms, coresets chosen once, weighted solvers.

The convex experiment (``adacore compare --task convex``) lives in
:mod:`adacore.experiments.convex`, above this package.

>>> from adacore.convex import select_coreset, sgd          # doctest: +SKIP
>>> c = select_coreset(X, y, fraction=0.1, loss="logistic")  # y in {-1, +1}
>>> result = sgd("logistic", X[c.indices], y[c.indices], sample_weight=c.weights)

or hand the coreset to scikit-learn, with C = 1 / (alpha * n) for our alpha (the weights
sum to n):

>>> LogisticRegression(C=1 / (1e-5 * len(y))).fit(X[c.indices], y[c.indices],
...                                                sample_weight=c.weights)
"""

from adacore.convex.blocks import block_facility_location, blocked_facility_location
from adacore.convex.curvature import (inverse_power, mean_hessian_diag, newton_point,
                                      population_hessian)
from adacore.convex.datasets import DATASETS, ConvexData, load_convex_data, read_libsvm
from adacore.convex.losses import (LOSSES, ConvexLoss, LassoLoss, LogisticLoss, RidgeLoss,
                                   SquaredHingeLoss, get_loss)
from adacore.convex.reference import reference_solution
from adacore.convex.select import (DEFAULT_POWERS, HESSIANS, METHODS, POINTS, Reselection,
                                   convex_vectors, select_coreset)
from adacore.convex.solvers import (SOLVERS, SolverResult, preconditioned_gd, saga, sgd,
                                    solve)
from adacore.convex.speed import convex_speed_report

__all__ = ["ConvexData", "ConvexLoss", "DATASETS", "DEFAULT_POWERS", "HESSIANS", "LOSSES",
           "LassoLoss", "LogisticLoss", "METHODS", "POINTS", "Reselection", "RidgeLoss",
           "SOLVERS", "SolverResult", "SquaredHingeLoss", "block_facility_location",
           "blocked_facility_location", "convex_speed_report", "convex_vectors", "get_loss",
           "inverse_power", "load_convex_data", "mean_hessian_diag", "newton_point",
           "population_hessian", "preconditioned_gd", "read_libsvm", "reference_solution",
           "saga", "select_coreset", "sgd", "solve"]
