"""SIGKILL runs at random points and resume them: every resume ends with the results of
an unbroken run, and no results file is ever left torn.

Each trial (one test per trial, ``kill_trial``: 20 in CI, 200 in soak mode, see
conftest.py) starts a fresh ``adacore run``, SIGKILLs it one or more times and resumes
it with ``--resume`` until it finishes. A kill comes from a fault point
(``ADACORE_FAULT``: before an optimizer step, between a selection's probe and the
strategy, or inside the atomic write of checkpoint.pt, metrics.jsonl or run.json with
the data fsynced and not yet renamed) at a random hit, or from outside after a random
delay. The first kill of trial ``i`` is of kind ``KINDS[i % 6]``, and trials 6-11,
18-23, ... kill at least twice with the second kind rotating too, so 20 trials cover
every kind from a fresh folder and from a resumed one; later kills are drawn. A trial's
draws come from ``random.Random("kill-loop-i")``.

After every kill, each results file present must read completely: metrics.jsonl's
complete lines are JSON rows that repeat the reference's first rows, checkpoint.pt
loads and is at most one epoch behind them, run.json (if there) is the reference's.
A fault-point kill must leave exactly the state its position implies. At the end the
metrics, run.json and the whole checkpoint (weights, optimizer, RNG states, ...) must
equal those of an unbroken run by a real ``python -m adacore.cli`` process, bit for
bit, timings aside.

Runs go through cli_forker.py, which forks each command from a process that has
already imported torch: a fresh interpreter costs 3-5 s, a forked 10-epoch run ~0.3 s.
``test_forked_runs_match_a_fresh_process`` checks that a forked run is a real one.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adacore.atomic import remove_stale_temporaries
from adacore.training.checkpoint import load_checkpoint, read_jsonl
from adacore.validation import InputError

FORKER = Path(__file__).with_name("cli_forker.py")
BATCH_SIZE = 16
SELECT_EVERY = 2
RUN_FLAGS = ["--dataset", "digits", "--model", "mlp", "--fraction", "0.1",
             "--select-every", str(SELECT_EVERY), "--batch-size", str(BATCH_SIZE),
             "--device", "cpu", "--quiet"]
# the method of a trial: AdaCore twice as often as each of the other selecting methods
METHODS = ("adacore", "adacore", "craig", "gradmatch")
# fields that measure time and so differ between any two runs
# the report's wall-clock figures (time to full accuracy, accuracy at equal wall-clock
# time, the share of time selecting) are made of timings as a whole
TIMING_KEYS = frozenset({"select_seconds", "train_seconds", "eval_seconds", "wall_seconds",
                         "total_seconds", "time_to_full_accuracy",
                         "accuracy_at_equal_wall_clock", "selection_share"})
CHECKPOINT_TIMING_KEYS = TIMING_KEYS | {"wall"}   # the checkpoint's totals["wall"]
CHECKPOINT_KEYS = {"config", "model", "optimizer", "scheduler", "loader", "torch_rng",
                   "augment_rng", "totals"}
KINDS = ("train_step", "selection", "write:checkpoint.pt", "write:metrics.jsonl",
         "write:run.json", "outside")
KIND_WEIGHTS = (3, 2, 2, 1, 1, 2)
# what atomic_write leaves when killed between its fsync and its rename
TEMPORARY = re.compile(r"\.(checkpoint\.pt|metrics\.jsonl|run\.json)\.[a-z0-9_]+\.tmp")
CHILD_LIMIT_S = 120.0
START_LIMIT_S = 180.0


def child_env() -> dict:
    """One thread for every run (results depend on the thread count), no fault set."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    env.pop("ADACORE_FAULT", None)
    return env


def run_argv(method: str, epochs: int, out: Path, *, resume: bool = False) -> list[str]:
    return ["run", "--method", method, "--epochs", str(epochs), *RUN_FLAGS, "--out", str(out),
            *(["--resume"] if resume else [])]


def without_timings(value):
    """``value`` with every timing field dropped, at any depth (run.json's history too)."""
    if isinstance(value, dict):
        return {key: without_timings(item) for key, item in value.items()
                if key not in TIMING_KEYS}
    if isinstance(value, list):
        return [without_timings(item) for item in value]
    return value


