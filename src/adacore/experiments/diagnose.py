"""One selection round under the microscope: does each coreset do what the poster claims?

The AdaCore poster makes three claims about first-order coresets (CRAIG and kin) and
their Hessian-preconditioned version, all about a single selection round:

1. first-order coresets estimate the full gradient well only in the dimensions with a
   large gradient scale; AdaCore estimates it in all dimensions equally well;
2. AdaCore matches the preconditioned gradient sum_i H_i^-1 g_i;
3. AdaCore picks "a more diverse set of datapoints with similar gradients but different
   curvature".

:func:`diagnose` runs every method at the same budget on the same per-example vectors
and measures each claim with one small function:

- :func:`per_dimension_error`: for each coordinate c,
  ``|sum_i g_ic - sum_j w_j g_jc| / |sum_i g_ic|``; NaN where the denominator is zero
  (see :data:`ZERO_TOLERANCE`). :func:`dimension_error_summary` condenses it: median,
  max, and the median restricted to the quarter of the dimensions with the smallest and
  with the largest gradient scale.
- :func:`preconditioned_error`: ``||sum_i u_i - sum_j w_j u_j|| / ||sum_i u_i||`` with
  ``u = g / (|d| + eps)``, the vectors of AdaCore's first round (Hbar_1 = |d|).
- :func:`curvature_spread`: where the selected points lie in the distribution of the
  curvature scale ``||d_i||`` over the full set: quantiles, the number of the full
  set's curvature deciles hit, and the weighted coverage of those deciles.

Gradient scale of a dimension c is ``mean_i |g_ic|``, the typical size of the
per-example gradient along c (the poster's "scale of g along different dimensions").
It is deliberately not the denominator ``|sum_i g_ic|``: ranking dimensions by the
denominator would put the largest *relative* errors among the "small" dimensions by
construction, whatever the coreset.

Weights. Every estimate uses each coreset's weights w_j as the method returned them:
cluster sizes for CRAIG and AdaCore, fitted OMP weights for GradMatch, the uniform
n_c / k_c (Random) or n / k (RS2) of a sampling estimator that was not fitted to
anything. The one exception is a coreset of unit weights (GLISTER, which trains
unweighted) smaller than the data: its weights are rescaled to n / k each, so that
they sum to n as the others do; the report says so in ``weighting``.

Strategy state. A strategy with state across rounds (AdaCore's curvature smoothing, a
round counter, a random generator) selects differently in round t than in round 1.
:func:`diagnose_run` therefore restores the method a run trained from the run's
checkpoint (through the strategy's public ``state_dict`` / ``load_state_dict`` only) and
diagnoses the round that run would have done next, on a copy so the restored state is
not advanced; every record says which state it used (``strategy_state``: "restored from
run (round N)" or "fresh").

The presentation of a report (its Markdown table, its two figures and the files) lives
in :mod:`adacore.experiments.diagnosis_report`; its names are importable from here too.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import adacore.strategies as strategies
from adacore.coreset import Coreset
from adacore.selection.budgets import budget_from_fraction, per_class_budgets
from adacore.validation import (InputError, as_labels, as_tensor, check_choice, check_fraction,
                                check_int, check_positive, fail)

__all__ = ["DEFAULT_EPS", "DEFAULT_METHODS", "FRESH", "KNOWN_METHODS", "QUANTILES",
           "ZERO_TOLERANCE", "as_estimator", "curvature_scale", "curvature_spread", "diagnose",
           "diagnose_figures", "diagnose_run", "dimension_error_summary", "dimension_scale",
           "diagnosis_markdown", "per_dimension_error", "preconditioned_error",
           "write_diagnosis"]

DEFAULT_METHODS = ("adacore", "craig", "gradmatch", "glister", "random")
# Names accepted even when not registered (yet): they get a note, not an error.
KNOWN_METHODS = ("adacore", "craig", "full", "glister", "gradmatch", "random", "rs2")
DEFAULT_EPS = 1e-4          # AdaCore's default damping
QUANTILES = (0.1, 0.5, 0.9)
N_CURVATURE_BINS = 10       # deciles of the full set
# A coordinate's full-gradient sum counts as zero when |sum_i g_ic| <= this times
# sum_i |g_ic|: below that it is float cancellation noise, and the relative error
# would be noise divided by noise.
ZERO_TOLERANCE = 1e-12
FRESH = "fresh"             # the state of a strategy built for the diagnosis (its round 1)

_WEIGHT_MEANING = {
    "adacore": "cluster sizes of facility location on u = g / (|d| + eps)",
    "craig": "cluster sizes of facility location on g",
    "gradmatch": "non-negative OMP weights fitted to each class's gradient sum",
    "random": "uniform n_c / k_c per class (a sampling estimator, not fitted)",
    "rs2": "uniform n / k (a sampling estimator, not fitted)",
    "glister": "unit weights (GLISTER trains unweighted)",
    "full": "1 each (the full set)",
}


# --------------------------------------------------------------------------- measures

def _float64(name: str, array: Any, ndim: int) -> np.ndarray:
    return as_tensor(name, array, ndim=ndim, dtype=torch.float64).cpu().numpy()


def _coreset_rows(coreset: Coreset, n: int) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(coreset, Coreset):
        raise fail("coreset", coreset, "an adacore.Coreset")
    indices = coreset.indices
    if indices.size == 0:
        raise fail("coreset", coreset, "a non-empty coreset")
    if indices.min() < 0 or indices.max() >= n:
        raise InputError(f"coreset: indices must lie in [0, {n - 1}] (one per row of the "
                         f"vectors), got [{indices.min()}, {indices.max()}]")
    weights = coreset.weights
    if not np.isfinite(weights).all():
        raise InputError("coreset: weights must be finite")
    return indices, weights


def dimension_scale(grads) -> np.ndarray:
    """Gradient scale of each dimension: ``mean_i |g_ic|``, shape (p,)."""
    return np.abs(_float64("grads", grads, 2)).mean(axis=0)


def per_dimension_error(grads, coreset: Coreset) -> np.ndarray:
    """Relative error of the coreset's gradient estimate, coordinate by coordinate.

    Parameters
    ----------
    grads : array or Tensor, shape (n, p)
        Per-example gradients g_i.
    coreset : Coreset
        Rows ``indices`` of ``grads`` with weights w_j, used as given.

    Returns
    -------
    ndarray of float64, shape (p,)
        ``|sum_i g_ic - sum_j w_j g_jc| / |sum_i g_ic|``. NaN where the denominator is
        zero, i.e. ``|sum_i g_ic| <= ZERO_TOLERANCE * sum_i |g_ic|`` (every coordinate of
        an all-zero column included): there a relative error is undefined.
    """
    vectors = _float64("grads", grads, 2)
    indices, weights = _coreset_rows(coreset, vectors.shape[0])
    full = vectors.sum(axis=0)
    estimate = weights @ vectors[indices]
    denominator = np.abs(full)
    zero = denominator <= ZERO_TOLERANCE * np.abs(vectors).sum(axis=0)
    errors = np.full(full.shape, np.nan)
    errors[~zero] = np.abs(full - estimate)[~zero] / denominator[~zero]
    return errors


def _scale_groups(scale: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dimensions by ascending scale (ties: lower index), and the bottom and top quarters."""
    order = np.argsort(scale, kind="stable")
    quarter = max(1, math.ceil(order.shape[0] / 4))
    return order, order[:quarter], order[-quarter:]


