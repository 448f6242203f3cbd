"""InfoBatch: unbiased dynamic data pruning by training loss (Qin et al., ICLR 2024)."""

from __future__ import annotations

import math

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.strategies.base import Strategy, register_strategy
from adacore.validation import InputError, check_int, check_real, fail

# a product such as 0.29 * 100 = 28.999999999999996 still floors to 29
_FLOOR_SLACK = 1e-9


@register_strategy("infobatch")
class InfoBatch(Strategy):
    """Each epoch, drop a random share of the examples whose last loss is below the mean.

    Every example's score is its most recent training loss (``losses``, which the
    caller keeps: :meth:`adacore.training.CoresetLoader.record_losses`); an example not
    trained on yet has score ``+inf`` and is never pruned, so the first epoch trains on
    everything (InfoBatch's initial score does the same). Of the m examples whose
    finite score is below the mean finite score, ``p = floor(prune_ratio * m)`` drawn
    uniformly without replacement are left out of this epoch; the other m - p get
    weight ``m / (m - p)``, the inverse of their chance to be kept (the paper's
    ``1 / (1 - prune_ratio)`` whenever ``prune_ratio * m`` is whole), every other
    example weight 1. The weighted loss over the kept examples is then an unbiased
    estimate of the full-data loss, exactly, and the weights sum to n.

    Weights as the trainer uses them: as they are (``rescale_weights = False``: the
    loader does not rescale them to mean 1, as it does for coresets), and a batch's loss
    is ``mean(w l)``, as in the paper's code. A pruned epoch then makes |K| /
    batch_size steps instead of n / batch_size (the saving), each about n / |K| times
    larger in expectation, so that the epoch's summed update is, in expectation over the
    pruning draw, a full-data epoch's: the paper's "lossless" rescaling.

    Annealing: with T = ``epochs`` rounds (one per epoch), round t prunes only if
    ``t <= floor(delta * T)``; the rounds after that, at least the last ``1 - delta``
    share of training, take the full data with weight 1 (as do rounds past T, unless
    ``delta`` is 1, which prunes every round and needs no ``epochs``).

    Selection is over the whole training set, not per class; ``fraction`` and
    ``budget`` are accepted for a uniform interface and ignored (the kept share is
    dynamic: ``metadata["kept_fraction"]``). InfoBatch reselects every epoch whatever
    ``select_every`` says and needs no gradients, so no probe runs.

    Parameters
    ----------
    fraction : float
        Ignored (see above); must still be in (0, 1].
    prune_ratio : float in [0, 1)
        Share of the below-mean examples left out each pruning round (paper: 0.5).
    delta : float in (0, 1]
        Share of the rounds that may prune (paper: 0.875).
    epochs : int, optional
        T, the number of rounds (epochs) the strategy selects for; required unless
        ``delta`` is 1. ``adacore run`` sets it to its epochs after any warm start.
    seed : int
        Seed of the pruning draws.

    ``select(None, labels, losses=scores)``: ``scores`` an (n,) array of the latest
    per-example losses, ``+inf`` for an example not trained on yet.
    """

    requires = ("losses",)
    reselect_every = 1
    rescale_weights = False

    def __init__(self, fraction: float = 1.0, *, prune_ratio: float = 0.5, delta: float = 0.875,
                 epochs: int | None = None, budget: str = "proportional", seed: int = 0):
        super().__init__(fraction, budget=budget, seed=seed)
        self.prune_ratio = check_real("prune_ratio", prune_ratio, low=0, high=1,
                                      high_open=True)
        self.delta = check_real("delta", delta, low=0, high=1, low_open=True)
        if epochs is None and self.delta < 1:
            raise InputError(f"epochs: method 'infobatch' stops pruning for the last "
                             f"{1 - self.delta:.4g} of training (delta {self.delta:g}) and "
                             f"needs the number of epochs it selects for; pass epochs= "
                             f"(or delta=1 to prune in every round)")
        self.epochs = None if epochs is None else check_int("epochs", epochs, 1)
        self.rng_ = np.random.default_rng(self.seed)

    def prunes(self, round: int) -> bool:
        """Whether round ``round`` (1 for the first) may prune; later ones anneal."""
        if self.delta == 1.0:
            return True
        return round <= math.floor(self.delta * self.epochs + _FLOOR_SLACK)

    def _select(self, vectors, labels, losses=None, **inputs) -> Coreset:
        n = labels.shape[0]
        scores = _checked_scores(losses, n)
        seen = np.isfinite(scores)
        mean = float(scores[seen].mean()) if seen.any() else None
        low = np.flatnonzero(seen & (scores < mean)) if mean is not None else np.empty(0, int)
        pruning = self.prunes(self.round_)
        pruned_count = math.floor(self.prune_ratio * low.shape[0] + _FLOOR_SLACK) if pruning \
            else 0
        kept = np.ones(n, dtype=bool)
        weights = np.ones(n)
        kept_weight = 1.0
        if pruned_count:
            kept[self.rng_.choice(low, size=pruned_count, replace=False)] = False
            kept_weight = low.shape[0] / (low.shape[0] - pruned_count)
            weights[low] = kept_weight
        indices = np.flatnonzero(kept)
        classes, counts = np.unique(labels[indices], return_counts=True)
        return Coreset(indices=indices, weights=weights[indices],
                       gains=np.full(indices.shape[0], np.nan),
                       budgets={int(c): int(k) for c, k in zip(classes, counts)},
                       metadata={"kept_fraction": indices.shape[0] / n,
                                 "pruned": pruned_count, "below_mean": int(low.shape[0]),
                                 "unseen": int(n - seen.sum()), "pruning": pruning,
                                 "score_mean": mean, "kept_weight": kept_weight})

    def state_dict(self) -> dict:
        return {**super().state_dict(), "rng": self.rng_.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.rng_.bit_generator.state = state["rng"]


def _checked_scores(losses, n: int) -> np.ndarray:
    """The scores as a float64 vector of length n: finite, or +inf for unseen."""
    if losses is None:
        raise InputError("losses: method 'infobatch' prunes by each example's latest "
                         "training loss; pass select(None, labels, losses=scores), +inf "
                         "for examples not trained on yet (CoresetLoader keeps them: "
                         "loader.record_losses)")
    if isinstance(losses, torch.Tensor):
        losses = losses.detach().cpu().numpy()
    try:
        scores = np.asarray(losses, dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise fail("losses", losses, f"a vector of {n} real numbers") from error
    if scores.shape != (n,):
        raise InputError(f"losses: got shape {scores.shape}, expected ({n},), one per label")
    bad = np.flatnonzero(np.isnan(scores) | (scores == -np.inf))
    if bad.shape[0]:
        raise InputError(f"losses: row {int(bad[0])} is {scores[bad[0]]}; expected a real "
                         f"loss, or +inf for an example not trained on yet")
    return scores
