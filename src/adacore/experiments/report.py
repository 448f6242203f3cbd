"""Summaries, tables, JSON records and plots of training runs.

A *run* is the plain, JSON-serialisable dict the trainer writes for one (method, seed):
top-level totals (``test_accuracy_at_best_val``, ``final_test_accuracy``,
``fraction_visited``, ``select_seconds``, ``train_seconds``, ``eval_seconds``, ...) and a
per-epoch ``history``. In the history, ``select_seconds``, ``train_seconds`` and
``eval_seconds`` are per epoch; ``examples_processed`` and ``wall_seconds`` (selection +
training, evaluation excluded) are cumulative; ``gradient_error`` is None in epochs
without a selection round.

The headline number is the test accuracy at the epoch of best *validation* accuracy:
epochs are never picked by test accuracy. When a run carries its history, the reported
``best_val_epoch`` is checked against it. Where AdaCore is among the methods, every other
method is compared with it seed by seed (the tests live in
:mod:`adacore.experiments.statistics`).

Every writer is atomic: the bytes go to a temporary file in the target's folder, are
fsynced and then moved over the target with :func:`os.replace`, so a reader never sees a
half-written file and a failure leaves the old file as it was.
"""

from __future__ import annotations

import io
import json
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
# Figure directly, not pyplot: no global backend or figure registry is touched.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adacore.atomic import atomic_write_bytes
from adacore.experiments.statistics import paired_comparison
from adacore.validation import InputError, check_choice, check_fraction, fail

__all__ = ["PAIRED_REFERENCE", "accuracy_figure", "gradient_error_figure", "markdown_table",
           "paired_accuracy", "plot_curves", "plot_gradient_error", "read_json",
           "settings_of", "speedup_to_target", "summarize", "write_json", "write_markdown",
           "write_report"]

_ACCURACY_KEYS = ("final_test_accuracy", "test_accuracy_at_best_val", "fraction_visited")
_SECONDS_KEYS = ("select_seconds", "train_seconds", "eval_seconds")
_RUN_KEYS = ("method", "seed", "fraction", "dataset", "model", "best_val_epoch",
             *_ACCURACY_KEYS, *_SECONDS_KEYS)
# History keys: those whose values are fractions in [0, 1], and the cumulative ones.
_HISTORY_FRACTIONS = {"val_accuracy", "test_accuracy", "fraction_visited"}
_HISTORY_CUMULATIVE = {"examples_processed", "wall_seconds"}

# x-axis views of the accuracy curves: history key (None: the epoch), label, file, log x.
_VIEWS = {
    "epoch": (None, "epoch", "accuracy_vs_epoch.png", False),
    "examples": ("examples_processed", "training examples processed (cumulative, count)",
                 "accuracy_vs_examples.png", True),
    "seconds": ("wall_seconds", "wall-clock time, selection + training (cumulative, s)",
                "accuracy_vs_seconds.png", True),
}
_GRADIENT_ERROR_FILE = "gradient_error.png"
# the method every other is compared with, seed by seed, in results.json and results.md
PAIRED_REFERENCE = "adacore"
_HEADLINE = "test_accuracy_at_best_val"
_TOLERANCE = dict(rel_tol=1e-9, abs_tol=1e-12)


# --------------------------------------------------------------------------- validation

