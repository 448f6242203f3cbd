"""The drop-in loader, the trainer's log and checkpoints, resume after SIGKILL, the CLI."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from adacore import get_strategy
from adacore.data import load_dataset
from adacore.experiments.runner import compare, read_scenario
from adacore.models import MLP
from adacore.training import CoresetLoader, NonFiniteLoss, TrainConfig, Trainer
from adacore.validation import InputError

DIGITS = dict(dataset="digits", model="mlp", fraction=0.1, epochs=6, select_every=2,
              batch_size=32, lr=0.1)


def small_data(n=120, d=5, classes=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.arange(n) % classes


def test_loader_batches_cover_the_coreset_and_reselect_on_schedule():
    x, y = small_data()
    strategy = get_strategy("craig", fraction=0.1)
    loader = CoresetLoader(x, y, strategy, batch_size=5, select_every=3, warm_start_epochs=1)
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    rounds, selected = [], set()
    for epoch in range(1, 9):
        batches = list(loader.epoch(model))
        if loader.coreset_ is not None:
            selected |= set(loader.coreset_.indices.tolist())
        seen_x = torch.cat([b[0] for b in batches])
        weights = torch.cat([b[2] for b in batches])
        if epoch == 1:   # warm start: every example once, weight 1
            assert seen_x.shape[0] == 120 and torch.all(weights == 1)
        else:
            assert seen_x.shape[0] == 12 and len(loader.coreset_) == 12
            assert weights.mean().item() == pytest.approx(1.0)
            picked = x[torch.from_numpy(loader.coreset_.indices)]
            # exactly the coreset's rows, each once
            assert sorted(map(tuple, seen_x.tolist())) == sorted(map(tuple, picked.tolist()))
        rounds.append(strategy.round_)
    # selections at epochs 2, 5, 8 (every 3 after the warm start)
    assert rounds == [0, 1, 1, 1, 2, 2, 2, 3]
    # visited: distinct examples ever selected; the warm start is counted apart
    assert loader.fraction_visited == pytest.approx(len(selected) / 120)
    assert loader.fraction_visited < 1 and loader.warm_start_examples_ == 120


def test_loader_state_round_trip_continues_identically():
    x, y = small_data()
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    a = CoresetLoader(x, y, get_strategy("random", fraction=0.2, seed=1), batch_size=7, seed=3)
    for _ in range(2):
        list(a.epoch(model))
    b = CoresetLoader(x, y, get_strategy("random", fraction=0.2, seed=1), batch_size=7, seed=3)
    b.load_state_dict(a.state_dict())
    for _ in range(3):
        for (xa, ya, wa), (xb, yb, wb) in zip(a.epoch(model), b.epoch(model)):
            assert torch.equal(xa, xb) and torch.equal(wa, wb)


def test_trainer_logs_every_epoch_and_picks_by_validation(tmp_path):
    config = TrainConfig(method="adacore", **DIGITS)
    record = Trainer(config, tmp_path, quiet=True).run()
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == list(range(1, 7))
    for key in ("train_loss", "val_accuracy", "test_accuracy", "select_seconds",
                "train_seconds", "eval_seconds", "fraction_visited", "gradient_error",
                "examples_processed", "wall_seconds"):
        assert key in rows[0]
    # selection epochs carry a gradient error, the others none
    assert [row["gradient_error"] is not None for row in rows] == [True, False] * 3
    assert rows[-1]["examples_processed"] == 6 * rows[0]["coreset_size"]
    best = max(rows, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    assert record["best_val_epoch"] == best["epoch"]
    assert record["test_accuracy_at_best_val"] == best["test_accuracy"]
    assert (tmp_path / "checkpoint.pt").exists() and (tmp_path / "run.json").exists()
    with pytest.raises(InputError, match="already holds a run"):
        Trainer(config, tmp_path, quiet=True).run()


def test_resume_rejects_other_settings(tmp_path):
    Trainer(TrainConfig(method="random", **{**DIGITS, "epochs": 2}), tmp_path, quiet=True).run()
    with pytest.raises(InputError, match="other settings"):
        Trainer(TrainConfig(method="craig", **{**DIGITS, "epochs": 2}), tmp_path,
                quiet=True).run(resume=True)


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(tmp_path, monkeypatch):
    import types

    from adacore.training import trainer as trainer_module
    from adacore.training.checkpoint import load_checkpoint

    real = torch.nn.functional
    calls = {"training": 0}

    def poisoned_cross_entropy(logits, labels, reduction="mean"):
        losses = real.cross_entropy(logits, labels, reduction=reduction)
        if reduction == "none":
            calls["training"] += 1
            if calls["training"] > 12:   # past epoch 2: 5 batches of 30 an epoch here
                return losses * float("nan")
        return losses

    monkeypatch.setattr(trainer_module, "F", types.SimpleNamespace(
        cross_entropy=poisoned_cross_entropy))
    config = TrainConfig(method="random", **{**DIGITS, "select_every": 1, "batch_size": 30})
    with pytest.raises(NonFiniteLoss, match="epoch 3.*lower --lr"):
        Trainer(config, tmp_path, quiet=True).run()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["loader"]["epoch"] == 2
    assert len(metric_rows(tmp_path)) == 2


def cli(*args, cwd=None, **kwargs):
    return subprocess.run([sys.executable, "-m", "adacore.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300, **kwargs)


RUN_FLAGS = ["run", "--dataset", "digits", "--method", "adacore", "--fraction", "0.1",
             "--epochs", "14", "--select-every", "3", "--batch-size", "16", "--quiet"]


def metric_rows(folder):
    path = Path(folder) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def comparable(rows):
    keys = ("epoch", "train_loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss",
            "fraction_visited", "gradient_error", "examples_processed", "coreset_size")
    return [{key: row[key] for key in keys} for row in rows]


def test_sigkill_then_resume_ends_like_an_unbroken_run(tmp_path):
    unbroken = tmp_path / "unbroken"
    assert cli(*RUN_FLAGS, "--out", str(unbroken)).returncode == 0
    broken = tmp_path / "broken"
    for kills in range(2):
        process = subprocess.Popen([sys.executable, "-m", "adacore.cli", *RUN_FLAGS, "--out",
                                    str(broken), *(["--resume"] if kills else [])],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while len(metric_rows(broken)) < 4 + 4 * kills and time.time() < deadline:
            time.sleep(0.02)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
    assert len(metric_rows(broken)) < 14   # it really was interrupted
    result = cli(*RUN_FLAGS, "--out", str(broken), "--resume")
    assert result.returncode == 0, result.stderr
    assert comparable(metric_rows(broken)) == comparable(metric_rows(unbroken))


def test_cli_run_bad_input_is_one_line_exit_2(tmp_path):
    for flags, message in [(["--fraction", "0"], "fraction"),
                           (["--dataset", "imagenet"], "name"),
                           (["--model", "vgg"], "name"),
                           (["--schedule", "linear"], "schedule"),
                           (["--space", "weights"], "space")]:
        result = cli("run", "--dataset", "digits", "--epochs", "1", "--quiet",
                     "--out", str(tmp_path / "x"), *flags)
        assert result.returncode == 2, (flags, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (flags, result.stderr)


def test_compare_writes_the_report_and_resumes(tmp_path):
    settings = {**DIGITS, "epochs": 3}
    paths = compare(settings, ["craig", "random"], [0], tmp_path, target=0.3, quiet=True)
    results = json.loads(Path(paths["results_json"]).read_text())
    assert {run["method"] for run in results["runs"]} == {"craig", "random"}
    assert "| craig |" in Path(paths["results_md"]).read_text()
    for name in ("accuracy_vs_epoch.png", "accuracy_vs_examples.png", "accuracy_vs_seconds.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # a resumed compare reads finished runs back instead of training again
    stamp = (tmp_path / "craig" / "seed_0" / "run.json").stat().st_mtime_ns
    compare(settings, ["craig", "random"], [0], tmp_path, resume=True, quiet=True)
    assert (tmp_path / "craig" / "seed_0" / "run.json").stat().st_mtime_ns == stamp


def test_scenario_files(tmp_path):
    from adacore.experiments.convex import read_convex_scenario
    paths = sorted((Path(__file__).parent.parent / "experiments").glob("*.toml"))
    assert len(paths) >= 6
    for path in paths:
        read = read_convex_scenario if path.name.startswith("convex_") else read_scenario
        scenario = read(path)
        assert scenario["methods"] and scenario["dataset"]
    bad = tmp_path / "bad.toml"
    bad.write_text("fraction = 0.1\nlearning_rate = 3\n")
    with pytest.raises(InputError, match="learning_rate"):
        read_scenario(bad)
    bad.write_text("fraction = [")
    with pytest.raises(InputError, match="not valid TOML"):
        read_scenario(bad)


def test_resnet_with_crop_flip_trains_deterministically(tmp_path):
    from adacore.data import Dataset, Splits

    g = torch.Generator().manual_seed(0)

    def part(n, name):
        return Dataset(torch.rand(n, 3, 12, 12, generator=g), torch.arange(n) % 4, 4, name)

    splits = Splits(part(160, "train"), part(40, "val"), part(40, "test"))
    settings = dict(dataset="synthetic", model="resnet20", method="adacore", fraction=0.1,
                    epochs=3, select_every=2, batch_size=8)
    runs = [Trainer(TrainConfig(**settings, augment=augment), tmp_path / name, quiet=True,
                    splits=splits).run()
            for name, augment in [("a", "crop_flip"), ("b", "crop_flip"), ("c", "none")]]
    assert [len(run["history"]) for run in runs] == [3, 3, 3]
    assert comparable(runs[0]["history"]) == comparable(runs[1]["history"])
    # the augmentation really changes what the model sees
    assert runs[0]["history"][0]["train_loss"] != runs[2]["history"][0]["train_loss"]


def test_unknown_augmentation_is_rejected():
    with pytest.raises(InputError, match="augment"):
        TrainConfig(augment="mixup").validate()


def test_glister_in_the_loader_needs_and_uses_the_validation_set():
    x, y = small_data()
    vx, vy = small_data(30, seed=1)
    with pytest.raises(InputError, match="val_x"):
        CoresetLoader(x, y, get_strategy("glister", fraction=0.1))
    loader = CoresetLoader(x, y, get_strategy("glister", fraction=0.1), val_x=vx, val_y=vy)
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    batches = list(loader.epoch(model))
    assert sum(b[0].shape[0] for b in batches) == 12
    assert torch.all(torch.cat([b[2] for b in batches]) == 1)   # GLISTER: unit weights


def test_a_second_run_on_the_same_folder_refuses_cleanly(tmp_path):
    flags = [*RUN_FLAGS, "--epochs", "400", "--out", str(tmp_path)]
    first = subprocess.Popen([sys.executable, "-m", "adacore.cli", *flags],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not metric_rows(tmp_path) and time.time() < deadline:
            time.sleep(0.05)
        second = cli(*flags, "--resume")
        assert second.returncode == 2 and "in use by a running run" in second.stderr
        assert first.poll() is None          # the first run goes on
    finally:
        first.wait(timeout=300)
    assert first.returncode == 0
    rows = metric_rows(tmp_path)
    assert [row["epoch"] for row in rows] == list(range(1, 401))  # nothing of it was lost


def test_schedules_follow_their_formulas():
    import math as m

    from adacore.training.schedules import build_optimizer, build_scheduler

    def lrs(**options):
        model = MLP(in_features=2, hidden=(), num_classes=2)
        optimizer = build_optimizer(model, lr=1.0, momentum=0.9, nesterov=True, weight_decay=0)
        scheduler = build_scheduler(optimizer, **options)
        values = []
        for _ in range(options["epochs"]):
            values.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return values

    cosine = lrs(schedule="cosine", epochs=10)
    assert cosine == pytest.approx([0.5 * (1 + m.cos(m.pi * t / 10)) for t in range(10)])
    warm = lrs(schedule="cosine", epochs=12, warmup_epochs=2)
    assert warm[:2] == pytest.approx([1 / 3, 2 / 3])
    assert warm[2:] == pytest.approx([0.5 * (1 + m.cos(m.pi * t / 10)) for t in range(10)])
    assert lrs(schedule="multistep", epochs=8) == pytest.approx([1] * 4 + [0.1] * 2 + [0.01] * 2)
    with pytest.raises(InputError, match="schedule"):
        lrs(schedule="linear", epochs=3)


def test_compare_flags_override_the_scenario(tmp_path, recorded_compare):
    from adacore import cli

    scenario = tmp_path / "s.toml"
    scenario.write_text('methods = ["random"]\nseeds = [4]\ndataset = "digits"\n'
                        'fraction = 0.1\nepochs = 5\nlr = 0.05\n')
    seen = recorded_compare
    assert cli.main(["compare", "--config", str(scenario), "--epochs", "2", "--seeds", "1,2",
                     "--out", str(tmp_path / "o")]) == 0
    assert seen["methods"] == ["random"] and seen["seeds"] == [1, 2]
    assert seen["settings"]["epochs"] == 2 and seen["settings"]["lr"] == 0.05
    assert seen["settings"]["dataset"] == "digits"
    assert seen["options"]["full_margin"] is None       # the report's default, 0.01


def test_compare_forwards_the_full_margin_from_the_scenario_and_the_flag(tmp_path,
                                                                         recorded_compare):
    from adacore import cli

    scenario = tmp_path / "s.toml"
    scenario.write_text('methods = ["random", "full"]\nseeds = [0]\ndataset = "digits"\n'
                        'full_margin = 0.05\npool = 4.0\n')
    seen = recorded_compare
    out = str(tmp_path / "o")
    assert cli.main(["compare", "--config", str(scenario), "--out", out]) == 0
    assert seen["options"]["full_margin"] == 0.05 and "full_margin" not in seen["settings"]
    assert seen["settings"]["pool"] == 4.0
    assert cli.main(["compare", "--config", str(scenario), "--full-margin", "0.02",
                     "--pool", "8", "--refine", "3", "--out", out]) == 0
    assert seen["options"]["full_margin"] == 0.02 and seen["settings"]["pool"] == 8.0
    assert seen["settings"]["refine"] == 3


def test_refine_reaches_the_facility_location_strategies_only():
    from adacore.training import TrainConfig

    for method in ("adacore", "craig"):
        strategy = TrainConfig(method=method, pool=4.0, refine=1).strategy()
        assert strategy.pool == 4.0 and strategy.refine == 1
    assert TrainConfig(method="craig").strategy().refine is None


def test_projection_in_the_loader_is_fixed_and_refused_for_adacore():
    x, y = small_data()
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    with pytest.raises(InputError, match="projection_dim"):
        CoresetLoader(x, y, get_strategy("adacore", fraction=0.1), projection_dim=4)
    from adacore.probe import probe, project
    loader = CoresetLoader(x, y, get_strategy("craig", fraction=0.1), space="last_layer",
                           projection_dim=6, seed=3)
    coreset = loader.select(model)
    projected = project(probe(model, x, y, space="last_layer", hessian=None).grads, 6, 3)
    reference = get_strategy("craig", fraction=0.1).select(projected, y.numpy())
    np.testing.assert_array_equal(coreset.indices, reference.indices)


def test_runs_saved_before_a_new_setting_existed_still_match():
    import dataclasses

    from adacore.training.trainer import same_settings
    stored = dataclasses.asdict(TrainConfig(method="craig"))
    del stored["projection_dim"]                     # an older run's record
    assert same_settings(stored, TrainConfig(method="craig"))
    assert not same_settings(stored, TrainConfig(method="craig", projection_dim=8))
    assert not same_settings(stored, TrainConfig(method="random"))


def test_one_step_gradient_with_unequal_weights_and_a_partial_batch_by_hand():
    """The trainer's step is the gradient of mean_b(w_j l_j), w of mean 1 over the whole
    coreset: computed here by hand for a one-parameter model l_j = (theta x_j - t_j)^2 / 2,
    whose gradient is w_j (theta x_j - t_j) x_j, averaged over the batch's examples."""
    from adacore.coreset import Coreset
    from adacore.distributed.ddp import DistributedCoresetSampler, weighted_loss

    x = torch.tensor([1.0, 2.0, -1.0, 3.0, 0.5])
    t = torch.tensor([0.0, 1.0, 2.0, -1.0, 4.0])
    coreset = Coreset(indices=np.arange(5), weights=np.array([1.0, 2.0, 1.0, 8.0, 3.0]),
                      gains=np.zeros(5))
    w = torch.from_numpy(coreset.normalized_weights()).float()
    assert w.tolist() == pytest.approx([1 / 3, 2 / 3, 1 / 3, 8 / 3, 1.0])  # mean 1 overall
    sampler = DistributedCoresetSampler(torch.arange(5), w, batch_size=2,
                                        generator=torch.Generator().manual_seed(0),
                                        rank=0, world_size=1)
    batches = list(sampler)
    assert [len(rows) for rows, _ in batches] == [2, 2, 1]   # a partial last batch
    theta0 = 0.5
    for rows, weights in batches:
        theta = torch.tensor(theta0, requires_grad=True)
        losses = (theta * x[rows] - t[rows]) ** 2 / 2
        loss, _, count = weighted_loss(losses, weights)
        loss.backward()
        by_hand = sum(float(w[j]) * (theta0 * float(x[j]) - float(t[j])) * float(x[j])
                      for j in rows.tolist()) / len(rows)
        assert float(theta.grad) == pytest.approx(by_hand, rel=1e-6)
        assert float(count) == len(rows)
        # not the ratio estimator sum(w g) / sum(w)
        ratio = by_hand * len(rows) / float(weights.sum())
        assert abs(float(theta.grad) - ratio) > 1e-3 * abs(by_hand)
    # over one pass, the expected step is proportional to sum_j gamma_j g_j
    full = sum(coreset.weights[j] * (theta0 * float(x[j]) - float(t[j])) * float(x[j])
               for j in range(5))
    passed = 0.0
    for rows, weights in batches:
        theta = torch.tensor(theta0, requires_grad=True)
        loss, _, _ = weighted_loss((theta * x[rows] - t[rows]) ** 2 / 2, weights)
        loss.backward()
        passed += float(theta.grad) * len(rows)
    assert passed == pytest.approx(full / coreset.weights.mean(), rel=1e-6)


