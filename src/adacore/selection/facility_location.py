"""Greedy maximisation of the facility-location function.

F(S) = sum_i max_{j in S} s_ij with s_ij = c - ||x_i - x_j||, c the largest distance
among the points, so s >= 0 and F is monotone submodular. The *function* (how a gain is
computed) is kept apart from the *optimizer* (how the next element is chosen); the
optimizers share one gain kernel so that ``lazy`` reproduces ``naive`` exactly.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.distances import pairwise_distances
from adacore.selection.memory import (dense_bytes, format_bytes, resolve_memory_limit,
                                      sparse_bytes)
from adacore.selection.neighbors import SEARCHES
from adacore.selection.sparse import sparse_facility_location
from adacore.validation import InputError, as_tensor, check_choice, check_int, fail

def similarity_matrix(X: torch.Tensor) -> torch.Tensor:
    """s_ij = (largest distance) - ||x_i - x_j||, an (n, n) float32 tensor."""
    similarity = pairwise_distances(X)
    largest = similarity.max()
    # in place: the largest class's n x n block is the only one alive
    return similarity.neg_().add_(largest)


class _Gains:
    """Marginal gains of candidates given the current coverage ``best`` (one kernel).

    Every optimizer scores candidates with :meth:`of`: sum_i max(s_ji - best_i, 0), in
    float32, a row at a time. Because s is symmetric the gain of candidate j is a
    reduction over row j, computed the same way whatever else is in the batch; that is
    what lets ``lazy`` reproduce ``naive`` exactly.
    """

    def __init__(self, similarity: torch.Tensor):
        self.similarity = similarity
        self.best = torch.zeros(similarity.shape[0], dtype=similarity.dtype,
                                device=similarity.device)
        # Rows per block: a temporary of about 16 MiB, which keeps the kernel in cache.
        self.chunk = max(1, (1 << 22) // max(1, similarity.shape[0]))

    def of(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Gains of the candidates ``rows`` (every point when None)."""
        n = self.similarity.shape[0]
        parts = []
        for start in range(0, n if rows is None else rows.shape[0], self.chunk):
            if rows is None:
                block = self.similarity[start:start + self.chunk]
            else:
                block = self.similarity[rows[start:start + self.chunk]]
            parts.append(torch.sub(block, self.best).clamp_min_(0.0).sum(dim=1))
        return torch.cat(parts)

    def add(self, j: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cover with ``j``; returns the points whose coverage grew, and their old cover."""
        row = self.similarity[j]
        changed = torch.nonzero(row > self.best).flatten()
        before = self.best[changed]
        self.best[changed] = row[changed]
        return changed, before


def _naive(gains: _Gains, k: int, rng: np.random.Generator, epsilon: float):
    """Plain greedy: every gain recomputed each step; ties go to the lowest index."""
    n = gains.similarity.shape[0]
    taken = torch.zeros(n, dtype=torch.bool, device=gains.similarity.device)
    order, values = [], []
    for _ in range(k):
        current = gains.of().masked_fill_(taken, -math.inf)
        j = int(torch.argmax(current))  # first maximum
        order.append(j)
        values.append(float(current[j]))
        taken[j] = True
        gains.add(j)
    return order, values


# Relative width of the window of candidates the lazy optimizer re-scores exactly: far
# above the float32 rounding of a gain (about 1e-7 relative), far below real gaps.
_WINDOW = 1e-5
# A window larger than this is re-scored by one full recomputation instead.
_WINDOW_LIMIT = 256


def _lazy(gains: _Gains, k: int, rng: np.random.Generator, epsilon: float):
    """Exact greedy that never recomputes what did not change.

    A pick changes the coverage of only the points it now serves best (about n / t of
    them at step t), so the running gains of all candidates are updated from those
    columns alone: O(n |changed|) a step instead of the O(n^2) of :func:`_naive` (when
    most points changed, the gains are simply recomputed). The running values carry
    rounding, so each step re-scores with the shared kernel every candidate within a
    relative 1e-5 of the top (usually one or two) and takes the kernel's best, lowest
    index among ties: the same picks and gains as :func:`_naive`.

    (A Minoux-style priority queue of stale bounds, alone or mixed with these updates,
    measured 1.3-2x slower here on 5,000 points in 10 and 640 dimensions.)
    """
    similarity = gains.similarity
    n = similarity.shape[0]
    ones = torch.ones(gains.chunk, dtype=similarity.dtype, device=similarity.device)
    taken = torch.zeros(n, dtype=torch.bool, device=similarity.device)

    def recompute():
        fresh = gains.of().double().masked_fill_(taken, -math.inf)
        # absolute slack for the float32 rounding of this recomputation and of the
        # updates that follow it (about 1e-7 of the largest gain now), so exact zeros
        # and ties near zero all enter the window
        return fresh, 1e-6 * float(fresh.max())

    running, floor = recompute()
    recomputed = True
    order, values = [], []
    def near_top():
        top = float(running.max())
        return torch.nonzero(running >= top - _WINDOW * abs(top) - floor).flatten()

    for _ in range(k):
        window = near_top()
        if window.shape[0] > _WINDOW_LIMIT and not recomputed:
            # gains far below the last recomputation's scale: start afresh, so the
            # slack shrinks with them and the window with it
            running, floor = recompute()
            window = near_top()
        exact = gains.of(window)
        position = int(torch.argmax(exact))
        j = int(window[position])
        order.append(j)
        values.append(float(exact[position]))
        taken[j] = True
        changed, before = gains.add(j)
        recomputed = changed.shape[0] * 3 > n
        if recomputed:
            running, floor = recompute()
            continue
        running[j] = -math.inf                    # stays -inf: finite updates cannot lift it
        for start in range(0, changed.shape[0], gains.chunk):
            points = changed[start:start + gains.chunk]
            low = before[start:start + gains.chunk, None]
            # max(s - old, 0) - max(s - new, 0) = clamp(s, old, new) - old, and the
            # subtraction is exact whenever new <= 2 old (Sterbenz)
            lost = torch.clamp(similarity[points], min=low, max=gains.best[points, None])
            lost -= low
            # column sums (rows = columns: s is symmetric) as a matrix-vector product;
            # its float32 rounding stays far inside the window's absolute slack
            running -= (ones[:points.shape[0]] @ lost).double()
    return order, values


def _stochastic(gains: _Gains, k: int, rng: np.random.Generator, epsilon: float):
    """Stochastic greedy (Mirzasoleiman et al., 2015, "Lazier than lazy greedy").

    Each step evaluates a uniform sample of (n / k) log(1 / epsilon) open candidates and
    takes the best of them (lowest index among ties); (1 - 1/e - epsilon) in expectation.
    """
    n = gains.similarity.shape[0]
    device = gains.similarity.device
    sample_size = max(1, math.ceil(n / k * math.log(1.0 / epsilon)))
    open_mask = np.ones(n, dtype=bool)
    order, values = [], []
    for _ in range(k):
        candidates = np.flatnonzero(open_mask)
        if sample_size < candidates.shape[0]:
            candidates = np.sort(rng.choice(candidates, sample_size, replace=False))
        rows = torch.from_numpy(candidates).to(device)
        current = gains.of(rows)
        position = int(torch.argmax(current))
        j = int(candidates[position])
        order.append(j)
        values.append(float(current[position]))
        open_mask[j] = False
        gains.add(j)
    return order, values


OPTIMIZERS: dict[str, Callable] = {"naive": _naive, "lazy": _lazy, "stochastic": _stochastic}


def cluster_weights(similarity: torch.Tensor, order: list[int]) -> np.ndarray:
    """Cluster sizes: each point goes to its most similar selected point.

    Ties go to the point selected earlier; a selected point always belongs to its own
    cluster (so duplicates selected twice both keep a weight of at least 1).
    """
    picks = torch.as_tensor(order, dtype=torch.long, device=similarity.device)
    nearest = torch.argmax(similarity[:, picks], dim=1)  # first maximum = earliest pick
    nearest[picks] = torch.arange(picks.shape[0], device=similarity.device)
    counts = torch.bincount(nearest, minlength=picks.shape[0])
    return counts.cpu().numpy().astype(np.float64)


def greedy_facility_location(similarity: torch.Tensor, k: int, *, optimizer: str = "lazy",
                             rng: np.random.Generator | None = None,
                             epsilon: float = 0.01) -> tuple[list[int], list[float]]:
    """Run an optimizer on a precomputed (n, n) similarity; returns (order, gains)."""
    rng = rng if rng is not None else np.random.default_rng(0)
    return OPTIMIZERS[optimizer](_Gains(similarity), k, rng, epsilon)


# neighbours per point when a selection too large for the dense engine switches to the
# sparse one by itself: about 4 n / k, so that the picks' neighbourhoods can cover the
# class (on MNIST gradients at 1%, K = 4 n / k matched dense greedy's gradient error and
# K = n / 64 was 40 times worse), at least 32, at most what max_memory allows
MIN_AUTO_NEIGHBORS = 32


def auto_neighbors(n: int, d: int, k: int, limit: int) -> int:
    """K for a problem switched to the sparse engine: 4 n / k within [32, n], lowered in
    steps of a quarter until the graph fits in ``limit`` bytes (never below 32)."""
    wanted = min(n, max(MIN_AUTO_NEIGHBORS, math.ceil(4 * n / k)))
    while wanted > MIN_AUTO_NEIGHBORS and sparse_bytes(n, d, wanted) > limit:
        wanted = max(MIN_AUTO_NEIGHBORS, wanted * 3 // 4)
    return min(n, wanted)


def plan_engine(n: int, d: int, k: int, *, neighbors: int | None, max_memory,
                device=None) -> dict:
    """Which engine a problem of n points gets under the memory limit.

    Returns ``{"engine": "dense" | "sparse", "neighbors": K or None, "reason": str}``;
    refuses (:class:`InputError` naming ``max_memory``) when neither engine fits.
    """
    limit = resolve_memory_limit(max_memory, device)
    if neighbors is None:
        need = dense_bytes(n, k)
        if need <= limit:
            return {"engine": "dense", "neighbors": None, "reason": ""}
        neighbors = auto_neighbors(n, d, k, limit)
        reason = (f"the dense similarity of {n:,} points needs {format_bytes(need)}, over "
                  f"max_memory {format_bytes(limit)}: using {neighbors} nearest neighbours")
    else:
        neighbors = min(n, neighbors)
        reason = "neighbors given"
    need = sparse_bytes(n, d, neighbors)
    if need > limit:
        if reason == "neighbors given":
            what = f"needs about {format_bytes(need)} with {neighbors} neighbours"
            advice = "raise max_memory (--max-memory) or lower neighbors (--neighbors)"
        else:
            what = (f"needs about {format_bytes(dense_bytes(n, k))} dense and "
                    f"{format_bytes(need)} with {neighbors} neighbours")
            advice = "raise max_memory (--max-memory)"
        raise InputError(f"max_memory: selecting from {n:,} points {what}, over the limit "
                         f"of {format_bytes(limit)}; {advice}, or split the data "
                         f"(adacore.distributed.greedi)")
    return {"engine": "sparse", "neighbors": neighbors, "reason": reason}


def solve(X: torch.Tensor, k: int, *, optimizer: str = "lazy",
          rng: np.random.Generator | None = None, epsilon: float = 0.01,
          neighbors: int | None = None, neighbor_search: str = "auto", probes: int = 8,
          max_memory=None, seed: int = 0) -> tuple[list[int], list[float], np.ndarray, dict]:
    """One facility-location problem on the engine :func:`plan_engine` picks.

    Returns (order, gains, weights, info); ``info`` names the engine and, for the
    sparse one, the neighbours and the share of points the graph covered.
    """
    plan = plan_engine(X.shape[0], X.shape[1], k, neighbors=neighbors, max_memory=max_memory,
                       device=X.device)
    if plan["engine"] == "dense":
        similarity = similarity_matrix(X)
        order, gains = greedy_facility_location(similarity, k, optimizer=optimizer, rng=rng,
                                                epsilon=epsilon)
        weights = cluster_weights(similarity, order)
        return order, gains, weights, {"engine": "dense"}
    if plan["reason"] != "neighbors given":
        warnings.warn(f"facility location: {plan['reason']}", ResourceWarning, stacklevel=3)
    order, gains, weights, info = sparse_facility_location(
        X, k, neighbors=plan["neighbors"], optimizer=optimizer, rng=rng, epsilon=epsilon,
        search=neighbor_search, probes=probes, seed=seed)
    return order, gains, weights, {"engine": "sparse", **info}


def facility_location(X, k: int, *, optimizer: str = "lazy", seed: int = 0,
                      epsilon: float = 0.01, device: str | torch.device | None = None,
                      neighbors: int | None = None, neighbor_search: str = "auto",
                      probes: int = 8, max_memory=None) -> Coreset:
    """Select ``k`` rows of ``X`` that maximise the facility-location function.

    Parameters
    ----------
    X : array-like, shape (n, d)
        NumPy array or torch tensor; distances are Euclidean, computed in float32.
    k : int
        Number of points to select, 1 <= k <= n.
    optimizer : {"lazy", "naive", "stochastic"}
        ``naive`` evaluates every gain each step; ``lazy`` keeps the gains up to date
        and returns the same selection; ``stochastic`` evaluates a random sample of
        (n / k) log(1 / epsilon) candidates each step.
    seed : int
        Seed of the stochastic optimizer's sampling and of the neighbour search.
    epsilon : float
        Accuracy parameter of the stochastic optimizer, in (0, 1).
    device : optional
        Where to compute; defaults to the device of ``X`` (CPU for NumPy input).
    neighbors : int, optional
        Keep each point's similarity to its ``neighbors`` nearest points only (itself
        included) and run the sparse engine (:mod:`adacore.selection.sparse`): O(n K)
        memory, never an (n, n) matrix. None: the dense engine, unless its (n, n)
        matrix would exceed ``max_memory``, in which case the sparse engine runs with
        about 4 n / k neighbours (at least 32, fewer if memory asks) and a
        ``ResourceWarning`` says so.
    neighbor_search : {"auto", "exact", "ivf", "faiss"}
        How the sparse engine finds neighbours (:mod:`adacore.selection.neighbors`):
        exact up to 20,000 points, then faiss when installed, else an inverted-file
        search in torch.
    probes : int
        Cells searched per query by the approximate searches (recall against speed).
    max_memory : int or str, optional
        Memory the selection may use (bytes, or "4GB", "512MiB"); default half the
        machine's memory (for CUDA input, at most 80% of the device's free memory). A
        selection that fits neither engine is refused with an :class:`InputError`.

    Returns
    -------
    Coreset
        ``indices`` in selection order, ``weights`` the cluster sizes (summing to n),
        ``gains`` the marginal gains of the picks; ``metadata["engine"]`` says which
        engine ran.
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    X = as_tensor("X", X, ndim=2, device=device)
    if X.shape[1] == 0:
        raise fail("X", X, "at least one feature column")
    n = X.shape[0]
    k = check_int("k", k, 1, n)
    seed = check_int("seed", seed, 0)
    if not (0.0 < float(epsilon) < 1.0):
        raise fail("epsilon", epsilon, "a number in (0, 1)")
    if neighbors is not None:
        neighbors = check_int("neighbors", neighbors, 1)
    check_choice("neighbor_search", neighbor_search, SEARCHES)
    probes = check_int("probes", probes, 1)
    order, gains, weights, info = solve(X, k, optimizer=optimizer,
                                        rng=np.random.default_rng(seed), epsilon=epsilon,
                                        neighbors=neighbors, neighbor_search=neighbor_search,
                                        probes=probes, max_memory=max_memory, seed=seed)
    return Coreset(indices=np.asarray(order, dtype=np.int64), weights=weights,
                   gains=np.asarray(gains, dtype=np.float64),
                   method="facility_location", budgets={},
                   metadata={"optimizer": optimizer, "n": n, **info})
