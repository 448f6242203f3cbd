"""GLISTER: greedy subsets that most reduce the validation loss after a gradient step.

GLISTER (Killamsetty et al., AAAI 2021) picks the training subset S whose gradient step
most improves the validation log-likelihood. This module implements its last-layer
form (GLISTER-ONLINE's greedy), on per-example vectors a probe computed in one space
(logits or last-layer weights, :mod:`adacore.probe`).

Notation: g_j = ``grads[j]`` is the gradient of training example j's *loss*;
L_val = sum_i l_i^val the validation loss (a sum over the validation rows that the
problem uses, see *Per class*), v = grad L_val; maximising the validation
log-likelihood is minimising L_val.

Gain
    A step theta <- theta - eta g_j lowers the validation loss by, to first order,
    ``gain_j = eta * <v, g_j>``. The greedy takes the open candidate of largest gain
    (lowest index among ties), even when every gain is negative: the budget is fixed.
Validation-gradient update, ``update="taylor"`` (default)
    After the picks S the model has (notionally) stepped to theta - eta s, s the sum of
    the picked g_j, and the validation gradient there is, by Taylor, v - eta H_val s.
    Neither the model nor H_val is available here, so H_val is replaced by the diagonal
    sum_i ``val_hessian_diag[i]`` when the caller provides it (in the space of
    ``grads``; for softmax cross-entropy in logit space, p (1 - p), see
    :mod:`adacore.probe`): ``v <- v - eta * (sum_i val_hessian_diag_i) * g_j``
    (elementwise) after each pick j. Without it v stays the first-order gradient at
    theta, every gain is fixed, and the greedy is a top-k of <v, g_j>. As in
    GLISTER-ONLINE's Taylor step, the gain is evaluated first-order at the updated
    point: the self-curvature term -eta^2 / 2 g_j' H g_j of a full second-order
    expansion is not included. Where this differs from the exact update: the diagonal
    drops the off-diagonal curvature (for softmax, -p_c p_c' between classes), which is
    of the same order as the diagonal, so the update is right only to first order in
    eta, and in direction only approximately (tests/test_glister.py measures both
    against autograd).
Validation-gradient update, ``update="exact"``
    The update of the authors' code (CORDS ``_update_grads_val`` with
    ``linear_layer=False``): after the picks S the last layer's bias (equivalently,
    every validation logit vector z_i) steps to z_i - eta s, and the validation gradient
    is recomputed exactly with the softmax, v(S) = sum_i softmax(z_i - eta s) - y_i.
    It needs logit-space vectors g = p - y (the probe's space ``"logits"``, which is
    then the strategy's preferred space) and the validation labels: the logits are
    recovered from the validation rows as z_i = log(val_grads_i + onehot(y_i)), up to a
    constant that softmax ignores. ``val_hessian_diag`` is not used. One softmax over
    the problem's validation rows per pick: O(m C) a pick.
Per class (``per_class=True``, default)
    One greedy per class c with that class's budget, and L_val the loss of the
    validation examples of class c only (as CORDS's ``PerClass`` mode and DeepCore's
    ``balance=True`` do): the class starts from v_c = sum_{i: val_labels_i = c} val_i,
    and its Taylor or exact update uses the same rows. A class with no validation
    example falls back to the whole validation set (its picks then serve the overall
    validation loss; an all-zero start would make every gain 0 and the picks the lowest
    indices); the record lists such classes in ``metadata["classes_without_validation"]``.
Global (``per_class=False``)
    One greedy over all examples with the total budget and the whole validation set
    (CORDS's ``selection_type="Supervised"``, the mode of its shipped configurations).
Regulariser ``lam``
    Optional redundancy penalty lam * R(S), R(S) = -sum_{s < t in S} <g_s, g_t> (our
    choice of set regulariser: it keeps one matrix-vector product per step). The gain
    maximised and reported becomes ``eta <v, g_j> - lam <sum_{s in S} g_s, g_j>``. Both
    corrections share one running direction w = eta v - lam sum_S g_s; with the Taylor
    update it changes after a pick j by ``w <- w - (eta^2 diag + lam) * g_j``; the gains
    of all candidates are the single product ``grads @ w``.

GLISTER trains on its subset unweighted: every weight is 1.
"""

