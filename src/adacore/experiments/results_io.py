"""Reading and writing the files of a report: JSON documents and atomic bytes.

Every writer is atomic: the bytes go to a temporary file in the target's folder, are
fsynced and then moved over the target with :func:`os.replace`
(:func:`adacore.atomic.atomic_write_bytes`), so a reader never sees a half-written file
and a failure leaves the old file as it was. Writers never create the target's folder
silently; :func:`output_dir` does, for a report's output folder. :func:`write_json`
refuses NaN and infinity (they are not JSON) and turns NumPy values into plain ones;
:func:`read_json` refuses them too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from adacore.atomic import atomic_write_bytes
from adacore.validation import InputError

__all__ = ["json_default", "output_dir", "path_error", "read_json", "write_bytes_atomic",
           "write_json"]


def path_error(name: str, path: Path, expected: str) -> InputError:
    # Not ``fail``: its 60-character cut would hide the file name at the end of a path.
    return InputError(f"{name}: got {str(path)!r}, expected {expected}")


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Atomic write into an existing folder (the report never creates folders silently)."""
    if not path.parent.is_dir():
        raise path_error("path", path, "a file in an existing folder")
    atomic_write_bytes(path, data)


def json_default(value: Any) -> Any:
    """NumPy scalars and arrays become plain numbers and lists; anything else fails."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"object of type {type(value).__name__} is not JSON serialisable")


def write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON, atomically.

    The whole document is serialised before the file is touched, so a failure leaves
    any old file intact and no temporary file behind.

    Parameters
    ----------
    obj : object
        Dicts, lists, strings, finite numbers, booleans, None (NumPy scalars and arrays
        are converted). NaN and infinity are rejected: they are not JSON.
    path : str or path-like
        Target file; its folder must exist.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    try:
        text = json.dumps(obj, indent=2, allow_nan=False, default=json_default)
    except (TypeError, ValueError, RecursionError) as error:
        raise InputError(f"obj: not JSON-serialisable ({error}); expected dicts, lists, "
                         f"strings, finite numbers, booleans and None") from error
    write_bytes_atomic(path, (text + "\n").encode("utf-8"))
    return path


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file.

    Parameters
    ----------
    path : str or path-like
        A UTF-8 JSON file, e.g. one written by :func:`write_json`.

    Returns
    -------
    object
        The parsed document.

    Raises
    ------
    InputError
        When the file is missing, unreadable or not valid JSON (NaN included).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as error:
        raise path_error("path", path, "an existing JSON file") from error
    except IsADirectoryError as error:
        raise path_error("path", path, "a JSON file, not a folder") from error
    except UnicodeDecodeError as error:
        raise path_error("path", path, f"a UTF-8 JSON file ({error.reason})") from error
    except OSError as error:
        raise path_error("path", path, f"a readable JSON file ({error.strerror})") from error
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InputError(f"path: {str(path)!r} is not valid JSON (line {error.lineno}, "
                         f"column {error.colno}: {error.msg}); expected a JSON document such "
                         f"as one written by write_json") from error
    except ValueError as error:
        raise InputError(f"path: {str(path)!r} is not valid JSON ({error}); expected "
                         f"finite numbers only") from error


def output_dir(out_dir: str | os.PathLike) -> Path:
    """The folder ``out_dir``, created if missing (with its parents); a file there is refused."""
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise path_error("out_dir", folder, "a folder (or a path where one can be created)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder
