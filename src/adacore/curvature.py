"""Curvature: closed-form last-layer terms, Hutchinson's estimator, smoothing across rounds.

Layouts. In *logit space* an example's gradient is g = p - y and its Hessian diagonal
d = p (1 - p) (C numbers each). In the space of the last linear layer (``nn.Linear``
with weight (C, D) and bias (C,)), the per-example vector is the weight gradient
flattened row-major, (p - y) outer h, followed by the bias gradient p - y; its Hessian
diagonal is p (1 - p) outer h^2 followed by p (1 - p). These are exact for softmax
cross-entropy: the Hessian in the logits is diag(p) - p p^T.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from adacore.validation import (InputError, as_labels, check_choice, check_int,
                                check_positive, check_unit_interval)


def _probabilities_and_residual(logits: torch.Tensor, labels: torch.Tensor):
    if logits.ndim != 2:
        raise InputError(f"logits: got shape {tuple(logits.shape)}, expected (n, classes)")
    if not isinstance(labels, torch.Tensor):
        labels = np.asarray(labels)
        if labels.size and labels.dtype.kind not in "i":
            # floats (1.5, 1e19) and unsigned values above 2**63 would change under .long()
            labels = as_labels("labels", labels)
        labels = torch.from_numpy(labels)
    elif labels.is_floating_point() and labels.numel():
        labels = torch.from_numpy(as_labels("labels", labels))
    labels = labels.to(device=logits.device, dtype=torch.int64)
    if labels.shape != (logits.shape[0],):
        raise InputError(f"labels: got shape {tuple(labels.shape)}, expected "
                         f"({logits.shape[0]},)")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= logits.shape[1]):
        raise InputError(f"labels: expected values in [0, {logits.shape[1] - 1}]")
    probabilities = torch.softmax(logits, dim=1)
    residual = probabilities.clone()
    residual[torch.arange(labels.shape[0], device=logits.device), labels] -= 1.0
    return probabilities, residual


def softmax_ce_logit_terms(logits: torch.Tensor, labels) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradient and Hessian diagonal of softmax cross-entropy in the logits.

    Parameters
    ----------
    logits : Tensor, shape (n, C)
    labels : int tensor or array, shape (n,)

    Returns
    -------
    (grads, hessian_diag) : two tensors of shape (n, C): p - y and p (1 - p).
    """
    probabilities, residual = _probabilities_and_residual(logits, labels)
    return residual, probabilities * (1.0 - probabilities)


