"""A process that runs adacore's file readers for the fuzz tests, one file per request.

Run by ``conftest.ReaderProcess``: a segfault, a hang in C code or an out-of-memory
kill then costs this process, never pytest, and shows up as a failed example.

Protocol: one JSON request per line on stdin, ``{"reader": NAME, "path": PATH}`` (and
optionally ``"limit_s"``, the alarm); one JSON reply per line on the original stdout:

    {"outcome": "value" | "input_error" | "other_exception" | "invalid_value" | "timeout",
     "detail": str, "traced_peak": bytes, "rss_growth": bytes, "seconds": float}

``traced_peak`` is the peak of Python and NumPy allocations during the call
(tracemalloc), ``rss_growth`` how far the resident size rose above its level before the
call (the high-water mark is reset before each call through /proc/self/clear_refs where
Linux allows; it catches native allocations, torch's included, that tracemalloc misses).
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys
import time
import traceback
import tracemalloc
from pathlib import Path

import numpy as np
import torch

import adacore
from adacore.cli import load_array
from adacore.data import read_cifar_batch, read_idx, safe_loads
from adacore.data.safe_pickle import NUMPY_ARRAY_GLOBALS
from adacore.experiments.runner import read_scenario
from adacore.training.checkpoint import load_checkpoint, read_jsonl

TIME_LIMIT_S = float(os.environ.get("READER_TIME_LIMIT_S", "5"))


class ReaderTimeout(BaseException):
    """Raised by the alarm; a BaseException so that no reader's ``except Exception`` hides it."""


def _alarm(signum, frame):
    raise ReaderTimeout()


# ---------------------------------------------------------------- what a valid value is

IDX_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64}
PLAIN_TYPES = (type(None), bool, int, float, complex, str, bytes, bytearray)
CONTAINERS = (list, tuple, set, frozenset)
ALLOWED_OBJECTS = {id(value) for value in NUMPY_ARRAY_GLOBALS.values()}


def check_idx(value, path: Path) -> str | None:
    if not isinstance(value, torch.Tensor) or value.dtype not in IDX_DTYPES:
        return f"not an IDX tensor: {type(value).__name__}"
    if path.suffix != ".gz" and value.numel() * value.element_size() > path.stat().st_size:
        return f"a tensor of {value.numel()} values from a file of {path.stat().st_size} bytes"
    return None


def check_cifar(value, path: Path) -> str | None:
    if not (isinstance(value, tuple) and len(value) == 2):
        return f"not an (images, labels) pair: {type(value).__name__}"
    images, labels = value
    if images.dtype != torch.uint8 or images.ndim != 4 or tuple(images.shape[1:]) != (3, 32, 32):
        return f"images {images.dtype} {tuple(images.shape)}"
    if labels.dtype != torch.int64 or tuple(labels.shape) != (images.shape[0],) \
            or images.shape[0] == 0:
        return f"labels {labels.dtype} {tuple(labels.shape)} for {images.shape[0]} images"
    if int(labels.min()) < 0 or int(labels.max()) > 9:
        return f"labels outside 0..9: {labels.tolist()}"
    return None


