"""Per-example last-layer gradients and Hessian diagonals of a model over a whole dataset.

A probe runs the model over ``x`` in batches (eval mode, no autograd graph through the
network) and returns, for every example, the vectors a coreset strategy selects on.
Only the last layer is probed (section 2 of DESIGN.md): given the penultimate features
``h`` and the logits ``z = W h + b``, everything follows in closed form for softmax
cross-entropy, and from Hutchinson's estimator for any other per-example loss.

Spaces (C classes, D features, ``[.; 1]`` only when the last layer has a bias):

``"logits"`` (default)
    g = dl/dz (C numbers); for cross-entropy g = p - y and diag H = p (1 - p).
``"last_layer"``
    The last layer's parameters, laid out as in :mod:`adacore.curvature`: the weight
    gradient g outer h flattened row-major (C * D), then the bias gradient g (C);
    diag H = diag(H_z) outer h^2, then diag(H_z).
``"last_layer_output_preconditioned"``
    Weight-space vectors preconditioned on the output factor only,
    u = (g / (|diag H_z| + eps)) outer [h; 1], same layout as ``"last_layer"``. Dividing
    by the full weight-space diagonal p (1 - p) h^2 makes u ~ 1 / h explode on small
    activations (measured in DESIGN.md: 67.9 % against CRAIG's 94.3 % on MNIST); this
    variant keeps the curvature of the logits and leaves the features unscaled.

Random projections (:func:`project`) are offered only for vectors that are final: a
projected diagonal is not a diagonal, and AdaCore divides by the diagonal *before*
computing distances, so projecting g and diag H separately would be wrong.

The forward pass. On the CPU, a network with convolutions spends most of a probe in its
own forward, and eager PyTorch runs it poorly there (max pooling in NCHW, convolution
weights re-ordered on every call). With ``forward="auto"`` (the default) such a
model's ``features`` is traced (once per model and input shape: the trace shares the
model's weights), then frozen and optimised for inference (oneDNN layouts for the
convolutions and pooling, weights packed once, batch norm folded into the
convolutions) once per probe, since the weights change between rounds; it then runs in
pieces of ``_TRACED_ROWS`` (256) rows, the fastest size measured. The traced copy
is first checked against the eager features on one batch of other rows than it was
traced on; a model that cannot be traced, or whose trace does not reproduce its eager
features, runs eagerly, and ``ProbeResult.forward`` says which ran. The results agree
with the eager ones to float32 rounding (LeNet-5 after an epoch on MNIST: logit-space
gradients within 7e-7 of the eager ones). Models whose ``features`` branch on the
*values* of ``x`` in Python, or have Python side effects, should use
``forward="eager"``: a trace records one branch, and the check sees only one batch.
"""

from __future__ import annotations

import math
import time
import warnings
import weakref
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from adacore.curvature import hutchinson_diagonal, softmax_ce_logit_terms
from adacore.models import last_layer, penultimate
from adacore.validation import (InputError, as_labels, as_tensor, check_choice, check_int,
                                check_positive, fail)

__all__ = ["ProbeResult", "probe", "project", "projection_matrix", "SPACES", "HESSIANS",
           "PROJECTIONS", "FORWARDS"]

SPACES = ("logits", "last_layer", "last_layer_output_preconditioned")
HESSIANS = ("closed_form", "hutchinson")
PROJECTIONS = ("gaussian", "achlioptas")
FORWARDS = ("auto", "traced", "eager")

# Below this many examples "auto" stays eager: building and checking the traced copy
# of LeNet-5 takes 0.05-0.2 s, and it saves about 14 us an example with 2 threads
# (1.19 s -> 0.49 s over 50,000 MNIST images; benchmarks/probe_speed.py).
_TRACED_MIN_EXAMPLES = 8192
# Rows per traced forward: LeNet-5 / MNIST runs fastest at 128-256 rows with 2 threads,
# and about 2.7 times slower at 1024 (eager: 2.6x slower at 4096 than at 512).
_TRACED_ROWS = 256
# Rows the trace is recorded on; it is checked on other rows (see _traced_features).
_TRACE_EXAMPLE_ROWS = 8
# The check's tolerance, relative to the largest feature: float32 rounding, with room
# for folded batch norm (measured 4e-7 on ResNet20, 2e-6 on ResNet18), far below a
# wrong trace.
_TRACE_TOLERANCE = 1e-4

