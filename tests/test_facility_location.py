"""The selection engine against independent references (brute force, NumPy float64)."""

import itertools
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from adacore import facility_location, gradient_error
from adacore.selection import pairwise_distances, per_class_facility_location, per_class_budgets


def objective(X, subset):
    """F(S) = sum_i max_{j in S} (c - d_ij), in float64 from SciPy distances."""
    distances = cdist(X, X)
    similarity = distances.max() - distances
    return similarity[:, list(subset)].max(axis=1).sum()


def reference_greedy(X, k, candidates=None):
    """Plain greedy in float64 NumPy: every gain recomputed, ties to the lowest index;
    picks among the rows ``candidates`` (all rows when None), every row covered."""
    candidates = np.arange(X.shape[0]) if candidates is None else np.asarray(candidates)
    distances = cdist(X[candidates], X)
    similarity = distances.max() - distances
    best = np.zeros(X.shape[0])
    order = []
    for _ in range(k):
        gains = np.maximum(similarity - best[None, :], 0).sum(axis=1)
        gains[order] = -np.inf
        j = int(np.argmax(gains))
        order.append(j)
        best = np.maximum(best, similarity[j])
    return [int(candidates[j]) for j in order]


def data(seed, n=300, d=8):
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_pairwise_distances_match_scipy():
    X = data(0, 500, 40) * 3 + 100.0   # an offset that would hurt an uncentred Gram trick
    D = pairwise_distances(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(D, cdist(X.astype(np.float64), X.astype(np.float64)),
                               rtol=1e-4, atol=1e-3)
    assert np.all(np.diag(D) == 0) and np.all(D >= 0)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("k", [1, 7, 40, 300])
def test_lazy_equals_naive(seed, k):
    X = data(seed)
    naive = facility_location(X, k, optimizer="naive")
    lazy = facility_location(X, k, optimizer="lazy")
    np.testing.assert_array_equal(naive.indices, lazy.indices)
    np.testing.assert_array_equal(naive.gains, lazy.gains)
    np.testing.assert_array_equal(naive.weights, lazy.weights)


@pytest.mark.parametrize("n, k, pool", [(2500, 40, None), (6000, 250, 4)])
def test_lazy_equals_naive_when_the_gains_span_several_blocks(n, k, pool):
    # the gains are scored in blocks of about 2^22 similarities: here a full scoring
    # takes two or more blocks (n = 2,500 points; 1,000 pool candidates of 6,000 points)
    # while the lazy window is scored as one; both must give naive's picks and gains
    from adacore.selection.facility_location import _Gains, pool_size
    assert n > _Gains(torch.zeros(1, n)).chunk
    if pool is not None:
        assert pool_size(n, k, pool) > _Gains(torch.zeros(1, n)).chunk
    X = data(11, n, 10)
    naive = facility_location(X, k, optimizer="naive", pool=pool)
    lazy = facility_location(X, k, optimizer="lazy", pool=pool)
    np.testing.assert_array_equal(naive.indices, lazy.indices)
    np.testing.assert_array_equal(naive.gains, lazy.gains)
    np.testing.assert_array_equal(naive.weights, lazy.weights)


def test_lazy_equals_naive_with_ties():
    # integer grid with duplicates: many exactly equal gains
    X = np.random.default_rng(3).integers(0, 3, size=(200, 2)).astype(np.float32)
    for k in (5, 9, 30):
        naive = facility_location(X, k, optimizer="naive")
        lazy = facility_location(X, k, optimizer="lazy")
        np.testing.assert_array_equal(naive.indices, lazy.indices)


@pytest.mark.parametrize("seed", range(3))
def test_matches_float64_reference_greedy(seed):
    X = data(seed, 200, 5)
    coreset = facility_location(X, 25)
    assert coreset.indices.tolist() == reference_greedy(X.astype(np.float64), 25)


@pytest.mark.parametrize("seed", range(6))
def test_greedy_within_1_minus_1_over_e_of_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(6, 13))
    X = rng.standard_normal((n, 3)).astype(np.float32)
    for k in (1, 2, 3, 4):
        optimum = max(objective(X, s) for s in itertools.combinations(range(n), k))
        for optimizer in ("naive", "lazy"):
            chosen = facility_location(X, k, optimizer=optimizer)
            value = objective(X, chosen.indices)
            assert value >= (1 - 1 / math.e) * optimum - 1e-6
            # the gains add up to the objective and never increase (submodularity)
            assert chosen.gains.sum() == pytest.approx(value, rel=1e-4)
            assert np.all(np.diff(chosen.gains) <= 1e-4)


