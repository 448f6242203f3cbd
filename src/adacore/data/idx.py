"""The IDX file format (LeCun's MNIST files), read with every header field checked.

Layout: two zero bytes, a dtype code, the number of dimensions ``d``, then ``d``
big-endian uint32 sizes, then the values, big-endian, in C order.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adacore.data.files import at_end, existing_file, open_binary, read_exact
from adacore.validation import InputError

# IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

DEFAULT_MAX_BYTES = 1 << 30
# NumPy 1's limit on dimensions (NumPy 2 allows 64); an IDX file holds 1 to 4 in practice.
MAX_DIMENSIONS = 32


def read_idx(path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> torch.Tensor:
    """Read one IDX file (plain, or gzip when its name ends in ``.gz``).

    The header is validated before any data is read: magic number, dtype code, number
    of dimensions, and that the sizes it declares match the bytes the file holds
    exactly (no allocation beyond what the file really contains).

    Parameters
    ----------
    path : str or os.PathLike
        The IDX file.
    max_bytes : int, default 1 GiB
        Refuse files whose data section would be larger than this.

    Returns
    -------
    torch.Tensor
        The values in native byte order, with the dtype the file declares
        (uint8, int8, int16, int32, float32 or float64) and its declared shape.

    Raises
    ------
    InputError
        For a missing file, a wrong magic number or dtype code, a size that does not
        match the file, or a corrupt gzip stream.
    """
    file = existing_file("path", path)
    with open_binary(file) as stream:
        magic = read_exact(stream, 4, file, "the IDX magic number")
        if magic[0] != 0 or magic[1] != 0:
            raise InputError(f"{file}: magic number {magic.hex()} does not start with "
                             f"two zero bytes, expected an IDX file")
        code, ndim = magic[2], magic[3]
        if code not in IDX_DTYPES:
            known = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
            raise InputError(f"{file}: IDX dtype code 0x{code:02X}, expected one of {known}")
        if not 1 <= ndim <= MAX_DIMENSIONS:
            raise InputError(f"{file}: IDX header declares {ndim} dimensions, expected 1 to "
                             f"{MAX_DIMENSIONS}")
        dtype = IDX_DTYPES[code]
        shape = tuple(int(s) for s in np.frombuffer(
            read_exact(stream, 4 * ndim, file, "the IDX dimension sizes"), dtype=">u4"))
        n_bytes = math.prod(shape) * dtype.itemsize
        if n_bytes > max_bytes:
            raise InputError(f"{file}: IDX header declares shape {shape} ({n_bytes} bytes), "
                             f"expected at most max_bytes={max_bytes}")
        if file.suffix != ".gz":
            held = file.stat().st_size - 4 - 4 * ndim
            if held != n_bytes:
                raise InputError(f"{file}: IDX header declares shape {shape} "
                                 f"({n_bytes} bytes of data), the file holds {held}: "
                                 f"{'truncated' if held < n_bytes else 'trailing bytes'}")
        data = read_exact(stream, n_bytes, file, f"IDX data of shape {shape}")
        if not at_end(stream, file):
            raise InputError(f"{file}: trailing bytes after IDX data of shape {shape}")
    try:
        values = np.frombuffer(data, dtype=dtype).reshape(shape)
    except ValueError as error:  # an empty shape whose other sizes overflow NumPy's index
        raise InputError(f"{file}: IDX header declares shape {shape}, which NumPy cannot "
                         f"represent ({error})") from error
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))
