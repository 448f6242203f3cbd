"""The pool engine: greedy over a D^2-sampled candidate pool, every point covered.

Checked against a float64 NumPy greedy restricted to the same candidates, brute-force
cluster sizes, the dense engine, and the properties the pool's sampling promises.
"""

import json
import sys
import types

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from adacore import facility_location, get_strategy
from adacore.selection import per_class_budgets, per_class_facility_location
from adacore.selection.facility_location import candidate_pool, plan_engine, pool_size
from adacore.validation import InputError
from test_facility_location import reference_greedy


def blobs(seed, n=600, d=6, centres=12):
    rng = np.random.default_rng(seed)
    middle = rng.standard_normal((centres, d)) * 4
    X = middle[rng.integers(0, centres, n)] + rng.standard_normal((n, d)) * 0.5
    return X.astype(np.float32)


def cost(X, picks):
    """sum_i min_{j in S} ||x_i - x_j||, the quantity facility location lowers."""
    return cdist(X, X[np.asarray(picks)]).min(axis=1).sum()


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("optimizer", ["naive", "lazy"])
def test_pool_greedy_equals_float64_reference_on_the_same_pool(seed, optimizer):
    X = blobs(seed)
    k, factor = 15, 4
    size = pool_size(len(X), k, factor)
    pool = candidate_pool(torch.from_numpy(X), size, np.random.default_rng(seed)).numpy()
    chosen = facility_location(X, k, pool=factor, seed=seed, optimizer=optimizer, refine=0)
    assert chosen.metadata["engine"] == "pool" and chosen.metadata["candidates"] == size
    assert list(chosen.indices) == reference_greedy(X, k, pool)
    assert set(chosen.indices) <= set(pool)
    # the gains add up to F over all points, and never increase
    distances = cdist(X, X[pool])
    largest = cdist(X[pool], X).max()
    value = (largest - cdist(X, X[chosen.indices])).max(axis=1).sum()
    assert chosen.gains.sum() == pytest.approx(value, rel=1e-4)
    assert np.all(np.diff(chosen.gains) <= 1e-3 * chosen.gains[0])
    assert distances.shape == (len(X), size)


def test_pool_weights_are_brute_force_cluster_sizes():
    X = np.random.default_rng(3).integers(0, 5, size=(300, 2)).astype(np.float32)  # ties
    coreset = facility_location(X, 10, pool=3)
    distances = cdist(X, X[coreset.indices])
    expected = np.zeros(10)
    for i in range(len(X)):
        where = np.flatnonzero(coreset.indices == i)
        # a pick is its own cluster; others go to the nearest pick, ties to the earliest
        expected[where[0] if where.size else int(np.argmin(distances[i]))] += 1
    np.testing.assert_array_equal(coreset.weights, expected)
    assert coreset.weights.sum() == len(X) and np.all(coreset.weights >= 1)


def test_a_pool_as_large_as_the_data_is_the_exact_dense_greedy():
    X = blobs(1, n=200)
    exact = facility_location(X, 20)
    whole = facility_location(X, 20, pool=10)            # 200 candidates = every point
    assert whole.metadata["engine"] == "dense"
    np.testing.assert_array_equal(whole.indices, exact.indices)
    np.testing.assert_array_equal(whole.weights, exact.weights)


@pytest.mark.parametrize("seed", range(3))
def test_pool_of_eight_k_costs_at_most_six_percent_more_than_dense(seed):
    # on clustered data the pool loses little: sum of distances to the nearest pick
    # (measured 2-5% on these and on MNIST gradients)
    X = blobs(seed, n=1500, centres=40)
    dense = facility_location(X, 30)
    pooled = facility_location(X, 30, pool=8, seed=seed)
    assert cost(X, pooled.indices) <= 1.06 * cost(X, dense.indices)
    # and far better than a random subset of the same size
    random = np.random.default_rng(seed).choice(len(X), 30, replace=False)
    assert cost(X, pooled.indices) < 0.9 * cost(X, random)


