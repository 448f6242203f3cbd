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
