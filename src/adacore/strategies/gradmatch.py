"""GradMatch: per-class gradient matching by non-negative orthogonal matching pursuit.

Two ways to match a class, chosen by ``per_gradient``:

- ``per_gradient=False`` (default, CORDS's ``PerClass``): class c's whole vectors.
- ``per_gradient=True`` (CORDS's ``PerClassPerGradient``, the mode of its shipped
  GradMatch configuration): only the (D + 1)-wide slice of class c's own output, the
  weight-gradient row c and the bias entry c. In the probe's layout
  (:func:`adacore.curvature.softmax_ce_last_layer_terms`: the weight gradient
  (p - y) outer h flattened row-major, C * D, then the bias p - y, C) those are the
  columns ``[c * D, (c + 1) * D)`` and ``C * D + c``. In logit space (width C) the
  slice is the single column c. CORDS puts the bias first; the slice is the same.
"""

from __future__ import annotations

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.omp import nonnegative_omp
from adacore.selection.per_class import class_seed
from adacore.strategies.base import Strategy, register_strategy
from adacore.validation import (InputError, as_labels, as_tensor, check_device, check_int,
                                check_positive, fail)


def class_slice_columns(width: int, num_classes: int, label: int, *, bias: bool = True
                        ) -> np.ndarray:
    """Columns of class ``label``'s own output in last-layer vectors of ``width``.

    Parameters
    ----------
    width : int
        p, the width of the vectors: C * D + C with a bias (C: logit space, D = 0), or
        C * D without.
    num_classes : int
        C.
    label : int
        The class c, in [0, C).
    bias : bool
        Whether the vectors end with the C bias entries.

    Returns
    -------
    ndarray of int64
        ``[c * D, ..., (c + 1) * D - 1]`` then ``C * D + c`` (with a bias).

    Raises
    ------
    InputError
        ``width`` not a multiple of C, or no weight part without a bias.
    """
    per_class = width // num_classes if width % num_classes == 0 else 0
    features = per_class - 1 if bias else per_class
    if per_class == 0 or features < 0 or (not bias and features == 0):
        layout = "C * D + C (with the bias)" if bias else "C * D (no bias)"
        raise InputError(f"grads: got width {width}, expected {layout} for C = "
                         f"{num_classes} classes (per_gradient slices the last layer's "
                         f"gradient class by class; check num_classes and bias)")
    columns = np.arange(label * features, (label + 1) * features, dtype=np.int64)
    if bias:
        columns = np.append(columns, num_classes * features + label)
    return columns