def test_candidate_pool_is_distinct_sorted_and_holds_the_outliers():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.standard_normal((2000, 5)), 1000 + rng.standard_normal((5, 5))])
    for seed in range(5):
        pool = candidate_pool(torch.from_numpy(X).float(), 40, np.random.default_rng(seed))
        values = pool.numpy()
        assert values.shape == (40,) and len(set(values)) == 40
        assert np.all(np.diff(values) > 0)
        # D^2 sampling: five far points carry nearly all the first round's weight
        assert set(range(2000, 2005)) <= set(values)


def test_candidate_pool_of_duplicates_fills_up_uniformly():
    X = torch.zeros(50, 3)
    X[0] = 1.0                                    # two distinct values only
    pool = candidate_pool(X, 10, np.random.default_rng(0))
    assert len(set(pool.tolist())) == 10
    coreset = facility_location(X, 3, pool=4)
    assert coreset.weights.sum() == 50 and np.all(coreset.weights >= 1)


def test_pool_is_seeded():
    X = blobs(5, n=800)
    a = facility_location(X, 20, pool=4, seed=1)
    b = facility_location(X, 20, pool=4, seed=1)
    c = facility_location(X, 20, pool=4, seed=2)
    np.testing.assert_array_equal(a.indices, b.indices)
    assert not np.array_equal(a.indices, c.indices)


@pytest.mark.parametrize("pool", [None, 6])
def test_classes_in_threads_give_the_serial_result(pool):
    rng = np.random.default_rng(0)
    X = torch.from_numpy(blobs(2, n=900))
    labels = rng.integers(0, 4, 900)
    budgets = per_class_budgets(labels, 40)
    serial = per_class_facility_location(X, labels, budgets, pool=pool, workers=1)
    threaded = per_class_facility_location(X, labels, budgets, pool=pool, workers=3)
    assert serial.metadata["workers"] == 1 and threaded.metadata["workers"] == 3
    np.testing.assert_array_equal(serial.indices, threaded.indices)
    np.testing.assert_array_equal(serial.weights, threaded.weights)
    # a memory limit that fits one class at a time runs them one at a time
    largest = max(budgets, key=lambda label: int((labels == label).sum()))
    need = plan_engine(int((labels == largest).sum()), X.shape[1], budgets[largest],
                       neighbors=None, max_memory=None, pool=pool)["bytes"]
    tight = per_class_facility_location(X, labels, budgets, pool=pool, workers=3,
                                        max_memory=int(1.5 * need))
    assert tight.metadata["workers"] == 1
    np.testing.assert_array_equal(tight.indices, serial.indices)


@pytest.mark.parametrize("bad", [0.5, 0, -3, float("nan"), float("inf"), "8", True])
def test_bad_pool_is_refused_naming_it(bad):
    with pytest.raises(InputError, match="pool"):
        facility_location(blobs(0, n=50), 5, pool=bad)
    with pytest.raises(InputError, match="pool"):
        get_strategy("craig", fraction=0.1, pool=bad)


def test_pool_with_greedi_is_refused():
    with pytest.raises(InputError, match="pool"):
        get_strategy("adacore", fraction=0.1, pool=8, client="tcp://127.0.0.1:1")


def test_strategies_run_the_pool_engine():
    rng = np.random.default_rng(0)
    grads = torch.from_numpy(blobs(4, n=1200))
    labels = rng.integers(0, 3, 1200)
    for name in ("craig", "adacore"):
        strategy = get_strategy(name, fraction=0.02, pool=4)
        extra = {"hessian_diag": torch.rand_like(grads) + 0.1} if name == "adacore" else {}
        coreset = strategy.select(grads, labels, **extra)
        assert coreset.metadata["engine"] == "pool" and len(coreset) == 24
        assert coreset.weights.sum() == 1200


