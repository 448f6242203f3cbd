"""The report of a comparison: ``results.json``, ``results.md`` and the plots, in one call.

:func:`write_report` validates and builds everything before it writes the first file.
Each piece has its own home, and its public names are re-exported here:

- :mod:`adacore.experiments.run_records`: what a run record is, and its validation;
- :mod:`adacore.experiments.summary`: means over seeds, speedups, time to full data's
  accuracy, accuracy at equal wall-clock time, paired comparisons;
- :mod:`adacore.experiments.statistics`: the paired tests behind them;
- :mod:`adacore.experiments.tables`: the Markdown tables;
- :mod:`adacore.experiments.plots`: the figures;
- :mod:`adacore.experiments.results_io`: JSON reading and atomic writing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adacore.experiments.plots import (GRADIENT_ERROR_FILE, TIME_TO_ACCURACY_FILE,
                                       accuracy_figure, curve_figures, gradient_error_figure,
                                       plot_curves, plot_gradient_error, save_figure,
                                       time_to_accuracy_figure)
from adacore.experiments.results_io import (json_default, output_dir, read_json,
                                            write_bytes_atomic, write_json)
from adacore.experiments.run_records import check_margin, check_runs, check_target
from adacore.experiments.summary import (DEFAULT_FULL_MARGIN, PAIRED_REFERENCE,
                                         accuracy_at_equal_wall_clock, paired_accuracy,
                                         settings_of, speedup_to_target, summarize,
                                         time_to_full_accuracy)
from adacore.experiments.tables import markdown_table, write_markdown
from adacore.validation import InputError, fail

__all__ = ["PAIRED_REFERENCE", "accuracy_at_equal_wall_clock", "accuracy_figure",
           "gradient_error_figure", "markdown_table", "paired_accuracy", "plot_curves",
           "plot_gradient_error", "read_json", "settings_of", "speedup_to_target",
           "summarize", "time_to_accuracy_figure", "time_to_full_accuracy", "write_json",
           "write_markdown", "write_report"]


def write_report(runs: Sequence[Mapping], out_dir: str | os.PathLike, *,
                 target: float | None = None, reference: str = "full",
                 command: str | None = None,
                 margin: float = DEFAULT_FULL_MARGIN) -> dict[str, Path | None]:
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
        The method the speedups are measured against; its final test accuracy minus
        ``margin`` is the time-to-accuracy threshold.
    command : str, optional
        The command line that produced the runs (e.g. ``" ".join(sys.argv)``), written
        under the table and into ``results.json``.
    margin : float, default 0.01
        The time-to-accuracy margin, a fraction in (0, 1) (see
        :func:`time_to_full_accuracy`).

    Returns
    -------
    dict
        ``results_json``, ``results_md``, ``accuracy_vs_epoch``, ``accuracy_vs_examples``,
        ``accuracy_vs_seconds``, ``time_to_accuracy`` and ``gradient_error`` (None when
        no method has one) -> path. ``results.json`` holds ``{"runs": runs, "summary":
        summarize(runs), "command": command, "time_to_full_accuracy":
        time_to_full_accuracy(runs, margin=margin, reference=reference),
        "accuracy_at_equal_wall_clock": accuracy_at_equal_wall_clock(runs)}`` (each
        summary entry carries ``selection_share``); with a target, ``"speedup":
        {"target", "reference", "methods"}``; when AdaCore is among the methods,
        ``"paired"``: method -> AdaCore's paired comparison with it, seed by seed
        (:func:`paired_accuracy`).
    """
    if command is not None and not isinstance(command, str):
        raise fail("command", command, "a string (the command line) or None")
    margin = check_margin(margin)
    document: dict[str, Any] = {"runs": [dict(run) for run in check_runs(runs)],
                                "summary": summarize(runs), "command": command}
    if target is not None:
        document["speedup"] = {"target": check_target(target), "reference": reference,
                               "methods": speedup_to_target(runs, target=target,
                                                            reference=reference)}
    if any(run["method"] == PAIRED_REFERENCE for run in runs):
        document["paired"] = paired_accuracy(runs)
    document["time_to_full_accuracy"] = time_to_full_accuracy(runs, margin=margin,
                                                              reference=reference)
    document["accuracy_at_equal_wall_clock"] = accuracy_at_equal_wall_clock(runs)
    try:
        json.dumps(document, allow_nan=False, default=json_default)
    except (TypeError, ValueError) as error:
        raise InputError(f"runs: not JSON-serialisable ({error}); expected plain dicts, "
                         f"lists, strings and finite numbers") from error
    table = markdown_table(runs, target=target, reference=reference, command=command,
                           margin=margin)
    curves = curve_figures(runs)
    time_figure = time_to_accuracy_figure(runs, margin=margin, reference=reference)
    gradient = gradient_error_figure(runs)

    folder = output_dir(out_dir)
    paths: dict[str, Path | None] = {"results_json": write_json(document,
                                                                folder / "results.json")}
    results_md = folder / "results.md"
    write_bytes_atomic(results_md, table.encode("utf-8"))
    paths["results_md"] = results_md
    for name, figure in curves.items():
        paths[name.removesuffix(".png")] = save_figure(figure, folder / name)
    paths["time_to_accuracy"] = save_figure(time_figure, folder / TIME_TO_ACCURACY_FILE)
    paths["gradient_error"] = (save_figure(gradient, folder / GRADIENT_ERROR_FILE)
                               if gradient is not None else None)
    return paths
