"""Facility location run class by class, one block in memory at a time."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.facility_location import plan_engine, solve
from adacore.selection.memory import resolve_memory_limit
from adacore.validation import check_int


def class_seed(seed: int, label: int, round_index: int = 0) -> np.random.Generator:
    """A generator for one class and round, independent across both and reproducible."""
    return np.random.default_rng(np.random.SeedSequence([seed, round_index,
                                                         label & 0xFFFFFFFF]))


# Entries of the largest class's similarity block from which classes are solved in
# threads by default. Below it a class is many small tensor operations, bound by
# Python's interpreter lock: on MNIST's LeNet-5 AdaCore vectors (2 cores, ten classes
# of about 5,000) one thread was faster with a pool (0.150 s against 0.179 s at 1%,
# pool 2; 1.22 against 1.26 s at 10%, pool 2, blocks of 5e5 and 5e6 entries), two
# faster on the exact engine at 1% (1.44 against 1.54 s, blocks of 2.5e7).
THREADED_BLOCK = 1 << 24


def class_workers(workers: int | None, vectors: torch.Tensor, labels: np.ndarray,
                  budgets: dict[int, int], *, neighbors, max_memory, pool) -> int:
    """How many classes to solve at once: ``workers`` (default: torch's threads on CPU,
    one on an accelerator, and one when the largest class's block has fewer than
    :data:`THREADED_BLOCK` entries), at most one per class, and only as many as the
    largest class's problem fits in ``max_memory`` side by side; the sparse engine
    (whose neighbour search is itself parallel) runs one class at a time."""
    default = workers is None
    if default:
        workers = torch.get_num_threads() if vectors.device.type == "cpu" else 1
    workers = check_int("workers", workers, 1)
    workers = min(workers, max(1, len(budgets)))
    if workers == 1:
        return 1
    sizes = {label: int((labels == label).sum()) for label in budgets}
    largest = max(sizes, key=sizes.get)
    plan = plan_engine(sizes[largest], vectors.shape[1], budgets[largest],
                       neighbors=neighbors, max_memory=max_memory, device=vectors.device,
                       pool=pool)
    if plan["engine"] == "sparse":
        return 1
    candidates = sizes[largest] if plan["engine"] == "dense" else plan["candidates"]
    if default and candidates * sizes[largest] < THREADED_BLOCK:
        return 1
    limit = resolve_memory_limit(max_memory, vectors.device)
    return int(max(1, min(workers, limit // max(1, plan["bytes"]))))


def per_class_facility_location(vectors: torch.Tensor, labels: np.ndarray,
                                budgets: dict[int, int], *, optimizer: str = "lazy",
                                seed: int = 0, epsilon: float = 0.01, round_index: int = 0,
                                method: str = "facility_location",
                                neighbors: int | None = None, neighbor_search: str = "auto",
                                probes: int = 8, max_memory=None,
                                pool: float | None = None,
                                workers: int | None = None,
                                refine: int | None = None,
                                refine_to: str | None = None) -> Coreset:
    """One facility-location problem per label; indices refer to the rows of ``vectors``.

    Each class's problem is its dense (n_c, n_c) similarity, a (pool k_c, n_c) one with
    ``pool``, or its neighbour graph when ``neighbors`` is given or the dense block
    would exceed ``max_memory``; ``refine`` Voronoi iterations (moving picks to their
    clusters' ``refine_to``) follow the greedy (see
    :func:`adacore.selection.facility_location.facility_location`). Up to ``workers``
    classes are solved at once, in threads (:func:`class_workers`: by default one per
    torch thread on CPU, within ``max_memory``), torch's intra-op threads divided
    among them for the duration (``torch.set_num_threads``, restored after); every
    class draws from its own generator, so the result does not depend on ``workers``. The picks are concatenated
    in increasing label order.
    """
    workers = class_workers(workers, vectors, labels, budgets, neighbors=neighbors,
                            max_memory=max_memory, pool=pool)

    def one(item):
        label, budget = item
        members = np.flatnonzero(labels == label)
        rows = torch.from_numpy(members).to(vectors.device)
        order, class_gains, class_weights, info = solve(
            vectors[rows], budget, optimizer=optimizer,
            rng=class_seed(seed, label, round_index), epsilon=epsilon, neighbors=neighbors,
            neighbor_search=neighbor_search, probes=probes, max_memory=max_memory, seed=seed,
            pool=pool, refine=refine, refine_to=refine_to)
        return members[order], class_gains, class_weights, info

    items = list(budgets.items())
    if workers == 1:
        solved = [one(item) for item in items]
    else:
        # the threads share torch's intra-op threads: each class gets its share, so
        # that W classes at once do not start W times the cores' threads (restored after)
        previous = torch.get_num_threads()
        torch.set_num_threads(max(1, previous // workers))
        try:
            with ThreadPoolExecutor(max_workers=workers) as executor:
                solved = list(executor.map(one, items))
        finally:
            torch.set_num_threads(previous)
    indices, weights, gains, singletons, engines, moved = [], [], [], 0, {}, 0
    for picks, class_gains, class_weights, info in solved:
        moved = max(moved, info.get("refine_moved", 0))
        indices.append(picks)
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
                             "engine": ",".join(sorted(engines)), "workers": workers,
                             "refine_moved": moved})


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