def test_bench_round_json(monkeypatch, capsys):
    # `adacore bench round --json` prints one object with the epoch and every round
    module = sys.modules["adacore.bench.selection_round"] if (
        "adacore.bench.selection_round" in sys.modules) else None
    if module is None:
        import adacore.bench.selection_round as module
    generator = torch.Generator().manual_seed(0)
    train = types.SimpleNamespace(x=torch.rand(400, 784, generator=generator),
                                  y=torch.arange(400) % 10)
    monkeypatch.setattr(module, "load_dataset", lambda name: types.SimpleNamespace(train=train))
    module.main(["--repeats", "1", "--fraction", "0.05", "--pool", "4", "--refine", "0",
                 "2", "--neighbors", "--logits-only", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert report["full_epoch_seconds"] > 0 and report["model"] == "mlp"
    rows = {(row["method"], row["pool"], row["refine"]): row for row in report["rounds"]}
    assert set(rows) == {(method, pool, refine) for method in ("adacore", "craig")
                         for pool, refine in ((None, 0), (4, 0), (4, 2))}
    for row in report["rounds"]:
        assert row["space"] == "logits" and row["neighbors"] is None
        assert row["epochs"] == pytest.approx(row["seconds"] / report["full_epoch_seconds"])
        assert 0 <= row["gradient_error"] < 10 and 0 < row["select_seconds"] <= row["seconds"]


def test_cli_select_with_a_pool(tmp_path, capsys):
    from adacore import Coreset
    from adacore.cli import main

    X = blobs(6, n=300)
    labels = np.random.default_rng(0).integers(0, 3, 300)
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", labels)
    assert main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--fraction", "0.05", "--method", "craig",
                 "--pool", "3", "--out", str(tmp_path / "c.npz")]) == 0
    reference = get_strategy("craig", fraction=0.05, pool=3).select(X, labels)
    assert reference.metadata["engine"] == "pool"
    np.testing.assert_array_equal(Coreset.load(tmp_path / "c.npz").indices, reference.indices)
    capsys.readouterr()
    assert main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--fraction", "0.05", "--method", "random",
                 "--pool", "3", "--out", str(tmp_path / "d.npz")]) == 2
    assert "--pool: only the facility-location methods" in capsys.readouterr().err
    assert not (tmp_path / "d.npz").exists()
    # --refine reaches the engine: 0 gives the unrefined pool's picks
    assert main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--fraction", "0.05", "--method", "craig",
                 "--pool", "3", "--refine", "0", "--out", str(tmp_path / "e.npz")]) == 0
    plain = get_strategy("craig", fraction=0.05, pool=3, refine=0).select(X, labels)
    np.testing.assert_array_equal(Coreset.load(tmp_path / "e.npz").indices, plain.indices)
    assert main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--fraction", "0.05", "--method", "craig",
                 "--refine", "-1", "--out", str(tmp_path / "f.npz")]) == 2
    assert "refine" in capsys.readouterr().err


def test_pool_size_falls_back_to_every_point_above_half_the_class():
    assert pool_size(5000, 50, 8) == 400
    assert pool_size(5000, 500, 8) == 5000          # 4,000 > 2,500: the dense engine
    assert pool_size(5000, 500, 2) == 1000
    assert pool_size(5000, 50, 1) == 50             # never fewer candidates than picks
    assert pool_size(5000, 50, None) == 5000
    assert pool_size(5000, 50, 1.01) == 51          # ceil


# --- refinement: Voronoi iterations after the greedy --------------------------------


def brute_medoid_step(X, picks):
    """One Voronoi iteration in float64 NumPy: nearest pick (ties to the earliest, a pick
    its own), then each pick moved to the member with the least summed distance, kept
    when none is lower by more than a relative 1e-6."""
    picks = list(picks)
    distances = cdist(X, X[picks])
    nearest = np.argmin(distances, axis=1)
    nearest[picks] = np.arange(len(picks))
    moved = []
    for t, pick in enumerate(picks):
        members = np.flatnonzero(nearest == t)
        totals = cdist(X[members], X[members]).sum(axis=1)
        best = int(np.argmin(totals))
        mine = int(np.flatnonzero(members == pick)[0])
        moved.append(int(members[best]) if totals[best] < totals[mine] * (1 - 1e-6)
                     else pick)
    return moved


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("k", [12, 60])        # clusters of about 60, and of about 12
def test_refinement_is_the_brute_force_voronoi_iteration_and_never_raises_the_cost(seed, k):
    X = blobs(seed, n=700, centres=15).astype(np.float64)
    start = facility_location(X, k, pool=2, refine=0, seed=seed).indices
    picks, costs = list(start), [cost(X, start)]
    for iterations in (1, 2, 3):
        refined = facility_location(X, k, pool=2, refine=iterations, seed=seed)
        picks = brute_medoid_step(X, picks)
        # the same picks as the float64 reference, in the greedy's order
        assert list(refined.indices) == picks
        assert refined.metadata["refine"] == iterations
        costs.append(cost(X, refined.indices))
    assert all(later <= earlier + 1e-9 for earlier, later in zip(costs, costs[1:]))
    assert costs[-1] < costs[0]                      # the pool alone missed medoids


