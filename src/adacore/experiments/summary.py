"""What a comparison reports per method: means over seeds, speedups, paired tests, settings.

The headline number is the test accuracy at the epoch of best *validation* accuracy:
epochs are never picked by test accuracy. :func:`summarize` gives mean ± std over seeds
per method; :func:`speedup_to_target` the wall-clock speedup to first reach a
validation accuracy; :func:`time_to_full_accuracy` the wall-clock time, selection
included, to come within a margin of full data's final test accuracy, and its speedup;
:func:`accuracy_at_equal_wall_clock` the headline restricted to the epochs that ended
within one wall-clock budget; :func:`paired_accuracy` compares every method with AdaCore
seed by seed (the tests themselves live in :mod:`adacore.experiments.statistics`);
:func:`settings_of` splits the runs' settings into shared and differing ones. Every
function validates its runs with :func:`adacore.experiments.run_records.check_runs` and
returns plain, JSON-ready values; nothing here formats or writes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adacore.experiments.run_records import (ACCURACY_KEYS, SECONDS_KEYS, check_margin,
                                             check_number, check_runs, check_target,
                                             check_text, group_by_method)
from adacore.experiments.statistics import paired_comparison

__all__ = ["DEFAULT_FULL_MARGIN", "PAIRED_REFERENCE", "accuracy_at_equal_wall_clock",
           "margin_words", "paired_accuracy", "setting_text", "settings_of",
           "speedup_to_target", "summarize", "time_to_full_accuracy"]

# the method every other is compared with, seed by seed, in results.json and results.md
PAIRED_REFERENCE = "adacore"
_HEADLINE = "test_accuracy_at_best_val"
# how far below full data's final test accuracy still counts as "as accurate as full"
DEFAULT_FULL_MARGIN = 0.01
# accuracies and seconds are sums and means of floats: a value that equals a threshold
# by hand (0.95 - 0.01 vs 0.94) must not miss it by a rounding error
_TOLERANCE = dict(rel_tol=1e-9, abs_tol=1e-12)


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
        ``train_seconds``, ``eval_seconds``, ``total_seconds`` (selection + training;
        evaluation excluded, as in the history's ``wall_seconds``) and
        ``selection_share``, the share of a run's selection + training time spent
        selecting (``select_seconds / (select_seconds + train_seconds)`` per seed, then
        mean and std; None when a seed recorded no time at all).

    Raises
    ------
    InputError
        For an empty list, a missing key, a NaN or out-of-range value, mixed fractions
        within a method, a repeated seed, or a best epoch the history contradicts.
    """
    runs = check_runs(runs)
    summary = []
    for method, group in group_by_method(runs).items():
        entry: dict[str, Any] = {
            "method": method, "dataset": group[0]["dataset"], "model": group[0]["model"],
            "fraction": float(group[0]["fraction"]), "n_seeds": len(group),
            "seeds": sorted(int(run["seed"]) for run in group),
        }
        for key in (*ACCURACY_KEYS, *SECONDS_KEYS):
            entry[key] = _mean_std([float(run[key]) for run in group])
        entry["total_seconds"] = _mean_std(
            [float(run["select_seconds"]) + float(run["train_seconds"]) for run in group])
        shares = [_selection_share(run) for run in group]
        entry["selection_share"] = (None if None in shares else _mean_std(shares))
        summary.append(entry)
    return summary


def _selection_share(run: Mapping) -> float | None:
    """Selection's share of a run's selection + training seconds; None for 0 s in all."""
    select, train = float(run["select_seconds"]), float(run["train_seconds"])
    return select / (select + train) if select + train > 0 else None


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
    target = check_target(target)
    reference = check_text("reference", reference)
    runs = check_runs(runs, history_keys=("val_accuracy", "wall_seconds"))
    percent = f"{100 * target:g}%"
    results: dict[str, dict] = {}
    for method, group in group_by_method(runs).items():
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


def _reaches(value: float, threshold: float) -> bool:
    return value >= threshold or math.isclose(value, threshold, **_TOLERANCE)


def margin_words(margin: float) -> str:
    """A margin of accuracy in words: 0.01 -> ``"1 point"``, 0.005 -> ``"0.5 points"``."""
    points = f"{100 * margin:g}"
    return f"{points} point" + ("" if points == "1" else "s")


def _seconds_text(seconds: float) -> str:
    return f"{seconds:.3g} s"


