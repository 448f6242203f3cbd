"""CRAIG and AdaCore: per-class facility location on (preconditioned) gradients."""

from __future__ import annotations

import time

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.curvature import CurvatureSmoother
from adacore.selection.facility_location import (OPTIMIZERS, check_pool, check_refine,
                                                 check_refine_to)
from adacore.selection.memory import parse_memory
from adacore.selection.neighbors import SEARCHES
from adacore.selection.per_class import gradient_error, per_class_facility_location
from adacore.strategies.base import Strategy, register_strategy
from adacore.validation import (InputError, as_tensor, check_choice, check_device, check_int,
                                check_real, fail)


@register_strategy("craig")
class Craig(Strategy):
    """CRAIG (Mirzasoleiman et al., 2020): per-class facility location on the gradients.

    Parameters
    ----------
    fraction : float
        Share of the examples to select, in (0, 1].
    budget : {"proportional", "equal"}
        How the budget is split across classes.
    optimizer : {"lazy", "naive", "stochastic"}
        Greedy optimizer of the facility-location function.
    epsilon : float
        Accuracy of the stochastic optimizer, in (0, 1).
    seed : int
        Seed of the stochastic optimizer (combined with the round and the label).
    device : optional
        Where the distances are computed (default: where the vectors are).
    neighbors : int, optional
        Solve each class on its K-nearest-neighbour graph instead of the dense
        similarity (see :func:`adacore.facility_location`).
    neighbor_search : {"auto", "exact", "ivf", "faiss"}
        How the neighbours are found.
    max_memory : int or str, optional
        Memory one class's problem may use; a class whose dense block would exceed it
        is solved on about 4 n_c / k_c neighbours, one that fits neither is refused.
    client : distributed.Client or str, optional
        Run the selection on a Dask cluster by GreeDi
        (:func:`adacore.distributed.greedi`): a client or a scheduler address.
    partitions : int, optional
        GreeDi's partitions per class (default: one per worker).
    pool : float, optional
        Choose each class's k_c picks among ceil(pool k_c) candidates drawn by D^2
        sampling, still covering every example of the class (see
        :func:`adacore.facility_location`); a class with fewer than 2 pool k_c examples
        is solved exactly. None: every example is a candidate (the exact greedy over
        the class).
    refine : int, optional
        Voronoi iterations after each class's greedy: every example goes to its nearest
        pick and each pick moves to its cluster's medoid (never lowering F). None: 2
        with a ``pool`` (which alone misses the dense regions' medoids), 0 (the exact
        greedy's picks) without.
    refine_to : {"medoid", "mean"}, optional
        Where each refinement step moves a pick: the cluster's medoid (never lowering F,
        the paper's objective) or its member nearest the cluster's mean (the one that
        minimises the cluster's share of the weighted gradient sum's error). None: the
        engine's default (:data:`adacore.selection.facility_location.REFINE_TO`).
    """

    def __init__(self, fraction: float, *, budget: str = "proportional",
                 optimizer: str = "lazy", epsilon: float = 0.01, seed: int = 0,
                 device=None, neighbors: int | None = None, neighbor_search: str = "auto",
                 max_memory=None, client=None, partitions: int | None = None,
                 pool: float | None = None, refine: int | None = None,
                 refine_to: str | None = None):
        super().__init__(fraction, budget=budget, seed=seed)
        self.pool = check_pool(pool)
        self.refine = check_refine(refine)
        self.refine_to = check_refine_to(refine_to)
        self.optimizer = check_choice("optimizer", optimizer, OPTIMIZERS)
        # the stochastic greedy samples (n / k) log(1 / epsilon) candidates a step
        self.epsilon = check_real("epsilon", epsilon, low=0, high=1, low_open=True,
                                  high_open=True)
        self.device = check_device("device", device)
        self.neighbors = None if neighbors is None else check_int("neighbors", neighbors, 1)
        self.neighbor_search = check_choice("neighbor_search", neighbor_search, SEARCHES)
        self.max_memory = None if max_memory is None else parse_memory(max_memory)
        if client is None and partitions is not None:
            raise InputError("partitions: GreeDi's partitions need a Dask client or "
                             "scheduler address (client / --scheduler)")
        if client is not None and pool is not None:
            raise InputError("pool: GreeDi (client / --scheduler) solves its partitions on "
                             "every point; pass pool=None with a client")
        if client is not None and refine is not None:
            raise InputError("refine: GreeDi (client / --scheduler) does not refine its "
                             "picks; pass refine=None with a client")
        if client is not None and refine_to is not None:
            raise InputError("refine_to: GreeDi (client / --scheduler) does not refine its "
                             "picks; pass refine_to=None with a client")
        if not (client is None or isinstance(client, str)
                or (hasattr(client, "submit") and hasattr(client, "scatter"))):
            raise fail("client", client, "a distributed.Client, a scheduler address "
                                         "string or nothing")
        self.client = client
        self.partitions = None if partitions is None else check_int("partitions",
                                                                    partitions, 1)

    def vectors(self, grads: torch.Tensor, labels: np.ndarray, **inputs) -> torch.Tensor:
        """The vectors whose facility location is solved (the gradients themselves)."""
        if inputs:
            raise InputError(f"{self.name}.select: unexpected inputs {sorted(inputs)}")
        return grads

    def _select(self, grads, labels, **inputs) -> Coreset:
        vectors = self.vectors(grads, labels, **inputs)
        if self.client is not None:
            from adacore.distributed import greedi

            budgets = self.budgets(labels)
            round_seed = int(np.random.SeedSequence([self.seed, self.round_])
                             .generate_state(1)[0])
            coreset = greedi(vectors, sum(budgets.values()), labels=labels, client=self.client,
                             partitions=self.partitions, optimizer=self.optimizer,
                             seed=round_seed, epsilon=self.epsilon, budget=self.budget,
                             neighbors=self.neighbors, neighbor_search=self.neighbor_search,
                             max_memory=self.max_memory)
            coreset.budgets = budgets
            coreset.metadata["engine"] = "greedi"
        else:
            coreset = per_class_facility_location(
                vectors, labels, self.budgets(labels), optimizer=self.optimizer,
                seed=self.seed, epsilon=self.epsilon, round_index=self.round_,
                method=self.name, neighbors=self.neighbors,
                neighbor_search=self.neighbor_search, max_memory=self.max_memory,
                pool=self.pool, refine=self.refine, refine_to=self.refine_to)
        if vectors is not grads:
            coreset.metadata["preconditioned_gradient_error"] = gradient_error(vectors, coreset)
        return coreset


@register_strategy("adacore")
class AdaCore(Craig):
    """AdaCore (Pooladzandi et al., 2022): facility location on Hessian-preconditioned gradients.

    Each round the vectors are u = g / (Hbar_t + eps), Hbar_t the per-example smoothing
    of |diag H| across rounds in training time (see
    :class:`adacore.curvature.CurvatureSmoother`). On the first call Hbar = |hessian_diag|.

    Parameters
    ----------
    fraction : float
        Share of the examples to select, in (0, 1].
    beta2 : float
        Smoothing constant *per optimizer step*, in [0, 1): between two rounds the
        state decays by ``beta2 ** steps`` (``select(..., steps=)``; the trainer and
        :class:`~adacore.training.CoresetLoader` pass the steps they took), so the
        memory is about 1 / (1 - beta2) steps. 0.999 (Adam's constant, per step as in
        Adam) by default; 0 uses each round's own curvature. The README has the study
        on validation accuracy that chose the defaults.
    eps : float
        Damping added to Hbar before dividing.
    beta1 : float
        Optional EMA of the gradients across rounds, per step like ``beta2`` (0: off).
    average : {"geometric", "rms", "mean"}
        What the smoothing averages: logs (the default: a weighted geometric mean,
        which moves with the curvature by the share of training time since it
        changed), squares (the poster's formula, dominated by the early, large
        curvature of a fresh model however short the memory) or values.
    diagnostics : bool
        Also run CRAIG on the same vectors each round and record the share of AdaCore's
        picks it shares (``metadata["craig_overlap"]``); costs a second selection, timed
        apart (``metadata["diagnostics_seconds"]``, not in ``select_seconds``). CRAIG runs
        on this machine even when AdaCore runs on a Dask ``client``.
    budget, optimizer, epsilon, seed, device, neighbors, neighbor_search, max_memory,
    client, partitions, pool, refine, refine_to
        As for :class:`Craig`.
    """

    requires = ("grads", "hessian_diag")
    uses_steps = True

    def __init__(self, fraction: float, *, beta2: float = 0.999, eps: float = 1e-4,
                 beta1: float = 0.0, average: str = "geometric", diagnostics: bool = False,
                 budget: str = "proportional", optimizer: str = "lazy",
                 epsilon: float = 0.01, seed: int = 0, device=None,
                 neighbors: int | None = None, neighbor_search: str = "auto",
                 max_memory=None, client=None, partitions: int | None = None,
                 pool: float | None = None, refine: int | None = None,
                 refine_to: str | None = None):
        super().__init__(fraction, budget=budget, optimizer=optimizer, epsilon=epsilon,
                         seed=seed, device=device, neighbors=neighbors,
                         neighbor_search=neighbor_search, max_memory=max_memory,
                         client=client, partitions=partitions, pool=pool, refine=refine,
                         refine_to=refine_to)
        self.smoother = CurvatureSmoother(beta2=beta2, eps=eps, beta1=beta1, average=average)
        if not isinstance(diagnostics, bool):
            raise InputError(f"diagnostics: got {diagnostics!r}, expected true or false")
        self.diagnostics = diagnostics

    def select(self, grads, labels, *, hessian_diag=None, **inputs) -> Coreset:
        """One round; ``hessian_diag`` has the shape of ``grads``."""
        if hessian_diag is None:
            raise InputError("hessian_diag: AdaCore needs the per-example Hessian diagonal, "
                             "got None")
        return super().select(grads, labels, hessian_diag=hessian_diag, **inputs)

    def vectors(self, grads, labels, *, hessian_diag, **inputs) -> torch.Tensor:
        super().vectors(grads, labels, **inputs)
        diag = as_tensor("hessian_diag", hessian_diag, ndim=2, device=grads.device)
        if diag.shape != grads.shape:
            raise InputError(f"hessian_diag: got shape {tuple(diag.shape)}, expected "
                             f"{tuple(grads.shape)} (the shape of grads)")
        return self.smoother.precondition(grads, diag, self.steps_since_last_)

    def _select(self, grads, labels, **inputs) -> Coreset:
        coreset = super()._select(grads, labels, **inputs)
        coreset.metadata["curvature_ratio_median"] = self.smoother.last_curvature_ratio_
        if self.diagnostics:
            started = time.perf_counter()
            craig = per_class_facility_location(
                grads, labels, self.budgets(labels), optimizer=self.optimizer,
                seed=self.seed, epsilon=self.epsilon, round_index=self.round_,
                method="craig", neighbors=self.neighbors,
                neighbor_search=self.neighbor_search, max_memory=self.max_memory,
                pool=self.pool, refine=self.refine, refine_to=self.refine_to)
            shared = np.intersect1d(coreset.indices, craig.indices).size
            coreset.metadata["craig_overlap"] = shared / max(len(coreset), 1)
            coreset.metadata["diagnostics_seconds"] = time.perf_counter() - started
        return coreset

    def state_dict(self) -> dict:
        return {**super().state_dict(), "smoother": self.smoother.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.smoother.load_state_dict(state["smoother"])