LossFunction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ProbeResult:
    """Per-example vectors from :func:`probe`.

    Attributes
    ----------
    grads : Tensor, shape (n, p), float32
        Per-example gradients in ``space`` (already preconditioned for
        ``"last_layer_output_preconditioned"``; projected when a projection was asked).
    hessian_diag : Tensor, shape (n, p), float32, or None
        Per-example Hessian diagonals in the same layout, or None when not requested
        (``hessian=None``) or not meaningful (the output-preconditioned space).
    labels : Tensor, shape (n,), int64
        The labels, on the same device as ``grads``.
    space : str
        The space the vectors live in.
    seconds : float
        Wall time of the probe.
    forward : {"traced", "eager"} or None
        How the network's forward ran (see :func:`probe`'s ``forward``); None where
        not recorded.
    """

    grads: torch.Tensor
    hessian_diag: torch.Tensor | None
    labels: torch.Tensor
    space: str
    seconds: float
    forward: str | None = None


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits, labels, reduction="none")


def projection_matrix(in_dim: int, dim: int, seed: int = 0, *, kind: str = "gaussian",
                      dtype: torch.dtype = torch.float32,
                      device: torch.device | str | None = None) -> torch.Tensor:
    """The random projection matrix R of :func:`project`, shape ``(in_dim, dim)``.

    Drawn in float32 on the CPU from ``seed`` and only then converted, so the same seed
    gives the same matrix on every device, in every dtype, in every round.

    Parameters
    ----------
    in_dim : int
        Length of the vectors to project.
    dim : int
        Length of the projected vectors.
    seed : int
        Seed of the matrix.
    kind : {"gaussian", "achlioptas"}
        ``"gaussian"``: entries N(0, 1) / sqrt(dim). ``"achlioptas"``: entries
        sqrt(3 / dim) * {+1, 0, -1} with probabilities 1/6, 2/3, 1/6 (sparse). Both
        preserve squared norms in expectation (Johnson-Lindenstrauss).
    dtype, device
        Of the returned matrix.

    Returns
    -------
    Tensor, shape (in_dim, dim)
    """
    in_dim = check_int("in_dim", in_dim, 1)
    dim = check_int("dim", dim, 1)
    seed = check_int("seed", seed, 0)
    check_choice("kind", kind, PROJECTIONS)
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        matrix = torch.randn(in_dim, dim, generator=generator) / math.sqrt(dim)
    else:
        uniform = torch.rand(in_dim, dim, generator=generator)
        signs = (uniform < 1.0 / 6.0).float() - (uniform >= 5.0 / 6.0).float()
        matrix = signs * math.sqrt(3.0 / dim)
    return matrix.to(dtype=dtype, device=device)