def state_differences(a, b, where: str = "checkpoint") -> list[str]:
    """Where two checkpoint states differ, bit for bit, timings aside."""
    if isinstance(a, dict):
        if not isinstance(b, dict) or a.keys() != b.keys():
            return [f"{where}: keys {sorted(map(str, a))} != "
                    f"{sorted(map(str, b)) if isinstance(b, dict) else type(b).__name__}"]
        return [difference for key in a if key not in CHECKPOINT_TIMING_KEYS
                for difference in state_differences(a[key], b[key], f"{where}/{key}")]
    if isinstance(a, (list, tuple)):
        if type(a) is not type(b) or len(a) != len(b):
            return [f"{where}: {type(a).__name__} of {len(a)} != {b!r:.80}"]
        return [difference for index, (x, y) in enumerate(zip(a, b))
                for difference in state_differences(x, y, f"{where}/{index}")]
    if isinstance(a, (torch.Tensor, np.ndarray)):
        same = (type(a) is type(b) and a.dtype == b.dtype and a.shape == b.shape
                and np.asarray(a).tobytes() == np.asarray(b).tobytes())
        return [] if same else [f"{where}: arrays differ"]
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return []
    return [] if type(a) is type(b) and a == b else [f"{where}: {a!r:.60} != {b!r:.60}"]


def require(condition: bool, message: str) -> None:
    """A precondition of a test, reported as such when it does not hold."""
    if not condition:
        pytest.fail(message)


# ------------------------------------------------------------------------ the forker

class CliForker:
    """cli_forker.py in a process of its own; :meth:`start` forks one ``adacore`` command.

    The process is started at once and waited for on the first request, so a caller
    can do other work (a fresh reference run) while torch imports.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.stderr_path = folder / "forker-stderr.txt"
        with open(self.stderr_path, "wb") as stderr:
            self.process = subprocess.Popen([sys.executable, str(FORKER)], cwd=folder,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=stderr, env=child_env(), text=True)
        self.ready = False

    def _tail(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-2000:]

    def _reply(self, limit_s: float) -> dict:
        # one request is answered at a time, so no reply waits in the pipe's buffer
        if not select.select([self.process.stdout], [], [], limit_s)[0]:
            raise RuntimeError(f"cli_forker.py gave no answer in {limit_s} s: {self._tail()}")
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"cli_forker.py died: {self._tail()}")
        return json.loads(line)

    def wait_ready(self) -> None:
        if not self.ready:
            hello = self._reply(START_LIMIT_S)
            if not hello.get("ready") or hello.get("threads") != 1:
                raise RuntimeError(f"cli_forker.py did not start single-threaded: {hello} "
                                   f"{self._tail()}")
            self.ready = True

    def _call(self, **request) -> dict:
        self.wait_ready()
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._reply(request.get("timeout", 0) + 30)

    def start(self, argv: list[str], *, fault: str | None = None,
              log: Path | None = None) -> int:
        """Fork ``adacore argv`` with ``ADACORE_FAULT=fault``; returns the child's pid."""
        log = log or self.folder / "children.log"
        return self._call(op="start", argv=argv, fault=fault, log=str(log))["pid"]

    def poll(self, pid: int) -> int | None:
        """The child's return code if it has ended (then its pid is free), else None."""
        return self._call(op="wait", pid=pid, timeout=0).get("returncode")

    def wait(self, pid: int, timeout: float = CHILD_LIMIT_S) -> int:
        """The child's return code (-9: SIGKILL); a child still running after
        ``timeout`` is killed and reported as a hang."""
        reply = self._call(op="wait", pid=pid, timeout=timeout)
        if "returncode" in reply:
            return reply["returncode"]
        os.kill(pid, signal.SIGKILL)
        self._call(op="wait", pid=pid, timeout=30)
        raise AssertionError(f"an adacore command hung for {timeout} s (pid {pid})")

    def run(self, argv: list[str], *, fault: str | None = None,
            log: Path | None = None) -> int:
        return self.wait(self.start(argv, fault=fault, log=log))

    def close(self) -> None:
        self.process.stdin.close()        # the forker exits at once on end of input
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process.stdout.close()


@pytest.fixture(scope="module")
def forker(tmp_path_factory):
    worker = CliForker(tmp_path_factory.mktemp("forker"))
    yield worker
    worker.close()


# ------------------------------------------------------------------------ references

