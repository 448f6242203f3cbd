"""GLISTER: greedy subsets that most reduce the validation loss after a gradient step.

GLISTER (Killamsetty et al., AAAI 2021) picks the training subset S whose gradient step
most improves the validation log-likelihood. This module implements its last-layer,
first-order Taylor form (GLISTER-ONLINE's greedy), on per-example vectors a probe
computed in one space (logits or last-layer weights, :mod:`adacore.probe`).

Notation: g_j = ``grads[j]`` is the gradient of training example j's *loss*;
L_val = sum_i l_i^val the validation loss (a sum over the rows of ``val_grads``: pass
rows divided by m for a mean), v = grad L_val; maximising the validation log-likelihood
is minimising L_val.

Gain
    A step theta <- theta - eta g_j lowers the validation loss by, to first order,
    ``gain_j = eta * <v, g_j>``. The greedy takes the open candidate of largest gain
    (lowest index among ties), even when every gain is negative: the budget is fixed.
Validation-gradient update
    After the pick j the model has (notionally) stepped to theta - eta g_j, and the
    validation gradient there is, by Taylor, v - eta H_val g_j. Neither the model nor
    H_val is available here, so H_val is replaced by the diagonal sum_i
    ``val_hessian_diag[i]`` when the caller provides it (in the space of ``grads``; for
    softmax cross-entropy in logit space, p (1 - p), see :mod:`adacore.probe`):
    ``v <- v - eta * (sum_i val_hessian_diag_i) * g_j`` (elementwise). Without it v stays
    the first-order gradient at theta, every gain is fixed, and the greedy is a top-k
    of <v, g_j>. As in GLISTER-ONLINE's Taylor step, the gain is evaluated first-order
    at the updated point: the self-curvature term -eta^2 / 2 g_j' H g_j of a full
    second-order expansion is not included.
Regulariser ``lam``
    Optional redundancy penalty lam * R(S), R(S) = -sum_{s < t in S} <g_s, g_t> (our
    choice of set regulariser: it keeps one matrix-vector product per step). The gain
    maximised and reported becomes ``eta <v, g_j> - lam <sum_{s in S} g_s, g_j>``. Both
    corrections share one running direction w = eta v - lam sum_S g_s, updated after a
    pick j by ``w <- w - (eta^2 diag + lam) * g_j``; the gains of all candidates are the
    single product ``grads @ w``.

GLISTER trains on its subset unweighted: every weight is 1.
"""

from __future__ import annotations

import math
import numbers

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.budgets import budget_from_fraction
from adacore.selection.per_class import class_seed
from adacore.strategies.base import Strategy, register_strategy
from adacore.validation import InputError, as_tensor, check_choice, check_positive, fail

__all__ = ["GREEDY", "GLOBAL_LABEL", "Glister", "taylor_greedy"]

GREEDY = ("naive", "stochastic")

# Label passed to class_seed for the one global problem of per_class=False.
GLOBAL_LABEL = -1


def taylor_greedy(grads: torch.Tensor, direction: torch.Tensor, k: int, *,
                  curvature: torch.Tensor | None = None, greedy: str = "naive",
                  rng: np.random.Generator | None = None,
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
        After a pick j, ``w <- w - curvature * g_j``; None: w is fixed (the gains never
        change and the result is a top-k of <w, g_j>).
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
    n = grads.shape[0]
    w = direction.clone()
    # Fixed direction: one product serves every step.
    fixed_scores = grads @ w if curvature is None else None
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
            if curvature is not None:
                w -= curvature * grads[j]
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
        if curvature is not None:
            w -= curvature * grads[j]
    return order, values


@register_strategy("glister")
class Glister(Strategy):
    """GLISTER (Killamsetty et al., 2021), last-layer first-order Taylor form.

    See the module docstring for the gain, the validation-gradient update and ``lam``.

    Parameters
    ----------
    fraction : float
        Share of the examples to select, in (0, 1].
    eta : float
        Step size > 0 of the notional step per selected example (set it to the training
        learning rate times an example's weight in the training loss). Without
        ``val_hessian_diag`` and with ``lam = 0`` it only scales the gains, not the picks.
        Default 0.01.
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
        from the whole validation gradient (the classes are independent problems, so
        the result does not depend on the order they are visited; picks are
        concatenated in increasing label order). False: one greedy over all examples
        with the total budget round(fraction * n); ``budget`` is then unused and the
        record's ``budgets`` counts the picks per class.
    seed : int
        Seed of the stochastic greedy; each class and round draws from
        ``class_seed(seed, label, round)`` (label -1 for ``per_class=False``).
    device : optional
        Where the products are computed (default: where ``grads`` are).
    """

    requires = ("grads", "val_grads")
    # the authors run it on the last linear layer\'s gradients (weights and bias)
    preferred_space = "last_layer"

    def __init__(self, fraction: float, *, eta: float = 0.01, lam: float = 0.0,
                 greedy: str = "naive", epsilon: float = 0.01, budget: str = "proportional",
                 per_class: bool = True, seed: int = 0, device=None):
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
        self.device = device

    def select(self, grads, labels, *, val_grads=None, val_hessian_diag=None,
               **inputs) -> Coreset:
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
            validation gradient after each pick.

        Returns
        -------
        Coreset
            Weights all 1; gains the Taylor gain of each pick (with the ``lam`` term).

        Raises
        ------
        InputError
            ``val_grads`` missing, non-finite, not 2-D or of another width than
            ``grads``; ``val_hessian_diag`` of another shape than ``val_grads`` or
            non-finite; unexpected inputs. The round counter does not advance.
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
        return super().select(vectors, labels, val_grads=val, val_hessian_diag=diag)

    def _select(self, vectors, labels, *, val_grads, val_hessian_diag) -> Coreset:
        direction = self.eta * val_grads.sum(dim=0)
        curvature = None
        if val_hessian_diag is not None or self.lam > 0:
            curvature = torch.full_like(direction, self.lam)
            if val_hessian_diag is not None:
                curvature += self.eta ** 2 * val_hessian_diag.sum(dim=0)
        if self.per_class:
            budgets = self.budgets(labels)
            problems = [(label, np.flatnonzero(labels == label), k)
                        for label, k in budgets.items()]
        else:
            problems = [(GLOBAL_LABEL, np.arange(labels.shape[0]),
                         budget_from_fraction(self.fraction, labels.shape[0]))]
        indices, gains = [], []
        for label, members, k in problems:
            rows = torch.from_numpy(members).to(vectors.device)
            order, class_gains = taylor_greedy(
                vectors[rows], direction, k, curvature=curvature, greedy=self.greedy,
                rng=class_seed(self.seed, label, self.round_), epsilon=self.epsilon)
            indices.append(members[order])
            gains.append(class_gains)
        indices_all = np.concatenate(indices)
        if not self.per_class:
            classes, counts = np.unique(labels[indices_all], return_counts=True)
            budgets = {int(c): int(b) for c, b in zip(classes, counts)}
        return Coreset(indices=indices_all, weights=np.ones(indices_all.shape[0]),
                       gains=np.concatenate(gains), budgets=budgets,
                       metadata={"greedy": self.greedy, "eta": self.eta, "lam": self.lam,
                                 "per_class": self.per_class,
                                 "validation_update": ("hessian_diag"
                                                       if val_hessian_diag is not None
                                                       else "first_order")})