def project(vectors, dim: int, seed: int = 0, *, kind: str = "gaussian",
            batch_size: int = 4096) -> torch.Tensor:
    """Randomly project row vectors to ``dim`` dimensions, in batches of rows.

    Use it on vectors that are final, e.g. AdaCore's preconditioned u = g / (Hbar + eps)
    before running facility location on them as CRAIG does: pairwise distances are kept
    up to a relative error of order sqrt(2 / dim).

    Parameters
    ----------
    vectors : Tensor or array, shape (n, p)
    dim : int
        Length of the projected vectors.
    seed : int
        Seed of the matrix (:func:`projection_matrix`); the same seed gives the same
        matrix, so projections of different rounds are comparable.
    kind : {"gaussian", "achlioptas"}
    batch_size : int
        Rows projected at a time; the result does not depend on it.

    Returns
    -------
    Tensor, shape (n, dim), float32, on the device of ``vectors``.
    """
    dtype = vectors.dtype if isinstance(vectors, torch.Tensor) and vectors.is_floating_point() \
        else torch.float32
    vectors = as_tensor("vectors", vectors, ndim=2, dtype=dtype)
    batch_size = check_int("batch_size", batch_size, 1)
    matrix = projection_matrix(vectors.shape[1], dim, seed, kind=kind, dtype=vectors.dtype,
                               device=vectors.device)
    out = torch.empty((vectors.shape[0], matrix.shape[1]), dtype=torch.float32,
                      device=vectors.device)
    for start in range(0, vectors.shape[0], batch_size):
        stop = start + batch_size
        out[start:stop] = vectors[start:stop] @ matrix
    return out


def _outer_with_bias(output_factor: torch.Tensor, features: torch.Tensor,
                     bias: bool) -> torch.Tensor:
    """Rows of output_factor outer features, flattened row-major, then output_factor."""
    n = output_factor.shape[0]
    weight_part = (output_factor[:, :, None] * features[:, None, :]).reshape(n, -1)
    return torch.cat([weight_part, output_factor], dim=1) if bias else weight_part


def _outer_with_bias_into(out: torch.Tensor, output_factor: torch.Tensor,
                          features: torch.Tensor, bias: bool) -> None:
    """:func:`_outer_with_bias` written into ``out`` (a row block of the result), no copies."""
    classes, width = output_factor.shape[1], features.shape[1]
    weight_part = out[:, :classes * width].unflatten(1, (classes, width))
    torch.mul(output_factor[:, :, None], features[:, None, :], out=weight_part)
    if bias:
        out[:, classes * width:] = output_factor


def _closed_form_into(space: str, logits: torch.Tensor, labels: torch.Tensor,
                      features: torch.Tensor, eps: float, has_bias: bool,
                      grads_out: torch.Tensor, diag_out: torch.Tensor | None) -> None:
    """One batch's softmax cross-entropy terms in ``space``, written into the outputs.

    The same operations as :mod:`adacore.curvature`'s closed forms (so the same bits),
    without its per-batch label checks (:func:`probe` checked every label once) and
    without intermediate copies: g = p - y, diag H = p (1 - p) in the logits, their
    outer products with [h; 1] in the last layer. ``diag_out`` None: no diagonal.
    """
    probabilities = torch.softmax(logits, dim=1)
    rows = torch.arange(labels.shape[0], device=logits.device)
    if space == "logits":
        if diag_out is not None:
            torch.mul(probabilities, 1.0 - probabilities, out=diag_out)
        grads_out.copy_(probabilities)
        grads_out[rows, labels] -= 1.0
        return
    residual = probabilities.clone()
    residual[rows, labels] -= 1.0
    if space == "last_layer_output_preconditioned":
        curvature = probabilities * (1.0 - probabilities)
        _outer_with_bias_into(grads_out, residual / (curvature.abs() + eps), features,
                              has_bias)
        return
    _outer_with_bias_into(grads_out, residual, features, has_bias)
    if diag_out is not None:
        _outer_with_bias_into(diag_out, probabilities * (1.0 - probabilities),
                              features * features, has_bias)


def _per_example_losses(loss_fn: LossFunction, logits: torch.Tensor,
                        labels: torch.Tensor) -> torch.Tensor:
    losses = loss_fn(logits, labels)
    if not isinstance(losses, torch.Tensor) or losses.shape != (logits.shape[0],):
        got = (f"shape {tuple(losses.shape)}" if isinstance(losses, torch.Tensor)
               else type(losses).__name__)
        raise InputError(f"loss_fn: returned {got} for a batch of {logits.shape[0]}, expected "
                         f"per-example losses of shape ({logits.shape[0]},) "
                         f"(reduction='none')")
    return losses


