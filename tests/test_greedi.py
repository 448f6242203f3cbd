"""GreeDi on Dask against the centralised greedy and brute-force NumPy references."""

import multiprocessing
import os
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch

pytest.importorskip("distributed")
from distributed import Client, LocalCluster  # noqa: E402

from adacore import InputError, facility_location  # noqa: E402
from adacore.distributed import greedi  # noqa: E402
from adacore.selection import per_class_budgets, per_class_facility_location  # noqa: E402


@pytest.fixture(scope="module")
def cluster():
    """One two-worker cluster for the whole file: starting one costs seconds."""
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0", scheduler_kwargs={"dashboard": False}) as local, \
            Client(local) as client:
        yield local, client


@pytest.fixture(scope="module")
def mixture():
    """2,400 points in 8 dimensions from 6 Gaussians, labelled by component."""
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 4.0, (6, 8))
    labels = rng.integers(0, 6, 2400)
    X = (means[labels] + rng.standard_normal((2400, 8))).astype(np.float32)
    return X, labels


def nearest(X, picks):
    """Distance to, and position of, each point's nearest pick (float64, ties to the first)."""
    X = X.astype(np.float64)
    distances = np.sqrt(((X[:, None, :] - X[None, picks, :]) ** 2).sum(axis=2))
    return distances.min(axis=1), distances.argmin(axis=1)


def cost(X, picks):
    """sum_i min_{j in S} ||x_i - x_j||, brute force."""
    return nearest(X, picks)[0].sum()


def objective(X, picks):
    """F(S) = sum_i max_{j in S} (c - d_ij) = c n - cost(S), c the largest distance."""
    X64 = X.astype(np.float64)
    squares = (X64 * X64).sum(axis=1)
    largest = np.sqrt(np.maximum(squares[:, None] + squares[None, :] - 2 * X64 @ X64.T, 0)).max()
    return largest * X.shape[0] - cost(X, picks)


def cluster_sizes(X, picks):
    """Each point counted at its nearest pick (ties to the earlier one), picks at themselves."""
    position = nearest(X, picks)[1]
    position[picks] = np.arange(len(picks))
    return np.bincount(position, minlength=len(picks)).astype(np.float64)


def random_subset_cost(X, k, seed=1):
    return cost(X, np.random.default_rng(seed).choice(X.shape[0], k, replace=False))


@pytest.mark.parametrize("partitions", [2, 4])
def test_close_to_centralised_greedy(cluster, mixture, partitions):
    X, _ = mixture
    coreset = greedi(X, 60, client=cluster[1], partitions=partitions)
    central = facility_location(X, 60)
    assert objective(X, coreset.indices) >= 0.95 * objective(X, central.indices)
    # F is dominated by c n, so also hold the cost (distance to the nearest pick) to a
    # bound that a random subset of the same size misses
    ratio = cost(X, coreset.indices) / cost(X, central.indices)
    assert ratio <= 1.06
    assert random_subset_cost(X, 60) / cost(X, central.indices) > 1.06
    # the reported cost is the returned set's, and the better of the two candidates
    meta = coreset.metadata
    assert meta["cost"] == pytest.approx(cost(X, coreset.indices), rel=1e-5)
    assert meta["cost"] == min(meta["merged_cost"], meta["best_partition_cost"])
    assert meta["winner"] in ("merged", "partition")
    assert meta["partitions"] == partitions and meta["optimizer"] == "lazy"


def test_record_shape_and_weights(cluster, mixture):
    X, _ = mixture
    coreset = greedi(X, 80, client=cluster[1], partitions=3)
    assert coreset.method == "greedi" and coreset.budgets == {}
    assert coreset.indices.dtype == np.int64 and coreset.weights.dtype == np.float64
    assert coreset.indices.shape == coreset.weights.shape == coreset.gains.shape == (80,)
    assert np.unique(coreset.indices).shape[0] == 80
    assert coreset.indices.min() >= 0 and coreset.indices.max() < X.shape[0]
    assert coreset.weights.sum() == X.shape[0] and np.all(coreset.weights >= 1)
    # cluster sizes over all points, not just the winner's partition
    assert np.abs(coreset.weights - cluster_sizes(X, coreset.indices)).sum() <= 2


def test_duplicate_picks_keep_their_own_cluster(cluster):
    # 40 distinct points, each three times: 60 picks must include duplicates
    X = np.repeat(np.random.default_rng(2).standard_normal((40, 3)), 3, axis=0)
    coreset = greedi(X, 60, client=cluster[1], partitions=2)
    assert np.unique(coreset.indices).shape[0] == 60
    assert coreset.weights.sum() == 120 and np.all(coreset.weights >= 1)
    # every distinct point covered: only float32 rounding of zero distances is left
    assert coreset.metadata["cost"] == pytest.approx(0.0, abs=0.05)


