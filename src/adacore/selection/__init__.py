"""Model-agnostic selection engines: facility location, budgets, per-class runs."""

from adacore.selection.budgets import BUDGET_MODES, budget_from_fraction, per_class_budgets
from adacore.selection.distances import pairwise_distances
from adacore.selection.facility_location import (OPTIMIZERS, cluster_weights, facility_location,
                                                 greedy_facility_location, similarity_matrix)
from adacore.selection.per_class import gradient_error, per_class_facility_location

__all__ = ["BUDGET_MODES", "OPTIMIZERS", "budget_from_fraction", "cluster_weights",
           "facility_location", "gradient_error", "greedy_facility_location",
           "pairwise_distances", "per_class_budgets", "per_class_facility_location",
           "similarity_matrix"]