def _number(name: str, value: Any, *, low: float | None = None,
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


def _text(name: str, value: Any) -> str:
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
            value = _number(f"{where}[{key!r}]", entry[key], low=0.0, high=high)
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


def _check_runs(runs: Any, *, history_keys: Sequence[str] = ()) -> list[Mapping]:
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
        method = _text(f"{name}['method']", run["method"])
        seed = _integer(f"{name}['seed']", run["seed"], 0)
        fraction = check_fraction(f"{name}['fraction']", run["fraction"])
        for key in ("dataset", "model"):
            _text(f"{name}[{key!r}]", run[key])
        _integer(f"{name}['best_val_epoch']", run["best_val_epoch"], 0)
        for key in _ACCURACY_KEYS:
            _number(f"{name}[{key!r}]", run[key], low=0.0, high=1.0)
        for key in _SECONDS_KEYS:
            _number(f"{name}[{key!r}]", run[key], low=0.0)
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


def _path_error(name: str, path: Path, expected: str) -> InputError:
    # Not ``fail``: its 60-character cut would hide the file name at the end of a path.
    return InputError(f"{name}: got {str(path)!r}, expected {expected}")


def _check_target(target: Any) -> float:
    if isinstance(target, numbers.Real) and not isinstance(target, bool) and 1 < target <= 100:
        raise fail("target", target, "a validation accuracy as a fraction in (0, 1] "
                                     "(e.g. 0.94 for 94%)")
    return check_fraction("target", target)


# --------------------------------------------------------------------------- statistics

def _group(runs: Sequence[Mapping]) -> dict[str, list[Mapping]]:
    """Runs by method, methods in order of first appearance, seeds in input order."""
    groups: dict[str, list[Mapping]] = {}
    for run in runs:
        groups.setdefault(run["method"], []).append(run)
    return groups


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    std = float(array.std(ddof=1)) if array.size > 1 else 0.0
    return {"mean": float(array.mean()), "std": std}


def summarize(runs: Sequence[Mapping]) -> list[dict]:
    """Mean and standard deviation over seeds, one entry per method.

    Parameters
    ----------
    runs : list of dict
        Run records, one per (method, seed), as the trainer writes them. Methods keep
        one fraction; all runs share one dataset and model; a method never repeats a
        seed. A run's ``history``, when present, must confirm ``best_val_epoch`` as an
        epoch of best validation accuracy and ``test_accuracy_at_best_val`` as the test
        accuracy at that epoch.

    Returns
    -------
    list of dict
        In order of each method's first appearance: ``method``, ``dataset``, ``model``,
        ``fraction``, ``n_seeds``, ``seeds`` (sorted) and, each as ``{"mean", "std"}``
        (sample std, ddof=1, 0 for one seed): ``test_accuracy_at_best_val`` (the
        headline), ``final_test_accuracy``, ``fraction_visited``, ``select_seconds``,
        ``train_seconds``, ``eval_seconds`` and ``total_seconds`` (selection + training;
        evaluation excluded, as in the history's ``wall_seconds``).

    Raises
    ------
    InputError
        For an empty list, a missing key, a NaN or out-of-range value, mixed fractions
        within a method, a repeated seed, or a best epoch the history contradicts.
    """
    runs = _check_runs(runs)
    summary = []
    for method, group in _group(runs).items():
        entry: dict[str, Any] = {
            "method": method, "dataset": group[0]["dataset"], "model": group[0]["model"],
            "fraction": float(group[0]["fraction"]), "n_seeds": len(group),
            "seeds": sorted(int(run["seed"]) for run in group),
        }
        for key in (*_ACCURACY_KEYS, *_SECONDS_KEYS):
            entry[key] = _mean_std([float(run[key]) for run in group])
        entry["total_seconds"] = _mean_std(
            [float(run["select_seconds"]) + float(run["train_seconds"]) for run in group])
        summary.append(entry)
    return summary


def _seconds_to_target(history: Sequence[Mapping], target: float) -> float | None:
    """Cumulative wall seconds at the first epoch whose validation accuracy >= target."""
    for entry in history:
        if entry["val_accuracy"] >= target:
            return float(entry["wall_seconds"])
    return None


def speedup_to_target(runs: Sequence[Mapping], *, target: float,
                      reference: str = "full") -> dict[str, dict]:
    """Wall-clock speedup over ``reference`` to first reach a validation accuracy.

    A method's time to target is the mean over seeds of the cumulative ``wall_seconds``
    (selection + training) at the first epoch whose *validation* accuracy reaches
    ``target``. A method counts as having reached it only if every seed did.

    Parameters
    ----------
    runs : list of dict
        Run records with a ``history`` carrying ``val_accuracy`` and ``wall_seconds``.
    target : float
        Validation accuracy as a fraction in (0, 1], e.g. 0.94.
    reference : str, default "full"
        The method whose time is the numerator of every speedup.

    Returns
    -------
    dict
        Method -> ``{"seconds", "seconds_std", "seeds_reached", "n_seeds", "speedup",
        "note"}``, in order of first appearance. ``seconds`` is None unless every seed
        reached the target; ``speedup`` = reference seconds / method seconds, None when
        the method or the reference did not reach the target or the reference is absent;
        ``note`` says why in words (None when there is nothing to say).
    """
    target = _check_target(target)
    reference = _text("reference", reference)
    runs = _check_runs(runs, history_keys=("val_accuracy", "wall_seconds"))
    percent = f"{100 * target:g}%"
    results: dict[str, dict] = {}
    for method, group in _group(runs).items():
        times = [_seconds_to_target(run["history"], target) for run in group]
        reached = [time for time in times if time is not None]
        stats = _mean_std(reached) if len(reached) == len(times) else None
        note = None
        if not reached:
            note = f"never reached {percent} validation accuracy"
        elif stats is None:
            note = (f"reached {percent} validation accuracy in only {len(reached)} of "
                    f"{len(times)} seeds")
        results[method] = {"seconds": None if stats is None else stats["mean"],
                           "seconds_std": None if stats is None else stats["std"],
                           "seeds_reached": len(reached), "n_seeds": len(times),
                           "speedup": None, "note": note}
    if reference not in results:
        note = (f"reference method {reference!r} is not among the runs "
                f"({', '.join(results)}): no speedup")
        for entry in results.values():
            entry["note"] = note
        return results
    reference_seconds = results[reference]["seconds"]
    for method, entry in results.items():
        if entry["seconds"] is None:
            continue
        if reference_seconds is None:
            entry["note"] = f"reference {reference!r} did not reach {percent} in every seed"
        elif entry["seconds"] == 0:
            entry["note"] = f"reached {percent} at 0 s of wall-clock time: speedup undefined"
        else:
            entry["speedup"] = reference_seconds / entry["seconds"]
    return results


def paired_accuracy(runs: Sequence[Mapping], *,
                    reference: str = PAIRED_REFERENCE) -> dict[str, dict]:
    """Every method against ``reference`` on the headline, paired by seed.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`summarize`).
    reference : str, default "adacore"
        The method every other is compared with.

    Returns
    -------
    dict
        Method -> ``{"vs", "seeds", "n", "mean_diff", "std_diff", "ci95", "t_statistic",
        "p_value", "p_value_wilcoxon", "test", "test_wilcoxon", "note"}`` (see
        :func:`adacore.experiments.statistics.paired_test`), for every method other than
        ``reference``; differences are reference - method in test accuracy at the best
        validation epoch (fractions, as in the runs), over the seeds both ran. Empty
        when ``reference`` is not among the runs.
    """
    runs = _check_runs(runs)
    values = {method: {int(run["seed"]): float(run[_HEADLINE]) for run in group}
              for method, group in _group(runs).items()}
    return paired_comparison(values, reference=reference)


def _setting_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, default=str)