def test_compare_per_method_settings_reach_only_their_method(tmp_path):
    """A scenario's per_method table sets one method's options (GradMatch's CORDS slice)
    without touching the others; its strategy_options add to the shared ones."""
    from adacore.experiments.runner import check_per_method, compare, method_settings
    from adacore.validation import InputError

    shared = {"dataset": "digits", "model": "linear", "fraction": 0.1, "epochs": 1,
              "batch_size": 16, "device": "cpu", "strategy_options": {}}
    per_method = {"gradmatch": {"strategy_options": {"per_gradient": True},
                                "budget": "equal"}}
    merged = method_settings(shared, per_method, "gradmatch")
    assert merged["strategy_options"] == {"per_gradient": True} and merged["budget"] == "equal"
    assert method_settings(shared, per_method, "random") == shared
    compare(shared, ["gradmatch", "random"], [0], tmp_path, quiet=True, per_method=per_method)
    gradmatch = json.loads((tmp_path / "gradmatch" / "seed_0" / "run.json").read_text())
    random = json.loads((tmp_path / "random" / "seed_0" / "run.json").read_text())
    assert gradmatch["config"]["strategy_options"] == {"per_gradient": True}
    assert gradmatch["config"]["budget"] == "equal"
    assert random["config"]["strategy_options"] == {} and random["config"]["budget"] == \
        "proportional"
    with pytest.raises(InputError, match="per_method"):
        check_per_method({"gradmatch": {"nope": 1}})
    with pytest.raises(InputError, match="method"):
        check_per_method({"nope": {}})


