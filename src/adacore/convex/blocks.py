"""Facility location on random blocks, many blocks at once: the engine for large classes.

One class of 290,000 examples would need a 290,000^2 similarity matrix (336 GB), and a
greedy that picks 29,000 points one after the other costs 29,000 Python-level steps.
Here each class is shuffled (seeded) and cut into blocks of about ``block_size`` points;
every block gets a share of the class budget proportional to its size (largest
remainder, at least 1), and facility location runs in every block *at the same time*:
one step picks one point in each block, on a stacked (B, m, m) similarity tensor. This is
the first stage of GreeDi (Mirzasoleiman et al., 2013) on a random partition, without its
second, merging stage: each pick covers the points of its own block, and its weight is the
size of its cluster there, so the weights of a class still sum to the class size.

Optimizers: ``"naive"`` scores every open candidate each step (the exact greedy, block by
block: the same picks as :func:`adacore.facility_location` with ``optimizer="naive"`` on
each block, up to float32 ties); ``"lazy"`` (the default) makes the same picks from stale
upper bounds, re-scoring about 4 candidates per block a step instead of m; ``"stochastic"``
scores a uniform sample of (m / k) log(1 / epsilon) open candidates per block each step
(Mirzasoleiman et al., 2015), (1 - 1/e - epsilon)-approximate in expectation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.per_class import class_seed

__all__ = ["BLOCK_OPTIMIZERS", "block_facility_location", "blocked_facility_location",
           "split_budget"]

BLOCK_OPTIMIZERS = ("lazy", "naive", "stochastic")
# Candidates per block that the lazy optimizer re-scores each step.
_LAZY_WINDOW = 4
# Float32 entries of the stacked similarity tensor of one group of blocks (256 MiB).
_GROUP_ELEMENTS = 1 << 26


def split_budget(sizes: np.ndarray, budget: int) -> np.ndarray:
    """Largest-remainder split of ``budget`` in proportion to ``sizes``, each part in
    [1, size] (needs len(sizes) <= budget <= sizes.sum())."""
    quotas = budget * sizes / sizes.sum()
    parts = np.minimum(np.maximum(np.floor(quotas).astype(np.int64), 1), sizes)
    short = budget - int(parts.sum())
    if short > 0:      # the largest remainders among parts with room get one more
        gap = np.where(parts < sizes, quotas - parts, -np.inf)
        parts[np.argsort(-gap, kind="stable")[:short]] += 1
    elif short < 0:    # the floor of 1 overshot: take back from the most above quota
        surplus = np.where(parts > 1, parts - quotas, -np.inf)
        parts[np.argsort(-surplus, kind="stable")[:-short]] -= 1
    return parts


def _distances(blocks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, m, m) Euclidean distances within each block, and a bound c_b >= all of them.

    The greedy scores gain_j = sum_i max(D_i - d_ij, 0), D_i the distance of i to its
    nearest pick (c_b before any): that is facility location with s_ij = c_b - d_ij,
    whose greedy order does not depend on c_b as long as c_b >= every d_ij. c_b is twice
    the block's largest norm (a bound by the triangle inequality), so no pass over the
    (m, m) block is spent finding its maximum. Squared distances come from the Gram
    identity in float32: centre the vectors first (the callers here centre each class)
    to keep its cancellation error small.
    """
    norms = torch.einsum("bmp,bmp->bm", blocks, blocks)
    squared = torch.baddbmm(norms[:, :, None] + norms[:, None, :], blocks,
                            blocks.transpose(1, 2), alpha=-2.0)
    distances = squared.clamp_min_(0.0).sqrt_()
    distances.diagonal(dim1=1, dim2=2).zero_()
    bound = 2.0 * norms.amax(dim=1).sqrt() * (1.0 + 1e-5) + 1e-30
    return distances, bound