def _logit_terms(logits, labels, loss_fn, hessian, n_samples, generator):
    """dl/dz and diag d2l/dz2 (or None) per example, in the logits."""
    if loss_fn is None and hessian in ("closed_form", None):
        grads, diag = softmax_ce_logit_terms(logits, labels)
        return grads, (diag if hessian is not None else None)
    # Per-example losses are independent given the features, so the Hessian of their
    # sum w.r.t. the (B, C) leaf is block diagonal: one HVP per probe serves the batch.
    with torch.enable_grad():
        leaf = logits.detach().clone().requires_grad_(True)
        total = _per_example_losses(loss_fn or _cross_entropy, leaf, labels).sum()
        if loss_fn is None:
            grads = softmax_ce_logit_terms(logits, labels)[0]
        else:
            grads = torch.autograd.grad(total, leaf, retain_graph=hessian is not None)[0]
        diag = None
        if hessian == "hutchinson":
            diag = hutchinson_diagonal(total, [leaf], n_samples=n_samples,
                                       generator=generator)[0]
    return grads.detach(), diag


def _weight_space_hutchinson(layer: nn.Linear, features, labels, loss_fn, n_samples,
                             generator) -> torch.Tensor:
    """Hutchinson diagonals w.r.t. per-example copies of the last layer, one HVP per probe."""
    batch = features.shape[0]
    with torch.enable_grad():
        weight = layer.weight.detach().expand(batch, -1, -1).clone().requires_grad_(True)
        params = [weight]
        logits = torch.einsum("bcd,bd->bc", weight, features.detach())
        if layer.bias is not None:
            bias = layer.bias.detach().expand(batch, -1).clone().requires_grad_(True)
            params.append(bias)
            logits = logits + bias
        total = _per_example_losses(loss_fn or _cross_entropy, logits, labels).sum()
        estimates = hutchinson_diagonal(total, params, n_samples=n_samples, generator=generator)
    parts = [estimates[0].reshape(batch, -1)] + estimates[1:]
    return torch.cat(parts, dim=1)


def _validate(model, x, y, space, hessian, loss_fn, batch_size, n_samples, projection_dim,
              projection_seed, projection_kind, eps, generator, forward):
    layer = last_layer(model)
    check_choice("space", space, SPACES)
    check_choice("forward", forward, FORWARDS)
    if forward == "traced" and layer.weight.device.type != "cpu":
        raise InputError(f"forward: 'traced' runs on the CPU, the model is on "
                         f"{layer.weight.device}; use 'auto' or 'eager'")
    if hessian is not None and hessian not in HESSIANS:
        raise fail("hessian", hessian, "'closed_form', 'hutchinson' or None")
    batch_size = check_int("batch_size", batch_size, 1)
    n_samples = check_int("n_samples", n_samples, 1)
    eps = check_positive("eps", eps)
    check_choice("projection_kind", projection_kind, PROJECTIONS)
    check_int("projection_seed", projection_seed, 0)
    if projection_dim is not None:
        projection_dim = check_int("projection_dim", projection_dim, 1)
    if loss_fn is not None and not callable(loss_fn):
        raise fail("loss_fn", loss_fn, "a callable (logits, labels) -> per-example losses")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise fail("generator", generator, "a torch.Generator or None")
    if loss_fn is not None and hessian == "closed_form":
        raise InputError("hessian: 'closed_form' holds for softmax cross-entropy only; with a "
                         "custom loss_fn use hessian='hutchinson' (or None)")
    if space == "last_layer_output_preconditioned" and hessian is None:
        raise InputError("hessian: space 'last_layer_output_preconditioned' divides by the "
                         "logit curvature; use hessian='closed_form' or 'hutchinson'")
    if projection_dim is not None and hessian is not None and space != \
            "last_layer_output_preconditioned":
        raise InputError(f"projection_dim: a projected Hessian diagonal is not a diagonal, and "
                         f"AdaCore divides by the diagonal before distances. Probe space "
                         f"{space!r} with projection_dim=None, precondition first "
                         f"(u = g / (Hbar + eps)), then call adacore.probe.project(u, "
                         f"{projection_dim}, seed) and select on u as CRAIG does; or use "
                         f"hessian=None to project plain gradients")
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as error:
            raise fail("x", x, "a tensor or numeric array of inputs") from error
    if x.ndim < 1 or x.shape[0] == 0:
        raise fail("x", x, "a non-empty batch of inputs, examples along the first axis")
    labels = as_labels("y", y)
    if labels.shape[0] != x.shape[0]:
        raise InputError(f"y: got {labels.shape[0]} labels for {x.shape[0]} examples in x, "
                         f"expected one label per example")
    classes = layer.out_features
    if int(labels.min()) < 0 or int(labels.max()) >= classes:
        raise InputError(f"y: got labels in [{int(labels.min())}, {int(labels.max())}], "
                         f"expected values in [0, {classes - 1}] for a model with "
                         f"{classes} classes")
    return layer, x, torch.from_numpy(labels), batch_size, n_samples, eps, projection_dim


