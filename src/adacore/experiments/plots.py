"""Figures of a comparison: test-accuracy curves and the coreset's gradient error.

:func:`accuracy_figure` draws test accuracy against the epoch, the training examples
processed or the wall-clock seconds (mean over seeds, ±1 std band, one line per
method); :func:`time_to_accuracy_figure` test accuracy against wall-clock seconds with
the time-to-accuracy threshold and the equal wall-clock budget drawn in;
:func:`gradient_error_figure` the relative gradient error of each selection round. Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global
backend or figure registry); :func:`plot_curves` and :func:`plot_gradient_error` write
them as PNG files, atomically.
"""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
# Figure directly, not pyplot: no global backend or figure registry is touched.
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adacore.experiments.results_io import output_dir, write_bytes_atomic
from adacore.experiments.run_records import check_number, check_runs, group_by_method
from adacore.experiments.summary import (DEFAULT_FULL_MARGIN, accuracy_at_equal_wall_clock,
                                         margin_words, time_to_full_accuracy)
from adacore.validation import InputError, check_choice

__all__ = ["GRADIENT_ERROR_FILE", "TIME_TO_ACCURACY_FILE", "accuracy_figure", "curve_figures",
           "gradient_error_figure", "plot_curves", "plot_gradient_error", "save_figure",
           "time_to_accuracy_figure"]

# x-axis views of the accuracy curves: history key (None: the epoch), label, file, log x.
_VIEWS = {
    "epoch": (None, "epoch", "accuracy_vs_epoch.png", False),
    "examples": ("examples_processed", "training examples processed (cumulative, count)",
                 "accuracy_vs_examples.png", True),
    "seconds": ("wall_seconds", "wall-clock time, selection + training (cumulative, s)",
                "accuracy_vs_seconds.png", True),
}
GRADIENT_ERROR_FILE = "gradient_error.png"
TIME_TO_ACCURACY_FILE = "time_to_accuracy.png"


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
    runs = check_runs(runs, history_keys=("test_accuracy", "examples_processed",
                                          "wall_seconds"))
    what = {"epoch": "epoch", "examples": "training examples processed",
            "seconds": "wall-clock time"}[x]
    figure, axes = _new_axes(
        f"Test accuracy vs {what}\n{runs[0]['dataset']}, {runs[0]['model']}; "
        f"mean ± 1 std over seeds", x_label, "test accuracy (%)", log_x)
    if x_key is None:
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    for method, group in group_by_method(runs).items():
        keys = ["test_accuracy"] + ([x_key] if x_key else [])
        epochs, values = _aligned(method, group, [run["history"] for run in group], keys)
        mean, std = _band(100 * values["test_accuracy"])
        xs = epochs if x_key is None else values[x_key].mean(axis=0)
        (line,) = axes.plot(xs, mean, label=f"{method} (n={len(group)})", linewidth=1.5)
        # an accuracy band stays within [0, 100] (a collapsed seed makes std large)
        axes.fill_between(xs, np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100),
                          color=line.get_color(), alpha=0.2, linewidth=0)
    axes.legend(fontsize=8)
    return figure


