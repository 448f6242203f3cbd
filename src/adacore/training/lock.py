"""One run per output folder: an advisory lock held for the whole run."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from adacore.atomic import open_regular, prepare_folder
from adacore.validation import InputError


class FolderInUse(InputError):
    """Another process holds the folder's lock."""


class FolderLock:
    """``with FolderLock(out):`` fails fast with InputError when another process holds it.

    The lock is ``fcntl.flock`` on ``out/.lock``: the kernel releases it when the holder
    exits, even on SIGKILL, so a killed run never leaves a stale lock behind.
    """

    def __init__(self, folder: str | os.PathLike):
        self.path = Path(folder) / ".lock"
        self.handle = None

    def __enter__(self) -> "FolderLock":
        prepare_folder(self.path.parent)
        # a FIFO or device planted as .lock is refused, never opened (a FIFO would block)
        handle = open(open_regular(self.path, os.O_RDWR | os.O_CREAT), "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise FolderInUse(f"--out: {str(self.path.parent)!r} is in use by a running run "
                             f"(pid {holder}); wait for it or choose another folder") from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        self.handle = handle
        return self

    def __exit__(self, *exc) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None
