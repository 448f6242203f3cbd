"""Memory bounds of a selection: parse a limit, estimate what an engine needs."""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from adacore.validation import InputError

_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "kib": 2**10, "m": 10**6, "mb": 10**6,
          "mib": 2**20, "g": 10**9, "gb": 10**9, "gib": 2**30, "t": 10**12, "tb": 10**12,
          "tib": 2**40}


def parse_memory(value, name: str = "max_memory") -> int:
    """Bytes from an int or a string such as ``"4GB"``, ``"512MiB"``, ``"2.5G"``."""
    if isinstance(value, bool):
        raise InputError(f"{name}: got {value!r}, expected a size such as 4GB or 512MiB")
    if isinstance(value, int):
        amount = value
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(value))
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _UNITS:
            raise InputError(f"{name}: got {value!r}, expected a size such as 4GB or 512MiB")
        amount = int(float(match.group(1)) * _UNITS[unit])
    if amount <= 0:
        raise InputError(f"{name}: got {value!r}, expected a size > 0")
    return amount


@functools.lru_cache(maxsize=1)
def machine_memory() -> int:
    """Physical memory, or the cgroup limit of this process when that is smaller (read
    once per process: every class's problem asks, and the files cost a millisecond)."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for limit_file in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(limit_file).read_text().strip()
        except OSError:
            continue
        if text.isdigit():
            total = min(total, int(text))
    return total


def default_memory_limit() -> int:
    """Half the machine's memory: room for the data, the model and the rest of the process."""
    return machine_memory() // 2


def resolve_memory_limit(max_memory, device=None) -> int:
    """``max_memory`` in bytes; by default half the machine's memory, and for a CUDA
    device at most 80% of what is free on it."""
    if max_memory is not None:
        return parse_memory(max_memory)
    limit = default_memory_limit()
    if device is not None and getattr(device, "type", str(device).split(":")[0]) == "cuda":
        import torch
        free, _ = torch.cuda.mem_get_info(device)
        limit = min(limit, int(0.8 * free))
    return limit


def dense_bytes(n: int, k: int) -> int:
    """The dense engine: one (n, n) float32 similarity, the (n, k) assignment, and the
    gain kernel's blocks (up to 32 MiB)."""
    return 4 * n * n + 8 * n * k + min(32 << 20, 4 * n * n)


def pool_bytes(n: int, candidates: int, k: int) -> int:
    """The pool engine: the (candidates, n) float32 similarity and its transpose, the
    (k, n) assignment, and the gain kernel's blocks (up to 32 MiB)."""
    return 8 * candidates * n + 8 * n * k + min(32 << 20, 4 * candidates * n)


def sparse_bytes(n: int, d: int, neighbors: int) -> int:
    """The sparse engine: the graph both ways (int64 rows, float32 values), the search's
    distances and rows, a float32 copy of the points, and one search block (up to 128 MiB)."""
    return 40 * n * neighbors + 8 * n * d + 3 * 8 * n + min(128 << 20, 4 * n * n)


def format_bytes(amount: int) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if amount >= size:
            return f"{amount / size:.1f} {unit}"
    return f"{amount} B"
