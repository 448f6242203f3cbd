"""The Markdown results table of a comparison, in the poster's style.

:func:`markdown_table` turns run records into one row per method (test accuracy at the
best validation epoch with the fraction visited, final accuracy, seconds, and where
asked the speedup and AdaCore's paired difference), followed by notes on how each
figure was measured; then a second table of time to accuracy with selection included
(seconds to come within a margin of full data's final test accuracy, the speedup, the
headline at equal wall-clock time and the share of time spent selecting); then the
runs' settings and the command. :func:`write_markdown` writes it atomically. The numbers come from :mod:`adacore.experiments.summary`; this module
only formats them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from adacore.experiments.results_io import write_bytes_atomic
from adacore.experiments.run_records import check_margin
from adacore.experiments.summary import (DEFAULT_FULL_MARGIN, accuracy_at_equal_wall_clock,
                                         margin_words, paired_accuracy, setting_text,
                                         settings_of, speedup_to_target, summarize,
                                         time_to_full_accuracy)
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


def _time_seconds_cell(entry: Mapping) -> str:
    if entry["seeds_reached"] is None:
        return "n/a"
    if entry["seconds"] is not None:
        return _seconds({"mean": entry["seconds"], "std": entry["seconds_std"]},
                        entry["n_seeds"])
    if entry["seeds_reached"] == 0:
        return "not reached"
    return f"not reached ({entry['seeds_reached']} of {entry['n_seeds']} seeds)"


def _time_speedup_cell(entry: Mapping, reference_entry: Mapping | None,
                       reference: str) -> str:
    if reference_entry is None:
        return "n/a"
    if entry["speedup"] is not None:
        return f"{entry['speedup']:.1f}×"
    if entry["seconds"] is None:
        return "—"
    if reference_entry["seconds"] is None:
        return f"not reached by {reference}"
    return "undefined"


def _budget_cell(entry: Mapping) -> str:
    if entry["test_accuracy"] is not None:
        return _percent({"mean": entry["test_accuracy"], "std": entry["test_accuracy_std"]},
                        entry["n_seeds"])
    if entry["seeds_with_epoch"] == 0:
        return "no epoch yet"
    return f"no epoch yet in {entry['n_seeds'] - entry['seeds_with_epoch']} of " \
           f"{entry['n_seeds']} seeds"


def _time_lines(runs: Sequence[Mapping], summary: Sequence[Mapping], margin: float,
                reference: str) -> list[str]:
    """The time-to-accuracy table (selection included) and its notes."""
    if not any(run.get("history") for run in runs):
        return ["Time to accuracy: not computed (the runs carry no per-epoch history)."]
    timing = time_to_full_accuracy(runs, margin=margin, reference=reference)
    equal = accuracy_at_equal_wall_clock(runs)
    budget = f"{equal['budget_seconds']:.3g} s"
    points = margin_words(margin)
    if timing["threshold"] is None:
        level = f"no threshold: {reference!r} is not among the methods"
    else:
        level = (f"threshold {100 * timing['threshold']:.1f}% test accuracy ({reference}'s "
                 f"final {100 * timing['reference_final_test_accuracy']:.1f}% − {points})")
    lines = ["", f"Time to accuracy, selection included: {level}; equal wall-clock budget "
                 f"{budget} ({equal['budget_method']}'s total time).", ""]
    header = ["method", f"seconds to within {points} of {reference}",
              f"speedup vs {reference}", f"test acc. at {budget} (best val)",
              "time selecting"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    reference_entry = timing["methods"].get(reference)
    for entry in summary:
        method = entry["method"]
        share = entry["selection_share"]
        lines.append("| " + " | ".join([
            method.replace("|", "\\|"),
            _time_seconds_cell(timing["methods"][method]),
            _time_speedup_cell(timing["methods"][method], reference_entry, reference),
            _budget_cell(equal["methods"][method]),
            "n/a" if share is None else _percent(share, entry["n_seeds"], "%")]) + " |")
    lines += ["", f"Seconds: cumulative wall-clock time, selection + training (evaluation "
                  f"excluded), at the first epoch whose test accuracy comes within {points} "
                  f"of {reference}'s final test accuracy (mean over its seeds), mean over "
                  f"seeds; reached only if every seed reached it. {reference} is timed the "
                  f"same way: its first epoch within {points} of its own final accuracy. "
                  f"This threshold is a reporting measure on test accuracy, as in CORDS, "
                  f"RS2 and InfoBatch: it picks no model, epoch or hyper-parameter (those "
                  f"stay on validation accuracy). Speedup: {reference}'s seconds divided by "
                  f"the method's. Test acc. at {budget}: for each seed, the test accuracy at "
                  f"the epoch of best validation accuracy among the epochs that ended within "
                  f"{budget} of wall-clock time (selection included), {budget} being the "
                  f"fastest method's total time (mean over its seeds); mean over seeds. "
                  f"Time selecting: selection's share of selection + training seconds, "
                  f"mean over seeds."]
    if timing["note"] is not None:
        lines += ["", f"Note: {timing['note']}."]
    notes = [f"- {method}, time to accuracy: {entry['note']}." for method, entry
             in timing["methods"].items() if entry["note"] and timing["note"] is None]
    notes += [f"- {method}, at {budget}: {entry['note']}." for method, entry
              in equal["methods"].items() if entry["note"]]
    notes += [f"- {entry['method']}, time selecting: no selection or training time "
              f"recorded." for entry in summary if entry["selection_share"] is None]
    if notes:
        lines += [""] + notes
    return lines


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
                   reference: str = "full", command: str | None = None,
                   margin: float = DEFAULT_FULL_MARGIN) -> str:
    """A Markdown results table in the poster's style, one row per method.

    Parameters
    ----------
    runs : list of dict
        Run records (see :func:`summarize`); with ``target``, each needs a ``history``.
    target : float, optional
        Validation accuracy (fraction in (0, 1]) for a "speedup to X%" column against
        ``reference`` (see :func:`speedup_to_target`); no such column when None.
    reference : str, default "full"
        The method the speedups are measured against, whose final test accuracy sets
        the time-to-accuracy threshold.
    command : str, optional
        The command line that produced the runs, stated under the table.
    margin : float, default 0.01
        How far below the reference's final test accuracy the time-to-accuracy
        threshold lies (a fraction in (0, 1); see :func:`time_to_full_accuracy`).

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
        the methods ran different seeds. When the runs carry histories, a second table
        ``| method | seconds to within 1 point of full | speedup vs full | test acc. at
        X s (best val) | time selecting |`` follows (see :func:`time_to_full_accuracy`,
        :func:`accuracy_at_equal_wall_clock` and :func:`summarize`'s
        ``selection_share``), with notes on how it was measured and on every missing
        figure.
    """
    if command is not None and not isinstance(command, str):
        raise fail("command", command, "a string (the command line) or None")
    margin = check_margin(margin)
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
    lines += _time_lines(runs, summary, margin, reference)
    lines += [""] + _settings_lines(runs, command)
    return "\n".join(lines) + "\n"


def write_markdown(runs: Sequence[Mapping], path: str | os.PathLike, *,
                   target: float | None = None, reference: str = "full",
                   command: str | None = None, margin: float = DEFAULT_FULL_MARGIN) -> Path:
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
    margin : float, default 0.01
        The time-to-accuracy margin below the reference's final test accuracy.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    text = markdown_table(runs, target=target, reference=reference, command=command,
                          margin=margin)
    path = Path(path)
    write_bytes_atomic(path, text.encode("utf-8"))
    return path