def test_refined_gains_weights_and_metadata_are_those_of_the_final_picks():
    X = blobs(7, n=900, centres=20)
    coreset = facility_location(X, 25, pool=4)        # default: 2 iterations
    assert coreset.metadata["refine"] == 2 and 1 <= coreset.metadata["refine_moved"] <= 2
    picks = coreset.indices
    distances = cdist(X, X[picks])
    # gains: F's marginal gains in the returned order, c at least the largest distance
    # from a pick, so they add up to F(S) = n c - sum_i min_j d_ij for that c
    largest = (coreset.gains[0] + distances[:, 0].sum()) / len(X)    # g_1 = n c - sum d

    assert largest >= distances.max() - 1e-3
    value = (largest - distances).max(axis=1).sum()
    assert coreset.gains.sum() == pytest.approx(value, rel=1e-5)
    nearest = np.argmin(distances, axis=1)
    nearest[picks] = np.arange(len(picks))
    np.testing.assert_array_equal(coreset.weights, np.bincount(nearest, minlength=25))


def test_refined_pool_reaches_the_exact_greedy_cost():
    # on Gaussian mixtures a pool of 8 k, refined twice, is within 1% of the exact
    # greedy's sum of distances (on MNIST's AdaCore gradients of a one-epoch model it
    # was below it)
    for seed in range(3):
        X = blobs(seed, n=1500, centres=40)
        dense = facility_location(X, 30)
        refined = facility_location(X, 30, pool=8, seed=seed)
        assert cost(X, refined.indices) <= 1.01 * cost(X, dense.indices)
        # and refining the exact greedy can only help it
        polished = facility_location(X, 30, refine=2)
        assert polished.metadata["engine"] == "dense"
        assert cost(X, polished.indices) <= cost(X, dense.indices) + 1e-6


def test_a_large_cluster_looks_for_its_medoid_near_its_mean():
    from adacore.selection.facility_location import refine_picks
    rng = np.random.default_rng(0)
    X = torch.from_numpy(rng.standard_normal((400, 3)))
    far = int(torch.argmax(X.norm(dim=1)))         # start from the outermost point
    # with every member a candidate the medoid is the brute-force one
    picks, moved = refine_picks(X, [far], 1, limit=1000)
    totals = cdist(X.numpy(), X.numpy()).sum(axis=1)
    assert moved == 1 and int(picks[0]) == int(np.argmin(totals))
    # with 20 candidates: the best of the 20 nearest the mean (and the pick itself)
    picks, _ = refine_picks(X, [far], 1, limit=20)
    near = np.argsort(np.linalg.norm(X.numpy() - X.numpy().mean(axis=0), axis=1))[:20]
    assert int(picks[0]) == int(near[np.argmin(totals[near])])


def test_refinement_of_duplicates_and_tiny_clusters_moves_nothing():
    X = np.zeros((30, 2), dtype=np.float32)
    X[:3] = [[5, 5], [5, 5], [9, 9]]
    coreset = facility_location(X, 3, pool=1, refine=3)
    assert coreset.metadata["refine_moved"] == 0 or cost(X, coreset.indices) == 0
    assert coreset.weights.sum() == 30 and np.all(coreset.weights >= 1)


@pytest.mark.parametrize("bad", [-1, 1.5, "2", True, float("nan")])
def test_bad_refine_is_refused_naming_it(bad):
    with pytest.raises(InputError, match="refine"):
        facility_location(blobs(0, n=50), 5, pool=2, refine=bad)
    with pytest.raises(InputError, match="refine"):
        get_strategy("adacore", fraction=0.1, refine=bad)


