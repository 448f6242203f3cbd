"""A process that runs ``adacore`` commands in forked children, for the kill loop.

A fresh ``python -m adacore.cli`` pays 3-5 s before its first epoch (torch, the
``torch._dynamo`` import that the first optimizer triggers, scikit-learn for the digits
data, matplotlib for a comparison's plots). This process pays that once, then forks one
child per command; a child is an ordinary process running ``adacore.cli.main`` that a
SIGKILL, from a fault point or from outside, ends as it would end a fresh one. The kill
loop compares every forked result with a reference run made by a real
``python -m adacore.cli`` subprocess, so a difference between the two would show.

Run by ``test_kill_loop.CliForker`` with ``OMP_NUM_THREADS=1`` (no thread pool exists
when it forks). Protocol: one JSON request per line on stdin, one JSON reply per line
on stdout, starting with ``{"ready": true, "threads": N}`` (N must be 1: a fork copies only the
calling thread, so a lock held by another thread would stay held in the child):

    {"op": "start", "argv": [...], "fault": "point:n" | null, "log": PATH}
        -> {"pid": PID}      the child runs ``adacore.cli.main(argv)`` with
                             ADACORE_FAULT=fault, stdout and stderr appended to PATH
    {"op": "wait", "pid": PID, "timeout": SECONDS}
        -> {"returncode": RC}   as subprocess reports it: -9 for SIGKILL
        -> {"timeout": true}    still running after SECONDS (ask again, or kill it)

The caller may SIGKILL a child's pid itself; the pid stays reserved until "wait" reaps it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot  # noqa: E402,F401  (imported here so no child pays for it)
import sklearn.datasets  # noqa: E402,F401
import torch  # noqa: E402

import adacore.cli  # noqa: E402
import adacore.experiments.report  # noqa: E402,F401
import adacore.experiments.runner  # noqa: E402,F401

torch.set_num_threads(1)
# the first optimizer imports torch._dynamo (over a second): pay for it here, once
torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _child(argv: list[str], fault: str | None, log: str) -> None:
    """In the forked child: redirect, set the fault, run the command; never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        output = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(output, 1)
        os.dup2(output, 2)
        os.close(null)
        os.close(output)
        if fault:
            os.environ["ADACORE_FAULT"] = fault
        else:
            os.environ.pop("ADACORE_FAULT", None)
        try:
            code = adacore.cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code if isinstance(code, int) else 1)


def _wait(pid: int, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return {"returncode": (-os.WTERMSIG(status) if os.WIFSIGNALED(status)
                                   else os.WEXITSTATUS(status))}
        if time.monotonic() >= deadline:
            return {"timeout": True}
        time.sleep(0.005)


def main() -> None:
    replies = sys.stdout
    threads = len(os.listdir("/proc/self/task")) if os.path.isdir("/proc/self/task") else 1
    replies.write(json.dumps({"ready": True, "pid": os.getpid(), "threads": threads}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request["op"] == "start":
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                _child(request["argv"], request.get("fault"), request["log"])
            reply = {"pid": pid}
        elif request["op"] == "wait":
            reply = _wait(int(request["pid"]), float(request.get("timeout", 120)))
        else:
            reply = {"error": f"unknown op {request['op']!r}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    os._exit(0)   # stdin closed: no teardown of torch (a second) is needed


if __name__ == "__main__":
    main()
