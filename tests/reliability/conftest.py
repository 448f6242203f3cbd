"""Settings of the reliability suite: a quick CI mode and a long soak mode.

    pytest tests/reliability                  # CI: under a minute on 2 cores
    ADACORE_SOAK=1 pytest tests/reliability   # soak: 25x the examples, for local runs

``ADACORE_SOAK=1`` in the environment selects the soak mode; anything else, CI mode.

- The property tests take their hypothesis settings from the profile registered here
  as ``"reliability"``: ``reliability-ci`` (80 examples a test) or ``reliability-soak``
  (2,000). Both have no deadline (a first call pays for torch's warm-up) and print a
  reproduction blob on failure; hypothesis keeps failing examples in ``.hypothesis/``
  and replays them first on the next run. The profile is applied test by test
  (``@settings(RELIABILITY)``), never loaded globally, so other tests keep theirs.
- The fuzz tests read their seeded mutation campaigns' size from the ``campaign_size``
  fixture: 150 mutants per seed file in CI, 3,000 in soak mode. They run every reader
  in a separate process, :class:`ReaderProcess` (the ``reader_process`` fixture).
- The kill loop (test_kill_loop.py) gets one test per trial through the ``kill_trial``
  parameter and its run length from the ``kill_loop`` fixture: 20 trials of 10-epoch
  runs with up to 2 kills each in CI, 200 trials of 24-epoch runs with up to 4 in soak.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

SOAK = os.environ.get("ADACORE_SOAK", "") == "1"

_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
settings.register_profile("reliability-ci", max_examples=80, **_COMMON)
settings.register_profile("reliability-soak", max_examples=2000, **_COMMON)
settings.register_profile("reliability",
                          settings.get_profile("reliability-soak" if SOAK else "reliability-ci"))

# seeded mutants per seed file in the fuzz campaigns
CAMPAIGN_SIZE = 3000 if SOAK else 150


@pytest.fixture(scope="session")
def campaign_size() -> int:
    """How many seeded mutants each fuzz campaign feeds to a reader."""
    return CAMPAIGN_SIZE


# the kill loop: trials (one test each), epochs of each run, most SIGKILLs before a resume
KILL_LOOP = (dict(trials=200, epochs=24, max_kills=4) if SOAK
             else dict(trials=20, epochs=10, max_kills=2))


@pytest.fixture(scope="session")
def kill_loop() -> dict:
    """The kill loop's ``trials``, ``epochs`` and ``max_kills`` for this mode."""
    return dict(KILL_LOOP)


def pytest_generate_tests(metafunc):
    if "kill_trial" in metafunc.fixturenames:
        metafunc.parametrize("kill_trial", range(KILL_LOOP["trials"]))


# ---------------------------------------------------------------- the reader process

WORKER = Path(__file__).with_name("reader_worker.py")
# The worker's own alarm stops a reader after ``alarm_s`` (5 s); this is the parent's
# limit for a hang in C code that no alarm can interrupt, and for the worker's start-up.
HANG_LIMIT_S = 20.0
START_LIMIT_S = 120.0


class ReaderProcess:
    """``reader_worker.py`` in a process of its own, restarted after a crash or a hang.

    :meth:`call` writes nothing itself: it asks the worker to run one reader on one file
    and returns the worker's reply (see reader_worker.py), or ``{"outcome": "crash"}``
    when the worker died and ``{"outcome": "hang"}`` when it stopped answering.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.process: subprocess.Popen | None = None
        self.log = folder / "worker-stderr.txt"

    def _start(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen([sys.executable, str(WORKER)], cwd=self.folder,
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=log, env=env)
        ready = self._reply(START_LIMIT_S)
        if ready is None or "ready" not in ready:
            raise RuntimeError(f"the reader worker did not start: {self._log_tail()}")

    def _reply(self, limit_s: float) -> dict | None:
        readable, _, _ = select.select([self.process.stdout], [], [], limit_s)
        if not readable:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else {}

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def _stop(self) -> None:
        if self.process is not None:
            if self.process.poll() is None:
                self.process.kill()
            self.process.wait()
            for stream in (self.process.stdin, self.process.stdout):
                stream.close()
            self.process = None

    def call(self, reader: str, path: Path, *, alarm_s: float = 5.0,
             hang_limit_s: float = HANG_LIMIT_S) -> dict:
        if self.process is None or self.process.poll() is not None:
            self._stop()
            self._start()
        request = {"reader": reader, "path": str(path), "limit_s": alarm_s}
        try:
            self.process.stdin.write((json.dumps(request) + "\n").encode())
            self.process.stdin.flush()
        except BrokenPipeError:
            reply = {}
        else:
            reply = self._reply(hang_limit_s)
        if reply is None:
            self._stop()
            return {"outcome": "hang", "detail": f"no answer within {hang_limit_s} s"}
        if not reply:
            code = self.process.wait()
            self._stop()
            return {"outcome": "crash",
                    "detail": f"worker exited with {code}: {self._log_tail()}"}
        return reply

    def close(self) -> None:
        self._stop()


@pytest.fixture(scope="session")
def reader_process(tmp_path_factory):
    """One reader worker for the session; its working folder is where markers would land."""
    worker = ReaderProcess(tmp_path_factory.mktemp("reader-worker"))
    yield worker
    worker.close()
