"""Reading raw bytes from user files, plain or gzip, without ever over-allocating.

Every reader here reads in bounded chunks, so a file whose header lies about its size
(or a gzip stream that expands without end) costs at most what it really holds, up to
an explicit ``max_bytes`` cap.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import BinaryIO

from adacore.validation import InputError, fail

CHUNK_BYTES = 1 << 20

# Errors a damaged file raises from inside gzip / zlib / the OS while it is read.
READ_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)


def existing_file(name: str, path) -> Path:
    """``path`` as a :class:`Path` to an existing regular file, else :class:`InputError`."""
    if not isinstance(path, (str, os.PathLike)):
        raise fail(name, path, "a path (str or os.PathLike)")
    path = Path(path)
    if not path.is_file():
        raise fail(name, str(path), "an existing file")
    return path


def existing_dir(name: str, path) -> Path:
    """``path`` as a :class:`Path` to an existing directory, else :class:`InputError`."""
    if not isinstance(path, (str, os.PathLike)):
        raise fail(name, path, "a path (str or os.PathLike) to a folder")
    path = Path(path)
    if not path.is_dir():
        raise fail(name, str(path), "an existing folder")
    return path


def open_binary(path: Path) -> BinaryIO:
    """Open ``path`` for reading, decompressing on the fly when its name ends in ``.gz``."""
    try:
        return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as error:
        raise InputError(f"{path}: cannot be opened ({error})") from error


def read_exact(stream: BinaryIO, n_bytes: int, path: Path, what: str) -> bytes:
    """Read exactly ``n_bytes`` from ``stream`` in chunks; a short read is a truncated file."""
    chunks = []
    remaining = n_bytes
    try:
        while remaining > 0:
            chunk = stream.read(min(remaining, CHUNK_BYTES))
            if not chunk:
                break
            chunks.append(chunk)
            remaining -= len(chunk)
    except READ_ERRORS as error:
        raise InputError(f"{path}: corrupt or unreadable while reading {what} "
                         f"({type(error).__name__}: {error})") from error
    if remaining > 0:
        raise InputError(f"{path}: truncated: {what} needs {n_bytes} bytes, "
                         f"the file holds only {n_bytes - remaining}")
    return b"".join(chunks)


def at_end(stream: BinaryIO, path: Path) -> bool:
    """True when nothing is left to read (a damaged gzip tail raises :class:`InputError`)."""
    try:
        return stream.read(1) == b""
    except READ_ERRORS as error:
        raise InputError(f"{path}: corrupt or unreadable at its end "
                         f"({type(error).__name__}: {error})") from error


def read_all(path: Path, *, max_bytes: int) -> bytes:
    """The whole (decompressed) content of ``path``, refusing more than ``max_bytes``."""
    if path.suffix != ".gz" and path.stat().st_size > max_bytes:
        raise InputError(f"{path}: {path.stat().st_size} bytes, expected at most "
                         f"{max_bytes} for this format")
    with open_binary(path) as stream:
        chunks = []
        total = 0
        try:
            while True:
                chunk = stream.read(CHUNK_BYTES)
                if not chunk:
                    break
                total += len(chunk)
                if total > max_bytes:
                    raise InputError(f"{path}: more than {max_bytes} bytes (decompressed), "
                                     f"expected at most that for this format")
                chunks.append(chunk)
        except READ_ERRORS as error:
            raise InputError(f"{path}: corrupt or unreadable "
                             f"({type(error).__name__}: {error})") from error
    return b"".join(chunks)
