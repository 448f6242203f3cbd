"""adacore: adaptive second-order coresets and baselines for data-efficient learning."""

from adacore.coreset import Coreset
from adacore.curvature import (CurvatureSmoother, hutchinson_diagonal, softmax_ce_last_layer_terms,
                               softmax_ce_logit_terms)
from adacore.selection import facility_location, gradient_error, per_class_budgets
from adacore.strategies import (RS2, AdaCore, Craig, FullData, Glister, GradMatch, InfoBatch,
                                RandomSubset, Strategy, available_strategies, get_strategy,
                                register_strategy)
from adacore.validation import InputError

__version__ = "0.1.0"
__all__ = ["AdaCore", "Coreset", "Craig", "CurvatureSmoother", "FullData", "Glister", "GradMatch",
           "InfoBatch", "InputError", "RS2", "RandomSubset", "Strategy", "available_strategies",
           "facility_location", "get_strategy", "gradient_error", "hutchinson_diagonal",
           "per_class_budgets", "register_strategy", "softmax_ce_last_layer_terms",
           "softmax_ce_logit_terms", "__version__"]
