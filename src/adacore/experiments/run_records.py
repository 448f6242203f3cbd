"""What a run record is, and the checks that every reader of one applies.

A *run* is the plain, JSON-serialisable dict the trainer writes for one (method, seed):
top-level totals (``test_accuracy_at_best_val``, ``final_test_accuracy``,
``fraction_visited``, ``select_seconds``, ``train_seconds``, ``eval_seconds``, ...) and a
per-epoch ``history``. In the history, ``select_seconds``, ``train_seconds`` and
``eval_seconds`` are per epoch; ``examples_processed`` and ``wall_seconds`` (selection +
training, evaluation excluded) are cumulative; ``gradient_error`` is None in epochs
without a selection round.

This module owns the validation of a list of runs (:func:`check_runs`: keys, ranges,
one fraction per method, no repeated seed, one dataset and model, and a reported
``best_val_epoch`` that the history confirms as an epoch of best *validation*
accuracy), and the grouping of runs by method that the summaries, tables and plots
share. It computes nothing from the runs.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from typing import Any

from adacore.validation import InputError, check_fraction, fail

__all__ = ["ACCURACY_KEYS", "SECONDS_KEYS", "check_margin", "check_number", "check_runs",
           "check_target", "check_text", "group_by_method"]

ACCURACY_KEYS = ("final_test_accuracy", "test_accuracy_at_best_val", "fraction_visited")
SECONDS_KEYS = ("select_seconds", "train_seconds", "eval_seconds")
_RUN_KEYS = ("method", "seed", "fraction", "dataset", "model", "best_val_epoch",
             *ACCURACY_KEYS, *SECONDS_KEYS)
# History keys: those whose values are fractions in [0, 1], and the cumulative ones.
_HISTORY_FRACTIONS = {"val_accuracy", "test_accuracy", "fraction_visited"}
_HISTORY_CUMULATIVE = {"examples_processed", "wall_seconds"}
_TOLERANCE = dict(rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- validation

def check_number(name: str, value: Any, *, low: float | None = None,
                 high: float | None = None) -> float:
    """A finite real number in [low, high]."""
    expected = "a finite number"
    if low is not None and high is not None:
        expected = f"a finite number in [{low:g}, {high:g}]"
    elif low is not None:
        expected = f"a finite number >= {low:g}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fail(name, value, expected)
    number = float(value)
    if not math.isfinite(number) or (low is not None and number < low) or (
            high is not None and number > high):
        raise fail(name, value, expected)
    return number


def _integer(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise fail(name, value, f"an int >= {low}")
    return int(value)


def check_text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise fail(name, value, "a non-empty string")
    return value


def _check_history(name: str, history: Any, keys: Sequence[str]) -> None:
    """A non-empty list of epoch dicts with strictly increasing epochs and ``keys``."""
    if not isinstance(history, Sequence) or isinstance(history, (str, bytes)) or not history:
        raise fail(name, history, "a non-empty list of per-epoch dicts")
    previous_epoch = -1
    previous = {key: -math.inf for key in keys}
    for position, entry in enumerate(history):
        where = f"{name}[{position}]"
        if not isinstance(entry, Mapping):
            raise fail(where, entry, "a dict of per-epoch metrics")
        missing = [key for key in ("epoch", *keys) if key not in entry]
        if missing:
            raise InputError(f"{where}: missing key(s) {', '.join(missing)}; expected a "
                             f"per-epoch record with epoch, {', '.join(keys)}")
        epoch = _integer(f"{where}['epoch']", entry["epoch"], 0)
        if epoch <= previous_epoch:
            raise fail(f"{where}['epoch']", epoch,
                       f"an epoch after the previous one ({previous_epoch})")
        previous_epoch = epoch
        for key in keys:
            high = 1.0 if key in _HISTORY_FRACTIONS else None
            value = check_number(f"{where}[{key!r}]", entry[key], low=0.0, high=high)
            if key in _HISTORY_CUMULATIVE:
                if value < previous[key]:
                    raise fail(f"{where}[{key!r}]", entry[key],
                               f"a cumulative value >= the previous epoch's "
                               f"({previous[key]:g})")
                previous[key] = value


def _check_best_epoch(name: str, run: Mapping) -> None:
    """The reported best epoch must be one of best validation accuracy in the history."""
    history = run["history"]
    epoch = run["best_val_epoch"]
    chosen = next((entry for entry in history if entry["epoch"] == epoch), None)
    if chosen is None:
        raise InputError(f"{name}['best_val_epoch']: got {epoch}, expected an epoch present "
                         f"in the run's history")
    best = max(entry["val_accuracy"] for entry in history)
    if chosen["val_accuracy"] < best and not math.isclose(chosen["val_accuracy"], best,
                                                          **_TOLERANCE):
        best_epoch = next(entry["epoch"] for entry in history if entry["val_accuracy"] == best)
        raise InputError(
            f"{name}['best_val_epoch']: got {epoch} (validation accuracy "
            f"{chosen['val_accuracy']:g}), expected an epoch of best validation accuracy "
            f"(epoch {best_epoch}: {best:g}); epochs are never chosen by test accuracy")
    if not math.isclose(chosen["test_accuracy"], run["test_accuracy_at_best_val"], **_TOLERANCE):
        raise InputError(
            f"{name}['test_accuracy_at_best_val']: got {run['test_accuracy_at_best_val']!r}, "
            f"expected the history's test accuracy at best_val_epoch {epoch} "
            f"({chosen['test_accuracy']!r})")


def check_runs(runs: Any, *, history_keys: Sequence[str] = ()) -> list[Mapping]:
    """Validate run records; ``history_keys`` makes a history with those keys required."""
    if isinstance(runs, (str, bytes, Mapping)) or not isinstance(runs, Sequence):
        raise fail("runs", runs, "a list of run records (dicts)")
    if not runs:
        raise fail("runs", runs, "a non-empty list of run records")
    seeds_seen: set[tuple[str, int]] = set()
    fraction_of: dict[str, float] = {}
    for position, run in enumerate(runs):
        name = f"runs[{position}]"
        if not isinstance(run, Mapping):
            raise fail(name, run, "a run record (dict)")
        missing = [key for key in _RUN_KEYS if key not in run]
        if missing:
            raise InputError(f"{name}: missing key(s) {', '.join(missing)}; expected a run "
                             f"record with {', '.join(_RUN_KEYS)}")
        method = check_text(f"{name}['method']", run["method"])
        seed = _integer(f"{name}['seed']", run["seed"], 0)
        fraction = check_fraction(f"{name}['fraction']", run["fraction"])
        for key in ("dataset", "model"):
            check_text(f"{name}[{key!r}]", run[key])
        _integer(f"{name}['best_val_epoch']", run["best_val_epoch"], 0)
        for key in ACCURACY_KEYS:
            check_number(f"{name}[{key!r}]", run[key], low=0.0, high=1.0)
        for key in SECONDS_KEYS:
            check_number(f"{name}[{key!r}]", run[key], low=0.0)
        if (method, seed) in seeds_seen:
            raise fail(f"{name}['seed']", seed,
                       f"a seed not already used by another run of method {method!r}")
        seeds_seen.add((method, seed))
        if fraction_of.setdefault(method, fraction) != fraction:
            raise fail(f"{name}['fraction']", run["fraction"],
                       f"the same fraction as method {method!r}'s other runs "
                       f"({fraction_of[method]:g})")
        for key in ("dataset", "model"):
            if run[key] != runs[0][key]:
                raise fail(f"{name}[{key!r}]", run[key],
                           f"the same {key} as runs[0] ({runs[0][key]!r}): a report "
                           f"compares methods on one {key}")
        if history_keys or run.get("history"):
            if "history" not in run:
                raise InputError(f"{name}: missing key history; expected a per-epoch history "
                                 f"with {', '.join(history_keys)}")
            keys = list(dict.fromkeys(("val_accuracy", "test_accuracy", *history_keys)))
            _check_history(f"{name}['history']", run["history"], keys)
            _check_best_epoch(name, run)
    return list(runs)


def check_target(target: Any) -> float:
    if isinstance(target, numbers.Real) and not isinstance(target, bool) and 1 < target <= 100:
        raise fail("target", target, "a validation accuracy as a fraction in (0, 1] "
                                     "(e.g. 0.94 for 94%)")
    return check_fraction("target", target)


def check_margin(margin: Any, name: str = "margin") -> float:
    """A margin of accuracy below full data's, as a fraction in (0, 1) (0.01: 1 point)."""
    expected = "a fraction in (0, 1) (e.g. 0.01 for 1 percentage point)"
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real):
        raise fail(name, margin, expected)
    value = float(margin)
    if not 0.0 < value < 1.0:      # NaN fails this too
        raise fail(name, margin, expected)
    return value


def group_by_method(runs: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Runs by method, methods in order of first appearance, seeds in input order."""
    groups: dict[str, list[Mapping]] = {}
    for run in runs:
        groups.setdefault(run["method"], []).append(run)
    return groups
