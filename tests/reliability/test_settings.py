"""Resuming with settings and checkpoints that do not fit (issue 14): one InputError that
names the file or the settings, before the metrics log is touched."""

import dataclasses
import pytest
import torch

from adacore.training import TrainConfig, Trainer
from adacore.training.checkpoint import load_checkpoint, save_checkpoint
from adacore.training.trainer import same_settings, settings_differences
from adacore.validation import InputError

TINY = dict(dataset="digits", model="mlp", method="random", fraction=0.1, epochs=2,
            select_every=1, batch_size=32, lr=0.1)


def test_nan_equals_nan_in_stored_settings():
    # two NaN objects, as after a checkpoint's round trip (a NaN is equal to itself only
    # as the same object)
    config = TrainConfig(method="gradmatch", strategy_options={"tol": float("nan")})
    stored = dataclasses.asdict(TrainConfig(method="gradmatch",
                                            strategy_options={"tol": float("nan")}))
    assert same_settings(stored, config)
    other = TrainConfig(method="gradmatch", strategy_options={"tol": 0.5})
    assert not same_settings(stored, other)
    assert settings_differences(stored, other) == [
        "strategy_options: stored {'tol': nan}, given {'tol': 0.5}"]


def test_differences_are_listed_in_field_order():
    stored = dataclasses.asdict(TrainConfig(lr=0.1, epochs=5, seed=1, momentum=0.5))
    lines = settings_differences(stored, TrainConfig(lr=0.05, epochs=6, seed=2, momentum=0))
    assert lines == ["epochs: stored 5, given 6", "seed: stored 1, given 2",
                     "lr: stored 0.1, given 0.05", "momentum: stored 0.5, given 0"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(**TINY), folder, quiet=True).run()
    return folder


def copy_run(source, target, change=None):
    target.mkdir(parents=True, exist_ok=True)
    (target / "metrics.jsonl").write_bytes((source / "metrics.jsonl").read_bytes())
    state = load_checkpoint(source / "checkpoint.pt")
    if change is not None:
        state = change(state)
    save_checkpoint(state, target / "checkpoint.pt")
    return target


def test_a_refused_resume_says_which_settings_differ(finished_run, tmp_path):
    folder = copy_run(finished_run, tmp_path / "run")
    config = TrainConfig(**{**TINY, "lr": 0.05, "seed": 3, "batch_size": 16, "momentum": 0.5})
    with pytest.raises(InputError) as caught:
        Trainer(config, folder, quiet=True).run(resume=True)
    message = str(caught.value)
    assert "seed: stored 0, given 3" in message and "lr: stored 0.1, given 0.05" in message
    assert "batch_size: stored 32, given 16" in message and "and 1 more" in message
    assert "momentum" not in message                   # only the first three


def with_epoch(epoch):
    def change(state):
        state["loader"]["epoch"] = epoch
        return state
    return change


def without(key):
    def change(state):
        del state[key]
        return state
    return change


def replaced(key, value):
    def change(state):
        state[key] = value
        return state
    return change


@pytest.mark.parametrize("change, match", [
    (with_epoch(-5), "claims epoch -5, expected an int >= 0"),
    (with_epoch(3), "claims epoch 3, expected an int in \\[0, 2\\]"),
    (with_epoch("2"), "claims epoch '2'"),
    (with_epoch(1.0), "claims epoch 1.0"),
    (without("config"), "lacks 'config'"),
    (without("loader"), "lacks 'loader'"),
    (without("model"), "lacks 'model'"),
    (without("optimizer"), "lacks 'optimizer'"),
    (without("augment_rng"), "lacks 'augment_rng'"),
    (replaced("config", [1, 2]), "holds a list as 'config', expected a dict"),
    (replaced("torch_rng", 5), "'torch_rng'"),
    (replaced("totals", {"examples": "many"}), "totals"),
])
def test_a_damaged_checkpoint_is_refused_and_the_metrics_kept(finished_run, tmp_path, change,
                                                              match):
    folder = copy_run(finished_run, tmp_path / "run", change)
    metrics = (folder / "metrics.jsonl").read_bytes()
    with pytest.raises(InputError, match=match) as caught:
        Trainer(TrainConfig(**TINY), folder, quiet=True).run(resume=True)
    assert str(folder / "checkpoint.pt") in str(caught.value)
    assert (folder / "metrics.jsonl").read_bytes() == metrics


def test_an_intact_checkpoint_still_resumes(finished_run, tmp_path):
    def back_one(state):
        state["loader"]["epoch"] = 2
        return state
    folder = copy_run(finished_run, tmp_path / "run", back_one)
    record = Trainer(TrainConfig(**TINY), folder, quiet=True).run(resume=True)
    assert [row["epoch"] for row in record["history"]] == [1, 2]
    assert isinstance(load_checkpoint(folder / "checkpoint.pt")["torch_rng"], torch.Tensor)
