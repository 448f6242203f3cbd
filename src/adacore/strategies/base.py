"""The interface every selection strategy implements, and the name registry."""

from __future__ import annotations

import abc
import time
import warnings
from typing import Any, ClassVar

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.curvature import check_steps
from adacore.selection.budgets import BUDGET_MODES, budget_from_fraction, per_class_budgets
from adacore.selection.per_class import gradient_error
from adacore.validation import (InputError, as_labels, as_tensor, check_choice, check_fraction,
                                check_int)

STRATEGIES: dict[str, type["Strategy"]] = {}


def register_strategy(name: str):
    """Class decorator: make a strategy available to :func:`get_strategy` under ``name``."""
    def decorate(cls):
        cls.name = name
        STRATEGIES[name] = cls
        return cls
    return decorate


def available_strategies() -> list[str]:
    """Names :func:`get_strategy` accepts."""
    return sorted(STRATEGIES)


def get_strategy(name: str, **options: Any) -> "Strategy":
    """Build the strategy registered as ``name`` with keyword ``options``.

    >>> get_strategy("adacore", fraction=0.01, beta2=0.99)    # doctest: +SKIP
    """
    check_choice("method", name, STRATEGIES)
    return STRATEGIES[name](**options)


class Strategy(abc.ABC):
    """A selection method: ``select(grads, labels, **inputs) -> Coreset``.

    Hyper-parameters live in ``__init__``; what a strategy learns across rounds (the
    round count, smoothing state, random generator) lives in attributes that
    ``state_dict`` / ``load_state_dict`` round-trip, so a run can resume.

    ``requires`` names the inputs a caller must provide besides labels: ``"grads"``
    (per-example vectors), ``"hessian_diag"``, ``"val_grads"``. ``reselect_every``, when
    set, is the method's own reselection period in epochs.
    """

    name: ClassVar[str] = ""
    requires: ClassVar[tuple[str, ...]] = ("grads",)
    # a method with a schedule of its own (RS2: every epoch) overrides the caller's R
    reselect_every: ClassVar[int | None] = None
    # the gradient space the method's authors used, for probes asked for space "auto"
    preferred_space: ClassVar[str] = "logits"
    # whether the state decays in training time: callers then pass select(steps=)
    uses_steps: ClassVar[bool] = False
    # whether a trainer rescales the coreset's weights to mean 1 (a coreset standing for
    # the whole data, the learning rate keeping its meaning); False: they are loss
    # weights to use as they are (InfoBatch's rescaling of the kept low-loss examples)
    rescale_weights: ClassVar[bool] = True

    def __init__(self, fraction: float, *, budget: str = "proportional", seed: int = 0):
        self.fraction = check_fraction("fraction", fraction)
        self.budget = check_choice("budget", budget, BUDGET_MODES)
        self.seed = check_int("seed", seed, 0)
        self.round_ = 0

    def budgets(self, labels: np.ndarray) -> dict[int, int]:
        """Per-class budgets for these labels."""
        k = budget_from_fraction(self.fraction, labels.shape[0])
        return per_class_budgets(labels, k, self.budget)

    def select(self, grads, labels, *, steps: float | None = None, **inputs) -> Coreset:
        """Validate the inputs, run one selection round, time it.

        ``steps``: optimizer steps taken since the previous round (training time), for
        strategies whose state decays in training time (AdaCore's smoothing); ``None``
        counts one step per round. Other strategies ignore it.
        """
        if steps is None:
            if self.uses_steps and self.round_ >= 1 and not getattr(self, "_warned_steps", False):
                self._warned_steps = True
                warnings.warn(f"steps: {self.name} smooths across rounds in optimizer steps; "
                              f"without select(..., steps=) each round counts as one step, "
                              f"so later rounds barely move the state", UserWarning,
                              stacklevel=2)
            steps = 1.0
        self.steps_since_last_ = check_steps(steps)
        if grads is None and "grads" in self.requires:
            raise InputError(f"grads: method {self.name!r} needs per-example vectors, got None")
        vectors = None
        if grads is not None:
            vectors = as_tensor("grads", grads, ndim=2, device=getattr(self, "device", None))
        labels = as_labels("labels", labels, None if vectors is None else vectors.shape[0])
        start = time.perf_counter()
        self.round_ += 1
        coreset = self._select(vectors, labels, **inputs)
        coreset.round = self.round_
        coreset.method = self.name
        # a diagnostic's own work (AdaCore's CRAIG comparison) is not the method's time
        coreset.metadata["select_seconds"] = (time.perf_counter() - start
                                              - coreset.metadata.get("diagnostics_seconds", 0.0))
        if vectors is not None:
            coreset.metadata["gradient_error"] = gradient_error(vectors, coreset)
        return coreset

    @abc.abstractmethod
    def _select(self, vectors: torch.Tensor | None, labels: np.ndarray, **inputs) -> Coreset:
        """One round on validated inputs (each registered strategy defines it)."""

    def state_dict(self) -> dict:
        return {"round": self.round_}

    def load_state_dict(self, state: dict) -> None:
        self.round_ = int(state["round"])
