"""Closed forms and Hutchinson against exact Hessians from autograd."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from adacore import (CurvatureSmoother, InputError, hutchinson_diagonal,
                     softmax_ce_last_layer_terms, softmax_ce_logit_terms)


def small_problem(seed=0, n=5, D=4, C=3):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(n, D, generator=g, dtype=torch.float64)
    weight = torch.randn(C, D, generator=g, dtype=torch.float64)
    bias = torch.randn(C, generator=g, dtype=torch.float64)
    labels = torch.randint(0, C, (n,), generator=g)
    return features, weight, bias, labels


def test_logit_terms_equal_autograd():
    features, weight, bias, labels = small_problem()
    logits = features @ weight.T + bias
    grads, diag = softmax_ce_logit_terms(logits, labels)
    for i in range(logits.shape[0]):
        loss = lambda z: F.cross_entropy(z[None], labels[i:i + 1])
        hessian = torch.autograd.functional.hessian(loss, logits[i])
        gradient = torch.autograd.functional.jacobian(loss, logits[i])
        torch.testing.assert_close(diag[i], torch.diagonal(hessian))
        torch.testing.assert_close(grads[i], gradient)


@pytest.mark.parametrize("bias", [True, False])
def test_last_layer_terms_equal_autograd(bias):
    features, weight, b, labels = small_problem(1)
    b = b if bias else torch.zeros_like(b)
    logits = features @ weight.T + b
    grads, diag = softmax_ce_last_layer_terms(logits, labels, features, bias=bias)
    C, D = weight.shape
    for i in range(features.shape[0]):
        def loss(flat):
            w = flat[:C * D].reshape(C, D)
            offset = flat[C * D:] if bias else b
            return F.cross_entropy((features[i] @ w.T + offset)[None], labels[i:i + 1])
        point = torch.cat([weight.reshape(-1), b]) if bias else weight.reshape(-1)
        hessian = torch.autograd.functional.hessian(loss, point)
        gradient = torch.autograd.functional.jacobian(loss, point)
        torch.testing.assert_close(diag[i], torch.diagonal(hessian))
        torch.testing.assert_close(grads[i], gradient)


def test_hutchinson_exact_for_a_diagonal_hessian():
    x = torch.randn(6, dtype=torch.float64, requires_grad=True)
    scales = torch.arange(1.0, 7.0, dtype=torch.float64)
    loss = (scales * x ** 2).sum() + x.sum()
    (estimate,) = hutchinson_diagonal(loss, [x], n_samples=1,
                                      generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, 2 * scales)  # z_i^2 = 1: no noise without coupling


def test_hutchinson_error_shrinks_like_one_over_sqrt_m():
    torch.manual_seed(0)
    A = torch.randn(8, 8, dtype=torch.float64)
    H = A @ A.T
    x = torch.zeros(8, dtype=torch.float64, requires_grad=True)
    exact = torch.diagonal(H)
    off_diagonal = float((H ** 2).sum() - (exact ** 2).sum())
    generator = torch.Generator().manual_seed(1)
    sample_sizes = [1, 4, 16, 64]
    rms = []
    for m in sample_sizes:
        errors = []
        for _ in range(200):
            loss = 0.5 * x @ H @ x
            (estimate,) = hutchinson_diagonal(loss, [x], n_samples=m, generator=generator)
            errors.append(float(((estimate - exact) ** 2).sum()))
        mean_square = float(np.mean(errors))
        # E||est - diag||^2 = (1/m) sum_{i != j} H_ij^2 for Rademacher probes
        assert mean_square == pytest.approx(off_diagonal / m, rel=0.25)
        rms.append(math.sqrt(mean_square))
    slope = np.polyfit(np.log(sample_sizes), np.log(rms), 1)[0]
    assert slope == pytest.approx(-0.5, abs=0.07)


def test_hutchinson_agrees_with_closed_form_on_the_last_layer():
    features, weight, bias, labels = small_problem(2, n=1)
    w = weight.clone().requires_grad_(True)
    b = bias.clone().requires_grad_(True)
    loss = F.cross_entropy(features @ w.T + b, labels)
    estimate = hutchinson_diagonal(loss, [w, b], n_samples=4000,
                                   generator=torch.Generator().manual_seed(3))
    _, diag = softmax_ce_last_layer_terms(features @ weight.T + bias, labels, features)
    torch.testing.assert_close(torch.cat([estimate[0].reshape(-1), estimate[1]]), diag[0],
                               atol=0.03, rtol=0.1)


def test_hutchinson_zero_for_parameters_entering_linearly():
    a = torch.randn(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    unused = torch.randn(2, requires_grad=True)
    loss = (a ** 2).sum() + (2 * b).sum()
    est_a, est_b, est_unused = hutchinson_diagonal(loss, [a, b, unused])
    torch.testing.assert_close(est_a, torch.full((3,), 2.0))
    assert torch.all(est_b == 0) and torch.all(est_unused == 0)


def test_hutchinson_rejects_bad_arguments():
    x = torch.randn(3, requires_grad=True)
    with pytest.raises(InputError, match="n_samples"):
        hutchinson_diagonal((x ** 2).sum(), [x], n_samples=0)
    with pytest.raises(InputError, match="loss"):
        hutchinson_diagonal(x ** 2, [x])
    with pytest.raises(InputError, match="loss"):
        hutchinson_diagonal(torch.tensor(1.0), [x])
    with pytest.raises(InputError, match="params"):
        hutchinson_diagonal((x ** 2).sum(), [])


def _explicit_weights(beta, steps):
    """Weight of each round in the last one's average, from the closed form
    w_1 = prod_{j>1} a_j, w_i = (1 - a_i) prod_{j>i} a_j, a_j = beta ** steps_j."""
    decays = [beta ** s for s in steps]
    weights = []
    for i in range(len(steps)):
        later = float(np.prod(decays[i + 1:])) if i + 1 < len(steps) else 1.0
        weights.append(later if i == 0 else (1 - decays[i]) * later)
    return np.array(weights)


@pytest.mark.parametrize("average", ["rms", "mean", "geometric"])
def test_smoother_is_a_weighted_average_in_training_time(average):
    rng = np.random.default_rng(0)
    gs = [torch.from_numpy(rng.standard_normal((5, 3))) for _ in range(3)]
    ds = [torch.from_numpy(rng.standard_normal((5, 3))) for _ in range(3)]
    beta2, eps, steps = 0.99, 1e-3, [0, 37, 120]   # the first round's steps do not count
    smoother = CurvatureSmoother(beta2=beta2, eps=eps, average=average)
    for t in range(3):
        got = smoother.precondition(gs[t], ds[t], steps=steps[t])
        weights = _explicit_weights(beta2, steps[: t + 1])
        assert weights.sum() == pytest.approx(1.0)
        magnitudes = np.stack([d.abs().numpy() for d in ds[: t + 1]])
        if average == "rms":
            hbar = np.sqrt(np.tensordot(weights, magnitudes ** 2, axes=1))
        elif average == "mean":
            hbar = np.tensordot(weights, magnitudes, axes=1)
        else:
            hbar = np.exp(np.tensordot(weights, np.log(magnitudes + eps), axes=1)) - eps
        torch.testing.assert_close(got, gs[t] / (torch.from_numpy(hbar) + eps))
    resumed = CurvatureSmoother(beta2=0.5, eps=1.0)
    resumed.load_state_dict(smoother.state_dict())
    torch.testing.assert_close(resumed.precondition(gs[0], ds[0], steps=9),
                               smoother.precondition(gs[0], ds[0], steps=9))
    with pytest.raises(InputError, match="hessian_diag"):
        smoother.precondition(gs[0][:4], ds[0][:4])
    with pytest.raises(InputError, match="steps"):
        smoother.precondition(gs[0], ds[0], steps=-1)


def test_smoother_memory_is_counted_in_steps_not_rounds():
    """Two rounds 1,000 steps apart with beta2 = 0.999 per step keep e^-1 of the old
    curvature; the same two rounds one step apart keep 0.999 of it."""
    old, new = torch.full((1, 1), 1.0), torch.full((1, 1), 1e-3)
    g = torch.ones(1, 1)
    far = CurvatureSmoother(beta2=0.999, eps=0.0, average="rms")
    far.precondition(g, old)
    hbar_far = 1 / far.precondition(g, new, steps=1000)
    near = CurvatureSmoother(beta2=0.999, eps=0.0, average="rms")
    near.precondition(g, old)
    hbar_near = 1 / near.precondition(g, new, steps=1)
    keep = 0.999 ** 1000
    assert float(hbar_far) == pytest.approx(np.sqrt(keep + (1 - keep) * 1e-6))
    assert float(hbar_near) == pytest.approx(np.sqrt(0.999 + 0.001 * 1e-6))
    fresh = CurvatureSmoother(beta2=0.0, eps=0.0)
    fresh.precondition(g, old)
    assert float(1 / fresh.precondition(g, new, steps=1)) == pytest.approx(1e-3)


def test_smoother_beta1_is_an_ema_in_steps():
    g1, g2 = torch.ones(2, 2), 3 * torch.ones(2, 2)
    d = torch.ones(2, 2)
    smoother = CurvatureSmoother(beta2=0.9, eps=0.0, beta1=0.5)
    torch.testing.assert_close(smoother.precondition(g1, d), g1)
    # two steps: a = 0.25, m2 = 0.25 * 1 + 0.75 * 3 = 2.5
    torch.testing.assert_close(smoother.precondition(g2, d, steps=2), torch.full((2, 2), 2.5))


def test_smoother_rejects_bad_hyperparameters():
    with pytest.raises(InputError, match="beta2"):
        CurvatureSmoother(beta2=1.0)
    with pytest.raises(InputError, match="eps"):
        CurvatureSmoother(eps=-1)
    with pytest.raises(InputError, match="average"):
        CurvatureSmoother(average="median")


def test_smoother_without_memory_ignores_zero_steps_and_bad_steps_are_refused():
    g = torch.ones(1, 2)
    fresh = CurvatureSmoother(beta2=0.0, eps=0.0)
    fresh.precondition(g, torch.full((1, 2), 0.5))
    # beta2 = 0: the new curvature alone, even with no step in between (0 ** 0 is 1)
    torch.testing.assert_close(fresh.precondition(g, torch.full((1, 2), 0.01), steps=0),
                               torch.full((1, 2), 100.0))
    for bad in ("abc", -1, float("nan"), True):
        with pytest.raises(InputError, match="steps"):
            fresh.precondition(g, torch.full((1, 2), 0.5), steps=bad)
