"""The presentation of a one-round diagnosis: its Markdown table, its figures, its files.

:func:`diagnosis_markdown` gives one row per method (per-dimension errors in the
quarters of low and high gradient scale, the gradient and preconditioned errors, the
curvature deciles covered) with the report's notes; :func:`diagnose_figures` the
per-dimension error against the dimension's rank by gradient scale and the curvature of
the selected points against the full set's; :func:`write_diagnosis` writes
``diagnosis.json``, ``diagnosis.md`` and the two PNGs. The report itself is measured by
:func:`adacore.experiments.diagnose.diagnose`; nothing here computes a measure.

Figures are built with :class:`matplotlib.figure.Figure` (no pyplot, no global state)
and every file is written atomically.
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

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from adacore.atomic import atomic_write_bytes
from adacore.experiments.diagnose import FRESH, finite_or_none
from adacore.validation import InputError, fail

__all__ = ["ERROR_FLOOR", "FIGURE_FILES", "diagnose_figures", "diagnosis_markdown",
           "write_diagnosis"]

ERROR_FLOOR = 1e-12         # where exact zeros are drawn on the log axis
FIGURE_FILES = {"per_dimension_error": "per_dimension_error.png",
                "curvature_spread": "curvature_spread.png"}


def _check_report(report: Any) -> Mapping:
    required = ("n", "p", "k", "fraction", "dimension_scale", "dimension_order",
                "full_curvature", "methods")
    if not isinstance(report, Mapping):
        raise fail("report", report, "a dict returned by diagnose()")
    missing = [key for key in required if key not in report]
    if missing:
        raise InputError(f"report: missing key(s) {', '.join(missing)}; expected a dict "
                         f"returned by diagnose()")
    if not isinstance(report["methods"], Mapping):
        raise fail("report['methods']", report["methods"], "a dict: method -> record")
    return report


def _ran(report: Mapping) -> list[tuple[str, Mapping]]:
    return [(name, record) for name, record in report["methods"].items()
            if record.get("status") == "ok"]


def _values(items: Sequence) -> np.ndarray:
    return np.array([math.nan if value is None else value for value in items], dtype=np.float64)


def _per_dimension_figure(report: Mapping) -> Figure:
    figure = Figure(figsize=(7.0, 4.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    order = np.asarray(report["dimension_order"], dtype=np.int64)
    p = order.shape[0]
    quarter = max(1, math.ceil(p / 4))
    ranks = np.arange(1, p + 1)
    # the quarters of low and high scale, shaded (patches, not lines)
    axes.axvspan(0.5, quarter + 0.5, color="tab:gray", alpha=0.12, linewidth=0)
    axes.axvspan(p - quarter + 0.5, p + 0.5, color="tab:gray", alpha=0.12, linewidth=0)
    marker = "o" if p <= 64 else None
    for name, record in _ran(report):
        errors = _values(record["per_dimension_error"])[order]
        errors = np.where(errors == 0, ERROR_FLOOR, errors)
        axes.plot(ranks, errors, marker=marker, markersize=3, linewidth=1.2, label=name)
    axes.set_yscale("log")
    axes.set_xlim(0.5, p + 0.5)
    axes.set_xlabel(r"dimension rank by gradient scale $\mathrm{mean}_i |g_{ic}|$ (ascending)")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("relative error of the coreset's gradient (unitless, log)\n"
                    rf"$|\sum_i g_{{ic}} - \sum_j w_j g_{{jc}}| / |\sum_i g_{{ic}}|$; "
                    f"0 drawn at {ERROR_FLOOR:g}")
    axes.set_title(f"Per-dimension gradient error, one selection round\n"
                   f"n = {report['n']}, p = {p}, k = {report['k']} "
                   f"({100 * report['fraction']:g}%)\nshaded: the quarters of lowest and "
                   f"highest scale; gaps: undefined (zero sum)",
                   fontsize=10)
    axes.grid(True, alpha=0.3, which="both")
    if axes.lines:
        axes.legend(fontsize=8, loc="best")
    return figure


def _curvature_figure(report: Mapping) -> Figure:
    figure = Figure(figsize=(7.0, 4.6), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    full = _values(report["full_curvature"]["values"])
    ran = _ran(report)
    data = [full] + [_values(record["curvature"]["selected_curvature"]) for _, record in ran]
    labels = ["full set"] + [
        f"{name}\n{record['curvature']['bins_covered']}/"
        f"{record['curvature']['bins_available']} deciles\n"
        f"cov. {record['curvature']['weighted_coverage']:.2f}" for name, record in ran]
    boxes = axes.boxplot(data, patch_artist=True, whis=(10, 90), showfliers=True,
                         flierprops={"markersize": 2, "alpha": 0.4},
                         medianprops={"color": "black"})
    colors = matplotlib.rcParams["axes.prop_cycle"].by_key()["color"]
    for position, box in enumerate(boxes["boxes"]):
        # the full set in gray, the methods in the colours of the per-dimension figure
        box.set_facecolor("lightgray" if position == 0 else colors[(position - 1) % len(colors)])
        box.set_alpha(0.8)
    axes.set_xticks(np.arange(1, len(data) + 1), labels, fontsize=8)
    if np.all(full > 0):
        axes.set_yscale("log")
    axes.set_ylabel(r"curvature scale $\|d_i\|$ (log where all > 0)")
    axes.set_title("Curvature of the selected points vs the full set\n"
                   "box: quartiles, whiskers: 10-90%\n"
                   "under each method: deciles hit, weighted decile coverage (1 = the full "
                   "set's)", fontsize=10)
    axes.grid(True, alpha=0.3, axis="y")
    return figure


def diagnose_figures(report: Mapping) -> dict[str, Figure]:
    """The two figures of a diagnosis.

    Parameters
    ----------
    report : dict
        As returned by :func:`diagnose` (or read back from ``diagnosis.json``).

    Returns
    -------
    dict
        ``"per_dimension_error"``: one line per method that ran (errors against the
        dimension's rank by gradient scale, log y; ``axes[0].lines``, in report order).
        ``"curvature_spread"``: one box for the full set and one per method that ran
        (``axes[0].patches``; tick labels ``"full set"``, then each method's name with
        its deciles covered and weighted coverage).
    """
    report = _check_report(report)
    return {"per_dimension_error": _per_dimension_figure(report),
            "curvature_spread": _curvature_figure(report)}


def _cell(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return f"{value:.{digits}g}"
    return str(value).replace("|", "\\|")


def diagnosis_markdown(report: Mapping) -> str:
    """A Markdown table of a diagnosis, one row per method, with notes below it."""
    report = _check_report(report)
    lines = [f"Diagnosis of one selection round: n = {report['n']}, p = {report['p']}, "
             f"k = {report['k']} ({100 * report['fraction']:g}%), seed "
             f"{report.get('seed', 'n/a')}.", ""]
    source = report.get("source")
    if isinstance(source, Mapping):
        lines[0] = lines[0][:-1] + (
            f"; probed from the run in {source.get('run_dir')!s} ({source.get('method')}, "
            f"checkpoint of epoch {source.get('epoch')}, space {source.get('space')}).")
    header = ["method", "k", "strategy state", "median per-dim error", "max per-dim error",
              "low-scale dims (median)", "high-scale dims (median)", "low / high",
              "gradient error", "preconditioned error", "curvature deciles covered",
              "weighted curvature coverage"]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * len(header)) + "|"]
    notes = []
    for name, record in report["methods"].items():
        state = _cell(record.get("strategy_state", FRESH))
        if record.get("status") != "ok":
            lines.append("| " + " | ".join([_cell(name), "—", state]
                                           + ["—"] * (len(header) - 3)) + " |")
            notes.append(f"- {name}: {record.get('note')}")
            continue
        summary, curvature = record["per_dimension_summary"], record["curvature"]
        lines.append("| " + " | ".join([
            _cell(name), str(record["coreset_size"]), state, _cell(summary["median"]),
            _cell(summary["max"]), _cell(summary["low_scale_median"]),
            _cell(summary["high_scale_median"]), _cell(summary["low_over_high"]),
            _cell(record["gradient_error"]), _cell(record["preconditioned_error"]),
            f"{curvature['bins_covered']}/{curvature['bins_available']}",
            _cell(curvature["weighted_coverage"], 2)]) + " |")
        notes.append(f"- {name}: {record['weighting']}"
                     + (f"; {record['note']}" if record.get("note") else ""))
    lines += ["", "Errors are relative (unitless); n/a: undefined.", ""]
    lines += [f"- {note}" for note in report.get("notes", [])]
    lines += ["", "Per method:", ""] + notes
    return "\n".join(lines) + "\n"


def _png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def write_diagnosis(report: Mapping, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``diagnosis.json``, ``diagnosis.md`` and the two PNGs, each atomically.

    Everything is built before the first file is written, so a bad report leaves
    ``out_dir`` as it was.

    Parameters
    ----------
    report : dict
        As returned by :func:`diagnose`.
    out_dir : str or path-like
        Folder for the files; created if missing.

    Returns
    -------
    dict
        ``"json"``, ``"markdown"``, ``"per_dimension_error"`` and ``"curvature_spread"``
        -> path.
    """
    report = _check_report(report)
    try:
        text = json.dumps(finite_or_none(report), indent=2, allow_nan=False)
    except (TypeError, ValueError) as error:
        raise InputError(f"report: not JSON-serialisable ({error}); expected the dict "
                         f"diagnose() returns") from error
    contents = {"json": ("diagnosis.json", (text + "\n").encode("utf-8")),
                "markdown": ("diagnosis.md", diagnosis_markdown(report).encode("utf-8"))}
    for key, figure in diagnose_figures(report).items():
        contents[key] = (FIGURE_FILES[key], _png_bytes(figure))
    folder = Path(out_dir)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"out_dir: got {str(folder)!r}, expected a folder (or a path where "
                         f"one can be created)")
    return {key: atomic_write_bytes(folder / name, data)
            for key, (name, data) in contents.items()}