def test_a_batch_larger_than_the_coreset_warns_once():
    x, y = small_data()
    loader = CoresetLoader(x, y, get_strategy("random", fraction=0.1), batch_size=64)
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    with pytest.warns(UserWarning, match="batch_size: 64 is larger than the coreset"):
        batches = list(loader.epoch(model))
    assert len(batches) == 1 and len(batches[0][0]) == 12
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        list(loader.epoch(model))     # said once, not every epoch


def test_compare_refuses_repeats_shared_data_settings_and_bad_option_tables(tmp_path):
    from adacore.experiments.runner import check_per_method, compare
    from adacore.validation import InputError

    shared = {"dataset": "digits", "model": "linear", "fraction": 0.1, "epochs": 1,
              "device": "cpu"}
    with pytest.raises(InputError, match="methods: random given more than once"):
        compare(shared, ["random", "random"], [0], tmp_path, quiet=True)
    with pytest.raises(InputError, match="seeds: 0 given more than once"):
        compare(shared, ["random"], [0, 0], tmp_path, quiet=True)
    with pytest.raises(InputError, match="shared"):
        check_per_method({"craig": {"imbalance_ratio": 10.0}})
    with pytest.raises(InputError, match="strategy_options"):
        check_per_method({"craig": {"strategy_options": "x"}})
    assert not any(tmp_path.iterdir())


