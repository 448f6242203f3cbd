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


def test_smoother_follows_the_formula_and_round_trips():
    rng = np.random.default_rng(0)
    g1, g2, g3 = (torch.from_numpy(rng.standard_normal((5, 3))) for _ in range(3))
    d1, d2, d3 = (torch.from_numpy(rng.standard_normal((5, 3))) for _ in range(3))
    beta2, eps = 0.9, 1e-3
    smoother = CurvatureSmoother(beta2=beta2, eps=eps)
    torch.testing.assert_close(smoother.precondition(g1, d1), g1 / (d1.abs() + eps))
    v2 = beta2 * (1 - beta2) * d1 ** 2 + (1 - beta2) * d2 ** 2
    expected = g2 / (torch.sqrt(v2 / (1 - beta2 ** 2)) + eps)
    torch.testing.assert_close(smoother.precondition(g2, d2), expected)
    resumed = CurvatureSmoother(beta2=0.5, eps=1.0)
    resumed.load_state_dict(smoother.state_dict())
    torch.testing.assert_close(resumed.precondition(g3, d3), smoother.precondition(g3, d3))
    with pytest.raises(InputError, match="hessian_diag"):
        smoother.precondition(g1[:4], d1[:4])


def test_smoother_beta1_is_a_bias_corrected_ema():
    g1, g2 = torch.ones(2, 2), 3 * torch.ones(2, 2)
    d = torch.ones(2, 2)
    smoother = CurvatureSmoother(beta2=0.9, eps=0.0, beta1=0.5)
    torch.testing.assert_close(smoother.precondition(g1, d), g1)
    # m2 = 0.5 * 0.5 * 1 + 0.5 * 3 = 1.75; / (1 - 0.25) = 7/3
    torch.testing.assert_close(smoother.precondition(g2, d), torch.full((2, 2), 7 / 3))


def test_smoother_rejects_bad_hyperparameters():
    with pytest.raises(InputError, match="beta2"):
        CurvatureSmoother(beta2=1.0)
    with pytest.raises(InputError, match="eps"):
        CurvatureSmoother(eps=-1)