def softmax_ce_last_layer_terms(logits: torch.Tensor, labels, features: torch.Tensor, *,
                                bias: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example gradient and Hessian diagonal w.r.t. the last linear layer's parameters.

    Parameters
    ----------
    logits : Tensor, shape (n, C)
        Output of the last layer for ``features``.
    labels : int tensor or array, shape (n,)
    features : Tensor, shape (n, D)
        The penultimate features h (the input of the last layer).
    bias : bool
        Whether the layer has a bias (its C entries are appended at the end).

    Returns
    -------
    (grads, hessian_diag) : two tensors of shape (n, C * D + C) (or (n, C * D)).
    """
    if features.ndim != 2 or features.shape[0] != logits.shape[0]:
        raise InputError(f"features: got shape {tuple(features.shape)}, expected "
                         f"({logits.shape[0]}, D)")
    probabilities, residual = _probabilities_and_residual(logits, labels)
    curvature = probabilities * (1.0 - probabilities)
    n = logits.shape[0]
    grads = (residual[:, :, None] * features[:, None, :]).reshape(n, -1)
    diag = (curvature[:, :, None] * (features * features)[:, None, :]).reshape(n, -1)
    if bias:
        grads = torch.cat([grads, residual], dim=1)
        diag = torch.cat([diag, curvature], dim=1)
    return grads, diag


def rademacher_like(tensor: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """A tensor of independent +-1 entries shaped like ``tensor``, drawn from ``generator``."""
    device = generator.device if generator is not None else tensor.device
    signs = torch.randint(0, 2, tensor.shape, generator=generator, device=device)
    return (signs * 2 - 1).to(device=tensor.device, dtype=tensor.dtype)


def hutchinson_diagonal(loss: torch.Tensor, params: Sequence[torch.Tensor], *,
                        n_samples: int = 1,
                        generator: torch.Generator | None = None) -> list[torch.Tensor]:
    """Hutchinson's estimate of the Hessian diagonal: mean over probes of z * (H z).

    z has independent Rademacher entries; each probe costs one Hessian-vector product
    (a second backward pass through the gradient graph).

    Parameters
    ----------
    loss : Tensor
        A scalar built with a graph from ``params``.
    params : sequence of Tensor
        Leaves (or any tensors) requiring grad.
    n_samples : int
        Number of probes averaged.
    generator : torch.Generator, optional
        Source of the probes, for reproducibility.

    Returns
    -------
    list of Tensor, shaped like ``params``.
    """
    params = list(params)
    n_samples = check_int("n_samples", n_samples, 1)
    if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
        raise InputError(f"loss: expected a scalar tensor, got "
                         f"{type(loss).__name__} of shape {tuple(getattr(loss, 'shape', ()))}")
    if not loss.requires_grad:
        raise InputError("loss: expected a tensor built with a graph (requires_grad=True)")
    if not params or not all(isinstance(p, torch.Tensor) and p.requires_grad for p in params):
        raise InputError("params: expected a non-empty sequence of tensors requiring grad")
    grads = torch.autograd.grad(loss.reshape(()), params, create_graph=True, allow_unused=True)
    # parameters the loss is linear in (or ignores) have a zero Hessian diagonal
    live = [i for i, g in enumerate(grads) if g is not None and g.requires_grad]
    estimates = [torch.zeros_like(p) for p in params]
    for _ in range(n_samples):
        probes = [rademacher_like(params[i], generator) for i in live]
        if not live:
            break
        products = torch.autograd.grad([grads[i] for i in live], [params[i] for i in live],
                                       grad_outputs=probes, retain_graph=True,
                                       allow_unused=True)
        for i, z, hz in zip(live, probes, products):
            if hz is not None:
                estimates[i] += z * hz
    return [e.detach() / n_samples for e in estimates]


AVERAGES = ("rms", "mean", "geometric")


class CurvatureSmoother:
    """Per-example smoothing of the curvature across selection rounds, in training time.

    The poster smooths diag(H) like Adam's second moment: Hbar_t is a root mean square
    of the rounds' diagonals, recent rounds weighted more. Adam's beta2 is a constant
    *per optimizer step*; selection rounds are many steps apart, so here the state
    decays by ``a_t = beta2 ** steps_t``, ``steps_t`` the optimizer steps taken since
    the previous round (the caller passes it; one step per round when it does not)::

        m_1 = f(|d_1|),   m_t = a_t m_{t-1} + (1 - a_t) f(|d_t|),   Hbar_t = f^-1(m_t)

    so a round's weight in Hbar_t is (1 - a_i) prod_{j>i} a_j and the memory is about
    1 / (1 - beta2) optimizer steps. The first round fills the state (Hbar_1 = |d_1|),
    which is Adam's bias correction for an observation that stands for all the time
    before it; no other correction is needed. ``beta2 = 0`` keeps no memory: every
    round uses its own, fresh curvature.

    ``average`` is f: ``"rms"`` (f(x) = x^2, the poster's formula), ``"mean"``
    (f(x) = x) or ``"geometric"`` (f(x) = log(x + eps), so Hbar_t + eps is a weighted
    geometric mean of |d_i| + eps). The choice matters because the curvature of a
    softmax model falls by orders of magnitude while it learns: any average of squares
    (or of values) is dominated by the early, large curvature unless its memory is
    short, whereas a geometric mean moves by the share of time since the change.

    The preconditioned vectors are u_t = ghat_t / (Hbar_t + eps), ghat_t = g_t, or with
    ``beta1 > 0`` the same kind of EMA of g (decay ``beta1 ** steps_t``).

    State (``state_dict``): the round count and the running averages, per example.
    """

    def __init__(self, beta2: float = 0.999, eps: float = 1e-4, beta1: float = 0.0,
                 average: str = "geometric"):
        self.beta2 = check_unit_interval("beta2", beta2)
        self.eps = check_positive("eps", eps, allow_zero=True)
        self.beta1 = check_unit_interval("beta1", beta1)
        self.average = check_choice("average", average, AVERAGES)
        self.reset()

    def reset(self) -> None:
        """Forget all rounds."""
        self.step = 0
        self.second_moment: torch.Tensor | None = None
        self.first_moment: torch.Tensor | None = None
        self.last_curvature_ratio_: float | None = None

    def _forward(self, magnitude: torch.Tensor) -> torch.Tensor:
        if self.average == "rms":
            return magnitude * magnitude
        if self.average == "mean":
            return magnitude
        # the floor keeps log finite when eps = 0 and an entry is exactly zero
        return torch.log((magnitude + self.eps).clamp_min(torch.finfo(magnitude.dtype).tiny))

    def _inverse(self, moment: torch.Tensor) -> torch.Tensor:
        if self.average == "rms":
            return torch.sqrt(moment)
        if self.average == "mean":
            return moment
        return (torch.exp(moment) - self.eps).clamp_min(0.0)

    @staticmethod
    def _decay(beta: float, steps: float) -> float:
        steps = check_steps(steps)
        # beta = 0 keeps no memory even after zero steps (0.0 ** 0 would be 1)
        return 0.0 if beta == 0.0 else beta ** steps

    def curvature(self, hessian_diag: torch.Tensor, steps: float = 1) -> torch.Tensor:
        """Fold one round's diagonal into the state and return Hbar_t.

        ``steps``: optimizer steps since the previous round (ignored on the first).
        """
        if self.second_moment is not None and self.second_moment.shape != hessian_diag.shape:
            raise InputError(f"hessian_diag: got shape {tuple(hessian_diag.shape)}, expected "
                             f"{tuple(self.second_moment.shape)} as in the earlier rounds "
                             f"(the smoothing is per example)")
        decay = self._decay(self.beta2, steps)
        self.step += 1
        observed = self._forward(hessian_diag.abs())
        if self.second_moment is None:
            self.second_moment = observed
        else:
            self.second_moment = (decay * self.second_moment.to(observed.device)
                                  + (1.0 - decay) * observed)
        return self._inverse(self.second_moment)

    def gradient(self, grads: torch.Tensor, steps: float = 1) -> torch.Tensor:
        """The gradient used this round (the EMA when beta1 > 0); call after ``curvature``."""
        if self.beta1 == 0.0:
            return grads
        decay = self._decay(self.beta1, steps)
        if self.first_moment is None:
            self.first_moment = grads
        else:
            self.first_moment = (decay * self.first_moment.to(grads.device)
                                 + (1.0 - decay) * grads)
        return self.first_moment

    def precondition(self, grads: torch.Tensor, hessian_diag: torch.Tensor,
                     steps: float = 1) -> torch.Tensor:
        """One round: u_t = ghat_t / (Hbar_t + eps).

        Raises :class:`InputError`, the state left as it was, when u_t is undefined
        or unusable: with ``eps = 0``, a zero curvature entry (g / 0; the geometric
        average floors it at float32's smallest normal, which is no better), or
        vectors whose squared norms overflow, so that no distance between them is
        finite. Every optimizer then refuses alike.
        """
        saved = (self.step, self.second_moment, self.first_moment,
                 self.last_curvature_ratio_)
        smoothed = self.curvature(hessian_diag, steps)
        denominator = smoothed + self.eps
        self.last_curvature_ratio_ = _median_ratio(denominator, hessian_diag.abs() + self.eps)
        vectors = self.gradient(grads, steps) / denominator
        zeros = int((denominator <= torch.finfo(denominator.dtype).tiny).sum())
        overflowing = int((~torch.isfinite(vectors.square().sum(dim=1))).sum())
        if zeros or overflowing:
            self.step, self.second_moment, self.first_moment, \
                self.last_curvature_ratio_ = saved
            cause = (f"{zeros} curvature entries are zero and eps = {self.eps:g}" if zeros
                     else f"{overflowing} rows have squared norms beyond "
                          f"{torch.finfo(vectors.dtype).max:.3g}")
            raise InputError(f"hessian_diag: the preconditioned gradients g / (Hbar + eps) "
                             f"are unusable ({cause}); pass eps > 0 (default 1e-4)")
        return vectors

    def state_dict(self) -> dict:
        return {"beta2": self.beta2, "eps": self.eps, "beta1": self.beta1,
                "average": self.average, "step": self.step,
                "second_moment": self.second_moment, "first_moment": self.first_moment}

    def load_state_dict(self, state: dict) -> None:
        self.beta2, self.eps, self.beta1 = state["beta2"], state["eps"], state["beta1"]
        self.average = check_choice("average", state.get("average", "rms"), AVERAGES)
        self.step = int(state["step"])
        self.second_moment = state["second_moment"]
        self.first_moment = state["first_moment"]


def check_steps(steps) -> float:
    """Optimizer steps since the previous round: a finite real >= 0."""
    message = (f"steps: got {steps!r}, expected a finite number >= 0 of optimizer steps "
               f"since the previous round")
    if isinstance(steps, (bool, str, bytes)):
        raise InputError(message)
    try:
        number = float(steps)
    except (TypeError, ValueError):
        raise InputError(message) from None
    if not (number >= 0 and math.isfinite(number)):
        raise InputError(message)
    return number


def _median_ratio(used: torch.Tensor, fresh: torch.Tensor) -> float:
    """Median over entries of used / fresh (a sample of at most 1M entries)."""
    ratio = (used / fresh.clamp_min(torch.finfo(fresh.dtype).tiny)).reshape(-1)
    if ratio.numel() > 1_000_000:
        ratio = ratio[:: ratio.numel() // 1_000_000 + 1]
    return float(ratio.float().median()) if ratio.numel() else float("nan")