def test_runs_of_adacore_before_0_2_do_not_resume_as_todays():
    """A run saved before the smoothing and the weighting changed lacks
    curvature_average; it must not pass for a run of today's defaults."""
    import dataclasses

    from adacore.training.trainer import same_settings, settings_differences

    today = TrainConfig(method="craig", dataset="digits")
    old = dataclasses.asdict(today)
    del old["curvature_average"]
    assert not same_settings(old, today)
    assert any("adacore < 0.2" in line for line in settings_differences(old, today))
    assert same_settings(dataclasses.asdict(today), today)


def test_resume_refuses_a_checkpoint_whose_contents_do_not_fit_and_a_damaged_run_json(
        tmp_path):
    from adacore.experiments.runner import compare
    from adacore.training.checkpoint import load_checkpoint, save_checkpoint
    from adacore.validation import InputError

    settings = dict(dataset="digits", model="mlp", method="random", fraction=0.1, epochs=2,
                    batch_size=16, device="cpu")
    out = tmp_path / "run"
    Trainer(TrainConfig(**settings), out, quiet=True).run()
    state = load_checkpoint(out / "checkpoint.pt")
    state["model"] = {name: torch.zeros(3) for name in state["model"]}   # wrong shapes
    save_checkpoint(state, out / "checkpoint.pt")
    metrics = (out / "metrics.jsonl").read_text()
    with pytest.raises(InputError, match="does not fit this run"):
        Trainer(TrainConfig(**settings), out, quiet=True).run(resume=True)
    assert (out / "metrics.jsonl").read_text() == metrics

    shared = {key: value for key, value in settings.items() if key != "method"}
    compare(shared, ["random"], [0], tmp_path / "cmp", quiet=True)
    (tmp_path / "cmp" / "random" / "seed_0" / "run.json").write_text("[1, 2")
    with pytest.raises(InputError, match="not a readable run record"):
        compare(shared, ["random"], [0], tmp_path / "cmp", quiet=True, resume=True)


