"""Training on torch.distributed: the per-rank sampler, and a 2-process torchrun run
(killed, refused, resumed) against the single-process run of the same settings."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from adacore.distributed.ddp import DistributedCoresetSampler, shard_bounds, weighted_loss
from adacore.training import CoresetLoader, TrainConfig, Trainer
from adacore.training.checkpoint import load_checkpoint
from adacore.validation import InputError

# settings of the end-to-end run. probe and eval batches small enough that both ranks
# get blocks (1,294 training rows = 6 probe blocks, 3 + 3); 129 coreset examples in
# batches of 32 end on a batch of 1, so rank 1 steps once on a zero-weight share
# eps 1e-2: with each round's own curvature, eps 1e-4 divides some gradients by 1e-4,
# which turns the 1e-8 float-order differences between the one- and two-process models
# into different picks among near-ties at the second round
SETTINGS = dict(dataset="digits", model="mlp", method="adacore", fraction=0.1, epochs=4,
                select_every=2, batch_size=32, probe_batch_size=256, eval_batch_size=64,
                device="cpu", seed=0, eps=1e-2)

# Float sums are added in another order under DDP (the gradient all-reduce adds two
# partial sums, the loss total too). Measured on this run: losses agree to 8e-8
# relative, the gradient error (a ratio of norms of sums) to 6.3e-7; we allow 1e-5.
# Accuracies (counts of examples) and the selected indices and weights must be equal.
RELATIVE_TOLERANCE = 1e-5


def reference_order(indices, weights, batch_size, seed):
    """The single-process loader's batches, as it drew them before DDP existed."""
    order = torch.randperm(indices.shape[0], generator=torch.Generator().manual_seed(seed))
    return [(indices[order[start:start + batch_size]], weights[order[start:start + batch_size]])
            for start in range(0, indices.shape[0], batch_size)]


@pytest.mark.parametrize("k, batch_size, world", [(129, 32, 2), (50, 7, 3), (10, 4, 8),
                                                  (64, 64, 4), (1, 5, 2)])
def test_sampler_splits_every_global_batch_exactly_across_ranks(k, batch_size, world):
    indices = torch.randperm(1000, generator=torch.Generator().manual_seed(1))[:k]
    weights = torch.rand(k, generator=torch.Generator().manual_seed(2)) + 0.5
    reference = reference_order(indices, weights, batch_size, seed=3)
    passes = [list(DistributedCoresetSampler(
        indices, weights, batch_size=batch_size, generator=torch.Generator().manual_seed(3),
        rank=r, world_size=world).global_batches()) for r in range(world)]
    assert all(len(batches) == len(reference) for batches in passes)
    for step, (rows, batch_weights) in enumerate(reference):
        shares = [batches[step] for batches in passes]
        real = [share for share in shares if not share.padded]
        # the non-empty shares, in rank order, are the global batch: nothing lost or twice
        assert torch.equal(torch.cat([s.share_rows for s in real]), rows)
        assert torch.equal(torch.cat([s.share_weights for s in real]), batch_weights)
        sizes = [s.share_rows.shape[0] for s in real]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == rows.shape[0]
        assert len(real) == min(world, rows.shape[0])
        for share in shares:            # every rank has the whole batch, to augment
            assert torch.equal(share.rows, rows)
            if share.padded:            # a rank left empty steps on weight 0
                assert share.share_rows.shape[0] == 1 and torch.all(share.share_weights == 0)
    # iterating yields the rank's (rows, weights)
    generator = torch.Generator().manual_seed(3)
    first = next(iter(DistributedCoresetSampler(indices, weights, batch_size=batch_size,
                                                generator=generator, rank=0,
                                                world_size=world)))
    assert torch.equal(first[0], passes[0][0].share_rows)


def test_sampler_and_shards_refuse_bad_places():
    indices, weights = torch.arange(4), torch.ones(4)
    with pytest.raises(InputError, match="rank"):
        DistributedCoresetSampler(indices, weights, batch_size=2,
                                  generator=torch.Generator(), rank=2, world_size=2)
    with pytest.raises(InputError, match="weights"):
        DistributedCoresetSampler(indices, torch.ones(3), batch_size=2,
                                  generator=torch.Generator(), rank=0, world_size=1)
    with pytest.raises(InputError, match="rank"):
        shard_bounds(10, 3, 3, 3)


@pytest.mark.parametrize("n, block, world", [(1294, 256, 2), (10, 3, 4), (7, 10, 3),
                                             (4096, 4096, 2), (0, 5, 2)])
