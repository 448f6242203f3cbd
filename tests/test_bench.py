"""The benchmarks' reported quantities against brute-force recomputations (nothing is timed).

Each benchmark reports, beside its seconds, a number that says how good the answer was:
the facility-location objective of every library's picks, the covering cost of the
dense and sparse engines and the recall of the neighbour graph (``bench scaling`` /
``bench sparse``), and the gradient error of a selection round (``bench round``). Here
each is recomputed in float64 NumPy from what the benchmark returned (its picks, its
coreset), by enumeration where the inputs are tiny, so a wrong formula or a wrong
ratio fails; one run of the command line checks the wiring.
"""

import itertools
import subprocess
import sys

import numpy as np
import pytest
import torch

from adacore.bench import facility_location as facility_bench
from adacore.bench import scaling
from adacore.bench.selection_round import round_error, selection_round
from adacore.models import build_model
from adacore.selection.neighbors import nearest_neighbors


def distances64(X):
    X = np.asarray(X, dtype=np.float64)
    return np.sqrt(((X[:, None, :] - X[None, :, :]) ** 2).sum(axis=2))


def objective64(distances, picks):
    """F(S) = sum_i max_{j in S} (c - d_ij), c the largest distance."""
    return float((distances.max() - distances[:, list(picks)]).max(axis=1).sum())


def cost64(distances, picks):
    return float(distances[:, list(picks)].min(axis=1).sum())


# --------------------------------------------------------------------------- facility

def test_facility_bench_objective_against_brute_force():
    X = np.random.default_rng(3).standard_normal((12, 3)).astype(np.float32)
    peers = {"adacore": facility_bench.run_adacore,
             "first points": lambda points, k: np.arange(k)}
    rows = facility_bench.compare(X, [1, 3], peers, repeats=1, settle=0.0)
    assert [(row["k"], row["library"]) for row in rows] == [
        (1, "adacore"), (1, "first points"), (3, "adacore"), (3, "first points")]
    distances = distances64(X)
    for row in rows:
        assert row["objective"] == pytest.approx(objective64(distances, row["picks"]),
                                                 rel=1e-5)
    for k, adacore, other in [(1, rows[0], rows[1]), (3, rows[2], rows[3])]:
        assert other["picks"] == list(range(k))
        assert other["objective_ratio"] == pytest.approx(
            objective64(distances, range(k)) / objective64(distances, adacore["picks"]),
            rel=1e-5)
        best = max(objective64(distances, subset)
                   for subset in itertools.combinations(range(12), k))
        if k == 1:   # one pick: greedy is exact
            assert adacore["objective"] == pytest.approx(best, rel=1e-6)
        else:        # the greedy guarantee
            assert adacore["objective"] >= (1 - 1 / np.e) * best
    assert rows[1]["objective_ratio"] < 1.0      # the first point is not the 1-median


def test_bench_facility_command_prints_one_row_per_library():
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "bench", "facility", "--n",
                             "300", "--d", "4", "--k", "3", "--repeats", "1", "--settle", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "| k | library | seconds | time / adacore | objective / adacore |" in result.stdout
    rows = [line.split("|") for line in result.stdout.splitlines() if line.startswith("| 3 |")]
    assert rows and rows[0][2].strip() == "adacore"
    assert all(float(row[5]) > 0 for row in rows)


# --------------------------------------------------------------------------- scaling

def measure_with_picks(config):
    return scaling.measure({**config, "return_picks": True})


def test_scaling_costs_and_ratio_against_brute_force():
    rows = scaling.scaling_rows([400], d=4, fraction=0.02, neighbors=10, dense_limit=400,
                                run=measure_with_picks)
    by_engine = {row["engine"]: row for row in rows}
    assert {"dense", "sparse"} <= set(by_engine)
    distances = distances64(scaling.make_points(400, 4, "mixture", 0).numpy())
    costs = {}
    for engine in ("dense", "sparse"):
        row = by_engine[engine]
        assert row["k"] == 8 and len(set(row["picks"])) == 8
        costs[engine] = cost64(distances, row["picks"])
        assert row["cost"] == pytest.approx(costs[engine], rel=1e-5)
    assert by_engine["sparse"]["cost_ratio"] == pytest.approx(costs["sparse"] / costs["dense"],
                                                              rel=1e-5)
    # facility location covers better than chance: the dense picks beat random subsets
    rng = np.random.default_rng(0)
    random_costs = [cost64(distances, rng.choice(400, 8, replace=False)) for _ in range(20)]
    assert costs["dense"] < min(random_costs)


def test_scaling_table_prints_the_brute_force_ratio(monkeypatch, capsys):
    monkeypatch.setattr(scaling, "run_child", measure_with_picks)
    scaling.main_scaling(["--sizes", "300", "--dense-limit", "300", "--d", "4",
                          "--fraction", "0.02"])
    rows = {line.split("|")[2].strip(): line.split("|")
            for line in capsys.readouterr().out.splitlines() if line.startswith("| 300 |")}
    assert {"dense", "sparse"} <= set(rows)
    distances = distances64(scaling.make_points(300, 4, "mixture", 0).numpy())
    picks = {engine: measure_with_picks(
        {"n": 300, "d": 4, "data": "mixture", "fraction": 0.02, "engine": engine,
         "optimizer": "stochastic" if engine == "sparse" else "lazy", "neighbors": 10,
         "search": "auto", "probes": 8})["picks"] for engine in ("dense", "sparse")}
    ratio = cost64(distances, picks["sparse"]) / cost64(distances, picks["dense"])
    assert float(rows["sparse"][6]) == pytest.approx(ratio, abs=6e-4)   # 3 decimals