def test_labels_per_class(cluster, mixture):
    X, labels = mixture
    coreset = greedi(X, 120, labels=labels, client=cluster[1])
    budgets = per_class_budgets(labels, 120)
    central = per_class_facility_location(torch.from_numpy(X), labels, budgets)
    assert coreset.budgets == budgets and coreset.metadata["partitions"] == 2
    assert np.unique(coreset.indices).shape[0] == coreset.indices.shape[0] == 120
    # class by class, in increasing label order
    picked = labels[coreset.indices]
    assert np.all(np.diff(picked) >= 0)
    start = 0
    for label, budget in budgets.items():
        picks = coreset.indices[start:start + budget]
        weights = coreset.weights[start:start + budget]
        start += budget
        assert np.all(labels[picks] == label)
        members = np.flatnonzero(labels == label)
        assert weights.sum() == members.shape[0]
        local = np.searchsorted(members, picks)
        reference = central.indices[labels[central.indices] == label]
        reference = np.searchsorted(members, reference)
        assert (objective(X[members], local)
                >= 0.95 * objective(X[members], reference))
        assert np.abs(weights - cluster_sizes(X[members], local)).sum() <= 2
        assert coreset.metadata["per_class"][label]["cost"] == pytest.approx(
            cost(X[members], local), rel=1e-5)
    ratio = coreset.metadata["cost"] / sum(
        cost(X[labels == c], np.searchsorted(np.flatnonzero(labels == c),
                                              central.indices[labels[central.indices] == c]))
        for c in budgets)
    assert ratio <= 1.06


def test_one_partition_is_the_centralised_greedy(cluster, mixture):
    X, labels = mixture
    client = cluster[1]
    for optimizer in ("lazy", "stochastic"):
        ours = greedi(X, 50, client=client, partitions=1, optimizer=optimizer, seed=3)
        theirs = facility_location(X, 50, optimizer=optimizer, seed=3)
        np.testing.assert_array_equal(ours.indices, theirs.indices)
        np.testing.assert_array_equal(ours.weights, theirs.weights)
        np.testing.assert_array_equal(ours.gains, theirs.gains)
    ours = greedi(X, 90, labels=labels, client=client, partitions=1)
    theirs = per_class_facility_location(torch.from_numpy(X), labels,
                                         per_class_budgets(labels, 90))
    np.testing.assert_array_equal(ours.indices, theirs.indices)
    np.testing.assert_array_equal(ours.weights, theirs.weights)
    np.testing.assert_array_equal(ours.gains, theirs.gains)


def test_deterministic_for_a_seed(cluster, mixture):
    X, _ = mixture
    client = cluster[1]
    runs = [greedi(X, 40, client=client, partitions=3, optimizer="stochastic", seed=seed)
            for seed in (7, 7, 8)]
    for field in ("indices", "weights", "gains"):
        np.testing.assert_array_equal(getattr(runs[0], field), getattr(runs[1], field))
    assert not np.array_equal(runs[0].indices, runs[2].indices)
    from_tensor = greedi(torch.from_numpy(X), 40, client=client, partitions=3,
                         optimizer="stochastic", seed=7)
    np.testing.assert_array_equal(from_tensor.indices, runs[0].indices)


def test_scheduler_address(cluster, mixture):
    local, client = cluster
    X, _ = mixture
    connected = set(local.scheduler.clients)
    by_address = greedi(X[:600], 20, client=local.scheduler_address)
    by_client = greedi(X[:600], 20, client=client)
    np.testing.assert_array_equal(by_address.indices, by_client.indices)
    np.testing.assert_array_equal(by_address.weights, by_client.weights)
    # the connection it opened is closed again; the caller's stays open
    deadline = time.monotonic() + 5.0
    while set(local.scheduler.clients) != connected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(local.scheduler.clients) == connected
    assert client.status == "running"


def test_starts_and_stops_its_own_cluster(cluster, mixture):
    X, _ = mixture
    before = len(multiprocessing.active_children())
    own = greedi(X[:600], 20, seed=5)
    shared = greedi(X[:600], 20, seed=5, client=cluster[1], partitions=2)
    np.testing.assert_array_equal(own.indices, shared.indices)
    assert len(multiprocessing.active_children()) == before