def test_refine_with_greedi_is_refused():
    with pytest.raises(InputError, match="refine"):
        get_strategy("craig", fraction=0.1, refine=1, client="tcp://127.0.0.1:1")


def brute_mean_step(X, picks):
    """float64: every point to its nearest pick (ties to the earliest, a pick its own),
    then each pick to its cluster's member nearest the cluster's mean (lowest index on
    ties), unless the cluster has 2 points or fewer or the pick is as near."""
    distances = cdist(X, X[picks])
    nearest = np.argmin(distances, axis=1)
    nearest[picks] = np.arange(len(picks))
    new = list(picks)
    for t, pick in enumerate(picks):
        members = np.flatnonzero(nearest == t)
        spread = np.linalg.norm(X[members] - X[members].mean(axis=0), axis=1)
        best = members[np.argmin(spread)]
        own = np.linalg.norm(X[pick] - X[members].mean(axis=0))
        if len(members) > 2 and spread.min() < own * (1 - 1e-6):
            new[t] = int(best)
    return new


@pytest.mark.parametrize("seed", range(3))
def test_refining_to_the_mean_is_the_brute_force_step_and_nears_each_mean(seed):
    from adacore.selection.facility_location import refine_picks
    X = blobs(seed, n=500, centres=8).astype(np.float64)
    start = list(np.random.default_rng(seed).choice(len(X), 12, replace=False))
    picks, moved = refine_picks(torch.from_numpy(X).float(), start, 1, to="mean")
    assert picks.tolist() == brute_mean_step(X, start) and moved == 1
    # the engine's result, weights included, against the error of the medoid step
    mean = facility_location(X, 12, pool=4, seed=seed, refine=1, refine_to="mean")
    medoid = facility_location(X, 12, pool=4, seed=seed, refine=1)
    assert mean.metadata["refine_to"] == "mean" and medoid.metadata["refine_to"] == "medoid"
    assert mean.weights.sum() == len(X) and np.all(mean.weights >= 1)
    # for the clusters it moved in, a pick is never farther from the cluster's mean
    distances = cdist(X, X[start])
    nearest = np.argmin(distances, axis=1)
    nearest[start] = np.arange(len(start))
    for t, (old, new) in enumerate(zip(start, picks.tolist())):
        centre = X[nearest == t].mean(axis=0)
        assert np.linalg.norm(X[new] - centre) <= np.linalg.norm(X[old] - centre) + 1e-9


def test_bad_refine_to_is_refused_naming_it():
    with pytest.raises(InputError, match="refine_to"):
        facility_location(blobs(0, n=50), 3, pool=2, refine_to="centre")
    with pytest.raises(InputError, match="refine_to"):
        get_strategy("adacore", fraction=0.1, refine_to="median")


@pytest.mark.parametrize("pool", [None, 6])
def test_by_default_classes_go_to_threads_only_from_a_large_block(pool, monkeypatch):
    rng = np.random.default_rng(0)
    X = torch.from_numpy(blobs(2, n=900))
    labels = rng.integers(0, 4, 900)
    budgets = per_class_budgets(labels, 40)
    label = max(budgets, key=lambda label: int((labels == label).sum()))
    largest = int((labels == label).sum())
    plan = plan_engine(largest, X.shape[1], budgets[label], neighbors=None,
                       max_memory=None, pool=pool)
    block = largest * (largest if plan["engine"] == "dense" else plan["candidates"])
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr("adacore.selection.per_class.THREADED_BLOCK", block + 1)
        small = per_class_facility_location(X, labels, budgets, pool=pool)
        monkeypatch.setattr("adacore.selection.per_class.THREADED_BLOCK", block)
        large = per_class_facility_location(X, labels, budgets, pool=pool)
    finally:
        torch.set_num_threads(threads)
    assert small.metadata["workers"] == 1 and large.metadata["workers"] == 2
    np.testing.assert_array_equal(small.indices, large.indices)