from __future__ import annotations

import math
import numbers
from typing import Callable

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.budgets import budget_from_fraction
from adacore.selection.per_class import class_seed
from adacore.strategies.base import Strategy, register_strategy
from adacore.validation import (InputError, as_labels, as_tensor, check_choice, check_device,
                                check_positive, fail)

__all__ = ["GREEDY", "GLOBAL_LABEL", "UPDATES", "Glister", "exact_softmax_update",
           "taylor_greedy"]

GREEDY = ("naive", "stochastic")
UPDATES = ("taylor", "exact")

# Label passed to class_seed for the one global problem of per_class=False.
GLOBAL_LABEL = -1

# How far p - y vectors may stray from a probability simplex (float32 softmax rounding)
# before update="exact" refuses them as not being logit-space gradients.
SIMPLEX_TOLERANCE = 1e-3


def taylor_greedy(grads: torch.Tensor, direction: torch.Tensor, k: int, *,
                  curvature: torch.Tensor | None = None,
                  direction_at: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  greedy: str = "naive", rng: np.random.Generator | None = None,
                  epsilon: float = 0.01) -> tuple[list[int], list[float]]:
    """Greedy maximisation of the Taylor gain <w, g_j> with a running direction w.

    Parameters
    ----------
    grads : Tensor, shape (n, p)
        Candidate vectors g_j.
    direction : Tensor, shape (p,)
        The initial direction w (for GLISTER, eta * sum_i val_grads_i).
    k : int
        Number of picks, 1 <= k <= n (checked by the caller).
    curvature : Tensor, shape (p,), optional
        After a pick j, ``w <- w - curvature * g_j``.
    direction_at : callable, optional
        Instead of ``curvature``: after each pick, ``w = direction_at(s)`` with s the sum
        of the vectors picked so far (how ``update="exact"`` recomputes it). With neither,
        w is fixed (the gains never change and the result is a top-k of <w, g_j>).
    greedy : {"naive", "stochastic"}
        ``naive`` scores every open candidate each step; ``stochastic`` scores a uniform
        sample of ceil((n / k) log(1 / epsilon)) open candidates drawn from ``rng``
        (Mirzasoleiman et al., 2015).
    rng : numpy.random.Generator, optional
        Source of the stochastic samples (default: seed 0).
    epsilon : float
        Accuracy of the stochastic greedy, in (0, 1).

    Returns
    -------
    (order, gains)
        Row numbers in selection order and the gain of each pick when it was made.
        Ties go to the lowest row number.
    """
    if curvature is not None and direction_at is not None:
        raise ValueError("taylor_greedy: give curvature or direction_at, not both")
    n = grads.shape[0]
    w = direction.clone()
    picked_sum = torch.zeros_like(grads[0])

    def after_pick(j: int) -> None:
        nonlocal w
        if curvature is not None:
            w -= curvature * grads[j]
        elif direction_at is not None:
            picked_sum.add_(grads[j])
            w = direction_at(picked_sum)

    # Fixed direction: one product serves every step.
    fixed = curvature is None and direction_at is None
    fixed_scores = grads @ w if fixed else None
    order, values = [], []
    if greedy == "naive":
        taken = torch.zeros(n, dtype=torch.bool, device=grads.device)
        for _ in range(k):
            scores = (fixed_scores.clone() if fixed_scores is not None else grads @ w)
            scores.masked_fill_(taken, -math.inf)
            j = int(torch.argmax(scores))  # first maximum: lowest index among ties
            order.append(j)
            values.append(float(scores[j]))
            taken[j] = True
            after_pick(j)
        return order, values
    rng = rng if rng is not None else np.random.default_rng(0)
    sample_size = max(1, math.ceil(n / k * math.log(1.0 / epsilon)))
    open_mask = np.ones(n, dtype=bool)
    for _ in range(k):
        candidates = np.flatnonzero(open_mask)
        if sample_size < candidates.shape[0]:
            candidates = np.sort(rng.choice(candidates, sample_size, replace=False))
        rows = torch.from_numpy(candidates).to(grads.device)
        scores = fixed_scores[rows] if fixed_scores is not None else grads[rows] @ w
        position = int(torch.argmax(scores))  # candidates are sorted: lowest index wins ties
        j = int(candidates[position])
        order.append(j)
        values.append(float(scores[position]))
        open_mask[j] = False
        after_pick(j)
    return order, values


