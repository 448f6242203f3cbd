"""Inputs that used to give a silently wrong result (issue 14): strategy options out of
range, labels beyond int64, GradMatch on vanishing gradients, AdaCore with eps = 0 on a
zero curvature entry. Each is now one InputError naming what is wrong."""

import subprocess
import sys

import numpy as np
import pytest
import torch

from adacore import AdaCore, Craig, GradMatch, InputError
from adacore.curvature import softmax_ce_logit_terms
from adacore.training import TrainConfig
from adacore.validation import as_labels

RNG = np.random.default_rng(0)
GRADS = RNG.standard_normal((60, 4)).astype(np.float32)
LABELS = np.arange(60) % 3


# -- strategy options, from TOML or the API: checked when the strategy is built --

@pytest.mark.parametrize("method, options, match", [
    ("craig", {"epsilon": -1}, "epsilon: got -1, expected a number in \\(0, 1\\)"),
    ("craig", {"epsilon": 0}, "epsilon"),
    ("craig", {"epsilon": 1}, "epsilon"),
    ("adacore", {"epsilon": float("nan")}, "epsilon"),
    ("adacore", {"epsilon": "0.1"}, "epsilon"),
    ("craig", {"optimizer": 3}, "optimizer"),
    ("craig", {"device": 3}, "device"),
    ("craig", {"device": "gpu-please"}, "device"),
    ("adacore", {"client": -1}, "client"),
    ("adacore", {"client": "tcp://127.0.0.1:1", "partitions": 0}, "partitions"),
    ("gradmatch", {"device": [1]}, "device"),
    ("gradmatch", {"lam": float("nan")}, "lam"),
    ("glister", {"device": 0.5}, "device"),
    ("glister", {"epsilon": 0}, "epsilon"),
])
def test_a_bad_strategy_option_is_refused_before_anything_trains(method, options, match):
    with pytest.raises(InputError, match=match):
        TrainConfig(dataset="digits", method=method, strategy_options=options).validate()


def test_the_stochastic_optimizer_refuses_epsilon_outside_the_open_unit_interval():
    for epsilon in (0, -0.5, 1, 2, float("nan"), float("inf"), True):
        with pytest.raises(InputError, match="epsilon"):
            Craig(0.1, optimizer="stochastic", epsilon=epsilon)
        with pytest.raises(InputError, match="epsilon"):
            AdaCore(0.1, optimizer="stochastic", epsilon=epsilon)
    assert Craig(0.1, epsilon=0.5, device="cpu").epsilon == 0.5


# -- labels: never merged or wrapped by the int64 cast --

@pytest.mark.parametrize("labels, match", [
    (np.array([1e19, 2e19, 3e19] * 20), "60 labels lie outside the int64 range"),
    (np.array([-1e19, 0.0, 1.0] * 20), "outside the int64 range"),
    (np.array([2.0**63, 0.0, 1.0] * 20), "outside the int64 range"),
    (np.array([2**63 + 1, 2**63 + 2, 5] * 20, dtype=np.uint64), "exceed the int64 range"),
    (np.array([2**64 - 1, 0, 1] * 20, dtype=np.uint64), "exceed the int64 range"),
])
def test_labels_the_int64_cast_would_change_are_refused(labels, match):
    with pytest.raises(InputError, match="labels: .*" + match):
        Craig(0.1).select(GRADS, labels)
    with pytest.raises(InputError, match=match):
        softmax_ce_logit_terms(torch.zeros(60, 3), labels)


def test_labels_at_the_edges_of_int64_are_kept_exactly():
    big = np.array([2**63 - 1, 3, 2**62] * 20, dtype=np.uint64)
    assert as_labels("labels", big).tolist() == big.astype(object).tolist()
    floats = np.array([-2.0**63, 2.0**62])
    assert as_labels("labels", floats).tolist() == [-2**63, 2**62]
    with pytest.raises(InputError, match="integer class labels"):
        softmax_ce_logit_terms(torch.zeros(3, 3), np.array([0, 1.5, 2]))


# -- GradMatch on vanishing gradients: refused, not an empty coreset --

def test_gradmatch_records_why_the_ridge_zeroes_vanishing_gradients():
    coreset = GradMatch(0.1).select(GRADS * 1e-30, LABELS)
    meta = coreset.metadata
    assert len(coreset) == 0                       # every class's weights were zeroed
    assert meta["stop_reasons"] == {0: "zero_weights", 1: "zero_weights", 2: "zero_weights"}
    assert meta["zero_weights"] == meta["zero_weight_dropped"] == {0: 2, 1: 2, 2: 2}
    # lam = 0 is scale-invariant: the same picks at every scale
    reference = GradMatch(0.1, lam=0.0).select(GRADS, LABELS)
    tiny = GradMatch(0.1, lam=0.0).select(GRADS * 1e-30, LABELS)
    np.testing.assert_array_equal(tiny.indices, reference.indices)
    np.testing.assert_allclose(tiny.weights, reference.weights, rtol=1e-4)
    # with the fill, the zeroed classes are recorded and filled to their budgets
    filled = GradMatch(0.1, fill=True).select(GRADS * 1e-30, LABELS)
    assert filled.metadata["zero_weights"] == {0: 2, 1: 2, 2: 2}
    assert filled.metadata["filled"] == {0: 2, 1: 2, 2: 2}
    assert len(filled) == filled.metadata["requested"] == 6


def test_cli_select_refuses_an_empty_coreset(tmp_path):
    np.save(tmp_path / "X.npy", GRADS * 1e-30)
    np.save(tmp_path / "y.npy", LABELS)
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "select", "--vectors",
                             "X.npy", "--labels", "y.npy", "--fraction", "0.1", "--method",
                             "gradmatch", "--out", "c.npz"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "selected no example of 60 (every OMP weight was zero" \
        in lines[0], lines
    assert not (tmp_path / "c.npz").exists()


# -- AdaCore with eps = 0 and a zero curvature entry: every optimizer refuses alike --

@pytest.mark.parametrize("average", ["geometric", "rms", "mean"])
def test_adacore_eps_zero_on_a_zero_curvature_entry_is_refused_by_every_optimizer(average):
    diag = np.abs(GRADS) + 0.1
    diag[3, 1] = 0.0
    for optimizer in ("lazy", "naive", "stochastic"):
        strategy = AdaCore(0.2, eps=0.0, optimizer=optimizer, average=average)
        with pytest.raises(InputError, match="hessian_diag: .*1 curvature entries are zero "
                                             "and eps = 0"):
            strategy.select(GRADS, LABELS, hessian_diag=diag)
        assert strategy.smoother.second_moment is None       # the state is untouched
    # without the zero, eps = 0 works and lazy equals naive
    diag[3, 1] = 0.5
    lazy = AdaCore(0.2, eps=0.0, optimizer="lazy").select(GRADS, LABELS, hessian_diag=diag)
    naive = AdaCore(0.2, eps=0.0, optimizer="naive").select(GRADS, LABELS, hessian_diag=diag)
    np.testing.assert_array_equal(lazy.indices, naive.indices)
    assert np.isfinite(lazy.metadata["preconditioned_gradient_error"])