@register_strategy("gradmatch")
class GradMatch(Strategy):
    """GradMatch (Killamsetty et al., ICML 2021), the per-class variants.

    For each class c with budget k_c (from :meth:`budgets`), the sum of the class's
    per-example vectors, b_c = sum_{i in c} g_i, is matched by at most k_c of them with
    non-negative weights, min ||sum_{j in S} w_j g_j - b_c||^2 + lam ||w||^2, using
    :func:`adacore.selection.omp.nonnegative_omp`. With ``per_gradient=True`` the g_i and
    b_c are restricted to class c's slice (:func:`class_slice_columns`; the module
    docstring), as in the authors' shipped configuration. The weights are on the scale that
    reproduces the class's sum (not cluster sizes: long vectors aligned with the sum get
    less than n_c / k_c); training rescales them to mean 1 anyway.

    What a round returns
    --------------------
    - ``indices``: rows of the caller's array, class by class in increasing label order,
      within a class in OMP pick order (then the fill, if any).
    - ``weights``: the final OMP weights. A pick whose weight a later refit set to 0 is
      dropped (coreset weights are > 0); ``metadata["zero_weight_dropped"]`` counts them.
    - ``gains``: the decrease of the OMP residual norm (augmented with the ridge term,
      see :mod:`adacore.selection.omp`) when each pick was made; NaN for filled points.
    - ``budgets``: label -> number actually selected.

    No silent top-up: when OMP stops before k_c picks (the residual reached
    ``tol * ||b_c||``, or no unpicked example has a positive inner product with the
    residual) the coreset is smaller than requested, and the metadata says so:
    ``"requested"`` (total budget), ``"requested_budgets"`` (per class),
    ``"omp_stopped_early"`` ({label: OMP picks} for the classes that stopped early),
    ``"stop_reasons"`` ({label: "budget" | "tolerance" | "no_positive_correlation" |
    "zero_target" | "zero_weights"}),
    ``"filled"`` ({label: points added by the fill}), ``"class_fit_error"`` ({label:
    ||b_c - A_S w|| / ||b_c||}, the matching error without the penalty, in the slice when
    ``per_gradient``), ``"max_weight_over_mean"``, ``"per_gradient"`` and, when it is
    True, ``"num_classes"`` and ``"slice_width"`` (D + 1, or D without a bias).
    ``metadata["gradient_error"]`` is always measured on the whole vectors.

    One exception, recorded as ``"zero_target"`` ({label: points drawn}): a class whose
    gradients sum to exactly zero (all zero, say, on a class the model fits perfectly)
    has nothing to match, and OMP would return no point, dropping the class from
    training. Such a class gets k_c members drawn uniformly (seeded like the fill), each
    with weight n_c / k_c. Any class with a non-zero sum gets at least one OMP pick (some
    member has a positive inner product with the sum), so a round is never empty.

    ``lam`` is absolute, not relative to the gradients' scale: on vanishing gradients
    (squared norms far below lam) the ridge shrinks every weight of a class to zero, and
    the class keeps no pick. That is recorded: stop reason ``"zero_weights"`` and
    ``metadata["zero_weights"]`` ({label: picks zeroed}); ``fill`` tops such a class up
    like any other. A round where it happens to every class is empty, which
    ``adacore select`` and :class:`~adacore.training.CoresetLoader` refuse. ``lam = 0``
    is scale-invariant.

    Parameters
    ----------
    fraction : float
        Share of the examples to select, in (0, 1].
    lam : float
        Ridge penalty of the OMP refit, >= 0. Default 0.5, the lambda of the authors'
        released code.
    tol : float
        Relative stopping tolerance of OMP, >= 0: a class stops once its residual norm
        <= tol * ||b_c||. The authors' code uses an absolute eps of 1e-100, which never
        stops; we use 1e-4 relative, a fit to 0.01% of the class's gradient sum, beyond
        which further picks barely change the matched gradient. With lam > 0 the residual
        includes the penalty sqrt(lam) ||w||, so this stop is rare unless lam is small.
    budget : {"proportional", "equal"}
        How the total budget round(fraction * n) is split across classes.
    seed : int
        Seed of the fill (unused when ``fill`` is False).
    fill : bool
        Off by default. When True, a class whose OMP coreset is short of its budget is
        topped up with class members drawn uniformly without replacement from those not
        already in its coreset; each filled point gets the mean OMP weight of the class's
        kept picks (n_c / k_c if OMP kept none, the weight of a uniform random subset).
        The draw uses a generator seeded by (seed, round, label), so it is reproducible
        and a run resumed from :meth:`state_dict` (which holds the round) draws the same.
    per_gradient : bool
        False (default): match each class's whole vectors. True: match, for class c,
        only the slice of class c's own output (weight row c and bias c), CORDS's
        ``PerClassPerGradient``. Labels must then be the class indices of the model's
        outputs, and the vectors unprojected last-layer (or logit) vectors.
    num_classes : int, optional
        C, for ``per_gradient``; default max(labels) + 1 (give it when the top classes
        may be absent from the labels).
    bias : bool
        For ``per_gradient``: whether the vectors end with the C bias entries (the
        probe's layout for a last layer with a bias; default True).
    device : optional
        Where the inner products are computed (default: where the vectors are).
    """

    # CORDS's shipped GradMatch uses the last linear layer's gradients (weights and bias,
    # linear_layer=True)
    preferred_space = "last_layer"

    def __init__(self, fraction: float, *, lam: float = 0.5, tol: float = 1e-4,
                 budget: str = "proportional", seed: int = 0, fill: bool = False,
                 per_gradient: bool = False, num_classes: int | None = None,
                 bias: bool = True, device=None):
        super().__init__(fraction, budget=budget, seed=seed)
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.tol = check_positive("tol", tol, allow_zero=True)
        if not isinstance(fill, (bool, np.bool_)):
            raise fail("fill", fill, "True or False")
        self.fill = bool(fill)
        if not isinstance(per_gradient, (bool, np.bool_)):
            raise fail("per_gradient", per_gradient, "True or False")
        self.per_gradient = bool(per_gradient)
        self.num_classes = (None if num_classes is None
                            else check_int("num_classes", num_classes, 1))
        if not isinstance(bias, (bool, np.bool_)):
            raise fail("bias", bias, "True or False")
        self.bias = bool(bias)
        self.device = check_device("device", device)

    def select(self, grads, labels, **inputs) -> Coreset:
        """One round (:meth:`Strategy.select`); with ``per_gradient`` the labels and the
        layout are checked first, so a refused input does not advance the round.

        Raises
        ------
        InputError
            Non-finite or mis-shaped ``grads``, ``labels`` of another length, unexpected
            inputs; with ``per_gradient``, labels outside [0, C) or a width that is not
            C * D + C (C * D with ``bias=False``).
        """
        if self.per_gradient and grads is not None:
            vectors = as_tensor("grads", grads, ndim=2, device=self.device)
            label_array = as_labels("labels", labels, vectors.shape[0])
            class_slice_columns(vectors.shape[1], self._class_count(label_array), 0,
                                bias=self.bias)
            grads, labels = vectors, label_array
        return super().select(grads, labels, **inputs)

    def _class_count(self, labels: np.ndarray) -> int:
        """C for per_gradient: the option, or max(labels) + 1; labels must index it."""
        classes = self.num_classes if self.num_classes is not None else int(labels.max()) + 1
        if labels.min() < 0 or labels.max() >= classes:
            raise InputError(f"labels: got labels in [{labels.min()}, {labels.max()}], "
                             f"expected class indices in [0, {classes - 1}] (per_gradient "
                             f"reads a label as the index of the model's output)")
        return classes

    def _select(self, vectors: torch.Tensor, labels: np.ndarray, **inputs) -> Coreset:
        if inputs:
            raise InputError(f"{self.name}.select: unexpected inputs {sorted(inputs)}")
        requested = self.budgets(labels)
        classes = self._class_count(labels) if self.per_gradient else None
        if self.per_gradient:
            slice_width = class_slice_columns(vectors.shape[1], classes, 0,
                                              bias=self.bias).shape[0]
        indices, weights, gains = [], [], []
        report = {"stopped_early": {}, "reasons": {}, "dropped": {}, "filled": {},
                  "fit_error": {}, "zero_target": {}, "zero_weights": {}}
        for label, budget in requested.items():
            members = np.flatnonzero(labels == label)
            block = vectors[torch.from_numpy(members).to(vectors.device)]
            if self.per_gradient:
                columns = class_slice_columns(vectors.shape[1], classes, label, bias=self.bias)
                block = block[:, torch.from_numpy(columns).to(vectors.device)]
            chosen, class_weights, class_gains = self._match_class(label, members, block,
                                                                   budget, report)
            indices.append(chosen)
            weights.append(class_weights)
            gains.append(class_gains)
        weights_all = np.concatenate(weights)
        selected = {label: int(chosen.shape[0]) for label, chosen in zip(requested, indices)}
        largest = float(weights_all.max() / weights_all.mean()) if weights_all.size else np.nan
        layout = {"per_gradient": self.per_gradient}
        if self.per_gradient:
            layout.update(num_classes=classes, slice_width=slice_width)
        return Coreset(indices=np.concatenate(indices), weights=weights_all,
                       gains=np.concatenate(gains), method=self.name, budgets=selected,
                       metadata={"requested": int(sum(requested.values())),
                                 "requested_budgets": dict(requested),
                                 "omp_stopped_early": report["stopped_early"],
                                 "stop_reasons": report["reasons"],
                                 "zero_weight_dropped": report["dropped"],
                                 "filled": report["filled"],
                                 "zero_target": report["zero_target"],
                                 "zero_weights": report["zero_weights"],
                                 "class_fit_error": report["fit_error"],
                                 "max_weight_over_mean": largest,
                                 "lam": self.lam, "tol": self.tol, **layout})

    def _match_class(self, label: int, members: np.ndarray, block: torch.Tensor, budget: int,
                     report: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """OMP on one class's rows ``block``; returns caller rows, weights and gains."""
        block64 = block.to(torch.float64)
        target = block64.sum(dim=0)
        if not bool(torch.any(target != 0)):
            # nothing to match (every gradient of the class sums to zero, e.g. all zero):
            # the empty set matches exactly, but the class would vanish from training;
            # it gets a uniform random subset instead, each point standing for n_c / k_c
            report["reasons"][label] = "zero_target"
            report["zero_target"][label] = int(budget)
            report["fit_error"][label] = 0.0
            drawn = class_seed(self.seed, label, self.round_).choice(members, size=budget,
                                                                     replace=False)
            return (drawn, np.full(budget, members.shape[0] / budget),
                    np.full(budget, np.nan))
        support, omp_weights, residual_norms = nonnegative_omp(block64.T, target, budget,
                                                               lam=self.lam, tol=self.tol)
        picks = support.shape[0]
        if picks == budget:
            report["reasons"][label] = "budget"
        elif residual_norms[-1] <= self.tol * residual_norms[0]:
            report["reasons"][label] = "tolerance"
        else:
            report["reasons"][label] = "no_positive_correlation"
        if picks < budget:
            report["stopped_early"][label] = int(picks)
        target_norm = float(torch.linalg.vector_norm(target))
        fitted = block64[torch.from_numpy(support).to(block.device)].T \
            @ torch.from_numpy(omp_weights).to(block.device)
        fit_error = float(torch.linalg.vector_norm(target - fitted))
        report["fit_error"][label] = fit_error / target_norm if target_norm > 0 else fit_error

        keep = omp_weights > 0
        if not keep.all():
            report["dropped"][label] = int((~keep).sum())
        if picks and not keep.any():
            # the ridge outweighs the gradients (lam is absolute: vanishing gradients
            # shrink every weight below what the solver resolves); said, never hidden
            report["reasons"][label] = "zero_weights"
            report["zero_weights"][label] = int(picks)
        chosen = members[support[keep]]
        weights = omp_weights[keep]
        gains = (residual_norms[:-1] - residual_norms[1:])[keep]
        missing = budget - chosen.shape[0]
        if self.fill and missing > 0:
            candidates = np.setdiff1d(members, chosen)       # sorted: a reproducible draw
            drawn = class_seed(self.seed, label, self.round_).choice(candidates, size=missing,
                                                                     replace=False)
            fill_weight = weights.mean() if weights.size else members.shape[0] / budget
            chosen = np.concatenate([chosen, drawn])
            weights = np.concatenate([weights, np.full(missing, fill_weight)])
            gains = np.concatenate([gains, np.full(missing, np.nan)])
            report["filled"][label] = int(missing)
        return chosen, weights, gains