def _score_rows(flat: torch.Tensor, nearest: torch.Tensor, offsets: torch.Tensor,
                candidates: torch.Tensor) -> torch.Tensor:
    """Gains sum_i max(D_i - d_ji, 0) of candidates (B, r), one row of d per candidate."""
    blocks, r = candidates.shape
    rows = flat.index_select(0, (candidates + offsets[:, None]).view(-1))
    rows = rows.view(blocks, r, flat.shape[1])
    return torch.sub(nearest[:, None, :], rows, out=rows).clamp_min_(0.0).sum(dim=2)


def _score_all(distances: torch.Tensor, nearest: torch.Tensor) -> torch.Tensor:
    """Gains of every candidate of every block, (B, m)."""
    return (nearest[:, None, :] - distances).clamp_min_(0.0).sum(dim=2)


def _lazy_pick(distances, flat, offsets, nearest, taken, bounds):
    """One exact greedy step from stale upper bounds (lazy greedy, batched).

    Gains only shrink as coverage grows (in float32 too: every term of the sum shrinks and
    rounded addition is monotone), so last step's gains bound this step's. Each block
    re-scores its ``_LAZY_WINDOW`` candidates of largest bound; when the best fresh gain
    exceeds the next bound, it is the block's true maximum. Blocks where that fails
    (rare) are re-scored in full. ``bounds`` is updated in place.
    """
    window = min(_LAZY_WINDOW, bounds.shape[1] - 1)
    top, candidates = torch.topk(bounds, window + 1, dim=1)
    fresh = _score_rows(flat, nearest, offsets, candidates[:, :window])
    fresh.masked_fill_(torch.isinf(top[:, :window]), -math.inf)
    bounds.scatter_(1, candidates[:, :window], fresh)
    value = fresh.max(dim=1).values
    # ties (common: two points that are each other's nearest have equal gains) go to the
    # lowest index, as in the naive greedy; a tie with the next bound is not certified
    tied = torch.where(fresh == value[:, None], candidates[:, :window],
                       torch.full_like(candidates[:, :window], bounds.shape[1]))
    chosen = tied.min(dim=1).values
    unsure = torch.nonzero(value <= top[:, window]).flatten()
    if unsure.shape[0] * 4 > bounds.shape[0]:      # many: one pass over every block
        bounds.copy_(_score_all(distances, nearest).masked_fill_(taken, -math.inf))
        value, chosen = bounds.max(dim=1)
    elif unsure.shape[0]:
        full = _score_all(distances[unsure], nearest[unsure]).masked_fill_(taken[unsure],
                                                                           -math.inf)
        bounds[unsure] = full
        value[unsure], chosen[unsure] = full.max(dim=1)
    return chosen, value


def _greedy(distances: torch.Tensor, bound: torch.Tensor, budgets: torch.Tensor,
            optimizer: str, generator: torch.Generator, epsilon: float):
    """Picks (B, k_max) (-1 where a block's budget is spent) and their gains (NaN there)."""
    blocks, m, _ = distances.shape
    k_max, k_min = int(budgets.max()), int(budgets.min())
    flat = distances.view(blocks * m, m)
    offsets = torch.arange(blocks) * m
    taken = torch.zeros((blocks, m), dtype=torch.bool)
    nearest = bound[:, None].expand(blocks, m).clone()      # D_i
    picks = torch.full((blocks, k_max), -1, dtype=torch.long)
    gains = torch.full((blocks, k_max), math.nan, dtype=torch.float64)
    sample = m
    if optimizer == "stochastic":
        sample = max(1, math.ceil(m / k_min * math.log(1.0 / epsilon)))
        if 2 * sample >= m:     # gathering most rows costs more than scoring them all
            sample = m
    everyone = torch.arange(blocks)
    bounds = None
    for step in range(k_max):
        # the first gains all carry the bound c_b, which the first pick removes: the
        # lazy bounds are useful from the third step on
        if optimizer == "lazy" and step >= 2 and m > 1:
            chosen, value = _lazy_pick(distances, flat, offsets, nearest, taken, bounds)
        elif sample < m:
            keys = torch.rand((blocks, m), generator=generator).masked_fill_(taken, -1.0)
            candidates = torch.topk(keys, sample, dim=1, sorted=False).indices
            scores = _score_rows(flat, nearest, offsets, candidates)
            scores.masked_fill_(taken.gather(1, candidates), -math.inf)
            value, position = scores.max(dim=1)
            chosen = candidates.gather(1, position[:, None]).squeeze(1)
        else:
            scores = _score_all(distances, nearest).masked_fill_(taken, -math.inf)
            value, chosen = scores.max(dim=1)            # first maximum: lowest index
            bounds = scores if optimizer == "lazy" else None
        live = everyone if step < k_min else torch.nonzero(budgets > step).flatten()
        covered = torch.minimum(nearest, flat.index_select(0, chosen + offsets))
        if step >= k_min:
            covered = torch.where((budgets > step)[:, None], covered, nearest)
        nearest = covered
        picks[live, step] = chosen[live]
        gains[live, step] = value[live].double()
        taken[live, chosen[live]] = True
        if bounds is not None:
            bounds[live, chosen[live]] = -math.inf
    return picks, gains


