"""InfoBatch: unbiased pruning by loss (against the full-data gradient), its annealing, the
loader's scores and their resume, and the refusals."""

import io
import itertools
import json
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from adacore import Coreset, InfoBatch, get_strategy
from adacore.cli import main
from adacore.experiments.runner import compare
from adacore.models import MLP
from adacore.training import CoresetLoader, CoresetSampler, TrainConfig, Trainer
from adacore.validation import InputError


def linear_problem(n=12, d=4, classes=3, seed=0):
    """Per-example losses and gradients of a linear softmax model, by autograd one
    example at a time (the reference the weighted estimates are checked against)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    y = torch.arange(n) % classes
    weight = torch.randn(classes, d, generator=g, requires_grad=True)
    losses, grads = [], []
    for i in range(n):
        loss = F.cross_entropy(x[i:i + 1] @ weight.T, y[i:i + 1])
        (grad,) = torch.autograd.grad(loss, weight)
        losses.append(float(loss.detach()))
        grads.append(grad.reshape(-1).double().numpy())
    return np.array(losses), np.stack(grads), y.numpy()


def step_gradient(coreset: Coreset, grads: np.ndarray) -> np.ndarray:
    """An epoch's summed update over the kept set, per example of the full data:
    sum over the kept examples of w g (w as the loader yields it, unrescaled) / n; a
    full-data epoch's is the mean gradient."""
    return (coreset.weights[:, None] * grads[coreset.indices]).sum(axis=0) / grads.shape[0]


def test_expected_weighted_gradient_is_the_full_data_gradient():
    losses, grads, labels = linear_problem()
    scores = losses.copy()
    scores[[2, 7]] = np.inf                        # never trained on: never pruned
    full = grads.mean(axis=0)
    low = np.flatnonzero(np.isfinite(scores) & (scores < scores[np.isfinite(scores)].mean()))
    pruned = math.floor(0.5 * low.shape[0])
    assert pruned >= 2                             # a real draw among several subsets

    coreset = InfoBatch(prune_ratio=0.5, epochs=8).select(None, labels, losses=scores)
    assert len(coreset) == labels.shape[0] - pruned
    assert coreset.weights.sum() == pytest.approx(labels.shape[0], rel=1e-12)

    # exactly: the average over every subset the draw can prune, each equally likely,
    # with the paper's weights (kept below-mean ones 1 / keep probability)
    keep_weight = low.shape[0] / (low.shape[0] - pruned)
    estimates = []
    for dropped in itertools.combinations(low.tolist(), pruned):
        kept = np.setdiff1d(np.arange(labels.shape[0]), dropped)
        weights = np.where(np.isin(kept, low), keep_weight, 1.0)
        estimates.append(step_gradient(Coreset(kept, weights, np.zeros(kept.shape[0])), grads))
    np.testing.assert_allclose(np.mean(estimates, axis=0), full, rtol=1e-10, atol=1e-12)
    # the strategy's weights are those
    np.testing.assert_allclose(coreset.weights, np.where(np.isin(coreset.indices, low),
                                                         keep_weight, 1.0))

    # and over the strategy's own draws (many seeds), within five standard errors
    draws = np.stack([step_gradient(InfoBatch(prune_ratio=0.5, epochs=8, seed=seed).select(
        None, labels, losses=scores), grads) for seed in range(3000)])
    error = np.abs(draws.mean(axis=0) - full)
    assert np.all(error <= 5 * draws.std(axis=0) / math.sqrt(3000) + 1e-12)
    # without the reweighting the same draws are biased (the test can fail)
    biased = np.stack([grads[np.setdiff1d(np.arange(12), d)].mean(axis=0)
                       for d in itertools.combinations(low.tolist(), pruned)]).mean(axis=0)
    assert np.abs(biased - full).max() > 20 * error.max()


