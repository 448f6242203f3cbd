"""Fault injection for the reliability suite: SIGKILL this process at a named point.

``ADACORE_FAULT="point:n"`` kills the process (SIGKILL, so nothing is cleaned up) the
n-th time it reaches ``fault_point("point")``. Unset, a call is one dictionary lookup.
Points: ``train_step`` (before each optimizer step), ``selection`` (after the probe,
before the strategy selects), ``write:<file name>`` (an atomic write whose data is on
disk but not yet renamed into place).
"""

from __future__ import annotations

import os
import signal
from collections import Counter

_hits: Counter = Counter()


def fault_point(name: str) -> None:
    spec = os.environ.get("ADACORE_FAULT")
    if not spec:
        return
    point, _, count = spec.rpartition(":")
    if point != name:
        return
    _hits[name] += 1
    if _hits[name] == int(count):
        os.kill(os.getpid(), signal.SIGKILL)