def test_shards_are_whole_blocks_in_order(n, block, world):
    bounds = [shard_bounds(n, block, r, world) for r in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    for (_, stop), (start, _) in zip(bounds, bounds[1:]):
        assert stop == start                       # contiguous, nothing twice
    blocks = [-(-(stop - start) // block) for start, stop in bounds]
    assert max(blocks) - min(blocks) <= 1         # balanced, counted in blocks
    for start, stop in bounds:                    # a share starts on a block boundary
        assert start % block == 0 or start == n


def test_weighted_loss_in_one_process_is_the_batch_mean():
    losses, weights = torch.tensor([1.0, 2.0, 4.0]), torch.tensor([0.5, 1.0, 2.5])
    loss, batch_loss, count = weighted_loss(losses, weights)
    # mean(w l) over the 3 examples, not sum(w l) / sum(w) = 12.5 / 4
    assert float(loss) == pytest.approx((0.5 + 2 + 10) / 3) == float(batch_loss)
    assert float(count) == 3.0


def torchrun(*flags, env=None):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node", "2", "-m", "adacore.cli", "run", *flags]
    return subprocess.run(command, capture_output=True, text=True, timeout=240,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def cli_flags(settings):
    flags = []
    for key, value in settings.items():
        flags += ["--" + key.replace("_", "-"), str(value)]
    return [*flags, "--quiet"]


def rows_of(folder):
    lines = (Path(folder) / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def assert_rows_match(got, expected):
    assert [row["epoch"] for row in got] == [row["epoch"] for row in expected]
    for mine, theirs in zip(got, expected):
        for key in ("val_accuracy", "test_accuracy", "coreset_size", "examples_processed",
                    "fraction_visited"):
            assert mine[key] == theirs[key], (mine["epoch"], key)
        for key in ("train_loss", "val_loss", "test_loss", "gradient_error"):
            if theirs[key] is None:
                assert mine[key] is None
            else:
                assert mine[key] == pytest.approx(theirs[key], rel=RELATIVE_TOLERANCE), \
                    (mine["epoch"], key)


def test_two_process_run_equals_the_single_process_run_and_resumes(tmp_path, monkeypatch):
    # the single-process reference, in this process, one thread as in each rank
    rounds = []
    real_select = CoresetLoader.select

    def recording_select(self, model):
        coreset = real_select(self, model)
        rounds.append((coreset.indices.copy(), coreset.weights.copy()))
        return coreset

    monkeypatch.setattr(CoresetLoader, "select", recording_select)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(TrainConfig(**SETTINGS), tmp_path / "single", quiet=True).run()
    finally:
        torch.set_num_threads(threads)
    expected = rows_of(tmp_path / "single")
    assert len(rounds) == 2 and len(rounds[0][0]) % SETTINGS["batch_size"] == 1

    # two ranks, killed (SIGKILL at the fault point, both ranks) in epoch 3
    out = tmp_path / "ddp"
    flags = [*cli_flags(SETTINGS), "--out", str(out)]
    steps_per_epoch = -(-len(rounds[0][0]) // SETTINGS["batch_size"])
    killed = torchrun(*flags, env={"ADACORE_FAULT": f"train_step:{2 * steps_per_epoch + 2}"})
    assert killed.returncode != 0 and "Signal 9 (SIGKILL)" in killed.stderr
    assert len(rows_of(out)) == 2
    state = load_checkpoint(out / "checkpoint.pt")
    assert state["loader"]["epoch"] == 2
    # round 1, selected from vectors probed by both ranks, is the single-process coreset
    np.testing.assert_array_equal(state["loader"]["coreset"]["indices"].numpy(), rounds[0][0])
    np.testing.assert_array_equal(state["loader"]["coreset"]["weights"].numpy(), rounds[0][1])

    # the same checkpoint resumed in one process: the reference for epochs 3 and 4. The
    # run from scratch is not: its model differs from the two ranks' by float order
    # (1e-8), and the second round, on AdaCore's preconditioned vectors, can then take
    # another among near-tied points (one of 129 on one machine); from one checkpoint
    # both select on the same model
    single_resumed = tmp_path / "single_resumed"
    shutil.copytree(out, single_resumed)
    torch.set_num_threads(1)
    try:
        Trainer(TrainConfig(**SETTINGS), single_resumed, quiet=True).run(resume=True)
    finally:
        torch.set_num_threads(threads)
    assert len(rounds) == 3

    # a second launch without --resume is refused on both ranks, and does not hang
    refused = torchrun(*flags)
    assert refused.returncode != 0
    assert (refused.stdout + refused.stderr).count("already holds a run") == 2

    resumed = torchrun(*flags, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_rows_match(rows_of(out)[:2], expected[:2])
    assert_rows_match(rows_of(out), rows_of(single_resumed))
    for mine, theirs in zip(rows_of(out)[2:], expected[2:]):     # counts, whatever the picks
        for key in ("coreset_size", "examples_processed"):
            assert mine[key] == theirs[key], (mine["epoch"], key)
    final = load_checkpoint(out / "checkpoint.pt")
    np.testing.assert_array_equal(final["loader"]["coreset"]["indices"].numpy(), rounds[2][0])
    np.testing.assert_array_equal(final["loader"]["coreset"]["weights"].numpy(), rounds[2][1])
    # against the run from scratch, the second round is the same up to near-ties
    shared = np.intersect1d(final["loader"]["coreset"]["indices"].numpy(), rounds[1][0]).size
    assert shared >= 0.95 * len(rounds[1][0])
    # the checkpoint is a single-process one: plain parameter names, the same config
    reference = load_checkpoint(tmp_path / "single" / "checkpoint.pt")
    assert list(final["model"]) == list(reference["model"])
    assert final["config"] == reference["config"]
    record = json.loads((out / "run.json").read_text())
    assert record["best_val_epoch"] == json.loads(
        (single_resumed / "run.json").read_text())["best_val_epoch"]
    # nothing but the run's own files (rank 1 writes none)
    assert sorted(p.name for p in out.iterdir()) == [".lock", "checkpoint.pt", "metrics.jsonl",
                                                     "run.json"]
