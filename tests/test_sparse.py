"""Sparse facility location: neighbour searches, the graph greedy, memory bounds."""

import math
import warnings

import numpy as np
import pytest
import torch

import adacore
from adacore.selection.facility_location import (auto_neighbors, greedy_facility_location,
                                                 plan_engine,
                                                 similarity_matrix)
from adacore.selection.memory import dense_bytes, parse_memory, sparse_bytes
from adacore.selection.neighbors import faiss_available, nearest_neighbors, neighbor_recall
from adacore.selection.per_class import per_class_facility_location
from adacore.selection.sparse import NeighborGraph, graph_constant, sparse_greedy


def mixture(n, d, clusters=10, seed=0, spread=3.0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(clusters, d, generator=g) * spread
    return centers[torch.randint(0, clusters, (n,), generator=g)] + torch.randn(n, d, generator=g)


def brute_knn(X, k):
    D = torch.cdist(X.double(), X.double())
    D.fill_diagonal_(-1.0)                   # itself first
    values, index = torch.topk(D, k, dim=1, largest=False)
    return values.clamp_min(0), index


def dense_objective(X, picks):
    S = similarity_matrix(X)
    return float(S[:, list(picks)].max(dim=1).values.double().sum())


# ---------------------------------------------------------------- neighbour searches

def test_exact_search_matches_brute_force():
    X = torch.randn(700, 12, generator=torch.Generator().manual_seed(1))
    distances, index = nearest_neighbors(X, 9, search="exact")
    ref_d, ref_i = brute_knn(X, 9)
    assert torch.equal(index[:, 0], torch.arange(700))
    assert torch.all(distances[:, 0] == 0)
    assert torch.allclose(distances.double(), ref_d, atol=1e-4)
    # the same sets of neighbours (continuous data: no ties)
    assert torch.equal(torch.sort(index, dim=1).values, torch.sort(ref_i, dim=1).values)


@pytest.mark.parametrize("search", ["ivf", pytest.param("faiss", marks=pytest.mark.skipif(
    not faiss_available(), reason="faiss not installed"))])
def test_approximate_search_probing_every_cell_is_exact(search):
    X = mixture(3000, 8, seed=2)
    _, index = nearest_neighbors(X, 10, search=search, probes=10_000)
    assert neighbor_recall(X, index, queries=300) == pytest.approx(1.0, abs=1e-3)
    assert torch.equal(index[:, 0], torch.arange(3000))


@pytest.mark.parametrize("search", ["ivf", pytest.param("faiss", marks=pytest.mark.skipif(
    not faiss_available(), reason="faiss not installed"))])
def test_approximate_search_recall_grows_with_probes(search):
    X = mixture(6000, 16, clusters=40, seed=3, spread=1.5)
    recalls = [neighbor_recall(X, nearest_neighbors(X, 10, search=search, probes=p)[1],
                               queries=400) for p in (1, 4, 32)]
    assert recalls[0] < recalls[2]
    assert recalls[1] <= recalls[2] + 1e-9
    assert recalls[2] > 0.9
    # every reported distance is a true distance
    distances, index = nearest_neighbors(X, 10, search=search, probes=4)
    rows = torch.arange(200)
    true = torch.linalg.vector_norm(X[index[rows]] - X[rows, None, :], dim=2)
    finite = torch.isfinite(distances[rows])
    assert torch.allclose(distances[rows][finite], true[finite], atol=1e-3)


def test_recall_of_a_wrong_graph_is_low():
    X = mixture(2000, 8, seed=4)
    _, index = nearest_neighbors(X, 10, search="exact")
    shuffled = index[torch.randperm(2000, generator=torch.Generator().manual_seed(0))]
    assert neighbor_recall(X, index, queries=200) == pytest.approx(1.0)
    assert neighbor_recall(X, shuffled, queries=200) < 0.05


# ---------------------------------------------------------------- the graph greedy

def truncated_objective(graph, picks):
    """sum_i max_{j in S, j in N(i)} s_ij, from the graph's rows (a NumPy reference)."""
    chosen = np.isin(graph.neighbors, list(picks))
    return float(np.where(chosen, graph.similarity, 0.0).max(axis=1).sum())


def test_sparse_greedy_is_greedy_on_the_truncated_objective():
    X = mixture(300, 5, seed=5)
    graph = NeighborGraph.from_points(X, 12, search="exact")
    order, gains, _ = sparse_greedy(graph, 15, optimizer="lazy")
    picked = []
    for j, gain in zip(order, gains):
        base = truncated_objective(graph, picked) if picked else 0.0
        brute = np.array([truncated_objective(graph, picked + [c]) - base
                          if c not in picked else -np.inf for c in range(300)])
        assert gain == pytest.approx(brute.max(), rel=1e-5)
        assert brute[j] == pytest.approx(brute.max(), rel=1e-5)
        picked.append(j)


def test_full_graph_reproduces_the_dense_greedy():
    X = torch.randn(400, 6, generator=torch.Generator().manual_seed(6))
    dense = adacore.facility_location(X, 25, optimizer="naive")
    sparse = adacore.facility_location(X, 25, neighbors=400, neighbor_search="exact")
    assert sparse.metadata["engine"] == "sparse"
    assert list(sparse.indices) == list(dense.indices)
    assert np.allclose(sparse.gains, dense.gains, rtol=1e-4)
    assert np.array_equal(sparse.weights, dense.weights)


@pytest.mark.parametrize("neighbors", [10, 20, 50])
@pytest.mark.parametrize("optimizer", ["lazy", "stochastic"])
def test_sparse_objective_within_two_percent_of_dense(neighbors, optimizer):
    for seed, (n, d, k) in enumerate([(2000, 10, 20), (3000, 32, 30), (3000, 16, 150)]):
        X = mixture(n, d, clusters=20, seed=10 + seed, spread=2.0)
        dense = adacore.facility_location(X, k)
        sparse = adacore.facility_location(X, k, neighbors=neighbors, optimizer=optimizer,
                                           seed=seed)
        ratio = dense_objective(X, sparse.indices) / dense_objective(X, dense.indices)
        assert ratio >= 0.98, (n, d, k, ratio)


def test_sparse_weights_are_nearest_pick_cluster_sizes():
    X = mixture(1500, 4, seed=7)
    for neighbors in (5, 60):    # mostly uncovered by the graph / mostly covered
        coreset = adacore.facility_location(X, 40, neighbors=neighbors,
                                            neighbor_search="exact")
        picks = torch.as_tensor(coreset.indices)
        nearest = torch.cdist(X.double(), X[picks].double()).argmin(dim=1)
        nearest[picks] = torch.arange(40)
        expected = torch.bincount(nearest, minlength=40).numpy()
        assert coreset.weights.sum() == 1500
        assert np.array_equal(coreset.weights, expected)
        assert len(set(coreset.indices.tolist())) == 40


def test_stochastic_sparse_is_seeded():
    X = mixture(3000, 8, seed=8)
    a = adacore.facility_location(X, 30, neighbors=15, optimizer="stochastic", seed=3)
    b = adacore.facility_location(X, 30, neighbors=15, optimizer="stochastic", seed=3)
    c = adacore.facility_location(X, 30, neighbors=15, optimizer="stochastic", seed=4)
    assert np.array_equal(a.indices, b.indices) and np.array_equal(a.weights, b.weights)
    assert not np.array_equal(a.indices, c.indices)


def test_duplicates_and_constant_data():
    X = torch.zeros(50, 3)
    coreset = adacore.facility_location(X, 5, neighbors=4)
    assert len(set(coreset.indices.tolist())) == 5 and coreset.weights.sum() == 50
    assert graph_constant(torch.zeros(3, 2)) == 1.0
    assert graph_constant(torch.tensor([[0.0, math.inf]])) == 1.0


def test_per_class_sparse_budgets_exact():
    X = mixture(2400, 6, seed=9)
    labels = np.repeat(np.arange(3), 800)
    budgets = {0: 7, 1: 9, 2: 11}
    coreset = per_class_facility_location(X, labels, budgets, neighbors=16)
    assert coreset.metadata["engine"] == "sparse"
    for label, budget in budgets.items():
        picked = coreset.indices[labels[coreset.indices] == label]
        assert len(picked) == budget
    assert coreset.weights.sum() == 2400
    strategy = adacore.Craig(0.01, neighbors=16)
    assert len(strategy.select(X, labels)) == 24


# ---------------------------------------------------------------- memory bounds

def test_parse_memory():
    assert parse_memory("4GB") == 4 * 10**9
    assert parse_memory("512MiB") == 512 * 2**20
    assert parse_memory(" 2.5 g ") == int(2.5e9)
    assert parse_memory(1024) == 1024
    for bad in ("", "4XB", "-1GB", 0, "GB", True, "1e3"):
        with pytest.raises(ValueError, match="max_memory"):
            parse_memory(bad)


def test_dense_over_the_limit_switches_to_sparse_with_a_warning():
    X = mixture(6000, 8, seed=11)
    limit = dense_bytes(6000, 30) - 1
    with pytest.warns(ResourceWarning, match="nearest neighbours"):
        coreset = adacore.facility_location(X, 30, max_memory=limit)
    assert coreset.metadata["engine"] == "sparse"
    # about 4 n / k = 800 wanted, lowered until the graph fits under the limit
    assert 32 <= coreset.metadata["neighbors"] < 800
    assert sparse_bytes(6000, 8, coreset.metadata["neighbors"]) <= limit
    assert auto_neighbors(6000, 8, 30, 10**12) == 800
    assert auto_neighbors(100, 8, 50, 10**12) == 32 and auto_neighbors(20, 8, 1, 10**12) == 20
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert adacore.facility_location(X, 30, max_memory=dense_bytes(6000, 30)
                                         ).metadata["engine"] == "dense"


def test_over_every_limit_is_refused_before_allocating():
    with pytest.raises(ValueError, match="max_memory.*7,000,000 points"):
        plan_engine(7_000_000, 64, 70_000, neighbors=None, max_memory="1GB")
    with pytest.raises(ValueError, match="max_memory"):
        adacore.facility_location(np.zeros((6000, 3), np.float32), 3, max_memory="1MB")
    assert plan_engine(7_000_000, 64, 70_000, neighbors=None, max_memory="64GB")["engine"] \
        == "sparse"


def test_bad_sparse_arguments():
    X = np.zeros((20, 2), np.float32)
    with pytest.raises(ValueError, match="neighbors"):
        adacore.facility_location(X, 3, neighbors=0)
    with pytest.raises(ValueError, match="neighbor_search"):
        adacore.facility_location(X, 3, neighbors=3, neighbor_search="annoy")
    with pytest.raises(ValueError, match="probes"):
        adacore.facility_location(X, 3, neighbors=3, probes=0)


def test_cli_select_sparse_and_memory_bounds(tmp_path, capsys):
    from adacore.cli import main
    from adacore.coreset import Coreset

    X = mixture(3000, 6, seed=12).numpy()
    labels = np.repeat(np.arange(2), 1500)
    np.save(tmp_path / "g.npy", X)
    np.save(tmp_path / "y.npy", labels)
    common = ["select", "--vectors", str(tmp_path / "g.npy"), "--labels",
              str(tmp_path / "y.npy"), "--fraction", "0.02", "--method", "craig"]
    assert main(common + ["--out", str(tmp_path / "a.npz"), "--neighbors", "12"]) == 0
    assert "engine             sparse" in capsys.readouterr().out
    assert Coreset.load(tmp_path / "a.npz").weights.sum() == 3000
    # a class's dense engine (about 18 MB for 1,500 points) over a 12 MB limit: sparse, warned
    with pytest.warns(ResourceWarning):
        assert main(common + ["--out", str(tmp_path / "b.npz"), "--max-memory", "12MB"]) == 0
    assert "engine             sparse" in capsys.readouterr().out
    assert main(common + ["--out", str(tmp_path / "c.npz"), "--max-memory", "100kB"]) == 2
    assert "max_memory" in capsys.readouterr().err
    assert not (tmp_path / "c.npz").exists()
    assert main(common + ["--out", str(tmp_path / "d.npz"), "--max-memory", "lots"]) == 2
    assert main(common[:-1] + ["random", "--out", str(tmp_path / "e.npz"),
                               "--neighbors", "5"]) == 2
    assert "--neighbors" in capsys.readouterr().err


def test_cli_run_with_the_sparse_engine_and_a_memory_bound(tmp_path, capsys):
    from adacore.cli import main

    common = ["run", "--dataset", "digits", "--model", "mlp", "--method", "craig",
              "--fraction", "0.1", "--epochs", "1", "--quiet", "--device", "cpu"]
    assert main(common + ["--neighbors", "8", "--out", str(tmp_path / "a")]) == 0
    assert (tmp_path / "a" / "run.json").exists()
    # each class (about 130 points) fits neither engine in 10 kB: refused, one line
    assert main(common + ["--max-memory", "10kB", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "max_memory" in err
    assert main(common + ["--max-memory", "plenty", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_default_limit_respects_free_gpu_memory(monkeypatch):
    from adacore.selection.memory import default_memory_limit, resolve_memory_limit

    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**9, 8 * 10**9))
    assert resolve_memory_limit(None, torch.device("cuda:0")) == min(default_memory_limit(),
                                                                     8 * 10**8)
    assert resolve_memory_limit(None, torch.device("cpu")) == default_memory_limit()
    assert resolve_memory_limit("2GB", torch.device("cuda:0")) == 2 * 10**9
