"""benchmarks/gpu_check.py runs end to end (on the CPU here; on CUDA where there is one)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_self_test_on_cpu(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--n", "128",
                           "--out", str(tmp_path)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["failures"] == []
    assert report["facility_location"]["same_picks"] and report["sparse"]["same_picks"]
    assert report["probe"]["grads_relative_difference"] == 0.0
    assert report["timing"]["coreset_size"] >= 10
    assert "all checks passed" in done.stdout


def test_gpu_check_without_cuda_says_so(tmp_path):
    pytest.importorskip("torch")
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    done = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "no CUDA device" in done.stdout
    assert not (tmp_path / "gpu_check.json").exists()