def test_scaling_child_process_reports_the_same_cost():
    config = {"n": 300, "d": 4, "data": "gaussian", "fraction": 0.02, "engine": "dense",
              "objective": True, "return_picks": True}
    result = scaling.run_child(config, timeout=300)
    assert "error" not in result, result
    distances = distances64(scaling.make_points(300, 4, "gaussian", 0).numpy())
    assert result["cost"] == pytest.approx(cost64(distances, result["picks"]), rel=1e-5)
    assert result["peak_bytes"] >= result["baseline_bytes"] > 0


def test_sparse_bench_recall_against_brute_force(monkeypatch, capsys):
    # in-process: the children would measure the same; the printed recall is checked
    monkeypatch.setattr(scaling, "run_child", scaling.measure)
    scaling.main_sparse(["--n", "1000", "--d", "8", "--search", "ivf", "--probes", "1",
                         "--data", "gaussian"])
    rows = [line for line in capsys.readouterr().out.splitlines()
            if line.startswith("| gaussian | ivf")]
    assert rows and "failed" not in rows[0]
    printed = float(rows[0].split("|")[6])
    # the graph the benchmark measured (same search, probes and seed), scored by brute
    # force over all 1,000 points: the share of the true 10 nearest that it holds
    X = scaling.make_points(1000, 8, "gaussian", 0)
    _, index = nearest_neighbors(X, 10, search="ivf", probes=1)
    true = np.argsort(distances64(X.numpy()), axis=1, kind="stable")[:, :10]
    recall = np.mean([len(set(found) & set(exact)) / 10
                      for found, exact in zip(index.numpy(), true)])
    assert printed == pytest.approx(recall, abs=1.5e-3)       # printed to 3 decimals
    assert recall < 1.0                                        # one probe misses some


# --------------------------------------------------------------------------- round

def relative_error64(vectors, indices, weights):
    full = vectors.sum(axis=0)
    return float(np.linalg.norm(full - weights @ vectors[indices]) / np.linalg.norm(full))


@pytest.fixture(scope="module")
def small_model():
    model = build_model("mlp", num_classes=3, input_shape=(5,), seed=0)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(90, 5, generator=generator)
    y = torch.arange(90) % 3
    with torch.no_grad():
        model.eval()
        logits = model(x).double().numpy()
        features = model.features(x).double().numpy()
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - np.eye(3)[y.numpy()]
    return model, x, y, p, residual, features


def test_round_error_of_adacore_against_numpy(small_model):
    model, x, y, p, residual, _ = small_model
    coreset = selection_round(model, x, y, "adacore", "logits", 0.1)
    assert 0 < coreset.metadata["probe_seconds"]
    # AdaCore's first round: u = g / (|d| + 1e-4), g = p - y, d = p (1 - p)
    u = residual / (p * (1 - p) + 1e-4)
    expected = relative_error64(u, coreset.indices, coreset.weights)
    assert round_error(coreset) == pytest.approx(expected, rel=1e-4)
    assert expected != pytest.approx(relative_error64(residual, coreset.indices,
                                                      coreset.weights), rel=1e-2)


def test_round_error_of_craig_in_the_last_layer_against_numpy(small_model):
    model, x, y, p, residual, features = small_model
    coreset = selection_round(model, x, y, "craig", "last_layer", 0.1)
    # last-layer gradient of example i: (p_i - y_i) (x) [h_i, 1] (weights and bias)
    with_bias = np.hstack([features, np.ones((features.shape[0], 1))])
    grads = (residual[:, :, None] * with_bias[:, None, :]).reshape(len(residual), -1)
    expected = relative_error64(grads, coreset.indices, coreset.weights)
    assert round_error(coreset) == pytest.approx(expected, rel=1e-4)
    assert round_error(None) is None


# --------------------------------------------------------------------------- the command

def test_bench_command_dispatch_all_and_exit_status(monkeypatch):
    # `adacore bench NAME OPTIONS` calls NAME's function with OPTIONS; `all` runs the four
    # side-by-side benchmarks in order (what `make bench` runs) and not the GPU check; a
    # check's non-zero status is the command's exit status
    import importlib

    from adacore import cli
    from adacore.bench import ALL, BENCHMARKS

    assert ALL == ("facility", "round", "sparse", "scaling")
    assert set(BENCHMARKS) == {*ALL, "gpu"}
    calls = []
    for name, target in BENCHMARKS.items():
        module, function = target.split(":")
        status = 1 if name == "gpu" else None
        monkeypatch.setattr(importlib.import_module(module), function,
                            lambda argv, name=name, status=status:
                            calls.append((name, argv)) or status)
    assert cli.main(["bench", "all"]) == 0
    assert calls == [(name, []) for name in ALL]
    calls.clear()
    assert cli.main(["bench", "gpu", "--device", "cpu", "--n", "8"]) == 1
    assert calls == [("gpu", ["--device", "cpu", "--n", "8"])]


@pytest.mark.parametrize("options, named", [(["--batch-size", "0"], "--batch-size"),
                                            (["--repeats", "0"], "--repeats"),
                                            (["--fraction", "1.5"], "--fraction")])
def test_bench_round_refuses_bad_options_before_loading_anything(options, named, capsys,
                                                                  monkeypatch):
    # one line naming the option, exit status 2, and no data loaded or model trained
    from adacore import cli
    from adacore.bench import selection_round as module

    def never(*args, **kwargs):
        raise AssertionError("loaded the data before checking the options")

    monkeypatch.setattr(module, "load_dataset", never)
    assert cli.main(["bench", "round", *options]) == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and named in error[0]
