"""A drop-in for a user's own training loop: batches of the current coreset, reselected on schedule.

    loader = CoresetLoader(x, y, get_strategy("adacore", fraction=0.01), select_every=5)
    for epoch in range(epochs):
        for xb, yb, wb in loader.epoch(model):
            losses = F.cross_entropy(model(xb), yb, reduction="none")
            loader.record_losses(losses)    # used by loss-driven methods (InfoBatch)
            loss = (wb * losses).mean()
            optimizer.zero_grad(); loss.backward(); optimizer.step()

``record_losses`` hands the batch's per-example losses back to the loader, which keeps
each example's latest one as its score; for a strategy that does not prune by loss
(``"losses"`` not in its ``requires``) it does nothing, so the loop above fits every
method.

Under torch.distributed (a default process group of W > 1 processes) each rank gets its
share of every global batch; see :mod:`adacore.distributed.ddp` for the loss that makes
DDP's gradient average the single-process one (``weighted_loss``).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

from adacore._faults import fault_point
from adacore.coreset import Coreset
from adacore.distributed.ddp import (DistributedCoresetSampler, is_distributed, on_rank0,
                                     probe_sharded)
from adacore.probe import probe
from adacore.strategies.base import Strategy
from adacore.validation import InputError, as_labels, check_choice, check_int, check_real


def _inputs(x) -> torch.Tensor:
    """The training inputs as a tensor (a NumPy array is wrapped, not copied), or an
    InputError naming ``x`` and the way for data that is not in memory."""
    if isinstance(x, np.ndarray):
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise InputError(f"x: got a NumPy array of dtype {x.dtype}, expected numbers")
        x = torch.from_numpy(x)
    if not isinstance(x, torch.Tensor):
        raise InputError(f"x: got {type(x).__name__}, expected a tensor or NumPy array of "
                         f"inputs, one row per example; for a Dataset (files read per item, "
                         f"transforms) use adacore.training.CoresetSampler with a DataLoader")
    if x.ndim == 0 or x.shape[0] == 0:
        raise InputError(f"x: got shape {tuple(x.shape)}, expected at least one example "
                         f"(rows = examples)")
    return x


class CoresetLoader:
    """Yields ``(x, y, weight)`` batches of the current coreset; reselects every R epochs.

    Weights are the coreset's, rescaled to mean 1 within the coreset so a learning
    rate keeps its meaning (the loss ``mean(w * l)`` estimates the full-data mean loss);
    a strategy whose weights are loss weights to use as they are (InfoBatch:
    ``rescale_weights = False``) gets them unchanged. ``max_weight`` (optional, >= 1)
    caps the rescaled weights at that multiple of the mean, the rest scaled up to keep
    the mean 1 (:meth:`adacore.Coreset.normalized_weights`); it does not apply to such
    loss weights.
    Strategies that need per-example vectors get them from :func:`adacore.probe.probe`
    on the model at the start of a selection epoch (last-layer terms, in ``space``).
    Strategies that prune by training loss (InfoBatch, ``"losses"`` in ``requires``)
    get ``scores_``, each example's latest loss as reported by :meth:`record_losses`
    (``+inf`` until it is first trained on); the scores are part of :meth:`state_dict`.

    Parameters
    ----------
    x, y : Tensor or NumPy array
        The training set in memory, one row per example (kept where it is; batches
        move to ``device``); ``y`` integer class labels. For a Dataset read per item use
        :class:`adacore.training.CoresetSampler`.
    strategy : Strategy
        Any registered strategy.
    batch_size : int
    select_every : int
        R: reselect at the start of every R-th epoch (the first epoch always selects);
        a strategy with a schedule of its own (RS2) overrides it.
    warm_start_epochs : int
        Full-data epochs before the first selection.
    space : {"auto", "logits", "last_layer"}
        Gradient space of the probe; "auto" takes the strategy's ``preferred_space``
        (logits for AdaCore and CRAIG; the last layer for GradMatch and for GLISTER's
        Taylor update; logits for GLISTER with ``update="exact"``).
    seed : int
        Seed of the batch order.
    device : optional
        Where batches go (default: the model's device).
    val_x, val_y : Tensor, optional
        A validation set, for strategies that select against it (GLISTER).
    projection_dim : int, optional
        Project the probe's vectors to this many dimensions with a fixed Gaussian
        matrix (seeded by ``seed``, the same every round), for wide last layers such as
        ResNet18's 5,130; refused for AdaCore, whose per-coordinate preconditioning a
        projection would mix.
    transform : callable, optional
        Applied to each batch's inputs on ``device`` (e.g. an augmentation drawing from
        a seeded generator). Under torch.distributed it is applied to the whole global
        batch on every rank before the rank takes its share, so the draws are those of
        the single-process run.
    distributed : bool, optional
        Split batches and probes across the ranks of the default process group:
        each rank probes a block of whole probe batches, rank 0 gathers the vectors
        and selects, every rank receives the coreset, and each global batch (the
        single-process batch, in the single-process order) is split into contiguous
        per-rank shares (:class:`adacore.distributed.ddp.DistributedCoresetSampler`).
        Default: whenever a default group of more than one process is open when the
        loader is built. Every rank must then build the loader with the same arguments
        and call :meth:`epoch` with the same model. Refused for strategies that prune by
        training loss (each rank sees only its share of a batch's losses).
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, strategy: Strategy, *,
                 batch_size: int = 128, select_every: int = 1, warm_start_epochs: int = 0,
                 space: str = "auto", probe_batch_size: int = 512, seed: int = 0,
                 device=None, val_x: torch.Tensor | None = None,
                 val_y: torch.Tensor | None = None, projection_dim: int | None = None,
                 transform=None, distributed: bool | None = None,
                 max_weight: float | None = None):
        self.x = _inputs(x)
        self.max_weight = (None if max_weight is None
                           else check_real("max_weight", max_weight, low=1))
        self.y = torch.from_numpy(as_labels("y", y, len(self.x)))
        self.strategy = strategy
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.select_every = check_int("select_every", select_every, 1)
        if strategy.reselect_every is not None:
            self.select_every = strategy.reselect_every
        self.warm_start_epochs = check_int("warm_start_epochs", warm_start_epochs, 0)
        self.space = check_choice("space", space, ("auto", "logits", "last_layer"))
        if self.space == "auto":
            self.space = strategy.preferred_space
        self.probe_batch_size = check_int("probe_batch_size", probe_batch_size, 1)
        self.device = device
        if "val_grads" in strategy.requires and (val_x is None or val_y is None):
            raise InputError(f"val_x: method {strategy.name!r} selects against validation "
                             f"gradients; pass val_x and val_y")
        if projection_dim is not None:
            check_int("projection_dim", projection_dim, 1)
            if "hessian_diag" in strategy.requires:
                raise InputError(f"projection_dim: method {strategy.name!r} divides each "
                                 f"coordinate by its own curvature, which a random projection "
                                 f"would mix; use space 'logits' or no projection")
            if getattr(strategy, "per_gradient", False):
                raise InputError("projection_dim: GradMatch with per_gradient matches the "
                                 "last layer's columns class by class, which a random "
                                 "projection would mix; use no projection")
        self.projection_dim = projection_dim
        self.projection_seed = check_int("seed", seed, 0)
        self.val_x = val_x
        self.val_y = None if val_y is None else torch.as_tensor(val_y).long()
        self.generator = torch.Generator().manual_seed(check_int("seed", seed, 0))
        if transform is not None and not callable(transform):
            raise InputError(f"transform: got {type(transform).__name__}, expected a callable "
                             f"(inputs) -> inputs, or None")
        self.transform = transform
        self.distributed = is_distributed() if distributed is None else bool(distributed)
        if self.distributed and not is_distributed():
            raise InputError("distributed: True needs an open torch.distributed default "
                             "process group of more than one process")
        if self.distributed and "losses" in strategy.requires:
            raise InputError(f"distributed: method {strategy.name!r} prunes by training "
                             f"losses, which each rank sees only for its share of a batch; "
                             f"it is not supported under torch.distributed, train it in "
                             f"one process")
        # each example's latest training loss, +inf until first trained on
        self.scores_ = (torch.full((len(x),), float("inf"))
                        if "losses" in strategy.requires else None)
        self._batch_rows: torch.Tensor | None = None
        self.epoch_ = 0
        self.coreset_: Coreset | None = None
        self.visited_ = torch.zeros(len(x), dtype=torch.bool)
        self.warm_start_examples_ = 0
        self.warned_batch_ = False
        self.steps_since_selection_ = 0
        self.last_selection_: dict | None = None

    @property
    def fraction_visited(self) -> float:
        """Distinct examples ever selected into a coreset / n (warm-start epochs, which
        see everything, are counted apart in ``warm_start_examples_``)."""
        return float(self.visited_.float().mean())

    def _needs_selection(self) -> bool:
        since_start = self.epoch_ - self.warm_start_epochs - 1
        return self.coreset_ is None or since_start % self.select_every == 0

    def select(self, model: torch.nn.Module) -> Coreset:
        """Run one selection round now, on the model as it is."""
        start = time.perf_counter()
        # distributed: each rank probes its block, rank 0 gets the whole result and
        # the other ranks None
        run_probe = probe_sharded if self.distributed else probe
        inputs, grads = {}, None
        if "grads" in self.strategy.requires:
            wants_diag = "hessian_diag" in self.strategy.requires
            result = run_probe(model, self.x, self.y, space=self.space,
                           hessian="closed_form" if wants_diag else None,
                           batch_size=self.probe_batch_size,
                           projection_dim=self.projection_dim,
                           projection_seed=self.projection_seed)
            if result is not None:
                grads = result.grads
                if wants_diag:
                    inputs["hessian_diag"] = result.hessian_diag
        if "val_grads" in self.strategy.requires:
            # the validation side of GLISTER's Taylor step: gradients and curvature
            # (with a projection, the same matrix, and no curvature: it would not project)
            val = run_probe(model, self.val_x, self.val_y, space=self.space,
                        hessian=None if self.projection_dim else "closed_form",
                        batch_size=self.probe_batch_size, projection_dim=self.projection_dim,
                        projection_seed=self.projection_seed)
            if val is not None:
                inputs.update(val_grads=val.grads, val_hessian_diag=val.hessian_diag)
                if "val_labels" in self.strategy.requires:
                    inputs["val_labels"] = self.val_y.cpu().numpy()
        if "losses" in self.strategy.requires:
            inputs["losses"] = self.scores_.cpu()
        fault_point("selection")

        if self.strategy.uses_steps:
            # training time since the last round (AdaCore's smoothing decays in steps)
            inputs["steps"] = self.steps_since_selection_

        def choose() -> Coreset:
            return self.strategy.select(grads, self.y.cpu().numpy(), **inputs)

        # the strategy and its state live on rank 0; every rank gets its coreset
        coreset = on_rank0(choose) if self.distributed else choose()
        if len(coreset) == 0:
            raise InputError(f"method {self.strategy.name!r} selected no example this round "
                             f"(e.g. GradMatch with all-zero gradients); nothing to train on")
        previous = self.coreset_
        overlap = None
        if previous is not None:
            shared = np.intersect1d(previous.indices, coreset.indices).size
            overlap = shared / len(coreset)
        self.coreset_ = coreset
        self.steps_since_selection_ = 0
        self.last_selection_ = {"select_seconds": time.perf_counter() - start,
                                "overlap_with_previous": overlap,
                                "curvature_ratio_median":
                                    coreset.metadata.get("curvature_ratio_median"),
                                "craig_overlap": coreset.metadata.get("craig_overlap"),
                                "gradient_error": coreset.metadata.get("gradient_error"),
                                "preconditioned_gradient_error":
                                    coreset.metadata.get("preconditioned_gradient_error"),
                                "max_weight_over_mean":
                                    coreset.metadata.get("max_weight_over_mean"),
                                "singleton_clusters": coreset.metadata.get("singleton_clusters"),
                                "kept_fraction": coreset.metadata.get("kept_fraction")}
        return coreset

    def epoch(self, model: torch.nn.Module):
        """Start the next epoch (selecting first when due) and yield its batches."""
        self.epoch_ += 1
        self.last_selection_ = None
        self._batch_rows = None
        device = self.device or next(model.parameters()).device
        if self.epoch_ <= self.warm_start_epochs:
            indices = torch.arange(len(self.x))
            weights = torch.ones(len(self.x))
            self.warm_start_examples_ += len(self.x)
        else:
            if self._needs_selection():
                self.select(model)
            indices = torch.from_numpy(self.coreset_.indices)
            weights = torch.from_numpy(self.coreset_.normalized_weights(self.max_weight)
                                       if self.strategy.rescale_weights
                                       else self.coreset_.weights).float()
            self.visited_[indices] = True
            if len(indices) < self.batch_size and not self.warned_batch_:
                self.warned_batch_ = True
                warnings.warn(f"batch_size: {self.batch_size} is larger than the coreset "
                              f"({len(indices)} examples), so an epoch is a single step on "
                              f"the whole coreset; a smaller batch_size gives more steps",
                              UserWarning, stacklevel=2)
        place = {} if self.distributed else {"rank": 0, "world_size": 1}
        sampler = DistributedCoresetSampler(indices, weights, batch_size=self.batch_size,
                                            generator=self.generator, **place)
        for batch in sampler.global_batches():
            self.steps_since_selection_ += 1
            rows = batch.share_rows
            if self.transform is None:
                inputs = self.x[rows].to(device, non_blocking=True)
            else:
                inputs = self.transform(self.x[batch.rows].to(device, non_blocking=True))
                inputs = inputs[batch.share]
            self._batch_rows = rows
            yield (inputs, self.y[rows].to(device, non_blocking=True),
                   batch.share_weights.to(device, non_blocking=True))
        self._batch_rows = None

    def record_losses(self, losses: torch.Tensor) -> None:
        """Report the per-example training losses of the batch just yielded.

        Call it inside the loop over :meth:`epoch`, once per batch, with the batch's
        unweighted losses (``F.cross_entropy(..., reduction="none")``, shape ``(m,)``
        for a batch of m examples); each becomes its example's score (detached, float32,
        kept on the losses' device, so no step waits on a copy). A strategy that does not
        prune by loss ignores them: then this does nothing at all.
        """
        if self.scores_ is None:
            return
        rows = self._batch_rows
        if rows is None:
            raise InputError("losses: no batch to record them for; call "
                             "loader.record_losses(losses) inside the loop over "
                             "loader.epoch(model), after each batch's forward pass")
        if not isinstance(losses, torch.Tensor):
            raise InputError(f"losses: got {type(losses).__name__}, expected a tensor of "
                             f"per-example losses (reduction='none')")
        if tuple(losses.shape) != (rows.shape[0],):
            raise InputError(f"losses: got shape {tuple(losses.shape)}, expected "
                             f"({rows.shape[0]},), one loss per example of the last batch "
                             f"(reduction='none')")
        if self.scores_.device != losses.device:
            self.scores_ = self.scores_.to(losses.device)
        self.scores_[rows.to(losses.device)] = losses.detach().to(self.scores_.dtype)

    def examples_this_epoch(self) -> int:
        """Examples in the current epoch's pass."""
        if self.epoch_ <= self.warm_start_epochs or self.coreset_ is None:
            return len(self.x)
        return len(self.coreset_)

    def state_dict(self) -> dict:
        coreset = None
        if self.coreset_ is not None:
            coreset = {"indices": torch.from_numpy(self.coreset_.indices),
                       "weights": torch.from_numpy(self.coreset_.weights),
                       "round": self.coreset_.round, "method": self.coreset_.method}
        return {"epoch": self.epoch_, "generator": self.generator.get_state(),
                "visited": self.visited_.clone(), "coreset": coreset,
                "warm_start_examples": self.warm_start_examples_,
                "steps_since_selection": self.steps_since_selection_,
                "scores": None if self.scores_ is None else self.scores_.detach().cpu().clone(),
                "strategy": self.strategy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.epoch_ = int(state["epoch"])
        self.generator.set_state(state["generator"])
        self.visited_ = state["visited"].clone()
        self.warm_start_examples_ = int(state.get("warm_start_examples", 0))
        self.steps_since_selection_ = int(state.get("steps_since_selection", 0))
        self.strategy.load_state_dict(state["strategy"])
        if self.scores_ is not None:
            scores = state.get("scores")
            if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (len(self.x),):
                held = (f"a tensor of shape {tuple(scores.shape)}"
                        if isinstance(scores, torch.Tensor) else type(scores).__name__)
                raise InputError(f"scores: method {self.strategy.name!r} needs the loader "
                                 f"state's per-example losses, a tensor of shape "
                                 f"({len(self.x)},); the state holds {held}")
            self.scores_ = scores.detach().float().clone()
        saved = state["coreset"]
        self.coreset_ = None if saved is None else Coreset(
            indices=saved["indices"].numpy(), weights=saved["weights"].numpy(),
            gains=np.full(saved["indices"].shape[0], np.nan), method=saved["method"],
            round=int(saved["round"]))