def probe(model: nn.Module, x, y, *, space: str = "logits", batch_size: int = 1024,
          hessian: str | None = "closed_form", n_samples: int = 1,
          generator: torch.Generator | None = None, projection_dim: int | None = None,
          projection_seed: int = 0, projection_kind: str = "gaussian", eps: float = 1e-4,
          loss_fn: LossFunction | None = None, device=None,
          forward: str = "auto") -> ProbeResult:
    """Per-example last-layer gradients (and Hessian diagonals) of ``model`` on ``(x, y)``.

    The model runs in eval mode (each submodule's train/eval mode is restored
    afterwards) under ``torch.no_grad()``, in batches on the model's device (batches of
    ``x`` are moved there), without a Python loop over examples; the returned arrays
    are the only ones whose size grows with n. Neither the model's parameters nor its
    buffers change.

    Parameters
    ----------
    model : nn.Module
        A model implementing :class:`adacore.models.LastLayerModel`'s interface
        (``features(x)`` and an ``nn.Linear`` ``classifier``).
    x : Tensor or array, shape (n, ...)
        Inputs, on any device.
    y : int tensor or array, shape (n,)
        Class labels in ``[0, classifier.out_features)``.
    space : {"logits", "last_layer", "last_layer_output_preconditioned"}
        Where the vectors live (see the module docstring). For
        ``"last_layer_output_preconditioned"`` the returned ``grads`` are already the
        preconditioned u = (g / (|diag H_z| + eps)) outer [h; 1] (for cross-entropy
        with the closed form, ((p - y) / (p (1 - p) + eps)) outer [h; 1]) and
        ``hessian_diag`` is None: run the AdaCore strategy *as CRAIG* on them
        (``Craig(...).select(result.grads, result.labels)``), since dividing again by
        a curvature would precondition twice. No smoothing across rounds is applied.
    batch_size : int
        Examples per batch: per forward pass when eager (the traced forward runs a
        batch in pieces of at most 256 rows). Closed-form results do not depend on it;
        Hutchinson results do, through the order in which probes are drawn.
    hessian : {"closed_form", "hutchinson"} or None
        How the Hessian diagonal is computed. ``"closed_form"``: exact, softmax
        cross-entropy only. ``"hutchinson"``: mean of z * (H z) over ``n_samples``
        Rademacher probes, for any ``loss_fn``, per example (w.r.t. per-example copies
        of the logits or of the last layer, one Hessian-vector product per probe for
        the whole batch); unbiased but noisy, and may be negative. None: skip it.
    n_samples : int
        Hutchinson probes per example.
    generator : torch.Generator, optional
        Source of the Hutchinson probes, for reproducibility.
    projection_dim : int, optional
        Project the returned ``grads`` to this many dimensions with :func:`project`
        (applied batch by batch). Allowed only when no diagonal is returned
        (``hessian=None``) or for the output-preconditioned space; otherwise an
        :class:`InputError` explains how to precondition first and project after.
    projection_seed : int
        Seed of the projection matrix: the same seed gives the same matrix every round.
    projection_kind : {"gaussian", "achlioptas"}
        See :func:`projection_matrix`.
    eps : float
        Damping of the output-preconditioned space (unused by the other spaces).
    loss_fn : callable, optional
        ``loss_fn(logits, labels) -> per-example losses`` of shape ``(B,)``; default
        softmax cross-entropy (``reduction="none"``). A custom loss needs
        ``hessian="hutchinson"`` or None; its gradients come from autograd.
    device : torch.device or str, optional
        Where the returned tensors are stored (default: the model's device). The
        computation always runs on the model's device.
    forward : {"auto", "traced", "eager"}
        How the network's ``features`` run (see the module docstring). ``"auto"``: a
        traced, frozen copy optimised for inference where that pays, i.e. a float32
        model with convolutions on the CPU, at least 8,192 examples, and a trace that
        reproduces the eager features on a check batch; eager otherwise. ``"traced"``:
        the traced copy for any CPU model and any n, an :class:`InputError` if the
        model cannot be traced or its trace differs. ``"eager"``: the model's own
        Python forward. All three agree to float32 rounding.

    Returns
    -------
    ProbeResult
        ``grads`` and ``hessian_diag`` (float32, shape (n, p)), ``labels`` (int64),
        ``space``, ``seconds`` and ``forward`` (``"traced"`` or ``"eager"``).

    Raises
    ------
    InputError
        For a model without the interface, x / y of different lengths, labels outside
        the model's classes, unknown ``space`` / ``hessian`` / ``projection_kind`` /
        ``forward``, ``batch_size`` or ``n_samples`` < 1, the combinations refused
        above, and ``forward="traced"`` on a model that is not on the CPU or that
        cannot be traced.
    """
    start_time = time.perf_counter()
    layer, x, labels, batch_size, n_samples, eps, projection_dim = _validate(
        model, x, y, space, hessian, loss_fn, batch_size, n_samples, projection_dim,
        projection_seed, projection_kind, eps, generator, forward)
    model_device = layer.weight.device
    out_device = torch.device(device) if device is not None else model_device
    has_bias = layer.bias is not None
    classes, width = layer.out_features, layer.in_features
    full_dim = classes if space == "logits" else classes * width + (classes if has_bias else 0)
    return_diag = hessian is not None and space != "last_layer_output_preconditioned"
    closed_form = loss_fn is None and hessian in ("closed_form", None)

    matrix = None
    if projection_dim is not None:
        matrix = projection_matrix(full_dim, projection_dim, projection_seed,
                                   kind=projection_kind, dtype=layer.weight.dtype,
                                   device=model_device)
    n = x.shape[0]
    out_dim = full_dim if matrix is None else projection_dim
    grads_out = torch.empty((n, out_dim), dtype=torch.float32, device=out_device)
    diag_out = (torch.empty((n, full_dim), dtype=torch.float32, device=out_device)
                if return_diag else None)
    # closed-form float32 terms go straight into the outputs; anything else is computed
    # in the model's dtype on its device, then projected / converted / moved
    direct = (closed_form and matrix is None and out_device == model_device
              and layer.weight.dtype == torch.float32)
    device_labels = labels.to(model_device)

    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            features_of, used = _forward(model, x, model_device, forward)
        for begin in range(0, n, batch_size):
            stop = min(begin + batch_size, n)
            batch_labels = device_labels[begin:stop]
            with torch.no_grad():
                features = features_of(x[begin:stop].to(model_device))
                logits = layer(features)
            if direct:
                _closed_form_into(space, logits, batch_labels, features, eps, has_bias,
                                  grads_out[begin:stop],
                                  None if diag_out is None else diag_out[begin:stop])
                continue
            if closed_form:
                grads = torch.empty((stop - begin, full_dim), dtype=logits.dtype,
                                    device=model_device)
                diag = torch.empty_like(grads) if diag_out is not None else None
                _closed_form_into(space, logits, batch_labels, features, eps, has_bias,
                                  grads, diag)
            else:
                grads, diag = _batch_terms(space, hessian, layer, features, logits,
                                           batch_labels, loss_fn, n_samples, generator, eps,
                                           has_bias)
            if matrix is not None:
                grads = grads @ matrix
            grads_out[begin:stop].copy_(grads)
            if diag_out is not None:
                diag_out[begin:stop].copy_(diag)
    finally:
        for module, training in modes:
            module.training = training
    if model_device.type == "cuda":
        torch.cuda.synchronize(model_device)
    return ProbeResult(grads=grads_out, hessian_diag=diag_out, labels=labels.to(out_device),
                       space=space, seconds=time.perf_counter() - start_time, forward=used)