def settings_of(runs: Sequence[Mapping]) -> dict:
    """The runs' settings (their ``config``), split into shared and differing ones.

    Parameters
    ----------
    runs : list of dict
        Run records; each may carry ``config`` (the trainer's settings as a dict).

    Returns
    -------
    dict
        ``shared``: setting -> value, for the settings every run has with one value
        (``method`` and ``seed`` left out, and settings that are None in every run);
        ``differing``: setting -> {method: [values over its runs]} for the others;
        ``missing``: how many runs carry no ``config``.
    """
    runs = _check_runs(runs)
    configs = [run.get("config") for run in runs]
    present = [(run, config) for run, config in zip(runs, configs)
               if isinstance(config, Mapping)]
    result: dict[str, Any] = {"shared": {}, "differing": {},
                              "missing": len(runs) - len(present)}
    keys = list(dict.fromkeys(key for _, config in present for key in config))
    for key in keys:
        if key in ("method", "seed"):
            continue
        values = [config.get(key) for _, config in present]
        if all(value is None for value in values):
            continue
        texts = {_setting_text(value) for value in values}
        if len(texts) == 1 and len(values) == len(runs):
            result["shared"][key] = values[0]
            continue
        per_method: dict[str, list] = {}
        for run, config in present:
            entry = per_method.setdefault(run["method"], [])
            if config.get(key) not in entry:
                entry.append(config.get(key))
        result["differing"][key] = per_method
    return result


# --------------------------------------------------------------------------- markdown

def _mean_text(stats: Mapping[str, float], n_seeds: int, digits: int, scale: float = 1.0,
               suffix: str = "") -> str:
    """``mean ± std``; with one seed the value alone (a std of one value is no std)."""
    mean = f"{scale * stats['mean']:.{digits}f}"
    if n_seeds == 1:
        return mean + suffix
    return f"{mean} ± {scale * stats['std']:.{digits}f}{suffix}"