def test_only_below_mean_examples_are_pruned_in_share_prune_ratio():
    rng = np.random.default_rng(0)
    n = 60
    scores = rng.exponential(size=n)
    scores[:5] = np.inf
    labels = np.arange(n) % 4
    mean = scores[5:].mean()
    low = set(np.flatnonzero(scores < mean).tolist())
    counts = np.zeros(n)
    for ratio in (0.0, 0.3, 0.5, 0.9):
        coreset = InfoBatch(prune_ratio=ratio, epochs=8, seed=1).select(None, labels,
                                                                        losses=scores)
        dropped = set(range(n)) - set(coreset.indices.tolist())
        assert dropped <= low and len(dropped) == math.floor(ratio * len(low))
        assert coreset.metadata["kept_fraction"] == pytest.approx(1 - len(dropped) / n)
        assert coreset.metadata["below_mean"] == len(low) and coreset.metadata["unseen"] == 5
        assert coreset.budgets == Counter(labels[coreset.indices].tolist())
    # the draw is uniform over the below-mean examples: each pruned 30% of the time
    strategy = InfoBatch(prune_ratio=0.3, epochs=10 ** 6, seed=5)
    for _ in range(2000):
        kept = strategy.select(None, labels, losses=scores).indices
        counts[np.setdiff1d(np.arange(n), kept)] += 1
    share = math.floor(0.3 * len(low)) / len(low)
    rates = counts[sorted(low)] / 2000
    assert np.all(np.abs(rates - share) < 5 * math.sqrt(share * (1 - share) / 2000))
    assert counts[sorted(set(range(n)) - low)].sum() == 0


def test_no_pruning_in_the_first_epoch_and_the_last_eighth():
    for epochs, full_rounds in ((8, {8}), (16, {15, 16}), (10, {9, 10}), (40, set(range(36, 41)))):
        strategy = InfoBatch(epochs=epochs)
        assert {t for t in range(1, epochs + 1) if not strategy.prunes(t)} == full_rounds
        # every epoch that reaches into the last 12.5% of training is a full one
        assert {t for t in range(1, epochs + 1) if t > 0.875 * epochs} <= full_rounds
    assert all(InfoBatch(delta=1.0).prunes(t) for t in (1, 10, 1000))

    # through the loader: epoch 1 has no scores yet, epoch 8 of 8 anneals
    x = torch.randn(90, 5, generator=torch.Generator().manual_seed(0))
    y = torch.arange(90) % 3
    model = MLP(in_features=5, hidden=(8,), num_classes=3)
    loader = CoresetLoader(x, y, get_strategy("infobatch", fraction=0.1, epochs=8),
                           batch_size=16, select_every=4)
    kept, weights, kept_weights = [], [], []
    for _ in range(8):
        seen, epoch_weights = 0, []
        for xb, yb, wb in loader.epoch(model):
            loader.record_losses(F.cross_entropy(model(xb), yb, reduction="none"))
            seen += xb.shape[0]
            epoch_weights.append(wb)
        kept.append(seen)
        weights.append(torch.cat(epoch_weights))
        kept_weights.append(loader.coreset_.metadata["kept_weight"])
    assert kept[0] == kept[7] == 90 and all(k < 90 for k in kept[1:7])
    assert torch.all(weights[0] == 1) and torch.all(weights[7] == 1)
    assert loader.strategy.round_ == 8                # every epoch, whatever select_every
    # the weights yielded are the strategy's own, not rescaled to mean 1 (InfoBatch's
    # loss rescaling, as in the paper): 1 and m / (m - p), summing to n
    coreset = loader.coreset_
    for k, w, up in zip(kept[1:7], weights[1:7], kept_weights[1:7]):
        assert 1.8 < up <= 2.0                                  # m / (m - floor(m / 2))
        assert float(w.sum()) == pytest.approx(90.0, rel=1e-6)
        assert float(w.max()) == pytest.approx(up, rel=1e-6)
        assert float(w.min()) == pytest.approx(1.0, rel=1e-6)
    assert coreset.metadata["pruning"] is False and coreset.metadata["kept_fraction"] == 1.0


