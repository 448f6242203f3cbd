"""Progress on stderr: a line per epoch when it is not a terminal, run i of N in compare."""

import io
import json
import os
import re
import subprocess
import sys

import pytest

from adacore.experiments.runner import compare
from adacore.training.trainer import _progress

DIGITS = dict(dataset="digits", model="mlp", fraction=0.1, epochs=2, select_every=2,
              batch_size=32, lr=0.1, device="cpu")
EPOCH_LINE = re.compile(r"^(\w+) seed (\d+) epoch (\d+)/(\d+): val (\d\.\d{3}) test "
                        r"(\d\.\d{3}), select \d+\.\d s, train \d+\.\d s$")


def epoch_lines(text):
    return [match.groups() for match in map(EPOCH_LINE.match, text.splitlines()) if match]


def logged(folder):
    """(epoch, val, test) as metrics.jsonl holds them, rounded as the lines print them."""
    rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [(str(row["epoch"]), f"{row['val_accuracy']:.3f}", f"{row['test_accuracy']:.3f}")
            for row in rows]


def test_a_piped_run_prints_each_epoch_as_it_ends(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "adacore.cli", "run", "--dataset", "digits", "--model",
               "mlp", "--method", "craig", "--epochs", "3", "--select-every", "2",
               "--fraction", "0.1", "--device", "cpu", "--seed", "1", "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = epoch_lines(done.stderr)
    assert [line[:4] for line in lines] == [("craig", "1", str(e), "3") for e in (1, 2, 3)]
    assert [(line[2], line[4], line[5]) for line in lines] == logged(out)
    # only on stderr; stdout keeps the one summary line
    assert not epoch_lines(done.stdout) and len(done.stdout.splitlines()) == 1


class Terminal(io.StringIO):
    def isatty(self):
        return True


ROW = {"epoch": 1, "val_accuracy": 0.5, "test_accuracy": 0.25, "select_seconds": 1.25,
       "train_seconds": 0.5}


@pytest.mark.parametrize("stream, quiet, expected", [
    (io.StringIO, False, "lines"), (Terminal, False, "bar"),
    (io.StringIO, True, "nothing"), (Terminal, True, "nothing")])
def test_a_bar_on_a_terminal_lines_elsewhere(monkeypatch, stream, quiet, expected):
    err = stream()
    monkeypatch.setattr(sys, "stderr", err)
    progress = _progress(range(0, 2), total=2, initial=0, quiet=quiet, desc="random seed 3")
    for epoch in progress:
        progress.show({**ROW, "epoch": epoch + 1})
    text = err.getvalue()
    lines = ["random seed 3 epoch 1/2: val 0.500 test 0.250, select 1.2 s, train 0.5 s",
             "random seed 3 epoch 2/2: val 0.500 test 0.250, select 1.2 s, train 0.5 s"]
    if expected == "lines":
        assert text.splitlines() == lines
    elif expected == "bar":
        assert "random seed 3" in text and "epoch" in text and "val=0.500" in text
        assert not epoch_lines(text.replace("\r", "\n"))
    else:
        assert text == ""


def test_compare_counts_its_runs_and_estimates_the_rest(tmp_path, capsys):
    compare(DIGITS, ["random", "craig"], [0], tmp_path)
    err = capsys.readouterr().err.splitlines()
    first = err.index("run 1 of 2: random seed 0")
    second = err.index("run 2 of 2: craig seed 0")
    estimates = [i for i, line in enumerate(err) if re.fullmatch(
        r"about \d+ s left, roughly: 1 more run at \d+ s, the mean of the 1 run this "
        r"comparison trained so far", line)]
    # each run's epochs between its count and the next; the estimate after the first run
    # only, none after the last
    where = {method: [i for i, line in enumerate(err)
                      if line.startswith(f"{method} seed 0 epoch")]
             for method in ("random", "craig")}
    assert first < where["random"][0] and where["random"][-1] < estimates[0] < second
    assert second < where["craig"][0] and len(estimates) == 1
    epochs = epoch_lines("\n".join(err))
    assert [line[:3] for line in epochs] == [("random", "0", "1"), ("random", "0", "2"),
                                             ("craig", "0", "1"), ("craig", "0", "2")]
    assert {line[3] for line in epochs} == {"2"}
    # resumed: both runs read back, still counted, nothing left to estimate
    compare(DIGITS, ["random", "craig"], [0], tmp_path, resume=True)
    err = capsys.readouterr().err.splitlines()
    assert err == ["run 1 of 2: random seed 0, finished before (read back)",
                   "run 2 of 2: craig seed 0, finished before (read back)"]
    # quiet: neither counts nor epochs, the one result line a run stays
    compare(DIGITS, ["random"], [1], tmp_path / "quiet", quiet=True)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("   random seed 1: test ")
