"""The Markdown results table of a comparison, in the poster's style.

:func:`markdown_table` turns run records into one row per method (test accuracy at the
best validation epoch with the fraction visited, final accuracy, seconds, and where
asked the speedup and AdaCore's paired difference), followed by notes on how each
figure was measured, the runs' settings and the command; :func:`write_markdown` writes
it atomically. The numbers come from :mod:`adacore.experiments.summary`; this module
only formats them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from adacore.experiments.results_io import write_bytes_atomic
from adacore.experiments.summary import (paired_accuracy, setting_text, settings_of,
                                         speedup_to_target, summarize)
from adacore.validation import fail

__all__ = ["markdown_table", "write_markdown"]


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
            f"{key} `{setting_text(value)}`" for key, value in settings["shared"].items())
                     + ".")
    if settings["differing"]:
        parts = []
        for key, per_method in settings["differing"].items():
            parts.append(f"{key}: " + "; ".join(
                f"{method} " + " / ".join(f"`{setting_text(value)}`" for value in values)
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
    write_bytes_atomic(path, text.encode("utf-8"))
    return path