def test_scores_are_the_latest_losses_and_survive_a_state_round_trip():
    x = torch.randn(50, 5, generator=torch.Generator().manual_seed(1))
    y = torch.arange(50) % 2
    model = MLP(in_features=5, hidden=(6,), num_classes=2)

    def build():
        return CoresetLoader(x, y, get_strategy("infobatch", fraction=0.5, epochs=6, seed=3),
                             batch_size=8, seed=4)

    def run_epoch(loader):
        out = []
        for xb, yb, wb in loader.epoch(model):
            with torch.no_grad():
                losses = F.cross_entropy(model(xb), yb, reduction="none")
            loader.record_losses(losses)
            out.append((xb, wb))
        return out

    a = build()
    for _ in range(2):
        run_epoch(a)
    # every example trained on so far holds its latest loss
    with torch.no_grad():
        expected = F.cross_entropy(model(x), y, reduction="none")
    trained = torch.isfinite(a.scores_)
    assert trained.all()                                # epoch 1 trained on all
    kept = torch.from_numpy(a.coreset_.indices)
    torch.testing.assert_close(a.scores_[kept], expected[kept], rtol=1e-5, atol=1e-6)
    # through torch.save and a weights-only load, as a run's checkpoint
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)
    buffer.seek(0)
    b = build()
    b.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(a.scores_, b.scores_)
    for _ in range(3):
        for (xa, wa), (xb, wb) in zip(run_epoch(a), run_epoch(b)):
            assert torch.equal(xa, xb) and torch.equal(wa, wb)
    with pytest.raises(InputError, match="scores"):
        build().load_state_dict({**a.state_dict(), "scores": None})


def test_record_losses_checks_its_input_and_is_a_no_op_for_other_methods():
    x, y = torch.randn(20, 3), torch.arange(20) % 2
    model = MLP(in_features=3, hidden=(4,), num_classes=2)
    loader = CoresetLoader(x, y, get_strategy("infobatch", epochs=4), batch_size=5)
    with pytest.raises(InputError, match="no batch"):
        loader.record_losses(torch.zeros(5))
    xb, yb, _ = next(iter(loader.epoch(model)))
    with pytest.raises(InputError, match=r"losses: got shape \(\), expected \(5,\)"):
        loader.record_losses(F.cross_entropy(model(xb), yb))     # the mean, not per example
    other = CoresetLoader(x, y, get_strategy("random", fraction=0.5), batch_size=5)
    other.record_losses(torch.zeros(3))                          # nothing to keep
    assert other.scores_ is None and "scores" in other.state_dict()


def test_adacore_run_with_a_kill_and_resume_equals_the_unbroken_run(tmp_path):
    flags = ["run", "--dataset", "digits", "--model", "mlp", "--method", "infobatch",
             "--epochs", "6", "--batch-size", "64", "--device", "cpu", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ADACORE_FAULT", None)
    broken = tmp_path / "broken"
    # SIGKILL at the 40th optimizer step: in epoch 3 (21 steps in epoch 1, fewer after)
    killed = subprocess.run([sys.executable, "-m", "adacore.cli", *flags, "--out", str(broken)],
                            env={**env, "ADACORE_FAULT": "train_step:40"},
                            capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert 1 <= len(metric_rows(broken)) < 6
    # the unbroken run and the resume in this process, on one thread as the killed one
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*flags, "--out", str(tmp_path / "unbroken")]) == 0
        assert main([*flags, "--out", str(broken), "--resume"]) == 0
    finally:
        torch.set_num_threads(threads)
    keys = ("epoch", "train_loss", "val_accuracy", "val_loss", "test_accuracy",
            "kept_fraction", "coreset_size", "examples_processed", "fraction_visited")
    unbroken = metric_rows(tmp_path / "unbroken")
    assert [{k: r[k] for k in keys} for r in metric_rows(broken)] == [
        {k: r[k] for k in keys} for r in unbroken]
    kept = [row["kept_fraction"] for row in unbroken]
    assert kept[0] == kept[-1] == 1.0 and all(k < 0.9 for k in kept[1:-1])
    assert unbroken[1]["coreset_size"] < unbroken[0]["coreset_size"]


