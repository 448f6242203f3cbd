"""Outputs (issue 14): nothing but a regular file is ever replaced; a write the system
refuses is one InputError naming the file; a killed write's temporaries are cleaned at
the next write to the same place. Device nodes are only ever made here, in tmp_path."""

import fcntl
import os
import subprocess
import sys

import numpy as np
import pytest

from adacore import Coreset, InputError
from adacore.atomic import atomic_write_bytes, remove_stale_temporaries
from adacore.training import TrainConfig, Trainer
from adacore.training.checkpoint import append_jsonl
from adacore.training.lock import FolderLock

TINY = dict(dataset="digits", model="mlp", method="random", fraction=0.1, epochs=1,
            select_every=1, batch_size=32, lr=0.1)


def planted(tmp_path, kind, name="target"):
    """A non-regular file at tmp_path/name; what it must still be afterwards."""
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        (tmp_path / "elsewhere").write_bytes(b"keep me")
        path.symlink_to(tmp_path / "elsewhere")
    elif kind == "folder":
        path.mkdir()
    elif kind == "device":
        try:
            os.mknod(path, 0o600 | 0o020000, os.makedev(1, 3))   # our own /dev/null twin
        except PermissionError:
            pytest.skip("making a device node needs root")
    return path


def unchanged(path, kind, tmp_path):
    checks = {"fifo": path.is_fifo, "symlink": path.is_symlink, "folder": path.is_dir,
              "device": path.is_char_device}
    assert checks[kind](), f"{path} is no longer a {kind}"
    if kind == "symlink":
        assert (tmp_path / "elsewhere").read_bytes() == b"keep me"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


KINDS = ["fifo", "symlink", "folder", "device"]


@pytest.mark.parametrize("kind", KINDS)
def test_an_atomic_write_never_replaces_what_is_not_a_regular_file(tmp_path, kind):
    path = planted(tmp_path, kind)
    with pytest.raises(InputError, match="expected a regular file or nothing"):
        atomic_write_bytes(path, b"data")
    unchanged(path, kind, tmp_path)
    if kind != "folder":
        with pytest.raises(InputError):
            append_jsonl(path, {"epoch": 1})      # a FIFO would block, a link be followed
        unchanged(path, kind, tmp_path)


@pytest.mark.parametrize("kind", KINDS)
def test_cli_select_refuses_such_an_out_with_exit_2(tmp_path, kind):
    rng = np.random.default_rng(0)
    np.save(tmp_path / "X.npy", rng.standard_normal((40, 3)).astype(np.float32))
    np.save(tmp_path / "y.npy", np.arange(40) % 2)
    path = planted(tmp_path, kind, "c.npz")
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "select", "--vectors",
                             "X.npy", "--labels", "y.npy", "--fraction", "0.2", "--method",
                             "random", "--out", "c.npz"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to replace it" in lines[0], lines
    unchanged(path, kind, tmp_path)


def test_an_out_under_a_file_or_in_a_read_only_folder_is_one_input_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(InputError, match="a parent of this path is a file"):
        atomic_write_bytes(tmp_path / "file" / "c.npz", b"data")
    with pytest.raises(InputError, match="a parent of this path is a file"):
        Trainer(TrainConfig(**TINY), tmp_path / "file" / "run", quiet=True).run()
    if os.geteuid() != 0:                        # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(InputError, match="cannot write it"):
            atomic_write_bytes(locked / "c.npz", b"data")


@pytest.mark.parametrize("name, kind", [("metrics.jsonl", "fifo"),
                                        ("checkpoint.pt", "symlink"),
                                        ("run.json", "folder"), (".lock", "fifo")])
def test_a_run_refuses_a_folder_with_a_planted_file(tmp_path, name, kind):
    run = tmp_path / "run"
    run.mkdir()
    path = planted(run, kind, name)
    with pytest.raises(InputError, match="refusing to replace it"):
        Trainer(TrainConfig(**TINY), run, quiet=True).run()
    unchanged(path, kind, run)


# -- temporaries of killed writes: removed at the next write to the same place --

@pytest.mark.parametrize("name", ["results.json", "diagnosis.json", "c.npz"])
def test_the_next_write_removes_what_a_killed_write_left(tmp_path, name):
    stale = [tmp_path / f".{name}.k1ll3d_{i}.tmp" for i in range(2)]
    for path in stale:
        path.write_bytes(b"half")
    other = tmp_path / ".other.json.abc.tmp"            # another file's: kept
    other.write_bytes(b"x")
    if name.endswith(".npz"):
        Coreset(indices=[0, 2], weights=[1.0, 2.0], gains=[0.5, 0.1]).save(tmp_path / name)
    else:
        atomic_write_bytes(tmp_path / name, b"{}")
    assert not any(path.exists() for path in stale)
    assert other.exists()


def test_a_live_writers_temporary_is_left_alone(tmp_path):
    live = tmp_path / ".results.json.l1ve.tmp"
    descriptor = os.open(live, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)            # as atomic_write holds it
        atomic_write_bytes(tmp_path / "results.json", b"{}")
        assert live.exists()
        assert remove_stale_temporaries(tmp_path, "results.json", unlocked_only=True) == []
    finally:
        os.close(descriptor)
    assert remove_stale_temporaries(tmp_path, "results.json", unlocked_only=True) == [live]


def test_the_lock_file_of_a_folder_is_still_a_lock(tmp_path):
    with FolderLock(tmp_path / "c"):
        with pytest.raises(InputError, match="in use"):
            with FolderLock(tmp_path / "c"):
                pass