def time_to_full_accuracy(runs: Sequence[Mapping], *, margin: float = DEFAULT_FULL_MARGIN,
                          reference: str = "full") -> dict:
    """Wall-clock time, selection included, to come within ``margin`` of full data's accuracy.

    The threshold is the reference's final test accuracy (the last epoch's, mean over its
    seeds) minus ``margin``. A seed's time is the cumulative ``wall_seconds`` (selection
    + training, evaluation excluded) at its first epoch whose *test* accuracy reaches the
    threshold; a method's time is the mean over its seeds, and counts as reached only if
    every seed reached it. The reference is timed the same way: its time is the first
    epoch within ``margin`` of its own final accuracy, not its whole run. This is how
    CORDS, RS2 and InfoBatch report time to accuracy.

    The threshold is a *reporting* measure on test accuracy: it picks no model, no epoch
    and no hyper-parameter (the headline and every choice stay on validation accuracy,
    see :func:`summarize`); it only says when, in wall-clock time, a method's test
    accuracy first came as close to full data's as the margin allows.

    Parameters
    ----------
    runs : list of dict
        Run records with a ``history`` carrying ``test_accuracy`` and ``wall_seconds``.
    margin : float, default 0.01
        How far below the reference's final test accuracy still counts, as a fraction
        in (0, 1) (0.01: one percentage point).
    reference : str, default "full"
        The method whose final accuracy sets the threshold and whose time is the
        numerator of every speedup.

    Returns
    -------
    dict
        ``reference``, ``margin``, ``reference_final_test_accuracy`` (mean over its seeds),
        ``threshold`` (both None without the reference), ``note`` (why there is no
        threshold, else None) and ``methods``: method -> ``{"seconds", "seconds_std",
        "seeds_reached", "n_seeds", "speedup", "by_seed", "note"}`` in order of first
        appearance. ``seconds`` (mean) and ``seconds_std`` (sample std) are None unless
        every seed reached the threshold; ``speedup`` = reference seconds / method
        seconds, None when either did not reach it; ``by_seed`` lists ``{"seed",
        "epoch", "seconds"}`` (None for a seed that never reached it); ``note`` says in
        words why a figure is missing (None when there is nothing to say). Without the
        reference, ``seeds_reached`` is None and every method carries the same note.

    Raises
    ------
    InputError
        For a margin outside (0, 1), an empty reference name, or runs that
        :func:`adacore.experiments.run_records.check_runs` refuses.
    """
    margin = check_margin(margin)
    reference = check_text("reference", reference)
    runs = check_runs(runs, history_keys=("test_accuracy", "wall_seconds"))
    groups = group_by_method(runs)
    result: dict[str, Any] = {"reference": reference, "margin": margin,
                              "reference_final_test_accuracy": None, "threshold": None,
                              "note": None, "methods": {}}
    if reference not in groups:
        note = (f"reference method {reference!r} is not among the runs "
                f"({', '.join(groups)}): no accuracy threshold, no time to it, no speedup")
        result["note"] = note
        result["methods"] = {method: {"seconds": None, "seconds_std": None,
                                      "seeds_reached": None, "n_seeds": len(group),
                                      "speedup": None, "by_seed": [], "note": note}
                             for method, group in groups.items()}
        return result
    # the history's last epoch, so that the threshold and the times read the same rows
    final = float(np.mean([float(run["history"][-1]["test_accuracy"])
                           for run in groups[reference]]))
    threshold = final - margin
    result.update(reference_final_test_accuracy=final, threshold=threshold)
    level = (f"{100 * threshold:.1f}% test accuracy ({reference}'s final "
             f"{100 * final:.1f}% − {margin_words(margin)})")
    methods: dict[str, dict] = {}
    for method, group in groups.items():
        by_seed = []
        for run in group:
            hit = next((entry for entry in run["history"]
                        if _reaches(entry["test_accuracy"], threshold)), None)
            by_seed.append({"seed": int(run["seed"]),
                            "epoch": None if hit is None else int(hit["epoch"]),
                            "seconds": None if hit is None else float(hit["wall_seconds"])})
        reached = [row["seconds"] for row in by_seed if row["seconds"] is not None]
        stats = _mean_std(reached) if len(reached) == len(by_seed) else None
        note = None
        if not reached:
            note = f"never reached {level}"
        elif stats is None:
            note = f"reached {level} in only {len(reached)} of {len(by_seed)} seeds"
        methods[method] = {"seconds": None if stats is None else stats["mean"],
                           "seconds_std": None if stats is None else stats["std"],
                           "seeds_reached": len(reached), "n_seeds": len(by_seed),
                           "speedup": None, "by_seed": by_seed, "note": note}
    reference_seconds = methods[reference]["seconds"]
    for method, entry in methods.items():
        if entry["seconds"] is None:
            continue
        if reference_seconds is None:
            entry["note"] = (f"reference {reference!r} did not reach {level} in every "
                             f"seed: no speedup")
        elif entry["seconds"] == 0:
            entry["note"] = (f"reached the threshold at 0 s of wall-clock time: speedup "
                             f"undefined")
        else:
            entry["speedup"] = reference_seconds / entry["seconds"]
    result["methods"] = methods
    return result


