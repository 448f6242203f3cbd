"""Selection methods behind one interface, found by name."""

from adacore.strategies.base import (STRATEGIES, Strategy, available_strategies, get_strategy,
                                     register_strategy)
from adacore.strategies.facility import AdaCore, Craig
from adacore.strategies.full import FullData
from adacore.strategies.glister import Glister
from adacore.strategies.gradmatch import GradMatch
from adacore.strategies.infobatch import InfoBatch
from adacore.strategies.random import RandomSubset
from adacore.strategies.rs2 import RS2

__all__ = ["STRATEGIES", "AdaCore", "Craig", "FullData", "Glister", "GradMatch", "InfoBatch",
           "RS2", "RandomSubset", "Strategy", "available_strategies", "get_strategy",
           "register_strategy"]
