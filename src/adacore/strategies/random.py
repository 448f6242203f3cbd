"""Uniform random subsets, per class."""

from __future__ import annotations

import numpy as np

from adacore.coreset import Coreset
from adacore.strategies.base import Strategy, register_strategy


@register_strategy("random")
class RandomSubset(Strategy):
    """A fresh uniform subset per class each round, weights n_c / k_c.

    ``grads`` are not needed (pass None); each round draws from the strategy's own
    generator, seeded by ``seed``, so a resumed run draws what an unbroken one would.
    """

    requires = ()

    def __init__(self, fraction: float, *, budget: str = "proportional", seed: int = 0):
        super().__init__(fraction, budget=budget, seed=seed)
        self.rng_ = np.random.default_rng(self.seed)

    def _select(self, vectors, labels, **inputs) -> Coreset:
        indices, weights = [], []
        budgets = self.budgets(labels)
        for label, budget in budgets.items():
            members = np.flatnonzero(labels == label)
            indices.append(self.rng_.choice(members, size=budget, replace=False))
            weights.append(np.full(budget, members.shape[0] / budget))
        k = sum(budgets.values())
        return Coreset(indices=np.concatenate(indices), weights=np.concatenate(weights),
                       gains=np.full(k, np.nan), budgets=budgets)

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng_.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng_.bit_generator.state = state["rng"]