def _cluster_weights(distances: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """(B, k_max) cluster sizes (0 for unused slots); ties go to the earlier pick."""
    blocks, m, _ = distances.shape
    k_max = picks.shape[1]
    used = picks >= 0
    towards = distances.gather(2, picks.clamp_min(0)[:, None, :].expand(blocks, m, k_max))
    towards.masked_fill_(~used[:, None, :], math.inf)
    nearest = torch.argmin(towards, dim=2)              # (B, m), first minimum
    block_of, slot = torch.nonzero(used, as_tuple=True)
    nearest[block_of, picks[block_of, slot]] = slot    # a pick is in its own cluster
    flat = (nearest + torch.arange(blocks)[:, None] * k_max).view(-1)
    return torch.bincount(flat, minlength=blocks * k_max).view(blocks, k_max)


def _run_blocks(stacked: torch.Tensor, budgets: np.ndarray, optimizer: str,
                generator: torch.Generator, epsilon: float):
    """Facility location in blocks of one size: stacked (B, m, p), budgets (B,).
    Returns positions (block-major, flattened over the B * m rows), weights, gains."""
    blocks, m, _ = stacked.shape
    per_group = max(1, _GROUP_ELEMENTS // (m * m))
    positions, weights, gains = [], [], []
    for start in range(0, blocks, per_group):
        distances, bound = _distances(stacked[start:start + per_group])
        picks, pick_gains = _greedy(distances, bound,
                                    torch.from_numpy(budgets[start:start + per_group]),
                                    optimizer, generator, epsilon)
        counts = _cluster_weights(distances, picks)
        del distances
        used = (picks >= 0).numpy()
        rows = picks.numpy() + (start + np.arange(picks.shape[0]))[:, None] * m
        # block-major order: block by block, each block's picks in greedy order
        positions.append(rows[used])
        weights.append(counts.numpy()[used].astype(np.float64))
        gains.append(pick_gains.numpy()[used])
    return positions, weights, gains


def block_facility_location(vectors: torch.Tensor, budget: int, *, block_size: int = 32,
                            optimizer: str = "lazy", epsilon: float = 0.01,
                            rng: np.random.Generator | None = None):
    """Facility location on consecutive blocks of one class's vectors.

    The rows must already be in random order (the caller shuffles them), and are best
    centred (distances are translation invariant, the float32 Gram identity is not): the
    first n mod B blocks hold one row more than the others, B = min(budget,
    ceil(n / block_size)) blocks in all.

    Parameters
    ----------
    vectors : Tensor, shape (n, p), float32, on the CPU
    budget : int
        Picks in all, 1 <= budget <= n.
    block_size, optimizer, epsilon
        See :func:`blocked_facility_location`.
    rng : numpy Generator, optional
        Seeds the stochastic optimizer's samples (default: seed 0).

    Returns
    -------
    (positions, weights, gains, n_blocks)
        Row numbers into ``vectors`` (block by block, each block in greedy order), the
        cluster sizes (summing to n), the marginal gains, and the number of blocks.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    vectors = torch.as_tensor(vectors, dtype=torch.float32).cpu().contiguous()
    n = vectors.shape[0]
    n_blocks = min(budget, max(1, math.ceil(n / block_size)))
    small, extra = divmod(n, n_blocks)
    # the first ``extra`` blocks hold small + 1 rows, the others ``small``: two stacks
    cut = extra * (small + 1)
    sizes = np.array([small + 1] * extra + [small] * (n_blocks - extra))
    budgets = split_budget(sizes, budget)
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 62)))
    positions, weights, gains = [], [], []
    for begin, stop, size, part_budgets in ((0, cut, small + 1, budgets[:extra]),
                                            (cut, n, small, budgets[extra:])):
        if stop == begin:
            continue
        stacked = vectors[begin:stop].view(-1, size, vectors.shape[1])
        found, part_weights, part_gains = _run_blocks(stacked, part_budgets, optimizer,
                                                      generator, epsilon)
        positions.extend(begin + f for f in found)
        weights.extend(part_weights)
        gains.extend(part_gains)
    return (np.concatenate(positions), np.concatenate(weights), np.concatenate(gains),
            n_blocks)


def blocked_facility_location(vectors, labels: np.ndarray, budgets: dict[int, int], *,
                              block_size: int = 32, optimizer: str = "lazy",
                              epsilon: float = 0.01, seed: int = 0,
                              method: str = "facility_location") -> Coreset:
    """Per-class facility location on random blocks of about ``block_size`` points.

    Parameters
    ----------
    vectors : Tensor or array, shape (n, p)
        The vectors to cover (already preconditioned for AdaCore); float32 on the CPU.
    labels : ndarray of int, shape (n,)
    budgets : dict
        label -> number of picks, as from :func:`adacore.per_class_budgets`.
    block_size : int
        Target block size m; a class is cut into min(budget, ceil(n_c / m)) blocks of
        near-equal size, so that every block gets at least one pick.
    optimizer : {"lazy", "naive", "stochastic"}
    epsilon : float
        Accuracy of the stochastic optimizer, in (0, 1).
    seed : int
        Seeds the partition and the stochastic samples, per class
        (:func:`adacore.selection.per_class.class_seed`).
    method : str
        Recorded in the returned coreset.

    Returns
    -------
    Coreset
        Classes in increasing label order, each class block by block; weights are
        cluster sizes within the blocks (summing to the class sizes).
    """
    vectors = torch.as_tensor(vectors, dtype=torch.float32).cpu().contiguous()
    indices, weights, gains, blocks = [], [], [], {}
    for label, budget in budgets.items():
        rng = class_seed(seed, label)
        members = rng.permutation(np.flatnonzero(labels == label))
        rows = vectors.index_select(0, torch.from_numpy(members))
        positions, weight, gain, blocks[label] = block_facility_location(
            rows.sub_(rows.mean(dim=0)), budget,
            block_size=block_size, optimizer=optimizer, epsilon=epsilon, rng=rng)
        indices.append(members[positions])
        weights.append(weight)
        gains.append(gain)
    weights_all = np.concatenate(weights)
    return Coreset(indices=np.concatenate(indices), weights=weights_all,
                   gains=np.concatenate(gains), method=method, budgets=dict(budgets),
                   metadata={"engine": "blocks", "optimizer": optimizer,
                             "block_size": block_size, "blocks": blocks,
                             "max_weight_over_mean": float(weights_all.max()
                                                           / weights_all.mean()),
                             "singleton_clusters": int((weights_all == 1).sum())})