def test_a_convolutional_model_gets_the_images():
    # MNIST is stored as 784 values per example; LeNet reads 1 x 28 x 28 images
    from adacore.models import takes_images
    from adacore.training import TrainConfig

    assert takes_images("lenet") and takes_images("resnet20") and not takes_images("mlp")
    images = TrainConfig(model="lenet", dataset="mnist").load_splits()
    rows = TrainConfig(model="mlp", dataset="mnist").load_splits()
    assert tuple(images.train.x.shape[1:]) == (1, 28, 28)
    assert tuple(rows.train.x.shape[1:]) == (784,)
    assert torch.equal(images.val.x.reshape(len(images.val.x), -1), rows.val.x)
    assert not takes_images("no-such-model")        # build_model names the choices


def brute_capped(weights, cap):
    """Clip at cap and renormalise to mean 1, again and again until the cap holds."""
    w = weights / weights.mean()
    for _ in range(100_000):
        w = np.minimum(w, cap)
        w = w / w.mean()
        if w.max() <= cap * (1 + 1e-12):
            break
    return w


def test_max_weight_water_fills_to_the_cap_with_mean_one():
    from adacore.coreset import Coreset

    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(1, 60))
        weights = rng.pareto(1.0, n) + 0.01           # heavy-tailed, like cluster sizes
        cap = 1.0 if trial % 10 == 0 else float(rng.uniform(1, 8))
        coreset = Coreset(indices=np.arange(n), weights=weights, gains=np.zeros(n))
        capped = coreset.normalized_weights(cap)
        assert capped.mean() == pytest.approx(1.0, abs=1e-9)
        assert capped.max() <= cap * (1 + 1e-9)
        np.testing.assert_allclose(capped, brute_capped(weights, cap), rtol=1e-5, atol=1e-8)
        # the order of the weights is kept, and no cap means the plain rescaling
        assert np.all(np.diff(capped[np.argsort(weights)]) >= -1e-12)
        np.testing.assert_array_equal(coreset.normalized_weights(None),
                                      weights / weights.mean())
    # a cap above every weight changes nothing
    coreset = Coreset(indices=np.arange(3), weights=np.array([1.0, 2.0, 3.0]),
                      gains=np.zeros(3))
    np.testing.assert_array_equal(coreset.normalized_weights(10), [0.5, 1.0, 1.5])


