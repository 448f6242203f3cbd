"""What a comparison reports per method: means over seeds, speedups, paired tests, settings.

The headline number is the test accuracy at the epoch of best *validation* accuracy:
epochs are never picked by test accuracy. :func:`summarize` gives mean ± std over seeds
per method; :func:`speedup_to_target` the wall-clock speedup to first reach a
validation accuracy; :func:`paired_accuracy` compares every method with AdaCore seed by
seed (the tests themselves live in :mod:`adacore.experiments.statistics`);
:func:`settings_of` splits the runs' settings into shared and differing ones. Every
function validates its runs with :func:`adacore.experiments.run_records.check_runs` and
returns plain, JSON-ready values; nothing here formats or writes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from adacore.experiments.run_records import (ACCURACY_KEYS, SECONDS_KEYS, check_runs,
                                             check_target, check_text, group_by_method)
from adacore.experiments.statistics import paired_comparison

__all__ = ["PAIRED_REFERENCE", "paired_accuracy", "setting_text", "settings_of",
           "speedup_to_target", "summarize"]

# the method every other is compared with, seed by seed, in results.json and results.md
PAIRED_REFERENCE = "adacore"
_HEADLINE = "test_accuracy_at_best_val"


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