def _nan_median(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(np.median(finite)) if finite.size else math.nan


def dimension_error_summary(errors, scale) -> dict:
    """Condense per-dimension errors: overall, and in low- and high-scale dimensions.

    Parameters
    ----------
    errors : array, shape (p,)
        From :func:`per_dimension_error` (NaN: undefined, left out of every statistic).
    scale : array, shape (p,)
        Gradient scale per dimension (:func:`dimension_scale`).

    Returns
    -------
    dict
        ``median`` and ``max`` over the defined dimensions; ``low_scale_median`` and
        ``high_scale_median``: the median over the ceil(p / 4) dimensions of smallest
        and of largest scale (ties broken by dimension index); ``low_over_high`` their
        ratio (about 1: equally good everywhere; >> 1: good only where the scale is
        large); ``undefined_dimensions``: how many are NaN. NaN where nothing is defined.
    """
    errors = np.asarray(errors, dtype=np.float64).reshape(-1)
    scale = np.asarray(scale, dtype=np.float64).reshape(-1)
    if errors.shape != scale.shape or errors.size == 0:
        raise InputError(f"errors, scale: got shapes {errors.shape} and {scale.shape}, "
                         f"expected two non-empty vectors of one length")
    _, low, high = _scale_groups(scale)
    defined = errors[~np.isnan(errors)]
    low_median, high_median = _nan_median(errors[low]), _nan_median(errors[high])
    ratio = low_median / high_median if high_median > 0 else math.nan
    return {"median": _nan_median(errors),
            "max": float(defined.max()) if defined.size else math.nan,
            "low_scale_median": low_median, "high_scale_median": high_median,
            "low_over_high": ratio, "undefined_dimensions": int(np.isnan(errors).sum())}


def _relative_norm_error(vectors: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> float:
    full = vectors.sum(axis=0)
    norm = float(np.linalg.norm(full))
    if norm == 0:
        return math.nan
    return float(np.linalg.norm(full - weights @ vectors[indices])) / norm


def preconditioned_error(grads, hessian_diag, coreset: Coreset, eps: float = DEFAULT_EPS) -> float:
    """Relative error of the coreset's estimate of the preconditioned gradient.

    ``||sum_i u_i - sum_j w_j u_j|| / ||sum_i u_i||`` with ``u_i = g_i / (|d_i| + eps)``
    elementwise: the vectors of AdaCore's first selection round (Hbar_1 = |d|).

    Parameters
    ----------
    grads, hessian_diag : array or Tensor, shape (n, p)
        Per-example gradients and Hessian diagonals.
    coreset : Coreset
        Weights used as given.
    eps : float
        Damping, >= 0 (default 1e-4, AdaCore's).

    Returns
    -------
    float
        The relative error; NaN when ``sum_i u_i`` is zero. With ``eps = 0`` a zero
        curvature entry gives an infinite u and the error is NaN.
    """
    vectors = _float64("grads", grads, 2)
    diag = _float64("hessian_diag", hessian_diag, 2)
    if diag.shape != vectors.shape:
        raise InputError(f"hessian_diag: got shape {diag.shape}, expected {vectors.shape} "
                         f"(the shape of grads)")
    eps = check_positive("eps", eps, allow_zero=True)
    indices, weights = _coreset_rows(coreset, vectors.shape[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        preconditioned = vectors / (np.abs(diag) + eps)
        if not np.isfinite(preconditioned).all():
            return math.nan
        return _relative_norm_error(preconditioned, indices, weights)


def curvature_scale(hessian_diag) -> np.ndarray:
    """Curvature scale of each example: ``||d_i||`` (Euclidean norm of its diagonal), shape (n,)."""
    return np.linalg.norm(_float64("hessian_diag", hessian_diag, 2), axis=1)


def _quantiles(values: np.ndarray) -> dict[str, float]:
    values_at = np.quantile(values, QUANTILES)
    return {f"q{round(100 * q)}": float(v) for q, v in zip(QUANTILES, values_at)}


def curvature_spread(hessian_diag, coreset: Coreset) -> dict:
    """How the selected points spread over the full set's curvature distribution.

    The curvature scale of example i is ``c_i = ||d_i||``. The full set's deciles of c
    cut it into 10 bins (bin b holds c with ``edge_b <= c < edge_{b+1}``; with ties a
    bin may be empty).

    Parameters
    ----------
    hessian_diag : array or Tensor, shape (n, p)
    coreset : Coreset
        Weights used as given.

    Returns
    -------
    dict
        ``full_quantiles`` and ``selected_quantiles`` (q10, q50, q90 of c over all
        examples and over the selected ones, unweighted); ``bins_covered``: how many
        decile bins hold at least one selected point, out of ``bins_available`` (the
        non-empty ones); ``full_bin_share`` and ``weighted_bin_share``: the share of
        the examples, and of the coreset's total weight, in each bin;
        ``weighted_coverage`` = sum_b min(weighted share_b, full share_b), 1 when the
        weighted coreset reproduces the full set's curvature distribution and close to
        0 when its weight sits where the data are not; ``selected_curvature``: c of the
        selected points, in coreset order.
    """
    curvature = curvature_scale(hessian_diag)
    indices, weights = _coreset_rows(coreset, curvature.shape[0])
    edges = np.quantile(curvature, np.arange(1, N_CURVATURE_BINS) / N_CURVATURE_BINS)
    bins = np.searchsorted(edges, curvature, side="right")
    full_share = np.bincount(bins, minlength=N_CURVATURE_BINS) / curvature.shape[0]
    selected_bins = bins[indices]
    weight_share = np.bincount(selected_bins, weights=weights, minlength=N_CURVATURE_BINS)
    total = weight_share.sum()
    weight_share = weight_share / total if total > 0 else np.full(N_CURVATURE_BINS, math.nan)
    selected = curvature[indices]
    return {"full_quantiles": _quantiles(curvature),
            "selected_quantiles": _quantiles(selected),
            "bins_covered": int(np.unique(selected_bins).shape[0]),
            "bins_available": int((full_share > 0).sum()),
            "bin_edges": edges.tolist(),
            "full_bin_share": full_share.tolist(),
            "weighted_bin_share": weight_share.tolist(),
            "weighted_coverage": float(np.minimum(weight_share, full_share).sum()),
            "selected_curvature": selected.tolist()}


def as_estimator(coreset: Coreset, n: int) -> tuple[Coreset, str]:
    """The coreset whose weights the estimates use, and a sentence saying which.

    Unit weights on fewer than ``n`` points (a method that trains unweighted) are
    rescaled to n / k each, so that they sum to n; any other weights are kept as given.
    """
    n = check_int("n", n, 1)
    k = len(coreset)
    meaning = _WEIGHT_MEANING.get(coreset.method, "as the method defines them")
    if k < n and np.all(coreset.weights == 1.0):
        scaled = Coreset(indices=coreset.indices, weights=np.full(k, n / k),
                         gains=coreset.gains, method=coreset.method, budgets=coreset.budgets,
                         round=coreset.round, metadata=coreset.metadata)
        return scaled, (f"{meaning}, rescaled to n / k = {n / k:g} each so they sum to "
                        f"n = {n}")
    return coreset, (f"weights w_j as returned: {meaning} (sum "
                     f"{coreset.weights.sum():g}, n = {n})")


# --------------------------------------------------------------------------- one round

def _check_methods(methods: Any) -> list[str]:
    if isinstance(methods, str) or not isinstance(methods, Sequence) or not methods:
        raise fail("methods", methods, "a non-empty sequence of method names")
    known = set(KNOWN_METHODS) | set(strategies.available_strategies())
    names = []
    for name in methods:
        if not isinstance(name, str) or name not in known:
            raise fail("methods", name, "method names among " + ", ".join(sorted(known)))
        if name in names:
            raise fail("methods", name, "each method once")
        names.append(name)
    return names


def _check_options(options: Any, methods: list[str]) -> dict[str, dict]:
    if options is None:
        return {}
    if not isinstance(options, Mapping):
        raise fail("strategy_options", options, "a dict: method name -> dict of options")
    for name, value in options.items():
        if name not in methods:
            raise fail("strategy_options", name, "keys among the methods diagnosed ("
                       + ", ".join(methods) + ")")
        if not isinstance(value, Mapping):
            raise fail(f"strategy_options[{name!r}]", value, "a dict of keyword options")
        for reserved in ("fraction", "seed"):
            if reserved in value:
                raise InputError(f"strategy_options[{name!r}]: {reserved!r} is set by "
                                 f"diagnose's own argument, not per method")
    return {name: dict(value) for name, value in options.items()}


def _check_prepared(prepared: Any, methods: list[str],
                    options: Mapping[str, Mapping]) -> dict[str, dict]:
    if prepared is None:
        return {}
    if not isinstance(prepared, Mapping):
        raise fail("prepared", prepared, "a dict: method name -> {'strategy', 'state'}")
    checked = {}
    for name, entry in prepared.items():
        if name not in methods:
            raise fail("prepared", name, "keys among the methods diagnosed ("
                       + ", ".join(methods) + ")")
        if not isinstance(entry, Mapping) or not isinstance(entry.get("strategy"),
                                                            strategies.Strategy):
            raise fail(f"prepared[{name!r}]", entry, "a dict with 'strategy' (a Strategy) "
                       "and 'state' (words)")
        if entry["strategy"].name != name:
            raise fail(f"prepared[{name!r}]['strategy']", entry["strategy"],
                       f"a {name!r} strategy")
        if not isinstance(entry.get("state"), str) or not entry["state"]:
            raise fail(f"prepared[{name!r}]['state']", entry.get("state"),
                       "words saying where the state came from")
        select_options = entry.get("select_options", {})
        if not isinstance(select_options, Mapping):
            raise fail(f"prepared[{name!r}]['select_options']", select_options,
                       "a dict of keyword arguments of select")
        if name in options:
            raise InputError(f"strategy_options[{name!r}]: method {name!r} comes prepared "
                             f"(its options are the prepared strategy's); give one or the other")
        checked[name] = {"strategy": entry["strategy"], "state": entry["state"],
                         "select_options": dict(select_options)}
    return checked


def finite_or_none(value: Any) -> Any:
    """NaN and inf become None, recursively, so the report is strict JSON."""
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    if isinstance(value, np.ndarray):
        return finite_or_none(value.tolist())
    if isinstance(value, (np.generic,)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _skipped(name: str, note: str) -> dict:
    return {"method": name, "status": "skipped", "note": note}


def _run_method(name: str, options: dict, prepared: dict | None, *, fraction: float,
                seed: int, grads, labels, hessian_diag, val_grads, val_hessian_diag,
                val_labels) -> Coreset | str:
    """The method's coreset for this round, or the note saying why it could not run."""
    if prepared is not None:
        # selecting advances a strategy's state (its round, its smoothing): a copy
        # selects, the caller's strategy stays as it was restored
        strategy = copy.deepcopy(prepared["strategy"])
        select_options = dict(prepared["select_options"])
    elif name not in strategies.available_strategies():
        return (f"method {name!r} is not registered in this installation "
                f"(available: {', '.join(strategies.available_strategies())}); skipped")
    else:
        strategy = strategies.get_strategy(name, fraction=fraction, seed=seed, **options)
        select_options = {}
    inputs: dict[str, Any] = {}
    if "hessian_diag" in strategy.requires:
        inputs["hessian_diag"] = hessian_diag
    if "val_grads" in strategy.requires:
        if val_grads is None:
            return (f"method {name!r} needs val_grads (per-example validation gradients), "
                    f"none given; skipped")
        inputs["val_grads"] = val_grads
        if val_hessian_diag is not None:
            inputs["val_hessian_diag"] = val_hessian_diag
    if "val_labels" in strategy.requires:
        if val_labels is None:
            return (f"method {name!r} needs val_labels (the classes of the validation "
                    f"rows), none given; skipped")
        inputs["val_labels"] = val_labels
    return strategy.select(grads, labels, **inputs, **select_options)


def diagnose(grads, labels, *, hessian_diag, fraction: float,
             methods: Sequence[str] = DEFAULT_METHODS, seed: int = 0, val_grads=None,
             val_hessian_diag=None, val_labels=None,
             strategy_options: Mapping[str, Mapping] | None = None,
             prepared: Mapping[str, Mapping] | None = None, eps: float | None = None) -> dict:
    """Run each method once at the same budget and measure the poster's three claims.

    Parameters
    ----------
    grads : array or Tensor, shape (n, p)
        Per-example gradients (e.g. logit space, ``p - y``).
    labels : array, shape (n,)
        Integer class labels.
    hessian_diag : array or Tensor, shape (n, p)
        Per-example Hessian diagonals in the space of ``grads``.
    fraction : float
        Budget k = round(fraction * n), split across classes by each method as it does
        in training.
    methods : sequence of str
        Method names. A known name that is not registered (e.g. ``"gradmatch"`` before
        its module is wired in) and a method whose inputs are missing (``"glister"``
        without ``val_grads``) are reported with a note instead of a result.
    seed : int
        Seed given to every strategy.
    val_grads, val_hessian_diag : array or Tensor, shape (m, p), optional
        Validation vectors for GLISTER.
    val_labels : array, shape (m,), optional
        Classes of the validation rows, for a GLISTER that needs them (per class).
    strategy_options : dict, optional
        Method name -> extra keyword options of its strategy (not ``fraction`` or
        ``seed``). AdaCore's ``eps`` there is also the eps of the preconditioned error.
    prepared : dict, optional
        Method name -> ``{"strategy": Strategy, "state": str, "select_options": dict}``:
        a strategy to use instead of a fresh one (e.g. restored from a run), the words
        saying which state it holds, and extra arguments of its ``select`` (e.g.
        ``steps``). It selects on a deep copy, so the given strategy's state is not
        advanced; its own ``fraction`` and ``seed`` apply.
    eps : float, optional
        eps of the preconditioned error (default: AdaCore's ``strategy_options`` eps,
        else 1e-4).

    Returns
    -------
    dict
        Strict-JSON (NaN and inf stored as None): ``n``, ``p``, ``fraction``, ``k``,
        ``seed``, ``eps``, ``dimension_scale`` (mean_i |g_ic|), ``dimension_order``
        (dimensions by ascending scale), ``low_scale_dimensions`` and
        ``high_scale_dimensions`` (bottom and top quarter), ``full_curvature`` (q10,
        q50, q90 and the curvature of every example), ``notes`` and ``methods``: name ->
        record, in the order asked. A record has ``status`` ("ok" or "skipped") and
        ``note``; when ok also ``coreset_size``, ``requested_size``, ``budgets``,
        ``indices``, ``weights`` (as used), ``weighting`` (which weights, in words),
        ``per_dimension_error`` (list, None where undefined),
        ``per_dimension_summary`` (:func:`dimension_error_summary`),
        ``gradient_error`` (``||sum g - sum w g|| / ||sum g||``),
        ``preconditioned_error`` and ``curvature`` (:func:`curvature_spread`),
        ``select_seconds``, ``strategy_state`` ("fresh", or the prepared entry's words),
        ``round`` (the strategy's round this selection was) and
        ``own_preconditioned_error`` (the error on the method's own preconditioned
        vectors, which for a restored AdaCore are smoothed; None for methods without).

    Raises
    ------
    InputError
        Naming the argument: non-finite or mis-shaped arrays, labels of another length,
        a bad fraction or seed, an unknown or repeated method name, bad options.
    """
    vectors = _float64("grads", grads, 2)
    n, p = vectors.shape
    label_array = as_labels("labels", labels, n)
    diag = _float64("hessian_diag", hessian_diag, 2)
    if diag.shape != vectors.shape:
        raise InputError(f"hessian_diag: got shape {diag.shape}, expected {vectors.shape} "
                         f"(the shape of grads)")
    fraction = check_fraction("fraction", fraction)
    seed = check_int("seed", seed, 0)
    names = _check_methods(methods)
    options = _check_options(strategy_options, names)
    if val_grads is not None:
        val = _float64("val_grads", val_grads, 2)
        if val.shape[1] != p:
            raise InputError(f"val_grads: got width {val.shape[1]}, expected {p} (the width "
                             f"of grads: both in one space)")
        if val_hessian_diag is not None:
            val_diag = _float64("val_hessian_diag", val_hessian_diag, 2)
            if val_diag.shape != val.shape:
                raise InputError(f"val_hessian_diag: got shape {val_diag.shape}, expected "
                                 f"{val.shape} (the shape of val_grads)")
        if val_labels is not None:
            val_labels = as_labels("val_labels", val_labels, val.shape[0])
    elif val_hessian_diag is not None or val_labels is not None:
        raise InputError("val_hessian_diag, val_labels: given without val_grads; expected "
                         "them with val_grads")
    ready = _check_prepared(prepared, names, options)
    if eps is None:
        eps = check_positive("strategy_options['adacore']['eps']",
                             options.get("adacore", {}).get("eps", DEFAULT_EPS),
                             allow_zero=True)
    else:
        eps = check_positive("eps", eps, allow_zero=True)

    scale = np.abs(vectors).mean(axis=0)
    order, low, high = _scale_groups(scale)
    k = budget_from_fraction(fraction, n)
    records: dict[str, dict] = {}
    for name in names:
        outcome = _run_method(name, options.get(name, {}), ready.get(name),
                              fraction=fraction, seed=seed, grads=grads, labels=label_array,
                              hessian_diag=hessian_diag, val_grads=val_grads,
                              val_hessian_diag=val_hessian_diag, val_labels=val_labels)
        state = ready[name]["state"] if name in ready else FRESH
        if isinstance(outcome, str):
            records[name] = {**_skipped(name, outcome), "strategy_state": state}
            continue
        outcome.method = outcome.method or name
        estimator, weighting = as_estimator(outcome, n)
        errors = per_dimension_error(vectors, estimator)
        requested = n if name == "full" else k
        size_note = None
        if len(outcome) != requested:
            size_note = (f"selected {len(outcome)} points where the budget was "
                         f"{requested} (the method's own rule; nothing was topped up)")
        records[name] = {
            "method": name, "status": "ok", "note": size_note,
            "coreset_size": len(outcome), "requested_size": requested,
            "budgets": {str(label): int(b) for label, b in outcome.budgets.items()},
            "indices": outcome.indices.tolist(), "weights": estimator.weights.tolist(),
            "weighting": weighting,
            "per_dimension_error": errors.tolist(),
            "per_dimension_summary": dimension_error_summary(errors, scale),
            "gradient_error": _relative_norm_error(vectors, estimator.indices,
                                                   estimator.weights),
            "preconditioned_error": preconditioned_error(vectors, diag, estimator, eps),
            "curvature": curvature_spread(diag, estimator),
            "select_seconds": float(outcome.metadata.get("select_seconds", math.nan)),
            "strategy_state": state, "round": int(outcome.round),
            "own_preconditioned_error": outcome.metadata.get("preconditioned_gradient_error"),
        }
    curvature = np.linalg.norm(diag, axis=1)
    report = {
        "n": int(n), "p": int(p), "fraction": fraction, "k": int(k), "seed": seed,
        "eps": eps, "class_budgets": {str(label): int(b) for label, b in
                                      per_class_budgets(label_array, k).items()},
        "dimension_scale": scale.tolist(), "dimension_order": order.tolist(),
        "low_scale_dimensions": sorted(low.tolist()),
        "high_scale_dimensions": sorted(high.tolist()),
        "full_curvature": {**_quantiles(curvature), "values": curvature.tolist()},
        "notes": [
            "per-dimension error: |sum_i g_ic - sum_j w_j g_jc| / |sum_i g_ic|; None "
            f"where |sum_i g_ic| <= {ZERO_TOLERANCE:g} * sum_i |g_ic| (undefined)",
            "gradient scale of dimension c: mean_i |g_ic|; low / high scale: the "
            "ceil(p / 4) dimensions of smallest / largest scale",
            f"preconditioned error: u = g / (|d| + eps), eps = {eps:g} (AdaCore's first "
            "round)",
            "curvature scale of an example: ||d_i||; bins: deciles of the full set",
            "weights: as each method returned them, except unit weights (GLISTER), "
            "rescaled to n / k each",
            "strategy state: 'fresh' is a strategy's first round; 'restored from run "
            "(round N)' continues a run's strategy (round N + 1, on a copy)",
        ],
        "methods": records,
    }
    return finite_or_none(report)


# --------------------------------------------------------------------------- from a run

SPACES = ("logits", "last_layer")


def _restore(config, state: Mapping, space: str, run_space: str,
             fraction: float) -> tuple[dict | None, str]:
    """The run's strategy with its checkpointed state, or None and why it stays fresh.

    The strategy is the run's (its options and seed) at the diagnosis's ``fraction``:
    the state does not depend on the budget."""
    loader_state = state.get("loader")
    saved = loader_state.get("strategy") if isinstance(loader_state, Mapping) else None
    if not isinstance(saved, Mapping):
        return None, f"{FRESH} (the checkpoint holds no strategy state)"
    if space != run_space:
        # per-example state (AdaCore's smoothing) lives in the space the run probed
        return None, (f"{FRESH} (the run selected in space {run_space!r}; this diagnosis "
                      f"probes {space!r})")
    strategy = dataclasses.replace(config, fraction=fraction).strategy()
    try:
        strategy.load_state_dict(copy.deepcopy(dict(saved)))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise InputError(f"--from-run: the checkpoint's strategy state does not load into "
                         f"a {config.method!r} strategy ({type(error).__name__}: {error})"
                         ) from error
    rounds = saved.get("round")
    words = f"restored from run (round {int(rounds)})" if rounds is not None else \
        "restored from run"
    select_options = {}
    steps = loader_state.get("steps_since_selection")
    if getattr(strategy, "uses_steps", False) and steps is not None:
        # the training time since the run's last round, as the loader would pass it
        select_options["steps"] = int(steps)
    return {"strategy": strategy, "state": words, "select_options": select_options}, words


def diagnose_run(run_dir: str | os.PathLike, *, fraction: float,
                 methods: Sequence[str] = DEFAULT_METHODS, seed: int = 0,
                 space: str | None = None) -> dict:
    """:func:`diagnose` on a finished (or stopped) run's model, with its strategy's state.

    The run's model is probed on its own training and validation data; the method the
    run trained selects with the state it had after its last round (restored from the
    checkpoint with ``load_state_dict``, so this is the round the run would have done
    next), every other method fresh.

    Parameters
    ----------
    run_dir : str or path-like
        A folder written by ``adacore run`` (holding ``checkpoint.pt``).
    fraction, methods, seed
        As for :func:`diagnose`; ``seed`` seeds the fresh strategies (the restored one
        keeps the run's).
    space : {"logits", "last_layer"}, optional
        Gradient space of the probe (default: the space the run selected in). In
        another space the run's strategy cannot use its state and starts fresh.

    Returns
    -------
    dict
        The report of :func:`diagnose` with ``source``: ``run_dir``, ``method`` (the
        run's), ``space``, ``run_space``, ``epoch`` (of the checkpoint) and
        ``strategy_state`` (the run's method's state, in words).
    """
    from adacore.experiments.runner import make_config, probe_run
    from adacore.training.checkpoint import load_checkpoint

    folder = Path(run_dir)
    if not (folder / "checkpoint.pt").is_file():
        raise InputError(f"--from-run: got {str(folder)!r}, expected a run folder holding "
                         f"checkpoint.pt (written by adacore run --out)")
    state = load_checkpoint(folder / "checkpoint.pt")
    if not isinstance(state.get("config"), Mapping):
        raise InputError(f"--from-run: {str(folder)!r} holds a checkpoint without the run's "
                         f"config; expected one written by adacore run")
    config = make_config(dict(state["config"]))
    run_space = config.space if config.space != "auto" else config.strategy().preferred_space
    space = run_space if space is None else check_choice("space", space, SPACES)
    names = _check_methods(methods)
    prepared, words = None, None
    if config.method in names:
        prepared, words = _restore(config, state, space, run_space,
                                   check_fraction("fraction", fraction))
    arrays = probe_run(folder, space=space)
    val_labels = arrays.get("val_labels")
    if val_labels is None:
        from adacore.data import load_dataset
        # probe_run does not return the validation classes (yet): the same split again
        val_labels = load_dataset(config.dataset, root=config.data_root,
                                  imbalance_ratio=config.imbalance_ratio,
                                  seed=config.seed).val.y.numpy()
    report = diagnose(arrays["grads"], arrays["labels"], hessian_diag=arrays["hessian_diag"],
                      fraction=fraction, methods=names, seed=seed,
                      val_grads=arrays["val_grads"],
                      val_hessian_diag=arrays["val_hessian_diag"], val_labels=val_labels,
                      prepared={config.method: prepared} if prepared else None,
                      eps=config.eps)
    if prepared is None and config.method in report["methods"]:
        report["methods"][config.method]["strategy_state"] = words
    loader_state = state.get("loader")
    report["source"] = {"run_dir": str(folder), "method": config.method, "space": space,
                        "run_space": run_space,
                        "epoch": (int(loader_state["epoch"])
                                  if isinstance(loader_state, Mapping)
                                  and "epoch" in loader_state else None),
                        "strategy_state": words}
    return report


# --------------------------------------------------------------------------- presentation

# The Markdown, figures and files of a report live in adacore.experiments.diagnosis_report,
# which imports this module; they are served from here as well, on first use, so that
# `from adacore.experiments.diagnose import write_diagnosis` keeps working without an
# import cycle.
_PRESENTATION = ("ERROR_FLOOR", "FIGURE_FILES", "diagnose_figures", "diagnosis_markdown",
                 "write_diagnosis")


def __getattr__(name: str) -> Any:
    if name in _PRESENTATION:
        from adacore.experiments import diagnosis_report
        return getattr(diagnosis_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