class _Features(nn.Module):
    """A model's penultimate features as a module's forward, so that it can be traced."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return penultimate(self.model, x)


def _traced_pays(model: nn.Module, x: torch.Tensor, device: torch.device) -> bool:
    """Whether ``forward="auto"`` traces: where the traced copy measurably wins."""
    if device.type != "cpu" or x.shape[0] < _TRACED_MIN_EXAMPLES or \
            x.dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    tensors = [*model.parameters(), *model.buffers()]
    return (all(t.dtype == torch.float32 for t in tensors if t.is_floating_point())
            and any(isinstance(m, nn.modules.conv._ConvNd) for m in model.modules()))


# A model's last trace (not frozen), kept while the model lives, with the key it was
# recorded under (see _trace_key): tracing LeNet-5 takes 17-40 ms of a 0.6 s probe.
_TRACES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _trace_key(model: nn.Module, x: torch.Tensor) -> tuple:
    """What a trace of ``model`` on inputs like ``x`` depends on besides the values of
    the weights: the modules in order (each the object, its type, mode, settings as
    ``extra_repr`` prints them, e.g. a pooling's size or a norm's eps, and its forward
    hooks), the global forward hooks, each parameter and buffer (the object, its
    storage, dtype, device and shape: a replaced or moved tensor retraces) and the
    inputs' shape past the batch axis, dtype and device. Plain Python attributes that a
    custom ``features`` reads are not in it: such a model should probe with
    ``forward="eager"``."""
    from torch.nn.modules import module as module_state

    tensors = [*model.parameters(), *model.buffers()]
    hooks = (tuple(module_state._global_forward_hooks),
             tuple(module_state._global_forward_pre_hooks))
    return (tuple((id(m), type(m), m.training, m.extra_repr(), tuple(m._forward_hooks),
                   tuple(m._forward_pre_hooks)) for m in model.modules()),
            tuple((id(t), t.data_ptr(), t.dtype, t.device, tuple(t.shape)) for t in tensors),
            hooks, tuple(x.shape[1:]), x.dtype, x.device)


def _trace(model: nn.Module, example: torch.Tensor, x: torch.Tensor, *, fresh: bool = False):
    """The trace of the model's features (the weights shared with the model, not
    copied), reused while :func:`_trace_key` is unchanged unless ``fresh``; a trace
    follows in-place updates of the weights (an optimizer step, ``load_state_dict``)."""
    key = _trace_key(model, x)
    cached = _TRACES.get(model)
    if not fresh and cached is not None and cached[0] == key:
        return cached[1]
    module = _Features(model)
    module.training = False             # the model is in eval mode already
    traced = torch.jit.trace(module, example, check_trace=False)
    _TRACES[model] = (key, traced)
    return traced


def _traced_features(model: nn.Module, x: torch.Tensor, device: torch.device):
    """A frozen trace of the model's features optimised for inference, or None.

    None when tracing, freezing or running the trace fails, or when on a check batch
    (other rows than the trace was recorded on, and more of them, so that values or a
    batch size captured as constants show) its features differ from the eager ones by
    more than float32 rounding. The trace is recorded once per model and input shape
    (:func:`_trace`); freezing copies the current weights into it, so the frozen copy
    is built, and checked, on every call.
    """
    example = x[-min(x.shape[0], _TRACE_EXAMPLE_ROWS):].to(device)
    check = x[:min(x.shape[0], _TRACED_ROWS)].to(device)
    reused = model in _TRACES
    frozen = _checked_trace(model, example, check, x, fresh=False)
    if frozen is None:
        # a trace that fails the check is not kept; a kept one that fails now (recorded
        # on other rows, say) is not trusted again, and a fresh one is tried
        _TRACES.pop(model, None)
        if reused:
            frozen = _checked_trace(model, example, check, x, fresh=True)
            if frozen is None:
                _TRACES.pop(model, None)
    return frozen


def _checked_trace(model, example, check, x, *, fresh: bool):
    """The frozen, optimised trace if it reproduces the eager features on ``check``."""
    try:
        with warnings.catch_warnings():
            # torch.jit's deprecation notices, and TracerWarnings from shape checks
            # (the check batch below is what tells a wrong trace)
            warnings.simplefilter("ignore")
            traced = _trace(model, example, x, fresh=fresh)
            frozen = torch.jit.optimize_for_inference(torch.jit.freeze(traced))
            got = frozen(check)
        expected = penultimate(model, check)
    except Exception:                   # noqa: BLE001 - any failure means: run eagerly
        return None
    if not isinstance(got, torch.Tensor) or got.shape != expected.shape or \
            got.dtype != expected.dtype or not bool(torch.isfinite(expected).all()):
        return None
    scale = float(expected.abs().max())
    if float((got - expected).abs().max()) > _TRACE_TOLERANCE * max(scale, 1e-30):
        return None
    return frozen


def _forward(model: nn.Module, x: torch.Tensor, device: torch.device, forward: str):
    """(features of a batch, "traced" or "eager") for ``probe``'s ``forward`` choice."""
    traced = None
    if forward == "traced" or (forward == "auto" and _traced_pays(model, x, device)):
        traced = _traced_features(model, x, device)
        if traced is None and forward == "traced":
            raise InputError(f"forward: {type(model).__name__}.features could not be traced, "
                             f"or its trace did not reproduce the eager features; use "
                             f"forward='auto' or 'eager'")
    if traced is None:
        return (lambda batch: penultimate(model, batch)), "eager"

    def features(batch: torch.Tensor) -> torch.Tensor:
        if batch.shape[0] <= _TRACED_ROWS:
            return traced(batch)
        return torch.cat([traced(batch[start:start + _TRACED_ROWS])
                          for start in range(0, batch.shape[0], _TRACED_ROWS)])
    return features, "traced"


def _batch_terms(space, hessian, layer, features, logits, labels, loss_fn, n_samples,
                 generator, eps, has_bias):
    """One batch's (grads, diag) in ``space`` for Hutchinson or a custom loss; diag None
    when not returned (the closed forms go through :func:`_closed_form_into`)."""
    logit_hessian = hessian if space != "last_layer" else None
    logit_grads, logit_diag = _logit_terms(logits, labels, loss_fn, logit_hessian, n_samples,
                                           generator)
    if space == "logits":
        return logit_grads, logit_diag
    if space == "last_layer_output_preconditioned":
        # |d|: a Hutchinson estimate of p (1 - p) can be negative.
        factor = logit_grads / (logit_diag.abs() + eps)
        return _outer_with_bias(factor, features, has_bias), None
    grads = _outer_with_bias(logit_grads, features, has_bias)
    diag = None
    if hessian == "hutchinson":
        diag = _weight_space_hutchinson(layer, features, labels, loss_fn, n_samples, generator)
    return grads, diag
