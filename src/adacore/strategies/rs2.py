"""RS2: repeated random sampling without replacement (Okanovic et al., 2023)."""

from __future__ import annotations

import numpy as np

from adacore.coreset import Coreset
from adacore.selection.budgets import budget_from_fraction
from adacore.strategies.base import Strategy, register_strategy


@register_strategy("rs2")
class RS2(Strategy):
    """A fresh uniform subset every epoch, without replacement until the data is used up.

    The rounds read consecutive windows of k examples from a stream of passes, each pass
    a new random permutation of all n examples: every example is visited exactly once
    per pass. When a window spans two passes, the start of the new pass is reordered so
    that the window holds no example twice (the example still comes once in that pass).
    As in the paper, sampling is over the whole training set, not per class; the weights
    are n / k for every pick (the loss weights are rescaled to mean 1 anyway). RS2
    reselects every epoch whatever ``select_every`` says (``reselect_every = 1``).
    """

    requires = ()
    reselect_every = 1

    def __init__(self, fraction: float, *, budget: str = "proportional", seed: int = 0):
        super().__init__(fraction, budget=budget, seed=seed)
        self.rng_ = np.random.default_rng(self.seed)
        self.permutation_: np.ndarray | None = None
        self.position_ = 0
        self.passes_ = 0

    def _new_pass(self, n: int, tail: np.ndarray, need: int) -> None:
        permutation = self.rng_.permutation(n)
        if tail.shape[0]:
            # examples of the old pass's tail may not open the new one in this window
            head = permutation[:need]
            clash = np.flatnonzero(np.isin(head, tail))
            if clash.shape[0]:
                free = need + np.flatnonzero(~np.isin(permutation[need:], tail))[:clash.shape[0]]
                permutation[clash], permutation[free] = permutation[free], permutation[clash].copy()
        self.permutation_ = permutation
        self.position_ = 0
        self.passes_ += 1

    def _select(self, vectors, labels, **inputs) -> Coreset:
        n = labels.shape[0]
        k = budget_from_fraction(self.fraction, n)
        if self.permutation_ is None or self.permutation_.shape[0] != n:
            self.passes_ = 0
            self._new_pass(n, np.empty(0, dtype=np.int64), k)
        tail = self.permutation_[self.position_:self.position_ + k]
        self.position_ += tail.shape[0]
        picks = tail
        if tail.shape[0] < k:
            need = k - tail.shape[0]
            self._new_pass(n, tail, need)
            picks = np.concatenate([tail, self.permutation_[:need]])
            self.position_ = need
        classes, counts = np.unique(labels[picks], return_counts=True)
        return Coreset(indices=picks, weights=np.full(k, n / k), gains=np.full(k, np.nan),
                       budgets={int(c): int(m) for c, m in zip(classes, counts)},
                       metadata={"pass": self.passes_})

    def state_dict(self) -> dict:
        import torch
        permutation = None if self.permutation_ is None else torch.from_numpy(self.permutation_)
        return {**super().state_dict(), "rng": self.rng_.bit_generator.state,
                "permutation": permutation, "position": self.position_, "passes": self.passes_}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng_.bit_generator.state = state["rng"]
        permutation = state["permutation"]
        self.permutation_ = None if permutation is None else permutation.numpy().copy()
        self.position_ = int(state["position"])
        self.passes_ = int(state["passes"])