def test_weights_are_brute_force_cluster_sizes():
    # ties: integer points, mirrored so that their mean is exactly 0; the engine centres
    # on the mean, so its squared distances stay exact integers and a tie stays a tie
    # in float32 on any machine (an off-grid mean left ties to the BLAS's rounding)
    half = np.random.default_rng(7).integers(-2, 3, size=(75, 2))
    X = np.concatenate([half, -half]).astype(np.float32)
    coreset = facility_location(X, 12)
    distances = cdist(X, X)
    to_picks = distances[:, coreset.indices]
    tied = (to_picks == to_picks.min(axis=1, keepdims=True)).sum(axis=1) > 1
    assert tied.sum() >= 10                  # the tie rule decides many points
    expected = np.zeros(12)
    for i in range(X.shape[0]):
        position = list(coreset.indices).index(i) if i in coreset.indices else None
        if position is None:
            # nearest selected point, ties to the one picked first
            row = [distances[i, j] for j in coreset.indices]
            position = int(np.argmin(row))
        expected[position] += 1
    np.testing.assert_array_equal(coreset.weights, expected)
    assert coreset.weights.sum() == X.shape[0] and np.all(coreset.weights >= 1)


def test_duplicate_points_keep_positive_weights():
    X = np.zeros((10, 3), dtype=np.float32)
    coreset = facility_location(X, 4)
    assert sorted(coreset.indices) == [0, 1, 2, 3]
    assert np.all(coreset.weights >= 1) and coreset.weights.sum() == 10


@pytest.mark.parametrize("seed", range(4))
def test_gradient_error_bound(seed):
    U = data(seed, 400, 6) + 0.5
    coreset = facility_location(U, 20)
    full = U.astype(np.float64).sum(axis=0)
    estimate = coreset.weights @ U[coreset.indices].astype(np.float64)
    bound = cdist(U, U[coreset.indices]).min(axis=1).sum()
    assert np.linalg.norm(full - estimate) <= bound + 1e-6
    assert gradient_error(U, coreset) == pytest.approx(
        np.linalg.norm(full - estimate) / np.linalg.norm(full), rel=1e-6)


def test_stochastic_is_seeded_and_close_to_lazy():
    X = data(11, 1000, 10)
    first = facility_location(X, 50, optimizer="stochastic", seed=4)
    again = facility_location(X, 50, optimizer="stochastic", seed=4)
    other = facility_location(X, 50, optimizer="stochastic", seed=5)
    np.testing.assert_array_equal(first.indices, again.indices)
    np.testing.assert_array_equal(first.weights, again.weights)
    assert not np.array_equal(first.indices, other.indices)
    lazy = facility_location(X, 50)
    assert objective(X, first.indices) >= 0.97 * objective(X, lazy.indices)


def test_torch_input_and_numpy_input_agree():
    X = data(2)
    a = facility_location(X, 10)
    b = facility_location(torch.from_numpy(X.astype(np.float64)), 10)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert a.indices.dtype == np.int64 and a.weights.dtype == np.float64


def test_per_class_equals_separate_problems():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 4)).astype(np.float32)
    labels = rng.integers(0, 3, 600)
    budgets = per_class_budgets(labels, 30)
    coreset = per_class_facility_location(torch.from_numpy(X), labels, budgets)
    start = 0
    for label, budget in budgets.items():
        members = np.flatnonzero(labels == label)
        alone = facility_location(X[members], budget)
        np.testing.assert_array_equal(coreset.indices[start:start + budget],
                                      members[alone.indices])
        np.testing.assert_array_equal(coreset.weights[start:start + budget], alone.weights)
        start += budget
    assert np.all(labels[coreset.indices][:budgets[0]] == 0)
    assert coreset.weights.sum() == 600


@pytest.mark.parametrize("pool", [None, 4])
def test_identical_points_take_the_lowest_indices_at_once(pool):
    # a collapsed model gives every example of a class the same gradient: all gains
    # past the first pick are exactly 0; lazy must take what naive takes (the lowest
    # open indices) without a full scan per pick (it took minutes at n = 5,000, k = 500)
    X = np.ones((1500, 10), dtype=np.float32)
    X[::7] = 2.0                                     # two distinct values
    lazy = facility_location(X, 150, pool=pool)
    naive = facility_location(X, 150, optimizer="naive", pool=pool)
    np.testing.assert_array_equal(lazy.indices, naive.indices)
    np.testing.assert_array_equal(lazy.gains, naive.gains)
    np.testing.assert_array_equal(lazy.weights, naive.weights)
    assert np.all(lazy.gains[2:] == 0) and lazy.weights.sum() == 1500