def accuracy_at_equal_wall_clock(runs: Sequence[Mapping], *,
                                 budget: float | None = None) -> dict:
    """The headline at equal wall-clock time: best validation epoch within one budget.

    For each seed, among the epochs that ended within ``budget`` cumulative wall-clock
    seconds (selection + training, evaluation excluded: the history's ``wall_seconds``),
    the epoch of best *validation* accuracy (the earliest on ties, as the trainer
    picks), and the test accuracy there; a method's figure is the mean over its seeds,
    defined only if every seed had an epoch within the budget. One budget for every
    method, so that the table has one column: by default the fastest method's total
    wall-clock time (its last epoch's ``wall_seconds``, mean over its seeds), i.e. the
    question "what does each method reach in the time the cheapest one needs for its
    whole run?". A method whose runs ended before the budget is judged on its whole run.

    Parameters
    ----------
    runs : list of dict
        Run records with a ``history`` carrying ``val_accuracy``, ``test_accuracy`` and
        ``wall_seconds``.
    budget : float, optional
        Wall-clock seconds (>= 0); None for the fastest method's total time.

    Returns
    -------
    dict
        ``budget_seconds``; ``budget_method`` (the fastest method, None for a given
        budget); ``methods``: method -> ``{"test_accuracy", "test_accuracy_std",
        "seeds_with_epoch", "n_seeds", "total_seconds", "by_seed", "note"}``, in order of
        first appearance: mean and sample std over seeds (None unless every seed had an
        epoch within the budget), how many seeds had one, the method's own total
        wall-clock time (mean over seeds), ``by_seed`` as ``{"seed", "epoch",
        "wall_seconds", "test_accuracy"}`` (None where no epoch ended within the
        budget) and a ``note`` saying why a figure is missing (else None).

    Raises
    ------
    InputError
        For a negative, NaN or non-numeric budget, or runs that
        :func:`adacore.experiments.run_records.check_runs` refuses.
    """
    if budget is not None:
        budget = check_number("budget", budget, low=0.0)
    runs = check_runs(runs, history_keys=("val_accuracy", "test_accuracy", "wall_seconds"))
    groups = group_by_method(runs)
    totals = {method: float(np.mean([float(run["history"][-1]["wall_seconds"])
                                     for run in group]))
              for method, group in groups.items()}
    budget_method = None
    if budget is None:
        budget_method = min(totals, key=totals.__getitem__)   # the first of equals
        budget = totals[budget_method]
    methods: dict[str, dict] = {}
    for method, group in groups.items():
        by_seed = []
        for run in group:
            within = [entry for entry in run["history"]
                      if _reaches(budget, float(entry["wall_seconds"]))]
            best = (max(within, key=lambda entry: (entry["val_accuracy"], -entry["epoch"]))
                    if within else None)
            by_seed.append({
                "seed": int(run["seed"]),
                "epoch": None if best is None else int(best["epoch"]),
                "wall_seconds": None if best is None else float(best["wall_seconds"]),
                "test_accuracy": None if best is None else float(best["test_accuracy"])})
        values = [row["test_accuracy"] for row in by_seed if row["test_accuracy"] is not None]
        stats = _mean_std(values) if len(values) == len(by_seed) else None
        note = None
        if not values:
            first = min(float(run["history"][0]["wall_seconds"]) for run in group)
            note = (f"no epoch ended within {_seconds_text(budget)} (the earliest first "
                    f"epoch ended at {_seconds_text(first)})")
        elif stats is None:
            note = (f"an epoch ended within {_seconds_text(budget)} in only {len(values)} "
                    f"of {len(by_seed)} seeds")
        elif method != budget_method and all(
                not _reaches(float(run["history"][-1]["wall_seconds"]), budget)
                for run in group):
            note = (f"its runs ended before {_seconds_text(budget)} (at "
                    f"{_seconds_text(totals[method])} on average): judged on the whole run")
        methods[method] = {"test_accuracy": None if stats is None else stats["mean"],
                           "test_accuracy_std": None if stats is None else stats["std"],
                           "seeds_with_epoch": len(values), "n_seeds": len(by_seed),
                           "total_seconds": totals[method], "by_seed": by_seed,
                           "note": note}
    return {"budget_seconds": budget, "budget_method": budget_method, "methods": methods}


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
    runs = check_runs(runs)
    values = {method: {int(run["seed"]): float(run[_HEADLINE]) for run in group}
              for method, group in group_by_method(runs).items()}
    return paired_comparison(values, reference=reference)


def setting_text(value: Any) -> str:
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
    runs = check_runs(runs)
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
        texts = {setting_text(value) for value in values}
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