def time_to_accuracy_figure(runs: Sequence[Mapping], *, margin: float = DEFAULT_FULL_MARGIN,
                            reference: str = "full") -> Figure:
    """Test accuracy against wall-clock seconds, with the threshold and the budget drawn in.

    The curves are those of ``accuracy_figure(runs, x="seconds")`` (test accuracy, mean
    over seeds with a ±1 std band, against cumulative wall-clock seconds with selection
    included, log x). On top: a dashed horizontal line at the time-to-accuracy
    threshold, ``reference``'s final test accuracy minus ``margin`` (see
    :func:`adacore.experiments.summary.time_to_full_accuracy`), with a marker where each
    method reached it in every seed (its mean time); a dotted vertical line at the equal
    wall-clock budget of :func:`adacore.experiments.summary.accuracy_at_equal_wall_clock`.
    Test accuracy, not validation accuracy, because the threshold is on test accuracy:
    the figure picks nothing; model choice stays on validation.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`accuracy_figure`).
    margin : float, default 0.01
        The margin below the reference's final test accuracy, a fraction in (0, 1).
    reference : str, default "full"
        The method whose final accuracy sets the threshold; without it among the runs
        no threshold is drawn and the title says so.

    Returns
    -------
    matplotlib.figure.Figure
        ``figure.axes[0].lines``: one curve per method in order of first appearance,
        then the threshold line (if any), the budget line (if the budget is above 0 s)
        and one marker per method that reached the threshold.
    """
    timing = time_to_full_accuracy(runs, margin=margin, reference=reference)
    equal = accuracy_at_equal_wall_clock(runs)
    runs = check_runs(runs, history_keys=("test_accuracy", "wall_seconds"))
    if timing["threshold"] is None:
        about = f"no threshold: {reference!r} is not among the methods"
    else:
        about = (f"dashed: {reference}'s final − {margin_words(margin)}; dots: mean time "
                 f"to reach it")
    figure, axes = _new_axes(
        f"Test accuracy vs wall-clock time, selection included\n{runs[0]['dataset']}, "
        f"{runs[0]['model']}; mean ± 1 std over seeds\n{about}",
        _VIEWS["seconds"][1], "test accuracy (%)", True)
    colors = {}
    for method, group in group_by_method(runs).items():
        _, values = _aligned(method, group, [run["history"] for run in group],
                             ["test_accuracy", "wall_seconds"])
        mean, std = _band(100 * values["test_accuracy"])
        xs = values["wall_seconds"].mean(axis=0)
        (line,) = axes.plot(xs, mean, label=f"{method} (n={len(group)})", linewidth=1.5)
        # an accuracy band stays within [0, 100] (a collapsed seed makes std large)
        axes.fill_between(xs, np.clip(mean - std, 0, 100), np.clip(mean + std, 0, 100),
                          color=line.get_color(), alpha=0.2, linewidth=0)
        colors[method] = line.get_color()
    if timing["threshold"] is not None:
        axes.axhline(100 * timing["threshold"], color="black", linestyle="--", linewidth=1,
                     label=f"{100 * timing['threshold']:.1f}% ({reference} − "
                           f"{margin_words(margin)})")
    budget = equal["budget_seconds"]
    if budget > 0:  # a log axis has no 0
        axes.axvline(budget, color="grey", linestyle=":", linewidth=1,
                     label=f"budget {budget:.3g} s ({equal['budget_method']}'s total)")
    for method, entry in timing["methods"].items():
        if entry["seconds"] is not None and entry["seconds"] > 0:
            axes.plot([entry["seconds"]], [100 * timing["threshold"]], marker="o",
                      markersize=6, linestyle="none", color=colors[method])
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
    runs = check_runs(runs)
    lines = []
    for method, group in group_by_method(runs).items():
        rounds = []
        for position, run in enumerate(group):
            if not run.get("history"):
                raise InputError(f"runs: method {method!r}, seed {run['seed']} has no "
                                 f"history, expected per-epoch records")
            chosen = [entry for entry in run["history"]
                      if entry.get("gradient_error") is not None]
            for entry in chosen:
                check_number(f"runs: method {method!r}, seed {run['seed']}, epoch "
                             f"{entry['epoch']}: gradient_error", entry["gradient_error"],
                             low=0.0)
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


def save_figure(figure: Figure, path: Path) -> Path:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    write_bytes_atomic(path, buffer.getvalue())
    return path


def curve_figures(runs: Sequence[Mapping]) -> dict[str, Figure]:
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
    figures = curve_figures(runs)  # every figure is built before any file is written
    folder = output_dir(out_dir)
    return [save_figure(figure, folder / name) for name, figure in figures.items()]


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
    return save_figure(figure, output_dir(out_dir) / GRADIENT_ERROR_FILE)
