"""The convex experiment: loss residual against wall-clock time, per method and fraction.

For every method, fraction and seed: select a coreset of the training set
(:func:`select_coreset`; its time is counted), train on it with one of our solvers, and
follow the normalised residual (L(w) - L*) / L* of the FULL training objective against the
seconds spent (selection + training, never the monitoring); L* comes from a tight
full-data solve (:func:`reference_solution`). Full-data training ("full") runs once per
seed, as the reference of the speedups. Test accuracy is that of the final parameters
(the sign of the score, for the regression losses too: every data set here is binary).

Settings (keys of the dict / the TOML scenario; defaults in :data:`DEFAULT_SETTINGS`):

name
    Label of the run.
dataset, path, test_path, scale, positive_class, test_fraction, split_seed, standardize
    The data (:func:`adacore.convex.datasets.load_convex_data`); ``scale`` shrinks the
    synthetic sets, ``path`` / ``test_path`` are LIBSVM files for dataset "libsvm".
loss, alpha, fit_intercept
    The objective (:mod:`adacore.convex.losses`).
methods, fractions, seeds
    What is compared: methods among "adacore", "craig", "random", "full"; fractions in
    (0, 1); each seed seeds the selection and the solver (the data split stays fixed).
solver, epochs, batch_size, lr, schedule
    The solver ("sgd", "saga", "precond_gd") and its options (``lr`` 0: its default;
    ``schedule`` for SGD only). Every method trains for the same number of epochs of its
    own training set, so a coreset of fraction f costs about f of full training.
at, newton_steps, reselect_every, hessian, power, eps, block_size, exact_limit
    Selection options (:func:`select_coreset`): at "newton", "initial" or "pilot" and the
    Newton steps, reselection every R epochs (0: select once), AdaCore's preconditioner
    ("mean_diagonal", "mean", "diagonal" or "exact"), its exponent (0: the kind's
    default, TOML having no null) and damping, the block engine's block size and the
    largest class solved exactly.
target
    Residual for the speedup column: a method's time to target is the mean over seeds of
    the first recorded time with residual <= target (only when every seed reached it);
    speedup = full-data time / method time.
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
# Figure directly, not pyplot: no global backend or figure registry is touched.
from matplotlib.figure import Figure
from matplotlib.ticker import NullFormatter

from adacore.atomic import atomic_write_bytes
from adacore.convex.datasets import load_convex_data
from adacore.convex.losses import get_loss
from adacore.convex.reference import reference_solution
from adacore.convex.select import METHODS, Reselection, select_coreset
from adacore.convex.solvers import SOLVERS, solve
from adacore.validation import InputError, check_choice, check_int, check_positive, fail

__all__ = ["DEFAULT_SETTINGS", "check_settings", "read_convex_scenario",
           "run_convex_experiment"]

DEFAULT_SETTINGS: dict = {
    "name": "convex", "dataset": "breast_cancer", "path": "", "test_path": "", "scale": 1.0,
    "positive_class": -1, "test_fraction": 0.2, "split_seed": 0, "standardize": True,
    "loss": "logistic", "alpha": 1e-4, "fit_intercept": True,
    "methods": ["adacore", "craig", "random", "full"], "fractions": [0.01, 0.05, 0.1, 0.3],
    "seeds": [0, 1, 2], "solver": "sgd", "epochs": 20, "batch_size": 128, "lr": 0.0,
    "schedule": "linear", "at": "newton", "newton_steps": 1, "reselect_every": 0,
    "hessian": "mean_diagonal", "power": 0.0, "eps": 1e-4,
    "block_size": 32, "exact_limit": 4096, "target": 0.05,
}
_FLOOR = 1e-16   # residuals are plotted on a log axis


def check_settings(settings: dict) -> dict:
    """The settings with defaults filled in, validated (unknown keys: InputError).

    ``path``, ``test_path`` "" and ``positive_class`` -1 mean "none" (TOML has no null).
    """
    if not isinstance(settings, dict):
        raise fail("settings", settings, "a dict of experiment settings")
    unknown = sorted(set(settings) - set(DEFAULT_SETTINGS))
    if unknown:
        raise InputError(f"settings: unknown keys {unknown}; expected some of "
                         f"{sorted(DEFAULT_SETTINGS)}")
    merged = {**DEFAULT_SETTINGS, **settings}
    for name in ("methods", "fractions", "seeds"):
        if not isinstance(merged[name], (list, tuple)) or not merged[name]:
            raise fail(name, merged[name], "a non-empty list")
    for method in merged["methods"]:
        check_choice("methods", method, METHODS)
    for fraction in merged["fractions"]:
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) \
                or not 0.0 < fraction < 1.0:
            raise fail("fractions", fraction, "fractions in (0, 1)")
    for seed in merged["seeds"]:
        check_int("seeds", seed, 0)
    check_choice("solver", merged["solver"], SOLVERS)
    check_int("epochs", merged["epochs"], 1)
    check_int("batch_size", merged["batch_size"], 1)
    check_positive("lr", merged["lr"], allow_zero=True)
    check_int("reselect_every", merged["reselect_every"], 0)
    check_int("newton_steps", merged["newton_steps"], 1)
    check_positive("power", merged["power"], allow_zero=True)
    check_positive("target", merged["target"])
    get_loss(merged["loss"], alpha=merged["alpha"], fit_intercept=merged["fit_intercept"])
    return merged


def read_convex_scenario(path) -> dict:
    """A TOML scenario of experiment settings, validated by :func:`check_settings`."""
    from adacore.experiments.runner import read_toml

    scenario = read_toml(path)
    scenario.pop("task", None)    # "convex", for the command line's dispatch
    return check_settings(scenario)


def _load(settings: dict):
    positive = settings["positive_class"]
    return load_convex_data(
        settings["dataset"], path=settings["path"] or None,
        test_path=settings["test_path"] or None, scale=settings["scale"],
        positive_class=None if positive == -1 else positive,
        test_fraction=settings["test_fraction"], split_seed=settings["split_seed"],
        seed=settings["split_seed"], standardize=settings["standardize"])


def _one_run(settings, loss, data, method, fraction, seed, optimum) -> dict:
    X, y = data.X_train, data.y_train
    select_options = dict(loss=loss, method=method, seed=seed, at=settings["at"],
                          newton_steps=settings["newton_steps"],
                          hessian=settings["hessian"], power=settings["power"] or None,
                          eps=settings["eps"],
                          block_size=settings["block_size"],
                          exact_limit=settings["exact_limit"])
    start = time.perf_counter()
    if method == "full":
        coreset, rows, weights = None, (X, y), None
    else:
        coreset = select_coreset(X, y, fraction=fraction, **select_options)
        rows, weights = (X[coreset.indices], y[coreset.indices]), coreset.weights
    start_seconds = time.perf_counter() - start
    reselect = None
    if settings["reselect_every"] and method != "full":
        rounds = {key: value for key, value in select_options.items()
                  if key not in ("at", "newton_steps")}
        reselect = Reselection(X, y, every=settings["reselect_every"], fraction=fraction,
                               **rounds)
    options = dict(sample_weight=weights, epochs=settings["epochs"], seed=seed,
                   batch_size=settings["batch_size"], lr=settings["lr"] or None,
                   monitor=lambda w: loss._value(w, X, y), reselect=reselect,
                   start_seconds=start_seconds)
    if settings["solver"] == "sgd":
        options["schedule"] = settings["schedule"]
    result = solve(settings["solver"], loss, *rows, **options)
    history = [[seconds, value, (value - optimum) / optimum] for seconds, value in
               result.history]
    # every data set here is binary: the sign of the score predicts, whatever the loss
    predicted = np.where(loss.decision_function(result.w, data.X_test) >= 0, 1.0, -1.0)
    accuracy = float(np.mean(predicted == data.y_test))
    visited = (len(set().union(coreset.indices.tolist(), *(c.indices.tolist() for c in
                                                          result.selections)))
               / X.shape[0]) if coreset is not None else 1.0
    return {"method": method, "fraction": 1.0 if method == "full" else fraction,
            "seed": seed, "select_seconds": start_seconds,
            "train_seconds": result.seconds, "seconds": history[-1][0],
            "final_residual": history[-1][2], "test_accuracy": accuracy,
            "fraction_visited": visited, "history": history,
            "gradient_error": None if coreset is None
            else coreset.metadata.get("gradient_error"),
            "max_weight_over_mean": None if coreset is None
            else coreset.metadata.get("max_weight_over_mean")}


def _mean_std(values):
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), float(np.std(values))


def _time_to_target(history, target):
    for seconds, _, residual in history:
        if residual <= target:
            return seconds
    return None


def summarize(runs: list[dict], target: float) -> list[dict]:
    """One row per (method, fraction): means and standard deviations over seeds."""
    groups: dict = {}
    for run in runs:
        groups.setdefault((run["method"], run["fraction"]), []).append(run)
    full_times = [_time_to_target(r["history"], target) for r in runs if r["method"] == "full"]
    full_time = (float(np.mean(full_times)) if full_times and None not in full_times
                 else None)
    rows = []
    for (method, fraction), group in groups.items():
        times = [_time_to_target(r["history"], target) for r in group]
        reached = None not in times
        time_to_target = float(np.mean(times)) if reached else None
        row = {"method": method, "fraction": fraction, "n_seeds": len(group),
               "seconds_to_target": time_to_target,
               "seeds_reached": sum(t is not None for t in times),
               "speedup": (full_time / time_to_target if reached and full_time
                           and time_to_target > 0 else None)}
        for key in ("final_residual", "test_accuracy", "seconds", "select_seconds",
                    "fraction_visited"):
            row[key], row[key + "_std"] = _mean_std([r[key] for r in group])
        rows.append(row)
    return rows


def _format(mean, std, digits="{:.3g}"):
    if mean is None:
        return "-"
    return digits.format(mean) + (f" ± {digits.format(std)}" if std else "")


def markdown_table(rows: list[dict], settings: dict, optimum: float) -> str:
    target = settings["target"]
    lines = [f"# {settings['name']}: {settings['dataset']}, {settings['loss']} "
             f"(alpha {settings['alpha']:g}), {settings['solver']} for "
             f"{settings['epochs']} epochs",
             "",
             f"L* = {optimum:.10g} (tight full-data solve); residual = (L(w) - L*) / L* on "
             f"the full training set; seconds = selection + training; speedup = full-data "
             f"time / method time to residual <= {target:g}.",
             "",
             "| method | fraction | final residual | test accuracy | seconds | select s "
             f"| s to {target:g} | speedup vs full |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for row in rows:
        accuracy = (_format(100 * row["test_accuracy"], 100 * (row["test_accuracy_std"] or 0),
                            "{:.2f}") if row["test_accuracy"] is not None else "-")
        reached = (f"{row['seconds_to_target']:.3g}" if row["seconds_to_target"] is not None
                   else f"not reached ({row['seeds_reached']}/{row['n_seeds']})")
        speedup = f"{row['speedup']:.2f}x" if row["speedup"] is not None else "-"
        lines.append(f"| {row['method']} | {100 * row['fraction']:g}% | "
                     f"{_format(row['final_residual'], row['final_residual_std'])} | "
                     f"{accuracy} | {_format(row['seconds'], row['seconds_std'])} | "
                     f"{row['select_seconds']:.3g} | {reached} | {speedup} |")
    return "\n".join(lines) + "\n"


def _mean_curve(group: list[dict]):
    histories = [np.asarray(r["history"]) for r in group]
    length = min(h.shape[0] for h in histories)
    stacked = np.stack([h[:length] for h in histories])
    return stacked[:, :, 0].mean(axis=0), np.maximum(stacked[:, :, 2].mean(axis=0), _FLOOR)


def residual_figure(runs: list[dict], fraction: float, settings: dict) -> bytes:
    """PNG bytes: residual against seconds, log-log, one line per method (seed means of
    both, epoch by epoch, from the first epoch on)."""
    figure = Figure(figsize=(6.4, 4.4), dpi=110)
    axes = figure.add_subplot()
    for method in settings["methods"]:
        group = [r for r in runs if r["method"] == method
                 and (method == "full" or r["fraction"] == fraction)]
        if not group:
            continue
        seconds, residual = _mean_curve(group)
        # from the first epoch on: the starting point (time 0 for full data) would
        # stretch the log axis by decades
        axes.plot(seconds[1:], residual[1:], marker=".", label=method)
    axes.axhline(settings["target"], color="0.6", linestyle=":", linewidth=1)
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.xaxis.set_minor_formatter(NullFormatter())   # decades only: minor labels collide
    axes.set_xlabel("wall-clock seconds, selection + training")
    axes.set_ylabel("(L(w) - L*) / L*, full training set")
    axes.set_title(f"{settings['dataset']}, {settings['loss']}, {100 * fraction:g}% "
                   f"coresets, {settings['solver']}")
    axes.legend()
    axes.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def run_convex_experiment(settings: dict, out_dir) -> dict:
    """Run the experiment of ``settings`` and write its results into ``out_dir``.

    Writes ``results.json`` (settings, L*, every run with its history
    [seconds, objective, residual], the summary rows), ``results.md`` (the table) and one
    ``residual_<fraction>pct.png`` per fraction, each atomically.

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    settings = check_settings(settings)
    out = Path(out_dir)
    data = _load(settings)
    loss = get_loss(settings["loss"], alpha=settings["alpha"],
                    fit_intercept=settings["fit_intercept"])
    loss.check_labels(data.y_train)
    start = time.perf_counter()
    _, optimum = reference_solution(loss, data.X_train, data.y_train)
    reference_seconds = time.perf_counter() - start
    if optimum <= 0:
        raise InputError(f"alpha: the optimum L* = {optimum:g} is not positive, so the "
                         f"normalised residual (L - L*) / L* is undefined")
    runs = []
    for seed in settings["seeds"]:
        if "full" in settings["methods"]:
            runs.append(_one_run(settings, loss, data, "full", 1.0, seed, optimum))
        for method in settings["methods"]:
            if method == "full":
                continue
            for fraction in settings["fractions"]:
                runs.append(_one_run(settings, loss, data, method, fraction, seed, optimum))
    rows = summarize(runs, settings["target"])
    results = {"settings": settings, "data": data.info, "optimum": optimum,
               "reference_seconds": reference_seconds, "summary": rows, "runs": runs}
    atomic_write_bytes(out / "results.json",
                       json.dumps(results, indent=1, allow_nan=False).encode())
    atomic_write_bytes(out / "results.md", markdown_table(rows, settings, optimum).encode())
    for fraction in settings["fractions"]:
        atomic_write_bytes(out / f"residual_{100 * fraction:g}pct.png",
                           residual_figure(runs, fraction, settings))
    return results