# a plain script, no `if __name__ == "__main__":` guard: spawned worker processes would
# re-run it (from a file) or fail to find it (from standard input)
UNGUARDED = textwrap.dedent("""
    import numpy as np
    from adacore import facility_location
    from adacore.distributed import greedi
    X = np.random.default_rng(0).standard_normal((120, 3)).astype(np.float32)
    picked = greedi(X, 6, partitions=1)
    assert picked.indices.tolist() == facility_location(X, 6).indices.tolist()
    print("picked", len(picked.indices))
""")


@pytest.mark.parametrize("how", ["file", "stdin"])
def test_default_cluster_runs_from_an_unguarded_script(tmp_path, how):
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED)
    command = [sys.executable, str(script)] if how == "file" else [sys.executable, "-"]
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    with open(script) as source:
        done = subprocess.run(command, stdin=source if how == "stdin" else subprocess.DEVNULL,
                              capture_output=True, text=True, cwd=tmp_path, timeout=120,
                              env=environment)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "picked 6"


@pytest.mark.parametrize("arguments, name", [
    ({"k": 0}, "k"), ({"k": 301}, "k"), ({"k": 2.5}, "k"),
    ({"partitions": 0}, "partitions"), ({"partitions": "2"}, "partitions"),
    ({"labels": np.zeros(299, dtype=int)}, "labels"),
    ({"labels": np.full(300, 0.5)}, "labels"),
    ({"client": 42}, "client"), ({"optimizer": "greedy"}, "optimizer"),
    ({"seed": -1}, "seed"), ({"epsilon": 0.0}, "epsilon"), ({"budget": "fair"}, "budget"),
    ({"X": np.ones(300)}, "X"), ({"X": np.full((300, 2), np.nan)}, "X"),
])
def test_bad_inputs(cluster, arguments, name):
    call = {"X": np.random.default_rng(0).standard_normal((300, 2)), "k": 5,
            "client": cluster[1], **arguments}
    with pytest.raises(InputError, match=f"^{name}:"):
        greedi(call.pop("X"), call.pop("k"), **call)


def test_without_dask(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)    # import now fails
    with pytest.raises(InputError, match=r"adacore\[distributed\]"):
        greedi(np.ones((10, 2)), 2)


def test_a_cluster_without_workers_is_refused():
    with LocalCluster(n_workers=0, processes=False, dashboard_address=":0",
                      scheduler_kwargs={"dashboard": False}) as empty:
        with pytest.raises(InputError, match="^client: .* no workers"):
            greedi(np.ones((10, 2)), 2, client=empty.scheduler_address)


def test_cli_select_on_a_scheduler(cluster, mixture, tmp_path):
    """`adacore select --scheduler ADDRESS` runs CRAIG's selection by GreeDi there."""
    from adacore.cli import main
    from adacore.coreset import Coreset

    X, labels = mixture
    np.save(tmp_path / "g.npy", np.asarray(X, dtype=np.float32))
    np.save(tmp_path / "y.npy", np.asarray(labels))
    common = ["select", "--vectors", str(tmp_path / "g.npy"), "--labels",
              str(tmp_path / "y.npy"), "--fraction", "0.05", "--method", "craig"]
    assert main(common + ["--out", str(tmp_path / "d.npz"), "--scheduler",
                          cluster[0].scheduler_address, "--partitions", "2"]) == 0
    distributed_pick = Coreset.load(tmp_path / "d.npz")
    assert main(common + ["--out", str(tmp_path / "c.npz")]) == 0
    central = Coreset.load(tmp_path / "c.npz")
    assert distributed_pick.metadata["engine"] == "greedi"
    assert distributed_pick.budgets == central.budgets
    assert distributed_pick.weights.sum() == central.weights.sum() == len(labels)
    assert main(common + ["--out", str(tmp_path / "e.npz"), "--partitions", "2"]) == 2


def test_sparse_partitions(cluster, mixture):
    """neighbors= solves each partition on its neighbour graph; quality stays close."""
    X, labels = mixture
    _, client = cluster
    dense = facility_location(X, 60)
    sparse = greedi(X, 60, client=client, partitions=2, neighbors=24)
    assert sparse.weights.sum() == X.shape[0] and len(set(sparse.indices.tolist())) == 60
    cost = {name: nearest(X, coreset.indices)[0].sum()
            for name, coreset in (("dense", dense), ("sparse", sparse))}
    assert cost["sparse"] <= 1.08 * cost["dense"], cost
    with pytest.raises(InputError, match="neighbors"):
        greedi(X, 60, client=client, neighbors=0)