def exact_softmax_update(val_grads: torch.Tensor, val_labels: np.ndarray, *, eta: float,
                         lam: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """The direction w(s) = eta v(s) - lam s of the exact update, for :func:`taylor_greedy`.

    ``val_grads`` are logit-space rows p_i - y_i (checked by the caller); v(s) =
    sum_i softmax(z_i - eta s) - y_i with z_i = log p_i. Computed in float64, returned
    in the dtype of ``val_grads``.
    """
    classes = val_grads.shape[1]
    labels = torch.from_numpy(val_labels).to(val_grads.device)
    onehot = torch.nn.functional.one_hot(labels, classes).to(torch.float64)
    probabilities = (val_grads.to(torch.float64) + onehot).clamp(
        min=torch.finfo(torch.float64).tiny, max=1.0)
    logits = torch.log(probabilities)
    label_counts = onehot.sum(dim=0)

    def direction_at(picked_sum: torch.Tensor) -> torch.Tensor:
        step = picked_sum.to(torch.float64)
        gradient = torch.softmax(logits - eta * step, dim=1).sum(dim=0) - label_counts
        return (eta * gradient - lam * step).to(val_grads.dtype)

    return direction_at


def _check_logit_space(name: str, vectors: torch.Tensor, labels: np.ndarray,
                       labels_name: str) -> None:
    """Refuse vectors that are not softmax cross-entropy logit gradients p - y."""
    classes = vectors.shape[1]
    if labels.min() < 0 or labels.max() >= classes:
        raise InputError(f"{labels_name}: got labels in [{labels.min()}, {labels.max()}], "
                         f"expected class indices in [0, {classes - 1}] (update='exact' "
                         f"reads the {classes} columns of {name} as the logits' classes)")
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels).to(vectors.device),
                                         classes).to(vectors.dtype)
    probabilities = vectors + onehot
    outside = ((probabilities < -SIMPLEX_TOLERANCE) | (probabilities > 1 + SIMPLEX_TOLERANCE)
               ).any(dim=1) | ((probabilities.sum(dim=1) - 1).abs() > SIMPLEX_TOLERANCE)
    if bool(outside.any()):
        raise InputError(f"{name}: {int(outside.sum())} rows are not softmax cross-entropy "
                         f"logit gradients p - y (row + onehot({labels_name}) is not a "
                         f"probability vector); update='exact' needs the probe's space "
                         f"'logits'")


