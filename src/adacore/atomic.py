"""Atomic files: write to a temporary file beside the target, fsync, rename.

A crash at any point leaves either the old file or the new one, never a torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import stat
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

from adacore._faults import fault_point
from adacore.validation import InputError

_SUFFIX = ".tmp"


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_output_file(path: str | os.PathLike) -> Path:
    """``path`` as a place to write a file: nothing there yet, or a regular file.

    A symbolic link, folder, FIFO, device or socket at ``path`` is refused with
    :class:`InputError` (never replaced: a rename over a device node, as root, would
    destroy it), and so is a parent that exists but is not a folder.
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except NotADirectoryError:
        raise InputError(f"{str(path)!r}: a parent of this path is a file, expected a "
                         f"folder") from None
    except OSError as error:
        raise InputError(f"{str(path)!r}: cannot check it ({error.strerror or error})") \
            from None
    if mode is not None and not stat.S_ISREG(mode):
        raise InputError(f"{str(path)!r} is {_kind(mode)}, expected a regular file or "
                         f"nothing to write; refusing to replace it")
    return path


def prepare_folder(folder: str | os.PathLike) -> Path:
    """Create ``folder`` (and its parents) if missing; an :class:`InputError` if it is a
    file, lies under one, or cannot be created (read-only place, no permission)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{str(folder)!r} is a file, expected a folder for the output")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{str(folder)!r}: a parent of this path is a file, expected a "
                         f"folder") from None
    except OSError as error:
        raise InputError(f"{str(folder)!r}: cannot create the folder "
                         f"({error.strerror or error})") from None
    return folder


def atomic_write(path: str | os.PathLike, writer: Callable[[BinaryIO], object]) -> Path:
    """Call ``writer(stream)`` on a temporary file beside ``path``, then replace ``path``.

    The temporary file is fsynced before the rename and the folder after it; an
    existing file keeps its permission bits (a new one gets 0644). On any error the
    temporary file is removed and ``path`` is untouched. The folder is created if
    missing. Before anything is written, the temporaries that a killed earlier write
    to ``path`` left (:func:`remove_stale_temporaries`) are removed.

    Raises :class:`InputError` (one line naming ``path``) when ``path`` is anything but
    a regular file or nothing (:func:`check_output_file`), or when the system refuses
    the write (no permission, a read-only or full disk).
    """
    path = check_output_file(path)
    prepare_folder(path.parent)
    # a live writer holds a lock on its temporary file: only the dead ones' go
    remove_stale_temporaries(path.parent, path.name, unlocked_only=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    temporary, descriptor = None, None
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.",
                                                 suffix=_SUFFIX)
        fcntl.flock(descriptor, fcntl.LOCK_EX)      # held until the rename is done
        with os.fdopen(descriptor, "wb", closefd=False) as stream:
            writer(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        fault_point(f"write:{path.name}")
        os.replace(temporary, path)
    except BaseException as error:
        if temporary is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temporary)
        if isinstance(error, OSError):
            raise InputError(f"{str(path)!r}: cannot write it ({error.strerror or error}); "
                             f"the previous file, if any, is intact") from None
        raise
    finally:
        if descriptor is not None:
            os.close(descriptor)
    if hasattr(os, "O_DIRECTORY"):   # make the rename itself durable
        with contextlib.suppress(OSError):
            folder = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(folder)
            finally:
                os.close(folder)
    return path


def open_regular(path: str | os.PathLike, flags: int, mode: int = 0o644) -> int:
    """``os.open`` for a regular file only: a symbolic link, FIFO (which would block),
    device or folder at ``path`` is an :class:`InputError`, never opened for writing."""
    path = check_output_file(path)
    try:
        descriptor = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK, mode)
    except OSError as error:
        raise InputError(f"{str(path)!r}: cannot open it ({error.strerror or error})") \
            from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):   # swapped since the check
        os.close(descriptor)
        raise InputError(f"{str(path)!r} is not a regular file; refusing to write it")
    return descriptor


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda stream: stream.write(data))


def remove_stale_temporaries(folder: str | os.PathLike, name: str, *,
                             unlocked_only: bool = False) -> list[Path]:
    """Delete the temporary files that interrupted :func:`atomic_write` calls on
    ``folder/name`` left behind; return the paths removed.

    A process killed after ``atomic_write`` created its temporary file and before the
    rename leaves ``.NAME.<random>.tmp`` beside the target; unremoved, each crash of a
    long run would add one. Only names of exactly that form (``tempfile``'s random
    part: lower-case letters, digits, underscores) are touched, never ``name`` itself.

    ``atomic_write`` holds an exclusive ``flock`` on its temporary file until the
    rename, which the kernel drops when the writer dies (even on SIGKILL). With
    ``unlocked_only`` (what :func:`atomic_write` itself does before each write) a
    temporary file still locked by a live writer is left alone, so concurrent writers
    never delete each other's. Without it every match goes: call it so only while no
    other process can be writing ``name`` in ``folder`` (the trainer does, at the start
    of a run, under its folder's lock).
    """
    if not name or "/" in name or os.sep in name:
        raise ValueError(f"name: got {name!r}, expected a plain file name")
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]+{re.escape(_SUFFIX)}")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not (pattern.fullmatch(entry.name) and entry.is_file(follow_symlinks=False)):
            continue
        if unlocked_only:
            if _remove_if_unlocked(entry.path):
                removed.append(Path(entry.path))
            continue
        with contextlib.suppress(FileNotFoundError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _remove_if_unlocked(path: str) -> bool:
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:            # a live writer holds it
        os.close(descriptor)
        return False
    try:
        os.unlink(path)
        return True
    except FileNotFoundError:
        return False
    finally:
        os.close(descriptor)
