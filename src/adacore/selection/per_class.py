"""Facility location run class by class, one block in memory at a time."""

from __future__ import annotations

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.facility_location import solve


def class_seed(seed: int, label: int, round_index: int = 0) -> np.random.Generator:
    """A generator for one class and round, independent across both and reproducible."""
    return np.random.default_rng(np.random.SeedSequence([seed, round_index,
                                                         label & 0xFFFFFFFF]))


def per_class_facility_location(vectors: torch.Tensor, labels: np.ndarray,
                                budgets: dict[int, int], *, optimizer: str = "lazy",
                                seed: int = 0, epsilon: float = 0.01, round_index: int = 0,
                                method: str = "facility_location",
                                neighbors: int | None = None, neighbor_search: str = "auto",
                                probes: int = 8, max_memory=None) -> Coreset:
    """One facility-location problem per label; indices refer to the rows of ``vectors``.

    Only one class's problem exists at any time: its dense (n_c, n_c) similarity, or
    its neighbour graph when ``neighbors`` is given or the dense block would exceed
    ``max_memory`` (see :func:`adacore.selection.facility_location.facility_location`).
    Classes are visited in increasing label order and their picks concatenated in that
    order.
    """
    indices, weights, gains, singletons, engines = [], [], [], 0, {}
    for label, budget in budgets.items():
        members = np.flatnonzero(labels == label)
        rows = torch.from_numpy(members).to(vectors.device)
        order, class_gains, class_weights, info = solve(
            vectors[rows], budget, optimizer=optimizer,
            rng=class_seed(seed, label, round_index), epsilon=epsilon, neighbors=neighbors,
            neighbor_search=neighbor_search, probes=probes, max_memory=max_memory, seed=seed)
        indices.append(members[order])
        weights.append(class_weights)
        gains.append(class_gains)
        singletons += int((class_weights == 1).sum())
        engines[info["engine"]] = engines.get(info["engine"], 0) + 1
    weights_all = np.concatenate(weights)
    return Coreset(indices=np.concatenate(indices), weights=weights_all,
                   gains=np.concatenate(gains), method=method, budgets=dict(budgets),
                   metadata={"optimizer": optimizer, "max_weight_over_mean":
                             float(weights_all.max() / weights_all.mean()),
                             "singleton_clusters": singletons,
                             "engine": ",".join(sorted(engines))})


def gradient_error(vectors, coreset: Coreset) -> float:
    """Relative error ||sum_i u_i - sum_j w_j u_j|| / ||sum_i u_i|| of a coreset's estimate."""
    vectors = torch.as_tensor(vectors)
    vectors = vectors.to(torch.float64)
    full = vectors.sum(dim=0)
    picks = torch.as_tensor(coreset.indices, device=vectors.device)
    weights = torch.as_tensor(coreset.weights, dtype=torch.float64, device=vectors.device)
    estimate = weights @ vectors[picks]
    norm = float(torch.linalg.vector_norm(full))
    error = float(torch.linalg.vector_norm(full - estimate))
    return error / norm if norm > 0 else error
