"""The Coreset record: which examples were chosen, with which weights."""

from __future__ import annotations

import json
import os
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

    def normalized_weights(self) -> np.ndarray:
        """Weights rescaled to mean 1, so a learning rate keeps its meaning."""
        return self.weights / self.weights.mean()

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
        """Read a file written by :meth:`save`; no pickles are ever loaded."""
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in ("indices", "weights", "gains", "header")}
            header = json.loads(arrays.pop("header").tobytes().decode())
            budgets = {int(label): int(b) for label, b in header["budgets"].items()}
            return cls(**arrays, method=str(header["method"]), budgets=budgets,
                       round=int(header["round"]), metadata=dict(header["metadata"]))
        except (OSError, KeyError, ValueError, TypeError, AttributeError) as error:
            if isinstance(error, InputError):
                raise
            raise InputError(f"path: cannot read a coreset from {str(path)!r} ({error})") \
                from error


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