def _percent(stats: Mapping[str, float], n_seeds: int, suffix: str = "") -> str:
    return _mean_text(stats, n_seeds, 1, 100.0, suffix)


def _seconds(stats: Mapping[str, float], n_seeds: int) -> str:
    # Two decimals below a second, so short selections do not all read 0.0.
    return _mean_text(stats, n_seeds, 1 if stats["mean"] >= 1 else 2)


def _fraction_label(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def _speedup_cell(entry: Mapping, reference: str, reference_present: bool) -> str:
    if entry["speedup"] is not None:
        return f"{entry['speedup']:.1f}×"
    if not reference_present:
        return "n/a"
    if entry["seconds"] is None:
        return "not reached"
    return f"not reached by {reference}"


def _p_text(p_value: float) -> str:
    return "p < 0.001" if p_value < 0.001 else f"p = {p_value:.2g}"


def _points(value: float) -> str:
    """A difference of accuracies (fractions) in signed percentage points."""
    return f"{100 * value:+.1f}".replace("-", "−")


def _paired_cell(entry: Mapping | None) -> str:
    if entry is None:
        return "—"
    if entry["n"] == 0:
        return "no seed in common"
    if entry["n"] == 1:
        return f"{_points(entry['mean_diff'])} (1 seed, no test)"
    if entry["p_value"] is None:
        return f"{_points(entry['mean_diff'])} (no test: equal on every seed)"
    low, high = entry["ci95"]
    return (f"{_points(entry['mean_diff'])} ({_points(low)} to {_points(high)}, "
            f"{_p_text(entry['p_value'])})")


def _seed_words(summary: Sequence[Mapping]) -> tuple[str, bool]:
    """How many seeds, in words, and whether the methods differ in that."""
    counts = sorted({entry["n_seeds"] for entry in summary})
    seed_sets = {tuple(entry["seeds"]) for entry in summary}
    if len(counts) == 1 and len(seed_sets) == 1:
        seeds = ", ".join(str(seed) for seed in summary[0]["seeds"])
        if counts[0] == 1:
            return f"1 seed ({seeds}; single runs, no standard deviation)", False
        return f"{counts[0]} seeds ({seeds}; mean ± std over seeds)", False
    return (f"{counts[0]}–{counts[-1]} seeds per method (see *seeds*; mean ± std over a "
            f"method's seeds, the value alone for one seed)"), True


def _settings_lines(runs: Sequence[Mapping], command: str | None) -> list[str]:
    settings = settings_of(runs)
    lines = []
    if settings["shared"]:
        lines.append("Settings (every run): " + ", ".join(
            f"{key} `{_setting_text(value)}`" for key, value in settings["shared"].items())
                     + ".")
    if settings["differing"]:
        parts = []
        for key, per_method in settings["differing"].items():
            parts.append(f"{key}: " + "; ".join(
                f"{method} " + " / ".join(f"`{_setting_text(value)}`" for value in values)
                for method, values in per_method.items()))
        lines.append("Settings that differ: " + "; ".join(parts) + ".")
    if settings["missing"] == len(runs):
        lines.append("Settings: not recorded (the runs carry no config).")
    elif settings["missing"]:
        lines.append(f"Settings: {settings['missing']} of {len(runs)} runs carry no config.")
    lines.append(f"Command: `{command}`" if command else "Command: not recorded.")
    return lines


def markdown_table(runs: Sequence[Mapping], *, target: float | None = None,
                   reference: str = "full", command: str | None = None) -> str:
    """A Markdown results table in the poster's style, one row per method.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`summarize`); with ``target``, each needs a ``history``.
    target : float, optional
        Validation accuracy (fraction in (0, 1]) for a "speedup to X%" column against
        ``reference`` (see :func:`speedup_to_target`); no such column when None.
    reference : str, default "full"
        The method the speedups are measured against.
    command : str, optional
        The command line that produced the runs, stated under the table.

    Returns
    -------
    str
        A header line (dataset, model, coreset fraction, number of seeds), the table
        ``| method | test acc. (best val) | final test acc. | visited | selection s |
        training s | speedup to X% | AdaCore − method (95% CI, p) |`` with cells such as
        ``94.4 ± 0.2 (74%)`` (test accuracy in % at the epoch of best validation
        accuracy, the fraction of the training set ever visited in parentheses; a
        method with one seed shows its value alone), notes on how it was measured, the
        settings of the runs and the command. The speedup column needs ``target``; the
        paired column needs AdaCore and another method; a *seeds* column appears when
        the methods ran different seeds.
    """
    if command is not None and not isinstance(command, str):
        raise fail("command", command, "a string (the command line) or None")
    summary = summarize(runs)
    speedups = (speedup_to_target(runs, target=target, reference=reference)
                if target is not None else None)
    paired = paired_accuracy(runs) if len(summary) > 1 else {}
    fractions = sorted({entry["fraction"] for entry in summary if entry["fraction"] < 1}
                       or {1.0})
    seed_text, mixed_seeds = _seed_words(summary)
    lines = [f"Results on **{summary[0]['dataset']}** with model **{summary[0]['model']}**, "
             f"fraction {', '.join(_fraction_label(f) for f in fractions)}, {seed_text}.",
             ""]
    header = ["method"] + (["seeds"] if mixed_seeds else []) + [
        "test acc. (best val)", "final test acc.", "visited", "selection s", "training s"]
    if speedups is not None:
        header.append(f"speedup to {_fraction_label(target)}")
    if paired:
        header.append("AdaCore − method (95% CI, p)")
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    for entry in summary:
        n_seeds = entry["n_seeds"]
        visited = entry["fraction_visited"]
        cells = [entry["method"].replace("|", "\\|")]
        if mixed_seeds:
            cells.append(", ".join(str(seed) for seed in entry["seeds"]))
        cells += [f"{_percent(entry['test_accuracy_at_best_val'], n_seeds)} "
                  f"({100 * visited['mean']:.0f}%)",
                  _percent(entry["final_test_accuracy"], n_seeds),
                  _percent(visited, n_seeds, "%"),
                  _seconds(entry["select_seconds"], n_seeds),
                  _seconds(entry["train_seconds"], n_seeds)]
        if speedups is not None:
            cells.append(_speedup_cell(speedups[entry["method"]], reference,
                                       reference in speedups))
        if paired:
            cells.append(_paired_cell(paired.get(entry["method"])))
        lines.append("| " + " | ".join(cells) + " |")
    counts = sorted({entry["n_seeds"] for entry in summary})
    over = (f"over {counts[0]} seed{'s' if counts[0] != 1 else ''}" if len(counts) == 1
            else "over each method's seeds")
    statistic = ("single runs" if counts == [1]
                 else f"mean ± sample std (ddof 1) {over}")
    lines += ["", f"Test accuracy in % at the epoch of best validation accuracy (never "
                  f"chosen by test accuracy), {statistic}; in parentheses and under "
                  f"*visited*, the fraction of the training set ever selected. Seconds: "
                  f"selection and training, evaluation excluded."]
    if speedups is not None:
        lines[-1] += (f" Speedup: wall-clock seconds (selection included) for {reference} to "
                      f"first reach {_fraction_label(target)} validation accuracy, divided by "
                      f"the method's.")
    if paired:
        lines[-1] += (" AdaCore − method: the mean over the seeds both ran of AdaCore's test "
                      "accuracy at best validation minus the method's, in percentage points; "
                      "in parentheses the 95% confidence interval of that mean from the t "
                      "distribution (n − 1 degrees of freedom) and the two-sided paired "
                      "t-test's p-value (scipy.stats.ttest_rel). Seeds pair the runs: each "
                      "seed shares the initialisation, the split and the batch order.")
    if speedups is not None:
        notes = dict.fromkeys(entry["note"] for entry in speedups.values() if entry["note"])
        if reference not in speedups:
            lines += ["", f"Note: {next(iter(notes))}."]
        else:
            speedup_notes = [f"- {method}: {entry['note']}." for method, entry
                             in speedups.items() if entry["note"]]
            if speedup_notes:
                lines += [""] + speedup_notes
    if paired:
        wilcoxon = [f"{method} {_p_text(entry['p_value_wilcoxon'])}"
                    if entry["p_value_wilcoxon"] is not None else f"{method} n/a"
                    for method, entry in paired.items()]
        most = max(entry["n"] for entry in paired.values())
        floor = (f"; with {most} seeds it cannot go below p = {2 / 2 ** most:.2g}"
                 if most >= 2 else "")
        lines += ["", "Wilcoxon signed-rank test of the same differences (two-sided, "
                      "scipy.stats.wilcoxon): " + ", ".join(wilcoxon) + floor + "."]
        paired_notes = [f"- {method} vs adacore: {entry['note']}." for method, entry
                        in paired.items() if entry["note"]]
        if paired_notes:
            lines += [""] + paired_notes
    lines += [""] + _settings_lines(runs, command)
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- atomic files

def _write_bytes_atomic(path: Path, data: bytes) -> None:
    """Atomic write into an existing folder (the report never creates folders silently)."""
    if not path.parent.is_dir():
        raise _path_error("path", path, "a file in an existing folder")
    atomic_write_bytes(path, data)


def _json_default(value: Any) -> Any:
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
        text = json.dumps(obj, indent=2, allow_nan=False, default=_json_default)
    except (TypeError, ValueError, RecursionError) as error:
        raise InputError(f"obj: not JSON-serialisable ({error}); expected dicts, lists, "
                         f"strings, finite numbers, booleans and None") from error
    _write_bytes_atomic(path, (text + "\n").encode("utf-8"))
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
        raise _path_error("path", path, "an existing JSON file") from error
    except IsADirectoryError as error:
        raise _path_error("path", path, "a JSON file, not a folder") from error
    except UnicodeDecodeError as error:
        raise _path_error("path", path, f"a UTF-8 JSON file ({error.reason})") from error
    except OSError as error:
        raise _path_error("path", path, f"a readable JSON file ({error.strerror})") from error
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as error:
        raise InputError(f"path: {str(path)!r} is not valid JSON (line {error.lineno}, "
                         f"column {error.colno}: {error.msg}); expected a JSON document such "
                         f"as one written by write_json") from error
    except ValueError as error:
        raise InputError(f"path: {str(path)!r} is not valid JSON ({error}); expected "
                         f"finite numbers only") from error


def write_markdown(runs: Sequence[Mapping], path: str | os.PathLike, *,
                   target: float | None = None, reference: str = "full",
                   command: str | None = None) -> Path:
    """Write :func:`markdown_table` to ``path`` atomically.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`summarize`).
    path : str or path-like
        Target file; its folder must exist.
    target : float, optional
        Validation accuracy for the speedup column (see :func:`markdown_table`).
    reference : str, default "full"
        The method the speedups are measured against.
    command : str, optional
        The command line that produced the runs.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    text = markdown_table(runs, target=target, reference=reference, command=command)
    path = Path(path)
    _write_bytes_atomic(path, text.encode("utf-8"))
    return path


# --------------------------------------------------------------------------- plots

def _aligned(method: str, group: Sequence[Mapping], entries: Sequence[Sequence[Mapping]],
             keys: Sequence[str]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-seed values of ``keys`` as (n_seeds, n_epochs) arrays; seeds share epochs."""
    epochs = [entry["epoch"] for entry in entries[0]]
    for run, run_entries in zip(group[1:], entries[1:]):
        other = [entry["epoch"] for entry in run_entries]
        if other != epochs:
            raise InputError(
                f"runs: method {method!r}, seed {run['seed']} has epochs {other[:8]}"
                f"{'...' if len(other) > 8 else ''}, expected the same epochs as seed "
                f"{group[0]['seed']} ({epochs[:8]}{'...' if len(epochs) > 8 else ''})")
    values = {key: np.array([[float(entry[key]) for entry in run_entries]
                             for run_entries in entries]) for key in keys}
    return np.asarray(epochs, dtype=np.float64), values


def _band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and sample std (ddof=1; 0 for one seed) over seeds, per epoch."""
    mean = values.mean(axis=0)
    std = values.std(axis=0, ddof=1) if values.shape[0] > 1 else np.zeros_like(mean)
    return mean, std


def _new_axes(title: str, xlabel: str, ylabel: str, log_x: bool):
    figure = Figure(figsize=(6.4, 4.4), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    axes.set_title(title, fontsize=10)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    if log_x:
        axes.set_xscale("log")
    axes.grid(True, alpha=0.3)
    return figure, axes


def accuracy_figure(runs: Sequence[Mapping], *, x: str = "epoch") -> Figure:
    """Test accuracy curves, one line per method (mean over seeds, ±1 std band).

    Parameters
    ----------
    runs : list of dict
        Run records whose histories carry ``test_accuracy``, ``examples_processed`` and
        ``wall_seconds``; the seeds of a method share the same epochs.
    x : {"epoch", "examples", "seconds"}
        The x-axis: the epoch; cumulative training examples processed (log scale); or
        cumulative wall-clock seconds with selection included (log scale). For the last
        two, the x value of an epoch is the mean over seeds.

    Returns
    -------
    matplotlib.figure.Figure
        A figure not registered with pyplot; ``figure.axes[0].lines`` holds one line per
        method, in order of first appearance.
    """
    check_choice("x", x, _VIEWS)
    x_key, x_label, _, log_x = _VIEWS[x]
    runs = _check_runs(runs, history_keys=("test_accuracy", "examples_processed",
                                           "wall_seconds"))
    what = {"epoch": "epoch", "examples": "training examples processed",
            "seconds": "wall-clock time"}[x]
    figure, axes = _new_axes(
        f"Test accuracy vs {what}\n{runs[0]['dataset']}, {runs[0]['model']}; "
        f"mean ± 1 std over seeds", x_label, "test accuracy (%)", log_x)
    if x_key is None:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for method, group in _group(runs).items():
        keys = ["test_accuracy"] + ([x_key] if x_key else [])
        epochs, values = _aligned(method, group, [run["history"] for run in group], keys)
        mean, std = _band(100 * values["test_accuracy"])
        xs = epochs if x_key is None else values[x_key].mean(axis=0)
        (line,) = axes.plot(xs, mean, label=f"{method} (n={len(group)})", linewidth=1.5)
        axes.fill_between(xs, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                          linewidth=0)
    axes.legend(fontsize=8)
    return figure


def gradient_error_figure(runs: Sequence[Mapping]) -> Figure | None:
    """Relative gradient error of the coreset per selection round, per method.

    The error is the history's ``gradient_error``, ``||sum_i g_i - sum_j w_j g_j|| /
    ||sum_i g_i||`` on the raw per-example gradients g of the method's probe space, for
    AdaCore too (its preconditioned error is the history's
    ``preconditioned_gradient_error``, not drawn here).

    Parameters
    ----------
    runs : list of dict
        Run records; history entries with a non-null ``gradient_error`` are selection
        rounds. Methods without any (e.g. full data) are left out; the seeds of a method
        must select at the same epochs.

    Returns
    -------
    matplotlib.figure.Figure or None
        One line per method that has a gradient error (mean over seeds, ±1 std band,
        x = epoch of the round); None when no method has one.
    """
    runs = _check_runs(runs)
    lines = []
    for method, group in _group(runs).items():
        rounds = []
        for position, run in enumerate(group):
            if not run.get("history"):
                raise InputError(f"runs: method {method!r}, seed {run['seed']} has no "
                                 f"history, expected per-epoch records")
            chosen = [entry for entry in run["history"]
                      if entry.get("gradient_error") is not None]
            for entry in chosen:
                _number(f"runs: method {method!r}, seed {run['seed']}, epoch "
                        f"{entry['epoch']}: gradient_error", entry["gradient_error"], low=0.0)
            rounds.append(chosen)
        if all(not chosen for chosen in rounds):
            continue
        epochs, values = _aligned(method, group, rounds, ["gradient_error"])
        lines.append((method, len(group), epochs, *_band(values["gradient_error"])))
    if not lines:
        return None
    # the history's gradient_error is the error on the raw gradients g (each method's
    # own probe space), not on AdaCore's preconditioned u: the title says so
    figure, axes = _new_axes(
        "Coreset gradient error per selection round (raw gradients, not preconditioned)\n"
        r"$\|\sum_i g_i - \sum_j \gamma_j g_j\| / \|\sum_i g_i\|$, "
        f"{runs[0]['dataset']}, {runs[0]['model']}; mean ± 1 std over seeds",
        "epoch of the selection round", "relative gradient error (unitless)", False)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for method, n_seeds, epochs, mean, std in lines:
        (line,) = axes.plot(epochs, mean, marker="o", markersize=3, linewidth=1.5,
                            label=f"{method} (n={n_seeds})")
        axes.fill_between(epochs, mean - std, mean + std, color=line.get_color(), alpha=0.2,
                          linewidth=0)
    axes.legend(fontsize=8)
    return figure


def _save_figure(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    _write_bytes_atomic(path, buffer.getvalue())
    return path


def _output_dir(out_dir: str | os.PathLike) -> Path:
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise _path_error("out_dir", folder, "a folder (or a path where one can be created)")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _curve_figures(runs: Sequence[Mapping]) -> dict[str, Figure]:
    return {_VIEWS[view][2]: accuracy_figure(runs, x=view) for view in _VIEWS}


def plot_curves(runs: Sequence[Mapping], out_dir: str | os.PathLike) -> list[Path]:
    """Write the three test-accuracy plots as PNG files, atomically.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`accuracy_figure`).
    out_dir : str or path-like
        Folder for the files; created if missing.

    Returns
    -------
    list of pathlib.Path
        ``accuracy_vs_epoch.png``, ``accuracy_vs_examples.png`` (log x) and
        ``accuracy_vs_seconds.png`` (log x), in that order.
    """
    figures = _curve_figures(runs)  # every figure is built before any file is written
    folder = _output_dir(out_dir)
    return [_save_figure(figure, folder / name) for name, figure in figures.items()]


def plot_gradient_error(runs: Sequence[Mapping], out_dir: str | os.PathLike) -> Path | None:
    """Write ``gradient_error.png`` (see :func:`gradient_error_figure`), atomically.

    Parameters
    ----------
    runs : list of dict
        Run records.
    out_dir : str or path-like
        Folder for the file; created if missing.

    Returns
    -------
    pathlib.Path or None
        The file written, or None (nothing written) when no method has a gradient error.
    """
    figure = gradient_error_figure(runs)
    if figure is None:
        return None
    return _save_figure(figure, _output_dir(out_dir) / _GRADIENT_ERROR_FILE)


def write_report(runs: Sequence[Mapping], out_dir: str | os.PathLike, *,
                 target: float | None = None, reference: str = "full",
                 command: str | None = None) -> dict[str, Path | None]:
    """Write ``results.json``, ``results.md`` and the plots of a comparison.

    Everything is validated and built before the first file is written, so bad input
    leaves ``out_dir`` as it was.

    Parameters
    ----------
    runs : list of dict
        Run records with histories (see :func:`summarize` and :func:`accuracy_figure`).
    out_dir : str or path-like
        Folder for the files; created if missing.
    target : float, optional
        Validation accuracy for the speedup column and the ``speedup`` entry of the JSON.
    reference : str, default "full"
        The method the speedups are measured against.
    command : str, optional
        The command line that produced the runs (e.g. ``" ".join(sys.argv)``), written
        under the table and into ``results.json``.

    Returns
    -------
    dict
        ``results_json``, ``results_md``, ``accuracy_vs_epoch``, ``accuracy_vs_examples``,
        ``accuracy_vs_seconds`` and ``gradient_error`` (None when no method has one) ->
        path. ``results.json`` holds ``{"runs": runs, "summary": summarize(runs),
        "command": command}``; with a target, ``"speedup": {"target", "reference",
        "methods"}``; when AdaCore is among the methods, ``"paired"``: method ->
        AdaCore's paired comparison with it, seed by seed (:func:`paired_accuracy`).
    """
    if command is not None and not isinstance(command, str):
        raise fail("command", command, "a string (the command line) or None")
    document: dict[str, Any] = {"runs": [dict(run) for run in _check_runs(runs)],
                                "summary": summarize(runs), "command": command}
    if target is not None:
        document["speedup"] = {"target": _check_target(target), "reference": reference,
                               "methods": speedup_to_target(runs, target=target,
                                                            reference=reference)}
    if any(run["method"] == PAIRED_REFERENCE for run in runs):
        document["paired"] = paired_accuracy(runs)
    try:
        json.dumps(document, allow_nan=False, default=_json_default)
    except (TypeError, ValueError) as error:
        raise InputError(f"runs: not JSON-serialisable ({error}); expected plain dicts, "
                         f"lists, strings and finite numbers") from error
    table = markdown_table(runs, target=target, reference=reference, command=command)
    curves = _curve_figures(runs)
    gradient = gradient_error_figure(runs)

    folder = _output_dir(out_dir)
    paths: dict[str, Path | None] = {"results_json": write_json(document,
                                                                folder / "results.json")}
    results_md = folder / "results.md"
    _write_bytes_atomic(results_md, table.encode("utf-8"))
    paths["results_md"] = results_md
    for name, figure in curves.items():
        paths[name.removesuffix(".png")] = _save_figure(figure, folder / name)
    paths["gradient_error"] = (_save_figure(gradient, folder / _GRADIENT_ERROR_FILE)
                               if gradient is not None else None)
    return paths