def check_unpickled(value, path: Path) -> str | None:
    """All that is reachable is plain data, an ndarray or a dtype (walked iteratively:
    unpickled graphs may be cyclic)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, PLAIN_TYPES) or isinstance(item, np.dtype) \
                or id(item) in ALLOWED_OBJECTS:
            continue
        if isinstance(item, CONTAINERS):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) is np.ndarray:
            if item.dtype == object:
                stack.extend(item.ravel().tolist())
        else:
            return f"unpickled a {type(item).__module__}.{type(item).__qualname__}"
    return None


def check_array(value, path: Path) -> str | None:
    if type(value) is not np.ndarray or value.dtype.hasobject:
        return f"not a plain array: {type(value).__name__}"
    if value.nbytes > path.stat().st_size:
        return f"{value.nbytes} bytes of array from a file of {path.stat().st_size}"
    return None


def check_coreset(value, path: Path) -> str | None:
    if not isinstance(value, adacore.Coreset):
        return f"not a Coreset: {type(value).__name__}"
    indices, weights, gains = value.indices, value.weights, value.gains
    if indices.dtype != np.int64 or weights.dtype != np.float64 or gains.dtype != np.float64:
        return f"dtypes {indices.dtype}, {weights.dtype}, {gains.dtype}"
    if not (indices.ndim == weights.ndim == gains.ndim == 1
            and indices.shape == weights.shape == gains.shape):
        return f"shapes {indices.shape}, {weights.shape}, {gains.shape}"
    if np.any(indices < 0) or np.unique(indices).shape[0] != indices.shape[0]:
        return f"indices not unique non-negative: {indices.tolist()}"
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        return f"weights not finite and positive: {weights.tolist()}"
    if not isinstance(value.budgets, dict) or not isinstance(value.metadata, dict):
        return "budgets or metadata not a dict"
    if not all(type(k) is int and type(b) is int for k, b in value.budgets.items()):
        return f"budgets not int -> int: {value.budgets!r}"
    if not isinstance(value.method, str) or type(value.round) is not int:
        return f"method {value.method!r}, round {value.round!r}"
    return None


def check_scenario(value, path: Path) -> str | None:
    return None if isinstance(value, dict) else f"not a dict: {type(value).__name__}"


def check_checkpoint(value, path: Path) -> str | None:
    return None if isinstance(value, dict) else f"not a dict: {type(value).__name__}"


def check_rows(value, path: Path) -> str | None:
    if not isinstance(value, list) or not all(isinstance(row, dict) for row in value):
        return f"not a list of dicts: {value!r:.80}"
    return None


def _block_alarm_and_sleep(path):
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])   # no alarm can stop this
    time.sleep(3600)


def _spin(path):
    while True:
        pass


# Readers that break the promise on purpose, so the tests can show the harness sees it.
def _traced(path):
    np.ones(100 << 20, np.uint8)           # NumPy's allocations are traced
    return {}


def _resident(path):
    torch.ones(512 << 20, dtype=torch.uint8)   # torch's are not: the resident size shows them
    return {}


def _marker(path):
    (Path.cwd() / "MARKER-code-ran-selftest").touch()
    return {}


SELF_TESTS = {name: (function, check_scenario) for name, function in [
    ("selftest-raise", lambda path: {}["missing"]), ("selftest-traced", _traced),
    ("selftest-resident", _resident), ("selftest-marker", _marker),
    ("selftest-invalid", lambda path: []), ("selftest-spin", _spin),
    ("selftest-hang", _block_alarm_and_sleep), ("selftest-crash", lambda path: os.abort())]}

READERS = {
    "idx": (read_idx, check_idx),
    "cifar": (read_cifar_batch, check_cifar),
    "pickle": (lambda path: safe_loads(Path(path).read_bytes()), check_unpickled),
    "npy": (lambda path: load_array("--vectors", str(path)), check_array),
    "coreset": (adacore.Coreset.load, check_coreset),
    "scenario": (read_scenario, check_scenario),
    "checkpoint": (load_checkpoint, check_checkpoint),
    "jsonl": (read_jsonl, check_rows),
    **SELF_TESTS,
}


# ---------------------------------------------------------------- one call


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def resident_before() -> int:
    """The resident size now, with the high-water mark reset to it where Linux allows."""
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")
    except OSError:
        pass
    return _status_bytes("VmRSS") or high_water()


def high_water() -> int:
    """The resident high-water mark (VmHWM; ru_maxrss where /proc is missing)."""
    return _status_bytes("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run(reader: str, path: Path, limit_s: float) -> dict:
    function, check = READERS[reader]
    outcome, detail = "value", ""
    rss_before = resident_before()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    start = time.perf_counter()
    signal.setitimer(signal.ITIMER_REAL, limit_s)
    try:
        value = function(path)
        signal.setitimer(signal.ITIMER_REAL, 0)
        problem = check(value, path)
        if problem is not None:
            outcome, detail = "invalid_value", problem
        del value
    except ReaderTimeout:
        outcome, detail = "timeout", f"still running after {limit_s} s:\n" \
                                     + traceback.format_exc(limit=-8)
    except adacore.InputError as error:
        outcome, detail = "input_error", str(error)[:500]
    except BaseException as error:   # noqa: BLE001 - the report is the point
        outcome = "other_exception"
        detail = f"{type(error).__module__}.{type(error).__qualname__}: {error}"[:500] \
            + "\n" + traceback.format_exc(limit=-6)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1] - base
    return {"outcome": outcome, "detail": detail, "traced_peak": peak,
            "rss_growth": high_water() - rss_before, "seconds": seconds}


def main() -> None:
    replies = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)              # anything a reader prints goes to stderr, not into replies
    signal.signal(signal.SIGALRM, _alarm)
    torch.set_num_threads(1)
    tracemalloc.start()
    replies.write(json.dumps({"ready": os.getpid()}) + "\n")
    for line in sys.stdin:
        request = json.loads(line)
        limit_s = float(request.get("limit_s", TIME_LIMIT_S))
        replies.write(json.dumps(run(request["reader"], Path(request["path"]), limit_s)) + "\n")


if __name__ == "__main__":
    main()
