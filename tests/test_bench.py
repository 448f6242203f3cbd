"""The benchmarks run end to end and report every peer (tiny sizes: nothing is timed)."""

import subprocess
import sys


def test_bench_facility_runs_and_prints_ratios():
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "bench", "facility", "--n",
                             "300", "--d", "4", "--k", "3", "--repeats", "1", "--settle", "0"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| 3 |")]
    assert rows and rows[0].startswith("| 3 | adacore |") and "| 1.00 | 1.0000 |" in rows[0]


def test_bench_scaling_and_sparse_run_in_child_processes():
    scaling = subprocess.run([sys.executable, "-m", "adacore.cli", "bench", "scaling",
                              "--sizes", "500", "--dense-limit", "500", "--d", "8",
                              "--fraction", "0.02"], capture_output=True, text=True,
                             timeout=300)
    assert scaling.returncode == 0, scaling.stderr
    rows = {line.split("|")[2].strip(): line for line in scaling.stdout.splitlines()
            if line.startswith("| 500 |")}
    assert {"dense", "sparse"} <= set(rows) and "failed" not in scaling.stdout
    assert rows["dense"].rstrip().endswith("| 1.000 |")      # dense against itself
    sparse = subprocess.run([sys.executable, "-m", "adacore.cli", "bench", "sparse", "--n",
                             "3000", "--d", "8", "--search", "ivf", "--data", "mixture"],
                            capture_output=True, text=True, timeout=300)
    assert sparse.returncode == 0, sparse.stderr
    row = [line for line in sparse.stdout.splitlines() if line.startswith("| mixture | ivf")]
    assert row and "failed" not in row[0]
    recall = float(row[0].split("|")[6])
    assert 0.0 < recall <= 1.0