@dataclasses.dataclass
class Reference:
    """An unbroken run, and how often it reaches each fault point."""

    method: str
    epochs: int
    rows: list[dict]            # metrics.jsonl, timings dropped
    record: dict                # run.json, timings dropped
    checkpoint: dict            # the final checkpoint.pt
    steps: list[int]            # optimizer steps of epoch e at steps[e - 1]
    wall_seconds: float         # a forked run's wall time, start to exit

    @classmethod
    def read(cls, folder: Path, method: str, epochs: int, wall: float) -> "Reference":
        rows = read_jsonl(folder / "metrics.jsonl")
        assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))
        return cls(method=method, epochs=epochs, rows=without_timings(rows),
                   record=without_timings(json.loads((folder / "run.json").read_text())),
                   checkpoint=load_checkpoint(folder / "checkpoint.pt"),
                   steps=[math.ceil(row["coreset_size"] / BATCH_SIZE) for row in rows],
                   wall_seconds=wall)

    def selection_epochs(self, after: int) -> list[int]:
        return [epoch for epoch in range(after + 1, self.epochs + 1)
                if (epoch - 1) % SELECT_EVERY == 0]

    def hits(self, point: str, state: "State") -> int:
        """How often a run resumed from ``state`` reaches ``point``."""
        done = state.checkpoint_epoch
        if point == "train_step":
            return sum(self.steps[done:])
        if point == "selection":
            return len(self.selection_epochs(done))
        if point == "write:checkpoint.pt":
            return self.epochs - done
        if point == "write:metrics.jsonl":
            # a fresh log is created; a resume rewrites the log to its checkpoint's epoch
            return int(done > 0 or not state.metrics_exists)
        if point == "write:run.json":
            return 1
        raise ValueError(point)

    def after_fault(self, point: str, hit: int, state: "State") -> tuple[int, int]:
        """(checkpoint epoch, metrics rows) that a kill at the ``hit``-th ``point`` leaves."""
        done = state.checkpoint_epoch
        if point == "train_step":
            for epoch in range(done + 1, self.epochs + 1):
                if hit <= self.steps[epoch - 1]:
                    return epoch - 1, epoch - 1
                hit -= self.steps[epoch - 1]
        if point == "selection":
            epoch = self.selection_epochs(done)[hit - 1]
            return epoch - 1, epoch - 1
        if point == "write:checkpoint.pt":      # the epoch's row is logged, not its checkpoint
            return done + hit - 1, done + hit
        if point == "write:metrics.jsonl":      # the old log stays as it was
            return done, state.rows
        if point == "write:run.json":
            return self.epochs, self.epochs
        raise ValueError(point)


@dataclasses.dataclass
class State:
    """A run folder as a kill left it."""

    checkpoint_epoch: int = 0
    rows: int = 0
    metrics_exists: bool = False
    temporaries: int = 0


def inspect_folder(run: Path, reference: Reference, kills: int, where: str) -> State:
    """Check that every results file in ``run`` reads completely and agrees with the
    reference; return the folder's state."""
    if not run.exists():      # killed from outside before the run made its folder
        return State()
    metrics = run / "metrics.jsonl"
    rows = []
    if metrics.exists():
        *complete, torn = metrics.read_bytes().split(b"\n")
        for number, line in enumerate(complete, start=1):
            try:
                row = json.loads(line)
            except ValueError:
                row = None
            assert isinstance(row, dict), f"{where}: metrics.jsonl line {number} is torn"
        rows = read_jsonl(metrics)              # a torn last line, if any, is dropped
        assert without_timings(rows) == reference.rows[:len(rows)], \
            f"{where}: metrics.jsonl is not the first {len(rows)} rows of the reference"
        assert len(rows) >= len(complete), f"{where}: read_jsonl dropped complete rows"
    checkpoint_epoch = 0
    if (run / "checkpoint.pt").exists():
        try:
            state = load_checkpoint(run / "checkpoint.pt")
        except InputError as error:
            raise AssertionError(f"{where}: checkpoint.pt is torn ({error})") from error
        assert set(state) == CHECKPOINT_KEYS, f"{where}: checkpoint keys {sorted(state)}"
        assert state["config"] == reference.record["config"], f"{where}: checkpoint config"
        checkpoint_epoch = state["loader"]["epoch"]
        assert len(rows) in (checkpoint_epoch, checkpoint_epoch + 1), \
            f"{where}: {len(rows)} rows beside a checkpoint of epoch {checkpoint_epoch}"
    else:
        # killed before the first checkpoint's rename: at most epoch 1's row, which a
        # resume discards (test_a_kill_before_the_first_checkpoint...)
        assert len(rows) <= 1, f"{where}: {len(rows)} rows and no checkpoint.pt"
    if (run / "run.json").exists():
        try:
            record = json.loads((run / "run.json").read_text())
        except ValueError as error:
            raise AssertionError(f"{where}: run.json is torn ({error})") from error
        assert without_timings(record) == reference.record, \
            f"{where}: run.json differs from the reference"
    temporaries = [path.name for path in run.iterdir() if path.name.endswith(".tmp")]
    assert all(TEMPORARY.fullmatch(name) for name in temporaries), \
        f"{where}: unexpected files {temporaries}"
    # each kill interrupts at most one atomic write, and a resume removes what earlier
    # kills left: never more than one stale file
    assert len(temporaries) <= min(kills, 1), \
        f"{where}: {len(temporaries)} temporaries after {kills} kills"
    return State(checkpoint_epoch=checkpoint_epoch, rows=len(rows),
                 metrics_exists=metrics.exists(), temporaries=len(temporaries))


