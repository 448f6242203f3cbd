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
from adacore.selection.distances import (centred, distances_to_rows, pairwise_distances,
                                         squared_distances)
from adacore.selection.memory import (dense_bytes, format_bytes, pool_bytes,
                                      resolve_memory_limit, sparse_bytes)
from adacore.selection.neighbors import SEARCHES
from adacore.selection.sparse import sparse_facility_location
from adacore.validation import (InputError, as_tensor, check_choice, check_int,
                                check_real, fail)

def similarity_matrix(X: torch.Tensor) -> torch.Tensor:
    """s_ij = (largest distance) - ||x_i - x_j||, an (n, n) float32 tensor."""
    similarity = pairwise_distances(X)
    largest = similarity.max()
    # in place: the largest class's n x n block is the only one alive
    return similarity.neg_().add_(largest)


class _Gains:
    """Marginal gains of candidates given the current coverage ``best`` (one kernel).

    ``similarity`` is (m, n): row j holds candidate j's similarity to every one of the
    n points (the square symmetric matrix when every point is a candidate);
    ``columns`` is its transpose, kept contiguous, for the updates that read the
    similarities *to* a set of points (the matrix itself when it is square).

    Every optimizer scores candidates with :meth:`of`: sum_i max(s_ji - best_i, 0), in
    float32, a row at a time. The gain of candidate j is a reduction over row j,
    computed the same way whatever else is in the batch; that is what lets ``lazy``
    reproduce ``naive`` exactly.
    """

    def __init__(self, similarity: torch.Tensor, columns: torch.Tensor | None = None):
        self.similarity = similarity
        self.columns = similarity if columns is None else columns
        self.candidates = similarity.shape[0]
        self.points = similarity.shape[1]
        self.best = torch.zeros(self.points, dtype=similarity.dtype,
                                device=similarity.device)
        # Rows per block: a temporary of about 16 MiB, which keeps the kernel in cache.
        self.chunk = max(1, (1 << 22) // max(1, self.points))

    def of(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Gains of the candidates ``rows`` (every candidate when None)."""
        count = self.candidates if rows is None else rows.shape[0]
        if 0 < count <= self.chunk:
            # one block (the lazy greedy's usual window): the same kernel, no slicing
            block = (self.similarity if rows is None
                     else torch.index_select(self.similarity, 0, rows))
            return torch.sub(block, self.best).clamp_min_(0.0).sum(dim=1)
        parts = []
        for start in range(0, count, self.chunk):
            if rows is None:
                block = self.similarity[start:start + self.chunk]
            else:
                block = torch.index_select(self.similarity, 0,
                                           rows[start:start + self.chunk])
            parts.append(torch.sub(block, self.best).clamp_min_(0.0).sum(dim=1))
        return torch.cat(parts) if parts else self.best.new_zeros(0)

    def add(self, j: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Cover with candidate ``j``; returns the points whose coverage grew, their old
        cover and their new one."""
        row = self.similarity[j]
        changed = torch.nonzero(row > self.best).flatten()
        # index_select / index_copy_: the same values as indexing, a third of its
        # per-call cost on the CPU (the lazy greedy calls this once a pick)
        before = torch.index_select(self.best, 0, changed)
        after = torch.index_select(row, 0, changed)
        self.best.index_copy_(0, changed, after)
        return changed, before, after


def _naive(gains: _Gains, k: int, rng: np.random.Generator, epsilon: float):
    """Plain greedy: every gain recomputed each step; ties go to the lowest index."""
    n = gains.candidates
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
    n = gains.candidates
    rows_per_update = max(1, (1 << 22) // max(1, n))
    ones = torch.ones(rows_per_update, dtype=similarity.dtype, device=similarity.device)
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

    for step in range(k):
        window = near_top()
        if window.shape[0] > _WINDOW_LIMIT and not recomputed:
            # gains far below the last recomputation's scale: start afresh, so the
            # slack shrinks with them and the window with it
            running, floor = recompute()
            recomputed = True
            window = near_top()
        # the window's exact gains as Python floats (the float32 values, exactly): its
        # first maximum is torch.argmax's, without a device call per lookup
        scores = gains.of(window).tolist()
        top_score = max(scores)
        if not top_score > 0.0:
            # the best of the window gains nothing: check every open gain afresh
            if not recomputed:
                running, floor = recompute()
                recomputed = True
            if not float(running.max()) > 0.0:
                # every open gain is exactly 0 and stays 0 (coverage only grows), e.g.
                # a class of identical points: naive takes the lowest open indices in
                # order, with gain 0; done at once, not by k - step full scans
                rest = torch.nonzero(~taken).flatten()[:k - step].tolist()
                order.extend(rest)
                values.extend([0.0] * len(rest))
                break
            window = near_top()
            scores = gains.of(window).tolist()
            top_score = max(scores)
        j = window.tolist()[scores.index(top_score)]
        order.append(j)
        values.append(top_score)
        taken[j] = True
        changed, before, after = gains.add(j)
        recomputed = changed.shape[0] * 3 > gains.points
        if recomputed:
            running, floor = recompute()
            continue
        running[j] = -math.inf                    # stays -inf: finite updates cannot lift it
        for start in range(0, changed.shape[0], rows_per_update):
            stop = start + rows_per_update
            whole = start == 0 and changed.shape[0] <= stop     # no slices to take
            points = changed if whole else changed[start:stop]
            low = (before if whole else before[start:stop])[:, None]
            high = (after if whole else after[start:stop])[:, None]
            # max(s - old, 0) - max(s - new, 0) = clamp(s, old, new) - old, and the
            # subtraction is exact whenever new <= 2 old (Sterbenz)
            # (as maximum then minimum: clamp with tensor bounds is about 4x slower on
            # the CPU, and low < high, so the same values)
            lost = torch.maximum(torch.index_select(gains.columns, 0, points), low)
            torch.minimum(lost, high, out=lost)
            lost -= low
            # column sums of the similarities to these points, as a matrix-vector
            # product; its float32 rounding stays far inside the window's absolute slack
            running -= (ones[:points.shape[0]] @ lost).double()
    return order, values


def _stochastic(gains: _Gains, k: int, rng: np.random.Generator, epsilon: float):
    """Stochastic greedy (Mirzasoleiman et al., 2015, "Lazier than lazy greedy").

    Each step evaluates a uniform sample of (n / k) log(1 / epsilon) open candidates and
    takes the best of them (lowest index among ties); (1 - 1/e - epsilon) in expectation.
    """
    n = gains.candidates
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


def _cluster_sizes(rows: torch.Tensor, picks: torch.Tensor) -> np.ndarray:
    """Cluster sizes from ``rows``, the (k, n) similarities of the picks (in selection
    order) to every point, and ``picks``, their columns: each point goes to its most
    similar pick, ties to the earliest (argmax's first maximum), and a pick always to
    itself (so a point selected twice keeps a weight of at least 1 for each)."""
    # max(dim).indices: argmax's first maximum, in a third of its time on the CPU
    nearest = torch.max(rows, dim=0).indices
    nearest[picks] = torch.arange(picks.shape[0], device=rows.device)
    counts = torch.bincount(nearest, minlength=picks.shape[0])
    return counts.cpu().numpy().astype(np.float64)


def cluster_weights(similarity: torch.Tensor, order: list[int]) -> np.ndarray:
    """Cluster sizes of the picks ``order`` under the square similarity (see
    :func:`_cluster_sizes`); the picks' rows are read (s is symmetric), a contiguous
    gather several times faster than the columns."""
    picks = torch.as_tensor(order, dtype=torch.long, device=similarity.device)
    return _cluster_sizes(similarity[picks], picks)


# Voronoi iterations the pool engine runs after its greedy (``refine=None``)
POOL_REFINE = 2
# Candidates for a cluster's medoid: its members nearest its mean, this many (every
# member of a smaller cluster); the step costs this many distances per point
MEDOID_CANDIDATES = 32
# elements of one block of distances in the refinement (about 16 MiB of float32)
_REFINE_BLOCK = 1 << 22


def _nearest_pick(X: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """For every row of ``X``, the position in ``picks`` of its nearest pick (ties to the
    earliest), a pick always its own; by squared distances (the same order), in blocks
    of rows."""
    points = centred(X)
    nearest = torch.empty(X.shape[0], dtype=torch.long, device=X.device)
    rows = max(1, _REFINE_BLOCK // max(1, picks.shape[0]))
    chosen = points[picks]
    norms = torch.einsum("ij,ij->i", chosen, chosen)
    for start in range(0, X.shape[0], rows):
        block = squared_distances(points[start:start + rows], chosen, norms)
        # min(dim).indices: argmin's first minimum, in half its time on the CPU
        nearest[start:start + rows] = torch.min(block, dim=1).indices
    nearest[picks] = torch.arange(picks.shape[0], device=X.device)
    return nearest


def _medoid_step(X: torch.Tensor, picks: torch.Tensor, nearest: torch.Tensor,
                 limit: int) -> torch.Tensor:
    """Each pick moved to its cluster's medoid among the cluster's ``limit`` members
    nearest its mean (all members of a smaller cluster), all clusters at once.

    Cluster t is the points with ``nearest == t``; its candidates are its pick and
    those members. Clusters go in padded batches of similar sizes (at most twice the
    smallest in a batch), each one product of the members, centred on their cluster's
    mean, against their candidates. The pick is kept unless a candidate is lower by
    more than a relative 1e-6, so that rounding can neither move a pick nor make the
    iteration cycle; one or two points never move (two are at the same sum).
    """
    k = picks.shape[0]
    points = X.to(torch.float32)
    sizes = torch.bincount(nearest, minlength=k)
    means = torch.zeros((k, points.shape[1]), dtype=torch.float64, device=X.device)
    means.index_add_(0, nearest, points.double())
    means = (means / sizes[:, None].clamp_min(1)).to(torch.float32)
    centred = points - torch.index_select(means, 0, nearest)   # each from its own mean
    spread = torch.linalg.vector_norm(centred, dim=1)
    # members cluster by cluster, nearest the mean first (ties by index)
    order = torch.argsort(spread, stable=True)
    order = order[torch.argsort(nearest[order], stable=True)]
    starts = torch.cumsum(sizes, 0) - sizes
    new = picks.clone()
    low = 2                                             # clusters of 1 or 2 never move
    top = int(sizes.max())
    while low < top:
        high = max(2 * low, 8)
        bucket = torch.nonzero((sizes > low) & (sizes <= high)).flatten()
        low = high
        if bucket.numel() == 0:
            continue
        width = min(limit, high)
        per_batch = max(1, _REFINE_BLOCK // (high * (width + 1)))
        for first in range(0, bucket.numel(), per_batch):
            batch = bucket[first:first + per_batch]
            count, start = sizes[batch], starts[batch]
            slots = torch.arange(high, device=X.device)
            present = slots[None, :] < count[:, None]                   # (B, high)
            members = order[start[:, None] + torch.minimum(slots[None, :],
                                                           count[:, None] - 1)]
            # candidates: the pick (slot 0) and the `width` members nearest the mean
            offered = torch.cat([picks[batch, None], members[:, :width]], dim=1)
            usable = torch.cat([present[:, :1], present[:, :width]], dim=1)
            distances = torch.cdist(centred[members], centred[offered])  # (B, high, w+1)
            totals = (distances.double() * present[:, :, None]).sum(dim=1)
            totals = totals.masked_fill(~usable, math.inf)
            best = torch.argmin(totals, dim=1)
            lowest = totals.gather(1, best[:, None])[:, 0]
            move = lowest < totals[:, 0] * (1.0 - 1e-6)
            new[batch] = torch.where(move, offered.gather(1, best[:, None])[:, 0],
                                     picks[batch])
    return new


def _mean_step(X: torch.Tensor, picks: torch.Tensor, nearest: torch.Tensor,
               limit: int) -> torch.Tensor:
    """Each pick moved to its cluster's member nearest the cluster's mean (ties to the
    lowest index), all clusters at once; ``limit`` is unused (every member is a
    candidate). The pick is kept unless the member is nearer by more than a relative
    1e-6, so that rounding cannot move it; one or two points never move (two are
    equally near their midpoint).

    A cluster C represented by pick j with weight |C| contributes
    sum_{i in C} (x_i - x_j) = |C| (mean_C - x_j) to the error of the weighted sum, so
    for fixed clusters this member minimises each cluster's part of the gradient error
    itself, where the medoid minimises its part of facility location's bound on it.
    """
    k = picks.shape[0]
    points = X.to(torch.float32)
    sizes = torch.bincount(nearest, minlength=k)
    means = torch.zeros((k, points.shape[1]), dtype=torch.float64, device=X.device)
    means.index_add_(0, nearest, points.double())
    means = means / sizes[:, None].clamp_min(1)
    spread = torch.linalg.vector_norm(points.double() - torch.index_select(means, 0, nearest),
                                      dim=1)
    # the member of each cluster nearest its mean: smallest spread, then lowest index
    # (two scatter minima, a tenth of the time of sorting the points by both)
    n = X.shape[0]
    least = spread.new_full((k,), math.inf).scatter_reduce_(0, nearest, spread, "amin")
    at_least = torch.where(spread == torch.index_select(least, 0, nearest),
                           torch.arange(n, device=X.device), n)
    nearest_member = torch.full((k,), n, dtype=torch.long, device=X.device)
    nearest_member.scatter_reduce_(0, nearest, at_least, "amin")
    nearest_member.clamp_max_(n - 1)   # an empty cluster (a pick taken twice): sizes > 2 keeps it
    move = (spread[nearest_member] < spread[picks] * (1.0 - 1e-6)) & (sizes > 2)
    return torch.where(move, nearest_member, picks)


# What a refinement step moves each pick to (``refine_to``), and the default
REFINE_STEPS = {"medoid": _medoid_step, "mean": _mean_step}
REFINE_TO = "medoid"


def refine_picks(X: torch.Tensor, picks, iterations: int, limit: int | None = None,
                 to: str = "medoid") -> tuple[torch.Tensor, int]:
    """Voronoi iteration from ``picks``: each iteration assigns every point to its
    nearest pick, then moves each pick within its cluster.

    ``to="medoid"`` (alternating k-medoids, Park and Jun 2009): to the member with the
    least summed distance to the others, sought among the ``limit`` members nearest the
    cluster's mean (default :data:`MEDOID_CANDIDATES`; every member of a smaller
    cluster, so there it is the exact medoid; :func:`_medoid_step`). Neither half can
    raise sum_i min_{j in S} ||x_i - x_j||, so F(S) = n c - that sum never falls.
    ``to="mean"``: to the member nearest the cluster's mean (:func:`_mean_step`), which
    minimises the cluster's part of the weighted sum's error; F may then fall a little.
    It stops early when no pick moves. Returns (picks, iterations that moved a pick);
    pick t of the result replaces pick t (the order is otherwise kept).
    """
    check_choice("refine_to", to, REFINE_STEPS)
    picks = torch.as_tensor(picks, dtype=torch.long, device=X.device).clone()
    limit = MEDOID_CANDIDATES if limit is None else limit
    step = REFINE_STEPS[to]
    moved = 0
    for _ in range(iterations):
        new = step(X, picks, _nearest_pick(X, picks), limit)
        if torch.equal(new, picks):
            break
        picks, moved = new, moved + 1
    return picks, moved


def _refined(X: torch.Tensor, picks: torch.Tensor, iterations: int, largest: float,
             to: str = "medoid"):
    """The picks after :func:`refine_picks`, as (order, gains, weights, iterations that
    moved a pick). The order is the greedy's (pick t replaced by its cluster's medoid or
    member nearest its mean);
    the gains are F's marginal gains in that order, so after a move they need not be
    non-increasing."""
    picks, moved = refine_picks(X, picks, iterations, to=to)
    distances = distances_to_rows(X, picks)                      # (n, k), read by row
    # c: the largest distance the engine saw, or a refined pick's if larger, so s >= 0;
    # F(S_t) = n c - sum_i min_{j <= t} d_ij, so the gains are differences of the
    # running minimum's sums
    largest = max(largest, float(distances.max()))
    covered = torch.cummin(distances, dim=1).values.sum(dim=0, dtype=torch.float64)
    before = torch.cat([covered.new_tensor([X.shape[0] * largest]), covered[:-1]])
    gains = (before - covered).tolist()
    # cluster sizes under s = c - d, ties to the earliest pick as in the other engines
    nearest = torch.max(distances.neg_().add_(largest), dim=1).indices
    nearest[picks] = torch.arange(picks.shape[0], device=X.device)
    weights = torch.bincount(nearest, minlength=picks.shape[0]).cpu().numpy()
    return picks.cpu().tolist(), gains, weights.astype(np.float64), moved


def check_pool(pool) -> float | None:
    """``pool`` as a float >= 1, or None (every point a candidate)."""
    if pool is None:
        return None
    return check_real("pool", pool, low=1)


def pool_size(n: int, k: int, pool: float | None) -> int:
    """Candidates for a problem of n points and k picks: ceil(pool * k), at least k; n
    (every point: the dense engine) when ``pool`` is None or ceil(pool * k) > n / 2,
    where the (size, n) block, its transpose and the sampling cost as much as the
    exact (n, n) problem (measured: 4,000 candidates of 5,000 took longer than all)."""
    if pool is None:
        return n
    size = max(k, math.ceil(pool * k))
    return n if size > n / 2 else int(size)


# rounds of D^2 sampling that draw a candidate pool (k-means||-style oversampling: each
# round draws a share of the pool at once, against the distances to the pool so far)
POOL_ROUNDS = 4


def candidate_pool(X: torch.Tensor, size: int, rng: np.random.Generator,
                   rounds: int = POOL_ROUNDS) -> torch.Tensor:
    """``size`` distinct rows of ``X`` drawn by D^2 sampling, as sorted indices.

    The first round draws with probability proportional to the squared distance to the
    mean of ``X``, each later round to the squared distance to the nearest candidate
    drawn so far (k-means++ seeding, drawn ``size / rounds`` at a time as in k-means||),
    weighted sampling without replacement by exponential keys (Efraimidis and Spirakis).
    Points far from everything drawn so far are the likeliest: the isolated, large
    gradients that dominate a gradient sum are in the pool with high probability, and
    a dense region is represented without drawing all of it. When the distances leave
    fewer than ``size`` points with a chance (duplicates), the rest is drawn uniformly.
    """
    n = X.shape[0]
    if size >= n:
        return torch.arange(n, device=X.device)
    points = centred(X)
    weight = torch.einsum("ij,ij->i", points, points).double()
    chosen = torch.zeros(n, dtype=torch.bool, device=X.device)
    per_round = max(1, math.ceil(size / rounds))
    while int(chosen.sum()) < size:
        left = size - int(chosen.sum())
        weight = weight.masked_fill(chosen, 0.0)
        live = int((weight > 0).sum())
        if live == 0:
            break
        take = min(per_round, left, live)
        keys = torch.from_numpy(rng.exponential(size=n)).to(weight.device) / weight
        new = torch.topk(keys, take, largest=False).indices
        chosen[new] = True
        # squared distances straight from the Gram identity (centred, so little
        # cancellation); a sampling weight needs no square root
        nearest = squared_distances(points, points[new]).amin(dim=1)
        weight = torch.minimum(weight, nearest.clamp_min_(0.0).double())
    missing = size - int(chosen.sum())
    if missing > 0:
        free = torch.nonzero(~chosen).flatten().cpu().numpy()
        chosen[torch.from_numpy(rng.choice(free, missing, replace=False)).to(X.device)] = True
    return torch.nonzero(chosen).flatten()


def pool_facility_location(X: torch.Tensor, k: int, size: int, *, optimizer: str = "lazy",
                           rng: np.random.Generator | None = None, epsilon: float = 0.01,
                           refine: int = POOL_REFINE, refine_to: str = "medoid"
                           ) -> tuple[list[int], list[float], np.ndarray, int]:
    """Greedy over a D^2-sampled pool of ``size`` candidates, every point covered, then
    ``refine`` Voronoi iterations (each pick moved to its cluster's ``refine_to``).

    F(S) = sum_i max_{j in S} s_ij is the same function as the dense engine's, over all
    n points; the greedy's picks are restricted to the pool (:func:`candidate_pool`), so
    the similarity is (size, n) instead of (n, n). The pool holds the isolated points but
    only a sample of each dense region, whose medoid it usually misses; the refinement
    (:func:`refine_picks`) moves each pick to its cluster's medoid (or the member
    nearest its mean), which any point may be. Distances are :func:`distances_to_rows`. Returns (order, gains, weights, refining
    iterations that moved a pick) with ``order`` indexing the rows of ``X``.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    pool = candidate_pool(X, size, rng)
    columns = distances_to_rows(X, pool)                        # (n, size)
    largest = float(columns.max())
    columns.neg_().add_(largest)                                # s = c - d, c the largest
    similarity = columns.T.contiguous()
    gains = _Gains(similarity, columns)
    order, values = OPTIMIZERS[optimizer](gains, k, rng, epsilon)
    order_t = torch.as_tensor(order, dtype=torch.long, device=pool.device)
    picks = pool[order_t]
    if refine > 0:
        return _refined(X, picks, refine, largest, refine_to)
    return picks.cpu().tolist(), values, _cluster_sizes(similarity[order_t], picks), 0


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
                device=None, pool: float | None = None) -> dict:
    """Which engine a problem of n points gets under the memory limit.

    Returns ``{"engine": "dense" | "pool" | "sparse", "neighbors": K or None,
    "candidates": the pool's size or None, "reason": str, "bytes": the estimate}``; refuses
    (:class:`InputError` naming ``max_memory``) when no engine fits.
    """
    limit = resolve_memory_limit(max_memory, device)
    if neighbors is None:
        size = pool_size(n, k, pool)
        need = dense_bytes(n, k) if size >= n else pool_bytes(n, size, k)
        if need <= limit:
            if size >= n:
                return {"engine": "dense", "neighbors": None, "candidates": None,
                        "reason": "", "bytes": need}
            return {"engine": "pool", "neighbors": None, "candidates": size, "reason": "",
                    "bytes": need}
        neighbors = auto_neighbors(n, d, k, limit)
        what = "dense" if size >= n else f"({size:,} candidates)"
        reason = (f"the {what} similarity of {n:,} points needs {format_bytes(need)}, over "
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
    return {"engine": "sparse", "neighbors": neighbors, "candidates": None, "reason": reason,
            "bytes": need}


def check_refine(refine) -> int | None:
    """``refine`` as an int >= 0, or None (the engine's default)."""
    return None if refine is None else check_int("refine", refine, 0)


def check_refine_to(refine_to) -> str | None:
    """``refine_to`` as one of :data:`REFINE_STEPS`' names, or None (:data:`REFINE_TO`)."""
    return None if refine_to is None else check_choice("refine_to", refine_to, REFINE_STEPS)


def solve(X: torch.Tensor, k: int, *, optimizer: str = "lazy",
          rng: np.random.Generator | None = None, epsilon: float = 0.01,
          neighbors: int | None = None, neighbor_search: str = "auto", probes: int = 8,
          max_memory=None, seed: int = 0, pool: float | None = None,
          refine: int | None = None, refine_to: str | None = None
          ) -> tuple[list[int], list[float], np.ndarray, dict]:
    """One facility-location problem on the engine :func:`plan_engine` picks.

    Returns (order, gains, weights, info); ``info`` names the engine and, for the
    pool, its size; for the sparse one, the neighbours and the share of points the
    graph covered; for the dense and pool engines, ``refine`` (the Voronoi iterations
    asked), ``refine_to`` and ``refine_moved`` (the iterations that moved a pick).
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    refine_to = REFINE_TO if refine_to is None else refine_to
    plan = plan_engine(X.shape[0], X.shape[1], k, neighbors=neighbors, max_memory=max_memory,
                       device=X.device, pool=pool)
    if plan["engine"] == "pool":
        iterations = POOL_REFINE if refine is None else refine
        order, gains, weights, moved = pool_facility_location(
            X, k, plan["candidates"], optimizer=optimizer, rng=rng, epsilon=epsilon,
            refine=iterations, refine_to=refine_to)
        return order, gains, weights, {"engine": "pool", "candidates": plan["candidates"],
                                       "refine": iterations, "refine_to": refine_to,
                                       "refine_moved": moved}
    if plan["engine"] == "dense":
        similarity = similarity_matrix(X)
        order, gains = greedy_facility_location(similarity, k, optimizer=optimizer, rng=rng,
                                                epsilon=epsilon)
        iterations = refine or 0
        if iterations == 0:
            weights = cluster_weights(similarity, order)
            return order, gains, weights, {"engine": "dense", "refine": 0,
                                           "refine_to": refine_to, "refine_moved": 0}
        largest = float(similarity[0, 0])                       # s_ii = c
        del similarity
        order, gains, weights, moved = _refined(
            X, torch.as_tensor(order, dtype=torch.long, device=X.device), iterations,
            largest, refine_to)
        return order, gains, weights, {"engine": "dense", "refine": iterations,
                                       "refine_to": refine_to, "refine_moved": moved}
    if plan["reason"] != "neighbors given":
        warnings.warn(f"facility location: {plan['reason']}", ResourceWarning, stacklevel=3)
    order, gains, weights, info = sparse_facility_location(
        X, k, neighbors=plan["neighbors"], optimizer=optimizer, rng=rng, epsilon=epsilon,
        search=neighbor_search, probes=probes, seed=seed)
    return order, gains, weights, {"engine": "sparse", **info}


def facility_location(X, k: int, *, optimizer: str = "lazy", seed: int = 0,
                      epsilon: float = 0.01, device: str | torch.device | None = None,
                      neighbors: int | None = None, neighbor_search: str = "auto",
                      probes: int = 8, max_memory=None, pool: float | None = None,
                      refine: int | None = None, refine_to: str | None = None) -> Coreset:
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
    pool : float, optional
        Choose the picks among ceil(pool * k) candidates only (at least k), drawn by
        D^2 sampling (:func:`candidate_pool`), while F still covers all n points: a
        (pool k, n) similarity instead of (n, n), about n / (pool k) times less work.
        When pool * k exceeds n / 2 every point is a candidate (the dense engine, which
        then costs no more). None (the default): every point is a candidate (the exact
        greedy). With a pool the greedy's guarantee holds against the best k-subset of
        the pool, and ``refine`` then moves the picks off the pool.
    refine : int, optional
        Voronoi iterations after the greedy (:func:`refine_picks`): every point is
        assigned to its nearest pick, then each pick moves within its cluster (see
        ``refine_to``). The picks keep the greedy's order and their gains
        are F's marginal gains in that order. None (the default): :data:`POOL_REFINE`
        (2) with a pool, 0 (the exact greedy's picks) without; the sparse engine does
        not refine. In training (README, "Candidate pool") AdaCore with a pool needed
        the 2 iterations to match the exact greedy.
    refine_to : {"medoid", "mean"}, optional
        Where a refinement step moves a pick (None: :data:`REFINE_TO`): ``"medoid"``, the cluster's
        medoid (sought among its :data:`MEDOID_CANDIDATES` members nearest its mean),
        which never lowers F, the paper's objective; ``"mean"``, the member nearest the
        cluster's mean, which minimises the cluster's share of the weighted gradient
        sum's error (F may fall a little). README, "Refining to the mean",
        measures both.

    Returns
    -------
    Coreset
        ``indices`` in selection order, ``weights`` the cluster sizes (summing to n),
        ``gains`` the marginal gains of the picks; ``metadata["engine"]`` says which
        engine ran ("dense", "pool" with ``metadata["candidates"]``, or "sparse");
        ``metadata["refine"]``, ``["refine_to"]`` and ``["refine_moved"]`` the Voronoi
        iterations run, their step, and those that moved a pick (dense and pool engines).
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
    pool = check_pool(pool)
    refine = check_refine(refine)
    refine_to = check_refine_to(refine_to)
    order, gains, weights, info = solve(X, k, optimizer=optimizer,
                                        rng=np.random.default_rng(seed), epsilon=epsilon,
                                        neighbors=neighbors, neighbor_search=neighbor_search,
                                        probes=probes, max_memory=max_memory, seed=seed,
                                        pool=pool, refine=refine, refine_to=refine_to)
    return Coreset(indices=np.asarray(order, dtype=np.int64), weights=weights,
                   gains=np.asarray(gains, dtype=np.float64),
                   method="facility_location", budgets={},
                   metadata={"optimizer": optimizer, "n": n, **info})