@register_strategy("glister")
class Glister(Strategy):
    """GLISTER (Killamsetty et al., 2021), last-layer form.

    See the module docstring for the gain, the two validation-gradient updates, the
    per-class and global problems and ``lam``. The authors' shipped configuration
    (CORDS ``config_glister_cifar10.py``) is ``per_class=False, greedy="stochastic",
    update="exact"`` in logit space (chosen by ``space="auto"``).

    Parameters
    ----------
    fraction : float
        Share of the examples to select, in (0, 1].
    eta : float
        Step size > 0 of the notional step per selected example (set it to the training
        learning rate times an example's weight in the training loss). With the first-
        order update (no ``val_hessian_diag``) and ``lam = 0`` it only scales the gains,
        not the picks. Default 0.01.
    lam : float
        Weight >= 0 of the redundancy penalty (default 0: none).
    greedy : {"naive", "stochastic"}
        Exact greedy, or stochastic greedy with accuracy ``epsilon``.
    epsilon : float
        Accuracy of the stochastic greedy, in (0, 1).
    budget : {"proportional", "equal"}
        How the budget is split across classes (``per_class=True`` only).
    per_class : bool
        True (default): one greedy per class with that class's budget, each starting
        from that class's own validation examples (needs ``val_labels``; the classes are
        independent problems and picks are concatenated in increasing label order).
        False: one greedy over all examples with the total budget round(fraction * n)
        and the whole validation set; ``budget`` is then unused and the record's
        ``budgets`` counts the picks per class.
    update : {"taylor", "exact"}
        ``"taylor"`` (default): the diagonal-Hessian Taylor update when
        ``val_hessian_diag`` is given, none otherwise. ``"exact"``: the softmax
        recomputation of the authors' code, logit space only (needs ``val_labels``).
    seed : int
        Seed of the stochastic greedy; each class and round draws from
        ``class_seed(seed, label, round)`` (label -1 for ``per_class=False``).
    device : optional
        Where the products are computed (default: where ``grads`` are).
    """

    def __init__(self, fraction: float, *, eta: float = 0.01, lam: float = 0.0,
                 greedy: str = "naive", epsilon: float = 0.01, budget: str = "proportional",
                 per_class: bool = True, update: str = "taylor", seed: int = 0, device=None):
        super().__init__(fraction, budget=budget, seed=seed)
        self.eta = check_positive("eta", eta)
        self.lam = check_positive("lam", lam, allow_zero=True)
        self.greedy = check_choice("greedy", greedy, GREEDY)
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) \
                or not 0.0 < float(epsilon) < 1.0:
            raise fail("epsilon", epsilon, "a number in (0, 1)")
        self.epsilon = float(epsilon)
        if not isinstance(per_class, (bool, np.bool_)):
            raise fail("per_class", per_class, "True or False")
        self.per_class = bool(per_class)
        self.update = check_choice("update", update, UPDATES)
        self.device = check_device("device", device)

    @property
    def requires(self) -> tuple[str, ...]:
        """Inputs a caller must provide: validation labels for per-class or exact."""
        needs_labels = self.per_class or self.update == "exact"
        return ("grads", "val_grads") + (("val_labels",) if needs_labels else ())

    @property
    def preferred_space(self) -> str:
        """The space for a probe asked for "auto": logits for the exact update (the only
        space it supports, as in CORDS's shipped ``linear_layer=False``), else the last
        layer's weights and bias (DeepCore's space)."""
        return "logits" if self.update == "exact" else "last_layer"

    def select(self, grads, labels, *, val_grads=None, val_hessian_diag=None,
               val_labels=None, **inputs) -> Coreset:
        """One round.

        Parameters
        ----------
        grads : array or Tensor, shape (n, p)
            Per-example training-loss gradients.
        labels : array, shape (n,)
            Class labels of the training examples.
        val_grads : array or Tensor, shape (m, p)
            Per-example validation-loss gradients, in the space of ``grads``.
        val_hessian_diag : array or Tensor, shape (m, p), optional
            Per-example validation Hessian diagonals; enables the Taylor update of the
            validation gradient after each pick (``update="taylor"`` only).
        val_labels : array, shape (m,)
            Class labels of the validation examples; required when ``per_class`` is True
            or ``update`` is "exact" (``"val_labels" in requires``), checked and unused
            otherwise.

        Returns
        -------
        Coreset
            Weights all 1; gains the Taylor gain of each pick (with the ``lam`` term).

        Raises
        ------
        InputError
            ``val_grads`` missing, non-finite, not 2-D or of another width than
            ``grads``; ``val_hessian_diag`` of another shape than ``val_grads`` or
            non-finite; ``val_labels`` missing where required or not one integer label
            per row of ``val_grads``; for ``update="exact"``, vectors that are not
            logit-space p - y; unexpected inputs. The round counter does not advance.
        """
        if inputs:
            raise InputError(f"{self.name}.select: unexpected inputs {sorted(inputs)}")
        if val_grads is None:
            raise InputError("val_grads: GLISTER needs per-example validation gradients, "
                             "got None")
        if grads is None:  # the base class names the error
            return super().select(grads, labels)
        vectors = as_tensor("grads", grads, ndim=2, device=self.device)
        val = as_tensor("val_grads", val_grads, ndim=2, device=vectors.device)
        if val.shape[1] != vectors.shape[1]:
            raise InputError(f"val_grads: got width {val.shape[1]}, expected "
                             f"{vectors.shape[1]} (the width of grads: both in one space)")
        diag = None
        if val_hessian_diag is not None:
            diag = as_tensor("val_hessian_diag", val_hessian_diag, ndim=2,
                             device=vectors.device)
            if diag.shape != val.shape:
                raise InputError(f"val_hessian_diag: got shape {tuple(diag.shape)}, expected "
                                 f"{tuple(val.shape)} (the shape of val_grads)")
        val_classes = self._check_val_labels(val_labels, val.shape[0])
        if self.update == "exact":
            train_labels = as_labels("labels", labels, vectors.shape[0])
            _check_logit_space("grads", vectors, train_labels, "labels")
            _check_logit_space("val_grads", val, val_classes, "val_labels")
        return super().select(vectors, labels, val_grads=val, val_hessian_diag=diag,
                              val_labels=val_classes)

    def _check_val_labels(self, val_labels, m: int) -> np.ndarray | None:
        if val_labels is None:
            if "val_labels" not in self.requires:
                return None
            why = ("per-class GLISTER starts each class from that class's validation "
                   "examples" if self.per_class else
                   "update='exact' recovers the validation logits from p - y")
            raise InputError(f"val_labels: {why}; pass one label per row of val_grads "
                             f"({m}), got None")
        classes = as_labels("val_labels", val_labels)
        if classes.shape[0] != m:
            raise InputError(f"val_labels: got {classes.shape[0]} labels, expected {m} "
                             f"(one per row of val_grads)")
        return classes

    def _problems(self, labels: np.ndarray, val_labels: np.ndarray | None):
        """(label, train rows, budget, validation rows or None for all) per problem."""
        if not self.per_class:
            return [(GLOBAL_LABEL, np.arange(labels.shape[0]),
                     budget_from_fraction(self.fraction, labels.shape[0]), None)]
        problems = []
        for label, k in self.budgets(labels).items():
            own = np.flatnonzero(val_labels == label)
            problems.append((label, np.flatnonzero(labels == label), k,
                             own if own.size else None))
        return problems

    def _select(self, vectors, labels, *, val_grads, val_hessian_diag, val_labels) -> Coreset:
        indices, gains = [], []
        examples, without = {}, []
        for label, members, k, val_rows in self._problems(labels, val_labels):
            if self.per_class:
                examples[int(label)] = 0 if val_rows is None else int(val_rows.size)
                if val_rows is None:
                    without.append(int(label))
            val, diag, val_classes = val_grads, val_hessian_diag, val_labels
            if val_rows is not None:
                rows = torch.from_numpy(val_rows).to(vectors.device)
                val = val_grads[rows]
                diag = None if diag is None else diag[rows]
                val_classes = val_classes[val_rows]
            direction, curvature, direction_at = self._direction(val, diag, val_classes)
            rows = torch.from_numpy(members).to(vectors.device)
            order, class_gains = taylor_greedy(
                vectors[rows], direction, k, curvature=curvature, direction_at=direction_at,
                greedy=self.greedy, rng=class_seed(self.seed, label, self.round_),
                epsilon=self.epsilon)
            indices.append(members[order])
            gains.append(class_gains)
        indices_all = np.concatenate(indices)
        if self.per_class:
            budgets = self.budgets(labels)
        else:
            classes, counts = np.unique(labels[indices_all], return_counts=True)
            budgets = {int(c): int(b) for c, b in zip(classes, counts)}
        if self.update == "exact":
            validation_update = "exact_softmax"
        else:
            validation_update = ("hessian_diag" if val_hessian_diag is not None
                                 else "first_order")
        metadata = {"greedy": self.greedy, "eta": self.eta, "lam": self.lam,
                    "per_class": self.per_class, "update": self.update,
                    "validation_update": validation_update}
        if self.per_class:
            metadata["validation_examples"] = examples
            metadata["classes_without_validation"] = without
        return Coreset(indices=indices_all, weights=np.ones(indices_all.shape[0]),
                       gains=np.concatenate(gains), budgets=budgets, metadata=metadata)

    def _direction(self, val_grads, val_hessian_diag, val_labels):
        """(initial w, Taylor curvature or None, exact direction_at or None)."""
        direction = self.eta * val_grads.sum(dim=0)
        if self.update == "exact":
            return direction, None, exact_softmax_update(val_grads, val_labels,
                                                         eta=self.eta, lam=self.lam)
        curvature = None
        if val_hessian_diag is not None or self.lam > 0:
            curvature = torch.full_like(direction, self.lam)
            if val_hessian_diag is not None:
                curvature += self.eta ** 2 * val_hessian_diag.sum(dim=0)
        return direction, curvature, None