def assert_finished_like(run: Path, reference: Reference, where: str) -> None:
    rows = without_timings(read_jsonl(run / "metrics.jsonl"))
    assert rows == reference.rows, f"{where}: the resumed metrics differ from the reference"
    assert without_timings(json.loads((run / "run.json").read_text())) == reference.record, \
        f"{where}: the resumed run.json differs from the reference"
    differences = state_differences(load_checkpoint(run / "checkpoint.pt"),
                                    reference.checkpoint)
    assert not differences, f"{where}: the final checkpoint differs: {differences[:5]}"


def forked_reference(forker: CliForker, folder: Path, method: str, epochs: int) -> Reference:
    forker.wait_ready()
    start = time.perf_counter()
    log = folder.with_name(f"{folder.name}.log")
    assert forker.run(run_argv(method, epochs, folder), log=log) == 0, log.read_text()
    return Reference.read(folder, method, epochs, time.perf_counter() - start)


@pytest.fixture(scope="module")
def references(forker, kill_loop, tmp_path_factory) -> dict[str, Reference]:
    """The unbroken runs: AdaCore's from a fresh ``python -m adacore.cli`` (started while
    the forker imports torch), CRAIG's and GradMatch's forked; ``"forked adacore"`` too."""
    folder = tmp_path_factory.mktemp("references")
    epochs = kill_loop["epochs"]
    fresh = subprocess.Popen([sys.executable, "-m", "adacore.cli",
                              *run_argv("adacore", epochs, folder / "fresh-adacore")],
                             env=child_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    found = {f"forked {method}": forked_reference(forker, folder / method, method, epochs)
             for method in ("adacore", "craig", "gradmatch")}
    _, stderr = fresh.communicate(timeout=START_LIMIT_S)
    assert fresh.returncode == 0, stderr
    forked = found["forked adacore"]     # the timings of a forked run, as the trials' are
    found["adacore"] = Reference.read(folder / "fresh-adacore", "adacore", epochs,
                                      forked.wall_seconds)
    found["craig"], found["gradmatch"] = found["forked craig"], found["forked gradmatch"]
    return found


def test_forked_runs_match_a_fresh_process(references):
    fresh, forked = references["adacore"], references["forked adacore"]
    assert forked.rows == fresh.rows
    assert forked.record == fresh.record
    assert not state_differences(forked.checkpoint, fresh.checkpoint)
    # the runs are worth resuming: they select, and the selections change the coreset
    assert len(fresh.selection_epochs(0)) >= 3 and sum(fresh.steps) >= 40
    assert fresh.rows[-1]["fraction_visited"] > fresh.rows[0]["fraction_visited"]


# ------------------------------------------------------------------------ the loop

def test_kill_loop_resumes_to_the_unbroken_run(kill_trial, kill_loop, forker, references,
                                               tmp_path):
    rng = random.Random(f"kill-loop-{kill_trial}")
    method = rng.choice(METHODS)
    reference = references[method]
    run, log = tmp_path / "run", tmp_path / "log.txt"
    plan: list[str] = []                     # what happened so far, for failure messages
    state = State()
    kills = rng.randint(1, kill_loop["max_kills"])
    rotating = 1
    if (kill_trial // len(KINDS)) % 2 == 1:     # every other block of trials: kill twice,
        kills, rotating = max(kills, 2), 2      # the second kill's kind rotating too
    for attempt in range(kills):
        argv = run_argv(method, reference.epochs, run, resume=attempt > 0)
        kind = (KINDS[(kill_trial + 3 * attempt) % len(KINDS)] if attempt < rotating
                else rng.choices(KINDS, KIND_WEIGHTS)[0])
        lowest = 1
        if kind != "outside" and reference.hits(kind, state) < lowest:
            kind = "outside"                    # e.g. no selection left in this run
        if kind == "outside":
            rc, what = outside_kill(forker, argv, run, log, reference, state, rng)
        else:
            hit = rng.randint(lowest, reference.hits(kind, state))
            what = f"{kind}:{hit}"
            expected = reference.after_fault(kind, hit, state)
            rc = forker.run(argv, fault=what, log=log)
        plan.append(f"{what} from epoch {state.checkpoint_epoch} -> rc {rc}")
        where = f"trial {kill_trial} ({method}: {'; '.join(plan)})"
        assert rc in (-signal.SIGKILL, 0), f"{where}: {log.read_text()[-2000:]}"
        before = state
        state = inspect_folder(run, reference, attempt + 1, where)
        if kind == "outside":
            assert state.checkpoint_epoch >= before.checkpoint_epoch, where
        else:
            assert rc == -signal.SIGKILL, f"{where}: the fault point was not reached"
            assert (state.checkpoint_epoch, state.rows) == expected, \
                f"{where}: left {(state.checkpoint_epoch, state.rows)}, expected {expected}"
            if kind.startswith("write:"):   # killed between fsync and rename
                assert state.temporaries >= 1, f"{where}: no temporary file left"
    where = f"trial {kill_trial} ({method}: {'; '.join(plan)}; resume)"
    rc = forker.run(run_argv(method, reference.epochs, run, resume=True), log=log)
    assert rc == 0, f"{where}: {log.read_text()[-2000:]}"
    inspect_folder(run, reference, kills, where)
    assert_finished_like(run, reference, where)


def outside_kill(forker, argv, run, log, reference, state, rng) -> tuple[int, str]:
    """Start the run and SIGKILL it from here after a random delay."""
    done = state.checkpoint_epoch
    # at most the share of a whole run's time that its epochs left take: the run has its
    # start-up (and, before any checkpoint, its first epoch) on top of that
    epochs_left = reference.epochs - done or 1
    delay = rng.uniform(0.0, reference.wall_seconds * epochs_left / reference.epochs)
    pid = forker.start(argv, log=log)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)                  # unreaped, so the pid is still the child's
    return forker.wait(pid), f"outside after {delay:.3f} s"


# ------------------------------------------------------------------------ found by the loop (fixed)

def test_a_kill_before_the_first_checkpoint_resumes_without_duplicate_rows(
        forker, references, tmp_path):
    reference = references["adacore"]
    run, log = tmp_path / "run", tmp_path / "log.txt"
    rc = forker.run(run_argv("adacore", reference.epochs, run), fault="write:checkpoint.pt:1",
                    log=log)
    require(rc == -signal.SIGKILL, f"the fault point was not reached: {rc}")
    require(not (run / "checkpoint.pt").exists() and len(read_jsonl(run / "metrics.jsonl"))
            == 1, "expected one logged row and no checkpoint")
    rc = forker.run(run_argv("adacore", reference.epochs, run, resume=True), log=log)
    require(rc == 0, log.read_text()[-2000:])
    assert [row["epoch"] for row in read_jsonl(run / "metrics.jsonl")] == \
        list(range(1, reference.epochs + 1))


def test_stale_temporaries_are_removed_on_resume(forker, references, tmp_path):
    """Each kill between fsync and rename leaves one temporary; the next start removes it."""
    reference = references["adacore"]
    run, log = tmp_path / "run", tmp_path / "log.txt"
    seen = []
    for attempt, fault in enumerate(("write:checkpoint.pt:3", "write:checkpoint.pt:2",
                                     "write:run.json:1")):
        rc = forker.run(run_argv("adacore", reference.epochs, run, resume=attempt > 0),
                        fault=fault, log=log)
        require(rc == -signal.SIGKILL, f"{fault} was not reached: {rc}")
        left = sorted(path.name for path in run.glob(".*.tmp"))
        assert len(left) == 1 and left[0] not in seen, (fault, left, seen)
        seen.append(left[0])
    rc = forker.run(run_argv("adacore", reference.epochs, run, resume=True), log=log)
    require(rc == 0, log.read_text()[-2000:])
    assert sorted(path.name for path in run.glob(".*.tmp")) == []
    assert_finished_like(run, reference, "after three kills inside atomic writes")


def test_remove_stale_temporaries_removes_only_what_killed_writes_left(forker, references,
                                                                      tmp_path):
    reference = references["adacore"]
    run, log = tmp_path / "run", tmp_path / "log.txt"
    assert forker.run(run_argv("adacore", reference.epochs, run),
                      fault="write:checkpoint.pt:2", log=log) == -signal.SIGKILL
    # a second leftover, named as mkstemp names them (a resume would remove the first)
    (run / ".metrics.jsonl.k3j_x9ab.tmp").write_text("torn")
    left = {name: sorted(path.name for path in run.glob(f".{name}.*.tmp"))
            for name in ("checkpoint.pt", "metrics.jsonl")}
    assert all(len(names) == 1 for names in left.values()), left
    decoys = [".checkpoint.pt.tmp", ".checkpoint.pt.ABCDEFGH.tmp", "checkpoint.pt.abcdefgh.tmp",
              ".checkpoint.pt.abcdefgh.tmp.keep", "x.checkpoint.pt.abcdefgh.tmp",
              ".checkpoint.ptx.abcdefgh.tmp"]
    for name in decoys:
        (run / name).write_text("not ours")
    (run / ".checkpoint.pt.folder00.tmp").mkdir()
    removed = remove_stale_temporaries(run, "checkpoint.pt")
    assert [path.name for path in removed] == left["checkpoint.pt"]
    assert not (run / left["checkpoint.pt"][0]).exists()
    assert all((run / name).read_text() == "not ours" for name in decoys)
    assert (run / ".checkpoint.pt.folder00.tmp").is_dir()
    assert (run / left["metrics.jsonl"][0]).exists()
    assert [path.name for path in remove_stale_temporaries(run, "metrics.jsonl")] == \
        left["metrics.jsonl"]
    assert remove_stale_temporaries(run, "checkpoint.pt") == []
    assert remove_stale_temporaries(tmp_path / "missing", "checkpoint.pt") == []
    for bad in ("", "a/checkpoint.pt"):
        with pytest.raises(ValueError, match="name"):
            remove_stale_temporaries(run, bad)
    # the run itself is untouched and still resumes to the reference
    assert forker.run(run_argv("adacore", reference.epochs, run, resume=True), log=log) == 0
    assert_finished_like(run, reference, "after remove_stale_temporaries")


# ------------------------------------------------------------------------ compare

COMPARE_EPOCHS = 4


def compare_argv(out: Path, *, resume: bool = False) -> list[str]:
    return ["compare", "--methods", "adacore,craig", "--seeds", "0",
            "--epochs", str(COMPARE_EPOCHS), *RUN_FLAGS, "--out", str(out),
            *(["--resume"] if resume else [])]


def test_a_killed_compare_resumes_to_the_same_results(forker, tmp_path):
    log = tmp_path / "log.txt"
    assert forker.run(compare_argv(tmp_path / "unbroken"), log=log) == 0, log.read_text()
    expected = json.loads((tmp_path / "unbroken" / "results.json").read_text())
    first = expected["runs"][0]
    assert first["method"] == "adacore"
    first_steps = sum(math.ceil(row["coreset_size"] / BATCH_SIZE) for row in first["history"])
    # the run loop covers every point within a run; these are the compare's own states
    faults = [f"train_step:{first_steps + 12}",   # AdaCore recorded, CRAIG checkpointed
              "write:run.json:1",                 # AdaCore trained, not recorded
              "write:results.json:1"]             # both recorded, no report
    for fault in faults:
        out = tmp_path / fault.replace(":", "-")
        assert forker.run(compare_argv(out), fault=fault, log=log) == -signal.SIGKILL, fault
        assert not (out / "results.json").exists(), fault
        for run in out.glob("*/seed_0"):                 # every file present reads whole
            read_jsonl(run / "metrics.jsonl")
            if (run / "checkpoint.pt").exists():
                load_checkpoint(run / "checkpoint.pt")
            if (run / "run.json").exists():
                json.loads((run / "run.json").read_text())
        assert forker.run(compare_argv(out, resume=True), log=log) == 0, log.read_text()[-2000:]
        resumed = json.loads((out / "results.json").read_text())
        # the report records the command that made it: this one's --out and --resume
        assert resumed.pop("command").endswith(f"--out {out} --resume")
        unbroken = {key: value for key, value in expected.items() if key != "command"}
        assert without_timings(resumed) == without_timings(unbroken), \
            f"{fault}: results.json differs after the resume"

