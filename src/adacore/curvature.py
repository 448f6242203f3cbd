"""Curvature: closed-form last-layer terms, Hutchinson's estimator, smoothing across rounds.

Layouts. In *logit space* an example's gradient is g = p - y and its Hessian diagonal
d = p (1 - p) (C numbers each). In the space of the last linear layer (``nn.Linear``
with weight (C, D) and bias (C,)), the per-example vector is the weight gradient
flattened row-major, (p - y) outer h, followed by the bias gradient p - y; its Hessian
diagonal is p (1 - p) outer h^2 followed by p (1 - p). These are exact for softmax
cross-entropy: the Hessian in the logits is diag(p) - p p^T.
"""

from __future__ import annotations

from typing import Sequence

import torch

from adacore.validation import InputError, check_int, check_positive, check_unit_interval


def _probabilities_and_residual(logits: torch.Tensor, labels: torch.Tensor):
    if logits.ndim != 2:
        raise InputError(f"logits: got shape {tuple(logits.shape)}, expected (n, classes)")
    labels = torch.as_tensor(labels, device=logits.device).long()
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


class CurvatureSmoother:
    """Per-example, bias-corrected smoothing of the curvature across selection rounds.

    v_t = beta2 v_{t-1} + (1 - beta2) d_t^2,  Hbar_t = sqrt(v_t / (1 - beta2^t)),
    and the preconditioned vectors are u_t = ghat_t / (Hbar_t + eps), with
    ghat_t = g_t, or with ``beta1 > 0`` the bias-corrected EMA of g. On the first call
    Hbar_1 = |d_1|. This is our reading of the poster's formula (the paper body was not
    available); beta2 = 0.999 and eps = 1e-4 are our defaults, both configurable.

    State (``state_dict``): the step count and the running moments, per example.
    """

    def __init__(self, beta2: float = 0.999, eps: float = 1e-4, beta1: float = 0.0):
        self.beta2 = check_unit_interval("beta2", beta2)
        self.eps = check_positive("eps", eps, allow_zero=True)
        self.beta1 = check_unit_interval("beta1", beta1)
        self.reset()

    def reset(self) -> None:
        """Forget all rounds."""
        self.step = 0
        self.second_moment: torch.Tensor | None = None
        self.first_moment: torch.Tensor | None = None

    def curvature(self, hessian_diag: torch.Tensor) -> torch.Tensor:
        """Fold one round's diagonal into the state and return Hbar_t."""
        if self.second_moment is not None and self.second_moment.shape != hessian_diag.shape:
            raise InputError(f"hessian_diag: got shape {tuple(hessian_diag.shape)}, expected "
                             f"{tuple(self.second_moment.shape)} as in the earlier rounds "
                             f"(the smoothing is per example)")
        self.step += 1
        square = hessian_diag * hessian_diag
        if self.second_moment is None:
            self.second_moment = (1.0 - self.beta2) * square
        else:
            self.second_moment = (self.beta2 * self.second_moment.to(square.device)
                                  + (1.0 - self.beta2) * square)
        return torch.sqrt(self.second_moment / (1.0 - self.beta2 ** self.step))

    def gradient(self, grads: torch.Tensor) -> torch.Tensor:
        """The gradient used this round (the EMA when beta1 > 0); call after ``curvature``."""
        if self.beta1 == 0.0:
            return grads
        if self.first_moment is None:
            self.first_moment = (1.0 - self.beta1) * grads
        else:
            self.first_moment = (self.beta1 * self.first_moment.to(grads.device)
                                 + (1.0 - self.beta1) * grads)
        return self.first_moment / (1.0 - self.beta1 ** self.step)

    def precondition(self, grads: torch.Tensor, hessian_diag: torch.Tensor) -> torch.Tensor:
        """One round: u_t = ghat_t / (Hbar_t + eps)."""
        smoothed = self.curvature(hessian_diag)
        return self.gradient(grads) / (smoothed + self.eps)

    def state_dict(self) -> dict:
        return {"beta2": self.beta2, "eps": self.eps, "beta1": self.beta1, "step": self.step,
                "second_moment": self.second_moment, "first_moment": self.first_moment}

    def load_state_dict(self, state: dict) -> None:
        self.beta2, self.eps, self.beta1 = state["beta2"], state["eps"], state["beta1"]
        self.step = int(state["step"])
        self.second_moment = state["second_moment"]
        self.first_moment = state["first_moment"]
