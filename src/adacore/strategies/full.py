"""Full-data training as a method, so comparisons treat it like the others."""

from __future__ import annotations

import numpy as np

from adacore.coreset import Coreset
from adacore.strategies.base import Strategy, register_strategy


@register_strategy("full")
class FullData(Strategy):
    """Every example, weight 1 (``fraction`` is accepted for a uniform interface and ignored)."""

    requires = ()

    def __init__(self, fraction: float = 1.0, *, budget: str = "proportional", seed: int = 0):
        super().__init__(1.0, budget=budget, seed=seed)

    def _select(self, vectors, labels, **inputs) -> Coreset:
        n = labels.shape[0]
        classes, counts = np.unique(labels, return_counts=True)
        return Coreset(indices=np.arange(n), weights=np.ones(n), gains=np.full(n, np.nan),
                       budgets={int(c): int(k) for c, k in zip(classes, counts)})
