"""`adacore bench gpu` (adacore.bench.gpu_check): end to end, and its float64 /
brute-force references.

With ``--device cpu`` the check's CPU-vs-device comparisons compare the CPU with
itself, so this test asserts on the checks against references that share no code with
the library: a float64 NumPy greedy, brute-force subset enumeration, brute-force
neighbours and the model run in float64. The references themselves are checked here
on hand-computed cases, and the checks are shown to flag a wrong engine.
"""

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from adacore import facility_location

COMMAND = [sys.executable, "-m", "adacore.cli", "bench", "gpu"]


@pytest.fixture(scope="module")
def gpu_check():
    return importlib.import_module("adacore.bench.gpu_check")


def test_gpu_check_self_test_on_cpu(tmp_path):
    done = subprocess.run([*COMMAND, "--device", "cpu", "--n", "128", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["failures"] == []
    reference = report["reference"]
    assert reference["facility_location"]["same_picks"]
    assert reference["facility_location"]["same_weights"]
    assert reference["facility_location"]["brute_force_ratio_k1"] == pytest.approx(1.0)
    assert reference["facility_location"]["brute_force_ratio_min"] >= 1 - 1 / np.e
    assert reference["sparse"]["neighbor_overlap"] >= 0.999
    assert reference["sparse"]["same_sparse_picks"]
    # float32 against float64: close, and not zero (zero would mean one path twice)
    assert 0 < reference["probe"]["grads_relative_difference"] < 1e-4
    assert 0 < reference["probe"]["hessian_relative_difference"] < 1e-4
    assert reference["probe"]["adacore_cost_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert "compare the CPU with itself" in report["note"]
    assert report["timing"]["coreset_size"] >= 10
    assert "all checks passed" in done.stdout


def test_gpu_check_without_cuda_says_so(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([*COMMAND, "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "no CUDA device" in done.stdout
    assert not (tmp_path / "gpu_check.json").exists()


# --------------------------------------------------------------------------- references

LINE = np.array([[0.0], [1.0], [2.0], [10.0], [11.0]])


def test_float64_greedy_by_hand(gpu_check):
    # total distances 24, 21, 20, 28, 31: the first pick is the point at 2. Then the gain
    # of j is sum_i max(0, d_i2 - d_ij): 2, 2, -, 16, 16 (a tie: the lower index, 10)
    distances = gpu_check.distances64(LINE)
    assert distances[0, 4] == 11.0 and distances[3, 1] == 9.0
    picks = gpu_check.greedy64(distances.max() - distances, 2)
    assert picks == [2, 3]
    assert gpu_check.cluster_sizes64(distances, picks).tolist() == [3.0, 2.0]
    assert gpu_check.covering_cost64(distances, picks) == pytest.approx(2 + 1 + 0 + 0 + 1)
    # the best pair is {1, 3} (points 1 and 10), covering cost 1 + 0 + 1 + 0 + 1 = 3, so
    # F = 5 * 11 - 3 = 52, where the greedy's pair scores 55 - 4 = 51 (>= (1 - 1/e) 52)
    assert gpu_check.brute_force_best(distances.max() - distances, 2) == pytest.approx(52.0)
    # the library agrees with the hand computation
    coreset = facility_location(LINE.astype(np.float32), 2, optimizer="naive")
    assert coreset.indices.tolist() == [2, 3] and coreset.weights.tolist() == [3.0, 2.0]


def test_knn_similarity_by_hand(gpu_check):
    distances = gpu_check.distances64(LINE)
    similarity = gpu_check.knn_similarity64(distances, 2)
    # each point keeps itself and its nearest: 0-1, 1-0 (tie with 2: lower index),
    # 2-1, 3-4, 4-3, all at distance 1 except self; c = 1
    expected = np.zeros((5, 5))
    for i, j in [(0, 1), (1, 0), (2, 1), (3, 4), (4, 3)]:
        expected[i, i] = 1.0
        expected[i, j] = 0.0
    assert np.array_equal(similarity, expected)


def test_logit_terms64_against_a_hand_softmax(gpu_check):
    model = torch.nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]]))
    x = torch.tensor([[np.log(2.0), np.log(3.0)]])
    grads, diag = gpu_check.logit_terms64(model, x, torch.tensor([1]))
    # logits log 2, log 3, 0: p = 2/6, 3/6, 1/6
    p = np.array([2, 3, 1]) / 6
    np.testing.assert_allclose(grads[0], p - [0, 1, 0], rtol=1e-6)
    np.testing.assert_allclose(diag[0], p * (1 - p), rtol=1e-6)


def test_reference_checks_flag_a_wrong_engine(gpu_check, monkeypatch):
    def first_k(X, k, **options):
        coreset = facility_location(X, k, **options)
        coreset.indices = np.arange(k, dtype=np.int64)
        return coreset

    monkeypatch.setattr(gpu_check, "facility_location", first_k)
    result = gpu_check.reference_facility_location(torch.device("cpu"))
    assert not result["same_picks"]
    assert result["brute_force_ratio_min"] < 1.0
