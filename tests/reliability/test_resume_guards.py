"""Resumes that used to lose or refuse a run (issue 14): a non-finite stop keeps a
checkpoint that resumes (same flags, or a lower lr); a finished run whose checkpoint is
gone is never overwritten; a refused pickle is one line; a dead scheduler fails fast."""

import json
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from adacore import InputError
from adacore.training import TrainConfig, Trainer
from adacore.training import trainer as trainer_module
from adacore.training.checkpoint import load_checkpoint, read_jsonl
from adacore.training.trainer import NONFINITE_MARKER, nonfinite_entries

BASE = dict(dataset="digits", model="mlp", method="random", fraction=0.2, epochs=4,
            select_every=1, batch_size=32, schedule="cosine")


def test_a_diverging_run_keeps_only_finite_checkpoints_and_resumes(tmp_path):
    out = tmp_path / "run"
    config = TrainConfig(**BASE, lr=1e3)             # diverges within a few epochs
    with pytest.raises(InputError, match="became (NaN|nan|inf).*resume it with a lower --lr"):
        Trainer(config, out, quiet=True).run()
    assert (out / NONFINITE_MARKER).exists()
    rows = read_jsonl(out / "metrics.jsonl")
    assert all(np.isfinite([row["train_loss"], row["val_loss"], row["test_loss"]]).all()
               for row in rows)
    if (out / "checkpoint.pt").exists():
        state = load_checkpoint(out / "checkpoint.pt")
        assert nonfinite_entries(state["model"], state["optimizer"]) is None
        assert state["loader"]["epoch"] == len(rows)
    # the same flags are no "other settings": the run replays to the same stop
    with pytest.raises(InputError, match="resume it with a lower --lr"):
        Trainer(config, out, quiet=True).run(resume=True)
    # a higher lr, or a lower one with another change, is refused as other settings
    for other in (dict(lr=1e4), dict(lr=1e-3, momentum=0.5)):
        with pytest.raises(InputError, match="other settings"):
            Trainer(TrainConfig(**{**BASE, "lr": 1e3, **other}), out, quiet=True).run(
                resume=True)


def test_a_lower_lr_continues_a_stopped_run_on_the_lower_schedule(tmp_path, monkeypatch):
    reference = Trainer(TrainConfig(**BASE, lr=0.05), tmp_path / "reference",
                        quiet=True).run()
    out = tmp_path / "run"
    real_epoch = trainer_module.Trainer._epoch

    def diverge_at_three(self, *args):          # as a loss that became NaN in epoch 3
        row = real_epoch(self, *args)
        if row["epoch"] == 3:
            row["val_loss"] = float("nan")
        return row

    monkeypatch.setattr(trainer_module.Trainer, "_epoch", diverge_at_three)
    with pytest.raises(InputError, match="val loss became NaN or inf in epoch 3.*epoch 2"):
        Trainer(TrainConfig(**BASE, lr=0.1), out, quiet=True).run()
    monkeypatch.setattr(trainer_module.Trainer, "_epoch", real_epoch)
    record = Trainer(TrainConfig(**BASE, lr=0.05), out, quiet=True).run(resume=True)
    assert [row["epoch"] for row in record["history"]] == [1, 2, 3, 4]
    assert record["lr_changes"] == [{"after_epoch": 2, "from": 0.1, "to": 0.05}]
    # epochs 3 and 4 follow the cosine schedule of lr 0.05 exactly
    lrs = [row["lr"] for row in record["history"]]
    assert lrs[2:] == pytest.approx([row["lr"] for row in reference["history"]][2:],
                                    rel=1e-12)
    assert lrs[1] == pytest.approx(2 * reference["history"][1]["lr"], rel=1e-12)
    assert not (out / NONFINITE_MARKER).exists()
    assert json.loads((out / "run.json").read_text())["config"]["lr"] == 0.05
    # and a later resume sees the lower lr as the run's own
    Trainer(TrainConfig(**BASE, lr=0.05), out, quiet=True).run(resume=True)


def test_a_finished_run_without_its_checkpoint_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    tiny = {**BASE, "epochs": 2, "lr": 0.1}
    Trainer(TrainConfig(**tiny), out, quiet=True).run()
    (out / "checkpoint.pt").unlink()
    kept = {name: (out / name).read_bytes() for name in ("run.json", "metrics.jsonl")}
    with pytest.raises(InputError, match="finished run .* used other settings \\(method: "
                                         "stored 'random', given 'craig'"):
        Trainer(TrainConfig(**{**tiny, "method": "craig"}), out, quiet=True).run(resume=True)
    with pytest.raises(InputError, match="finished .* checkpoint.pt is gone"):
        Trainer(TrainConfig(**tiny), out, quiet=True).run(resume=True)
    (out / "run.json").unlink()          # metrics of two epochs and nothing to resume
    with pytest.raises(InputError, match="metrics of several epochs but no checkpoint"):
        Trainer(TrainConfig(**{**tiny, "method": "craig"}), out, quiet=True).run(resume=True)
    assert (out / "metrics.jsonl").read_bytes() == kept["metrics.jsonl"]


def test_a_refused_pickle_in_a_checkpoint_is_one_line(tmp_path):
    out = tmp_path / "run"
    out.mkdir()

    class Payload:
        def __reduce__(self):
            return (print, ("ran",))

    torch.save({"config": {}, "x": Payload()}, out / "checkpoint.pt")
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "run", "--dataset",
                             "digits", "--epochs", "1", "--method", "random", "--quiet",
                             "--out", str(out), "--resume"], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2 and "ran" not in result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "holds objects other than tensors and plain data (Unsupported global: GLOBAL " \
           "builtins.print" in lines[0] or "GLOBAL print" in lines[0], lines
    assert "weights_only" not in lines[0]


def test_a_scheduler_nothing_listens_on_is_refused_at_once():
    pytest.importorskip("distributed")
    from adacore.distributed import greedi
    with socket.socket() as probe:                  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    X = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    for address in (f"tcp://127.0.0.1:{port}", f"127.0.0.1:{port}"):
        started = time.monotonic()
        with pytest.raises(InputError, match="cannot connect to a Dask scheduler.*refused"):
            greedi(X, 4, client=address)
        assert time.monotonic() - started < 3
    with pytest.raises(InputError, match="expected a scheduler address"):
        greedi(X, 4, client="tcp://127.0.0.1:99999")
