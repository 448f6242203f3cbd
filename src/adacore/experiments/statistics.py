"""Paired comparisons of methods over seeds: the significance tests behind a report.

This module owns the statistics a comparison reports beyond mean ± std: for two methods
run with the same seeds (so that each seed shares the model initialisation, the data
split and the batch order), the per-seed differences of a metric, their mean, a 95%
confidence interval from the t distribution, the two-sided paired t-test and the
Wilcoxon signed-rank test. It knows nothing of run records or files: it takes per-seed
values and returns plain, JSON-ready dicts; :mod:`adacore.experiments.summary` feeds it.

Where a test is undefined (fewer than two seeds in common, or every difference the
same, so that the t statistic divides by a zero standard deviation) the p-value and
the interval are None and ``note`` says why, rather than a NaN or an infinity.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping

import numpy as np
from scipy import stats

from adacore.validation import fail

__all__ = ["CONFIDENCE", "EQUAL_TOLERANCE", "T_TEST", "WILCOXON_TEST", "paired_comparison",
           "paired_differences", "paired_test"]

CONFIDENCE = 0.95
# Differences whose spread is at most this (in the metric's units) count as all equal:
# accuracies subtracted in floating point differ by about 1e-16 where they are equal,
# and a t statistic over that spread would be rounding noise divided by rounding noise.
EQUAL_TOLERANCE = 1e-9
T_TEST = ("paired t-test, two-sided (scipy.stats.ttest_rel); 95% CI: mean difference "
          "± t(0.975, n - 1) * s / sqrt(n), s the sample std (ddof 1) of the per-seed "
          "differences")
WILCOXON_TEST = "Wilcoxon signed-rank test, two-sided (scipy.stats.wilcoxon, exact for small n)"


def _per_seed(name: str, values) -> dict[int, float]:
    if not isinstance(values, Mapping):
        raise fail(name, values, "a dict: seed -> value")
    out = {}
    for seed, value in values.items():
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise fail(f"{name} (seed)", seed, "an int seed")
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(
                float(value)):
            raise fail(f"{name}[{seed}]", value, "a finite number")
        out[int(seed)] = float(value)
    return out


def paired_differences(reference, other) -> tuple[list[int], np.ndarray]:
    """Seeds both have (ascending) and ``reference[s] - other[s]`` for each, float64."""
    reference = _per_seed("reference", reference)
    other = _per_seed("other", other)
    seeds = sorted(set(reference) & set(other))
    return seeds, np.array([reference[s] - other[s] for s in seeds], dtype=np.float64)


def paired_test(differences) -> dict:
    """Mean, 95% t interval, paired t-test and Wilcoxon test of per-seed differences.

    Parameters
    ----------
    differences : array-like of float, shape (n,)
        Per-seed differences of a metric between two methods (reference minus other).

    Returns
    -------
    dict
        ``n``; ``mean_diff`` (None when n = 0); ``std_diff`` (sample std, ddof 1; None
        for n < 2); ``ci95`` ``[low, high]``; ``t_statistic``; ``p_value`` (two-sided
        paired t-test, n - 1 degrees of freedom); ``p_value_wilcoxon`` (two-sided
        signed-rank test; None where SciPy cannot compute it: n < 2, or every
        difference zero); ``test``, ``test_wilcoxon`` (in words) and ``note`` (why a
        figure is None; None when there is nothing to say). ``ci95``, ``t_statistic``
        and ``p_value`` are None for n < 2 or when all differences are equal.
    """
    values = np.asarray(differences, dtype=np.float64).reshape(-1)
    if not np.isfinite(values).all():
        raise fail("differences", differences, "finite numbers")
    n = int(values.size)
    result = {"n": n, "mean_diff": float(values.mean()) if n else None, "std_diff": None,
              "ci95": None, "t_statistic": None, "p_value": None, "p_value_wilcoxon": None,
              "test": T_TEST, "test_wilcoxon": WILCOXON_TEST, "note": None}
    if n < 2:
        result["note"] = (f"{n} seed{'s' if n != 1 else ''} in common: a paired test needs "
                          f"at least 2")
        return result
    std = float(values.std(ddof=1))
    result["std_diff"] = std
    notes = []
    if float(np.ptp(values)) <= EQUAL_TOLERANCE:
        notes.append(f"every per-seed difference is the same ({values[0]:+.6g}): zero "
                     f"spread, so the t-test and its interval are undefined")
    else:
        standard_error = std / math.sqrt(n)
        quantile = float(stats.t.ppf(0.5 + CONFIDENCE / 2, df=n - 1))
        mean = result["mean_diff"]
        result["ci95"] = [mean - quantile * standard_error, mean + quantile * standard_error]
        test = stats.ttest_rel(values, np.zeros(n))
        result["t_statistic"] = float(test.statistic)
        result["p_value"] = float(test.pvalue)
    if np.all(np.abs(values) <= EQUAL_TOLERANCE):
        notes.append("every difference is zero: the signed-rank test is undefined")
    else:
        try:
            with warnings.catch_warnings():
                # ties and zeros make SciPy fall back to the normal approximation and say
                # so; the method is named in test_wilcoxon either way
                warnings.simplefilter("ignore")
                p_value = float(stats.wilcoxon(values).pvalue)
            result["p_value_wilcoxon"] = p_value if math.isfinite(p_value) else None
        except ValueError as error:
            notes.append(f"signed-rank test not computed ({error})")
    result["note"] = "; ".join(notes) or None
    return result


def paired_comparison(values: Mapping[str, Mapping[int, float]], *,
                      reference: str = "adacore") -> dict[str, dict]:
    """Every method against ``reference``, paired by seed.

    Parameters
    ----------
    values : dict
        Method -> {seed: value}, e.g. the test accuracy at the best validation epoch.
    reference : str, default "adacore"
        The method every other is compared with; differences are reference - method.

    Returns
    -------
    dict
        Method -> ``{"vs": reference, "seeds": [...], **paired_test(differences)}`` for
        every method other than ``reference``, in the input order; empty when
        ``reference`` is not among the methods.
    """
    if not isinstance(values, Mapping):
        raise fail("values", values, "a dict: method -> {seed: value}")
    if reference not in values:
        return {}
    results = {}
    for method, per_seed in values.items():
        if method == reference:
            continue
        seeds, differences = paired_differences(values[reference], per_seed)
        results[method] = {"vs": reference, "seeds": seeds, **paired_test(differences)}
    return results
