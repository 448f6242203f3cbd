"""Unpickling that cannot run code: only named, harmless globals may be loaded.

A pickle is a program: any ``GLOBAL`` opcode can name a callable (``os.system``,
``builtins.eval``) that a later ``REDUCE`` calls. :class:`RestrictedUnpickler` resolves
globals only from an explicit allow-list, so an unknown one is refused when it is named,
before any object is built from it.

A pickle can also ask for memory it does not hold: CPython's unpickler allocates a
``BINBYTES8`` value at its declared length before reading it, and grows its memo to any
index a ``LONG_BINPUT`` names (a 10-byte pickle can make it write 64 GB). So
:func:`safe_loads` first walks the opcodes (``pickletools.genops``, which reads lengths
without allocating them) and refuses a declared length beyond the data or a memo index
beyond the number of opcodes before it (picklers number memo entries 0, 1, 2, ...).
"""

from __future__ import annotations

import io
import pickle
import pickletools
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from adacore.data.files import existing_file, read_all
from adacore.validation import InputError

try:  # NumPy >= 2 keeps the implementation in numpy._core; numpy.core is a shim.
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core import multiarray as _multiarray


class _ArrayTypeName:
    """Stands for ``numpy.ndarray`` in a pickle: an argument of ``_reconstruct``, not a callable.

    Admitting the type itself would let a ``REDUCE`` call ``numpy.ndarray(shape, dtype)``
    and allocate any size the pickle names.
    """

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError("numpy.ndarray may only be named as the type "
                                     "_reconstruct builds, not called")

    def __repr__(self) -> str:
        return "numpy.ndarray (name only)"


ARRAY_TYPE_NAME = _ArrayTypeName()


def _reconstruct_empty(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """NumPy's ndarray reconstructor, limited to the empty start NumPy itself pickles.

    ``ndarray.__reduce__`` always writes ``_reconstruct(ndarray, (0,), b'b')``; the real
    shape, dtype and bytes follow in the state, where NumPy checks the shape against the
    bytes the file actually carries. A non-empty ``shape`` here would only make NumPy
    allocate memory the file never held, so it is refused.
    """
    if subtype is not ARRAY_TYPE_NAME and subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"_reconstruct of {subtype!r}, expected numpy.ndarray")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) for s in shape) \
            or 0 not in shape:
        raise pickle.UnpicklingError(f"_reconstruct with shape {shape!r}, expected an "
                                     f"empty shape such as (0,) as NumPy writes it")
    return _multiarray._reconstruct(np.ndarray, shape, dtype)


# What a pickled ndarray needs: the reconstructor (under its NumPy 1 and NumPy 2 module
# names), the array type it builds (by name only) and the dtype constructor. Nothing else.
NUMPY_ARRAY_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct_empty,
    ("numpy", "ndarray"): ARRAY_TYPE_NAME,
    ("numpy", "dtype"): np.dtype,
}

_MEMO_WRITES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})

DEFAULT_MAX_BYTES = 1 << 30


class RestrictedUnpickler(pickle.Unpickler):
    """A :class:`pickle.Unpickler` that admits only the globals in ``allowed``.

    Parameters
    ----------
    file : binary file object
        The pickle stream.
    allowed : mapping
        ``(module, name) -> object``: the only globals the stream may name. Objects are
        taken from this mapping, never imported by name.
    source : str
        What to call the stream in error messages (usually its path).
    encoding : str
        How to decode Python 2 ``str`` objects (``"bytes"`` keeps them as bytes).
    """

    def __init__(self, file, *, allowed: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
                 source: str = "<pickle>", encoding: str = "ASCII") -> None:
        super().__init__(file, encoding=encoding)
        self._allowed = dict(allowed)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            admitted = ", ".join(f"'{m}.{n}'" for m, n in sorted(self._allowed)) or "none"
            raise InputError(f"{self._source}: refuses global '{module}.{name}': the file "
                             f"may be malicious or is not in the expected format "
                             f"(admitted globals: {admitted})") from None

    def persistent_load(self, pid: Any) -> Any:
        raise InputError(f"{self._source}: refuses persistent id {pid!r}: not in the "
                         f"expected format")


def safe_loads(data: bytes, *, allowed: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
               source: str = "<pickle>", encoding: str = "ASCII") -> Any:
    """Unpickle ``data`` admitting only the globals in ``allowed``.

    Parameters
    ----------
    data : bytes
        A complete pickle.
    allowed : mapping, default :data:`NUMPY_ARRAY_GLOBALS`
        ``(module, name) -> object`` pairs the pickle may name.
    source : str
        Name used in error messages.
    encoding : str, default "ASCII"
        Decoding of Python 2 strings: ``"latin1"`` for NumPy arrays written by
        Python 2, ``"bytes"`` to keep them as bytes (the CIFAR-10 convention).

    Returns
    -------
    object
        The unpickled object.

    Raises
    ------
    InputError
        For a refused global, a truncated or corrupt stream, or data after its end.
    """
    _check_opcodes(data, source)
    stream = io.BytesIO(data)
    unpickler = RestrictedUnpickler(stream, allowed=allowed, source=source, encoding=encoding)
    try:
        obj = unpickler.load()
    except InputError:
        raise
    except EOFError as error:
        raise InputError(f"{source}: truncated pickle (ended before its STOP opcode)") \
            from error
    except Exception as error:  # any other failure means a damaged or foreign stream
        raise InputError(f"{source}: corrupt pickle ({type(error).__name__}: {error})") \
            from error
    if stream.tell() != len(data):
        raise InputError(f"{source}: {len(data) - stream.tell()} bytes after the end of "
                         f"the pickle, expected none")
    return obj


def _check_opcodes(data: bytes, source: str) -> None:
    """Refuse what CPython's unpickler would allocate before reading: see the module doc."""
    count = 0
    try:
        for opcode, argument, position in pickletools.genops(io.BytesIO(data)):
            if opcode.name in _MEMO_WRITES and argument >= count:
                raise InputError(f"{source}: corrupt pickle ({opcode.name} at byte {position} "
                                 f"names memo entry {argument} after {count} opcodes)")
            count += 1
    except InputError:
        raise
    except Exception as error:  # genops raises ValueError for a truncated or unknown opcode
        raise InputError(f"{source}: corrupt pickle ({type(error).__name__}: {error})") \
            from error


def safe_load(path, *, allowed: Mapping[tuple[str, str], Any] = NUMPY_ARRAY_GLOBALS,
              encoding: str = "ASCII", max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """Unpickle the file at ``path`` (gzip-compressed when it ends in ``.gz``) safely.

    Parameters
    ----------
    path : str or os.PathLike
        The pickle file.
    allowed : mapping, default :data:`NUMPY_ARRAY_GLOBALS`
        ``(module, name) -> object`` pairs the pickle may name.
    encoding : str, default "ASCII"
        See :func:`safe_loads`.
    max_bytes : int
        Refuse files whose (decompressed) content is larger than this.

    Returns
    -------
    object
        The unpickled object.
    """
    file = existing_file("path", path)
    return safe_loads(read_all(file, max_bytes=max_bytes), allowed=allowed,
                      source=str(Path(file)), encoding=encoding)
