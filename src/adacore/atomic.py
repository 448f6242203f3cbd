"""Atomic files: write to a temporary file beside the target, fsync, rename.

A crash at any point leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from adacore._faults import fault_point

_SUFFIX = ".tmp"


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> Path:
    """Call ``writer(stream)`` on a temporary file beside ``path``, then replace ``path``.

    The temporary file is fsynced before the rename and the folder after it; an
    existing file keeps its permission bits (a new one gets 0644). On any error the
    temporary file is removed and ``path`` is untouched. The folder is created if
    missing.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                             suffix=_SUFFIX)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            writer(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        fault_point(f"write:{path.name}")
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    if hasattr(os, "O_DIRECTORY"):   # make the rename itself durable
        with contextlib.suppress(OSError):
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(data))


def remove_stale_temporaries(folder: str | os.PathLike, name: str) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls on
    ``folder/name`` left behind; return the paths removed.

    A process killed after ``atomic_write`` created its temporary file and before the
    rename leaves ``.NAME.<random>.tmp`` beside the target; unremoved, each crash of a
    long run would add one (the trainer calls this at the start of every run). Only names of exactly that form (``tempfile``'s
    random part: lower-case letters, digits, underscores) are touched, never ``name``
    itself. Call it only while no other process can be writing ``name`` in ``folder``
    (a run holds its folder's lock): a live writer's temporary file matches too.
    """
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"name: got {name!r}, expected a plain file name")
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]+{re.escape(_SUFFIX)}")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed
