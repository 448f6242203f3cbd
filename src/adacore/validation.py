"""Checks at the library's boundary.

Every public entry point validates its arguments here and raises :class:`InputError`
(a ``ValueError``) that names the argument, the value it got and what was expected.
Nothing deeper in the library re-checks what these functions have already checked.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
import torch


class InputError(ValueError):
    """A bad argument or input file: names the argument, the value and what was expected."""


def _describe(value: Any) -> str:
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return f"an array of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def fail(name: str, value: Any, expected: str) -> InputError:
    """Build the error for argument ``name``: ``raise fail("k", k, "an int in [1, n]")``."""
    return InputError(f"{name}: got {_describe(value)}, expected {expected}")


def as_tensor(name: str, array: Any, *, ndim: int | None = None, dtype=torch.float32,
              device: torch.device | str | None = None) -> torch.Tensor:
    """Convert a NumPy array, tensor or nested list to a finite floating tensor.

    Raises :class:`InputError` for non-numeric data, a wrong number of dimensions,
    an empty array, or any NaN / inf entry.
    """
    if isinstance(array, torch.Tensor):
        tensor = array.detach()
    else:
        try:
            np_array = np.asarray(array)
        except (TypeError, ValueError) as error:
            raise fail(name, array, "a numeric array") from error
        if np_array.dtype == object or not (np.issubdtype(np_array.dtype, np.number)
                                            or np_array.dtype == bool):
            raise fail(name, array, "a numeric array")
        tensor = torch.from_numpy(np.ascontiguousarray(np_array))
    if tensor.is_complex():
        raise fail(name, array, "a real-valued array")
    if ndim is not None and tensor.ndim != ndim:
        raise fail(name, array, f"a {ndim}-D array")
    if tensor.numel() == 0:
        raise fail(name, array, "a non-empty array")
    tensor = tensor.to(dtype=dtype, device=device)
    if not bool(torch.isfinite(tensor).all()):
        bad = int((~torch.isfinite(tensor)).sum())
        raise InputError(f"{name}: {bad} entries are NaN or inf, expected finite values")
    return tensor


def as_labels(name: str, labels: Any, n: int | None = None) -> np.ndarray:
    """Integer class labels as an int64 NumPy vector of length ``n`` (when given).

    Floats must be whole numbers and unsigned integers below 2**63: a label the int64
    cast would change (merge or wrap) is refused, never converted.
    """
    if isinstance(labels, torch.Tensor):
        labels = labels.detach().cpu().numpy()
    try:
        array = np.asarray(labels)
    except (TypeError, ValueError) as error:
        raise fail(name, labels, "a 1-D array of integer class labels") from error
    if array.ndim != 1:
        raise fail(name, labels, "a 1-D array of integer class labels")
    if array.size == 0:
        raise fail(name, labels, "a non-empty array of labels")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.all(array == np.round(array)):
            raise fail(name, labels, "integer class labels (floats with fractional "
                                     "parts, NaN or inf found)")
        # beyond int64 the cast would map every such label to one value
        outside = (array < -2.0**63) | (array >= 2.0**63)
        if outside.any():
            raise InputError(f"{name}: {int(outside.sum())} labels lie outside the int64 "
                             f"range (e.g. {array[outside][0]:g}), expected integer class "
                             f"labels in [-2**63, 2**63)")
    elif np.issubdtype(array.dtype, np.unsignedinteger):
        # above 2**63 - 1 the cast would wrap to negative labels
        outside = array > np.iinfo(np.int64).max
        if outside.any():
            raise InputError(f"{name}: {int(outside.sum())} unsigned labels exceed the int64 "
                             f"range (e.g. {int(array[outside][0])}), expected integer class "
                             f"labels below 2**63")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise fail(name, labels, "integer class labels")
    if n is not None and array.shape[0] != n:
        raise InputError(f"{name}: got {array.shape[0]} labels, expected {n} "
                         f"(one per row of the vectors)")
    return array.astype(np.int64)


def check_fraction(name: str, fraction: Any) -> float:
    """A fraction in (0, 1]."""
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real):
        raise fail(name, fraction, "a number in (0, 1]")
    value = float(fraction)
    if not (0.0 < value <= 1.0):
        raise fail(name, fraction, "a number in (0, 1]")
    return value


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer in [low, high] (high None: no upper bound)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        expected = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise fail(name, value, expected)
    value = int(value)
    if value < low or (high is not None and value > high):
        expected = f"an int in [{low}, {high}]" if high is not None else f"an int >= {low}"
        raise fail(name, value, expected)
    return value


def check_positive(name: str, value: Any, *, allow_zero: bool = False) -> float:
    """A finite real number > 0 (or >= 0 with ``allow_zero``)."""
    expected = "a finite number >= 0" if allow_zero else "a finite number > 0"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, expected)
    number = float(value)
    if not np.isfinite(number) or number < 0 or (number == 0 and not allow_zero):
        raise fail(name, value, expected)
    return number


def check_unit_interval(name: str, value: Any) -> float:
    """A number in [0, 1)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, "a number in [0, 1)")
    number = float(value)
    if not (0.0 <= number < 1.0):
        raise fail(name, value, "a number in [0, 1)")
    return number


def check_choice(name: str, value: Any, choices) -> str:
    """One of a fixed set of names."""
    try:
        known = value in choices
    except TypeError:           # an unhashable value (a list from TOML) is no name
        known = False
    if not known:
        raise fail(name, value, "one of " + ", ".join(repr(c) for c in sorted(choices)))
    return value


def check_real(name: str, value: Any, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False) -> float:
    """A finite real number (not a bool) in the interval from ``low`` to ``high``.

    ``low_open`` / ``high_open`` exclude the bound itself; a bound of None is no bound.
    """
    left = "(" if low_open else "["
    right = ")" if high_open else "]"
    if low is not None and high is not None:
        expected = f"a number in {left}{low}, {high}{right}"
    elif low is not None:
        expected = f"a finite number {'>' if low_open else '>='} {low}"
    elif high is not None:
        expected = f"a finite number {'<' if high_open else '<='} {high}"
    else:
        expected = "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, expected)
    number = float(value)
    if not np.isfinite(number):
        raise fail(name, value, expected)
    if low is not None and (number < low or (low_open and number == low)):
        raise fail(name, value, expected)
    if high is not None and (number > high or (high_open and number == high)):
        raise fail(name, value, expected)
    return number


def check_bool(name: str, value: Any) -> bool:
    """A boolean: ``True`` or ``False`` (not the string ``"true"``, not 1)."""
    if not isinstance(value, (bool, np.bool_)):
        raise fail(name, value, "true or false")
    return bool(value)


def check_string(name: str, value: Any, *, optional: bool = False) -> str | None:
    """A string (or None with ``optional``)."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise fail(name, value, "a string" + (" or nothing" if optional else ""))
    return value


def check_device(name: str, device: Any) -> torch.device | str | None:
    """Where a computation runs: None (where the data is), a ``torch.device`` or a name
    torch accepts (``"cpu"``, ``"cuda"``, ``"cuda:1"``); returned as given."""
    if device is None or isinstance(device, torch.device):
        return device
    if not isinstance(device, str):
        raise fail(name, device, "a device name such as 'cpu' or 'cuda', or nothing")
    try:
        torch.device(device)
    except (RuntimeError, ValueError) as error:
        raise fail(name, device, "a device name such as 'cpu' or 'cuda', or nothing") \
            from error
    return device