def metric_rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_compare_runs_infobatch_beside_the_others(tmp_path):
    settings = dict(dataset="digits", model="mlp", fraction=0.1, epochs=3, batch_size=64,
                    device="cpu", warm_start_epochs=1)
    paths = compare(settings, ["infobatch", "random"], [0], tmp_path, quiet=True)
    results = json.loads(Path(paths["results_json"]).read_text())
    assert {run["method"] for run in results["runs"]} == {"infobatch", "random"}
    assert "| infobatch |" in Path(paths["results_md"]).read_text()
    run = next(r for r in results["runs"] if r["method"] == "infobatch")
    # epoch 1 is the warm start, whose losses are the scores of round 1 (epoch 2), which
    # prunes; round 2 of 2 reaches into the last 12.5% and takes the full data
    kept = [row["kept_fraction"] for row in run["history"]]
    assert kept[0] is None and kept[1] < 0.9 and kept[2] == 1.0


@pytest.mark.parametrize("options, match", [
    ({"prune_ratio": 1.0}, "prune_ratio"), ({"prune_ratio": -0.1}, "prune_ratio"),
    ({"prune_ratio": float("nan")}, "prune_ratio"), ({"prune_ratio": "0.5"}, "prune_ratio"),
    ({"delta": 0.0}, "delta"), ({"delta": 1.5}, "delta"), ({"delta": float("inf")}, "delta"),
    ({"epochs": 0}, "epochs"), ({"epochs": 2.5}, "epochs"),
])
def test_bad_options_are_input_errors_naming_the_option(options, match):
    with pytest.raises(InputError, match=match):
        InfoBatch(**{"epochs": 8, **options})
    with pytest.raises(InputError, match=match):
        TrainConfig(method="infobatch", strategy_options=options).validate()


def test_refusals_name_the_way_out(tmp_path, monkeypatch, capsys):
    with pytest.raises(InputError, match="epochs: .*pass epochs="):
        InfoBatch()
    labels = np.arange(6) % 2
    strategy = InfoBatch(epochs=4)
    with pytest.raises(InputError, match="losses: .*record_losses"):
        strategy.select(None, labels)
    with pytest.raises(InputError, match=r"losses: got shape \(5,\), expected \(6,\)"):
        strategy.select(None, labels, losses=np.ones(5))
    with pytest.raises(InputError, match="losses: row 1 is nan"):
        strategy.select(None, labels, losses=[1.0, np.nan, 1, 1, 1, 1])
    # the sampler's DataLoader hands no losses back
    data = [(torch.randn(3), i % 2) for i in range(10)]
    with pytest.raises(InputError, match="CoresetLoader"):
        CoresetSampler(data, strategy)
    # a file of vectors has no training losses
    np.save(tmp_path / "X.npy", np.ones((6, 2), dtype=np.float32))
    np.save(tmp_path / "y.npy", labels)
    code = main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--fraction", "0.5", "--method", "infobatch", "--out",
                 str(tmp_path / "c.npz")])
    assert code == 2 and "adacore run --method infobatch" in capsys.readouterr().err
    # under torch.distributed each rank would see its share of the losses only
    monkeypatch.setattr("adacore.training.loader.is_distributed", lambda: True)
    with pytest.raises(InputError, match="distributed: .*one process"):
        CoresetLoader(torch.randn(6, 2), torch.from_numpy(labels), strategy)
    # TrainConfig hands the strategy its epochs after the warm start
    config = TrainConfig(method="infobatch", epochs=40, warm_start_epochs=4)
    assert config.strategy().epochs == 36