def test_loader_trains_on_capped_weights_and_refuses_a_cap_below_one():
    x, y = small_data()
    model = MLP(in_features=5, hidden=(4,), num_classes=3)
    strategy = get_strategy("craig", fraction=0.2)
    loader = CoresetLoader(x, y, strategy, batch_size=8, max_weight=1.5)
    seen = torch.cat([weights for _, _, weights in loader.epoch(model)])
    assert float(seen.max()) <= 1.5 + 1e-6
    assert float(seen.mean()) == pytest.approx(1.0, abs=1e-5)
    expected = loader.coreset_.normalized_weights(1.5)
    assert sorted(seen.tolist()) == pytest.approx(sorted(expected.tolist()), abs=1e-6)
    for bad in (0.5, float("nan"), "2"):
        with pytest.raises(InputError, match="max_weight"):
            CoresetLoader(x, y, strategy, max_weight=bad)
        with pytest.raises(InputError, match="max_weight"):
            TrainConfig(method="craig", max_weight=bad).validate()


def test_trainer_gives_the_loader_its_max_weight(tmp_path):
    config = TrainConfig(method="craig", dataset="digits", model="mlp", epochs=1,
                         max_weight=4.0)
    *_, loader = Trainer(config, tmp_path / "run", quiet=True)._setup(torch.device("cpu"))
    assert loader.max_weight == 4.0
