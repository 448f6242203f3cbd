"""The Coreset record: which examples were chosen, with which weights."""

from __future__ import annotations

import io
import json
import math
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from adacore.atomic import atomic_write
from adacore.validation import InputError


@dataclass
class Coreset:
    """A weighted subset of a training set.

    Attributes
    ----------
    indices : ndarray of int64, shape (k,)
        Unique row numbers into the caller's array, in selection order (class by
        class, in increasing label order, for per-class selection).
    weights : ndarray of float64, shape (k,)
        Positive weights; for facility location, the size of each selected point's
        cluster (they sum to the number of examples covered).
    gains : ndarray of float64, shape (k,)
        The marginal gain of each pick when it was made (NaN where a method has none).
    method : str
        Name of the strategy that produced it.
    budgets : dict
        Class label -> number of examples selected from that class.
    round : int
        Selection round (1 for the first call of a strategy).
    metadata : dict
        Anything else the method reports (timings, errors, health signals).
    """

    indices: np.ndarray
    weights: np.ndarray
    gains: np.ndarray
    method: str = ""
    budgets: dict = field(default_factory=dict)
    round: int = 1
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=np.int64).reshape(-1)
        self.weights = np.asarray(self.weights, dtype=np.float64).reshape(-1)
        self.gains = np.asarray(self.gains, dtype=np.float64).reshape(-1)
        k = self.indices.shape[0]
        if self.weights.shape[0] != k or self.gains.shape[0] != k:
            raise InputError(f"Coreset: indices, weights and gains must have one length, "
                             f"got {k}, {self.weights.shape[0]}, {self.gains.shape[0]}")

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def normalized_weights(self, max_weight: float | None = None) -> np.ndarray:
        """Weights rescaled to mean 1, so a learning rate keeps its meaning.

        ``max_weight`` (>= 1, optional) caps every weight at that multiple of the mean:
        the weights above it are set to it and the others scaled up together so the
        mean stays 1 (water-filling: the one such scaling, found exactly). None: the
        weights as selected (cluster sizes for CRAIG and AdaCore, as the theory has).
        """
        weights = self.weights / self.weights.mean()
        if max_weight is None or weights.max() <= max_weight:
            return weights
        n = weights.shape[0]
        descending = np.sort(weights)[::-1]
        rest = np.cumsum(descending[::-1])[::-1]          # rest[m] = sum of descending[m:]
        for clipped in range(1, n):
            # the `clipped` largest at max_weight, the others times `scale`
            scale = (n - clipped * max_weight) / rest[clipped]
            if descending[clipped] * scale <= max_weight:
                return np.minimum(weights * scale, max_weight)
        return np.full(n, 1.0)                              # max_weight == 1: all equal

    def save(self, path: str | os.PathLike) -> None:
        """Write the coreset to a ``.npz`` file atomically (temporary file, fsync, rename)."""
        path = Path(path)
        header = {"method": self.method, "round": self.round,
                  "budgets": {str(label): int(b) for label, b in self.budgets.items()},
                  "metadata": _jsonable(self.metadata)}
        atomic_write(path, lambda stream: np.savez(
            stream, indices=self.indices, weights=self.weights, gains=self.gains,
            header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Coreset":
        """Read a file written by :meth:`save`; no pickles are ever loaded.

        Any damaged or foreign file raises :class:`InputError`; an array member may not
        claim more bytes than it holds (so a few-KB file cannot make NumPy allocate
        gigabytes), and the result must be a valid coreset: integer indices, unique and
        >= 0, finite weights > 0, one length for indices, weights and gains.
        """
        try:
            arrays = _read_members(Path(path), ("indices", "weights", "gains", "header"))
            header = json.loads(arrays.pop("header").tobytes().decode())
            budgets = {int(label): int(b) for label, b in header["budgets"].items()}
            _check_loaded_arrays(arrays)
            return cls(**arrays, method=str(header["method"]), budgets=budgets,
                       round=int(header["round"]), metadata=dict(header["metadata"]))
        except Exception as error:  # zipfile, NumPy's header parser and json raise many types
            raise InputError(f"path: cannot read a coreset from {str(path)!r} "
                             f"({type(error).__name__}: {error})") from error


# deflate expands at most about 1032-fold: a bound on what a zip member can hold
_MAX_EXPANSION = 1032


def _read_members(path: Path, keys) -> dict[str, np.ndarray]:
    """The ``.npy`` members ``keys`` of the archive at ``path``, each read within its size."""
    arrays = {}
    size = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        for key in keys:
            info = archive.getinfo(f"{key}.npy")
            limit = min(info.file_size, _MAX_EXPANSION * min(info.compress_size, size))
            with archive.open(info) as member:
                raw = member.read(limit + 1)
            if len(raw) > limit:
                raise InputError(f"{key}.npy holds more than its declared {limit} bytes")
            stream = io.BytesIO(raw)
            version = np.lib.format.read_magic(stream)
            if version not in ((1, 0), (2, 0)):
                raise InputError(f"{key}.npy: .npy format version {version}, expected 1.0 or 2.0")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(stream)
            claimed = math.prod(shape) * dtype.itemsize
            if dtype.hasobject or claimed > len(raw) - stream.tell():
                raise InputError(f"{key}.npy declares {dtype} values of shape {shape}, "
                                 f"more than its {len(raw)} bytes hold")
            stream.seek(0)
            arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    return arrays


def _check_loaded_arrays(arrays: dict[str, np.ndarray]) -> None:
    indices, weights, gains = arrays["indices"], arrays["weights"], arrays["gains"]
    for key, array in arrays.items():
        if array.ndim != 1:
            raise InputError(f"{key} has shape {array.shape}, expected a vector")
    if not np.issubdtype(indices.dtype, np.integer):
        raise InputError(f"indices are {indices.dtype}, expected integers")
    for key in ("weights", "gains"):
        if not (np.issubdtype(arrays[key].dtype, np.floating)
                or np.issubdtype(arrays[key].dtype, np.integer)):
            raise InputError(f"{key} are {arrays[key].dtype}, expected real numbers")
    if indices.size and (indices.min() < 0 or indices.max() > np.iinfo(np.int64).max
                         or np.unique(indices).shape[0] != indices.shape[0]):
        raise InputError("indices are not unique non-negative row numbers")
    if not np.all(np.isfinite(weights)) or np.any(weights <= 0):
        raise InputError("weights are not all finite and > 0")


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
