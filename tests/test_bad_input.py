"""Every bad input gets a ValueError that names the argument; the CLI exits 2 with one line."""

import subprocess
import sys

import numpy as np
import pytest

from adacore import AdaCore, Craig, InputError, RandomSubset, facility_location, get_strategy
from adacore.cli import main

GOOD = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
LABELS = np.arange(50) % 2


@pytest.mark.parametrize("X, match", [
    (np.array([[1.0, np.nan], [0.0, 1.0]]), "X: 1 entries are NaN or inf"),
    (np.array([[1.0, np.inf], [0.0, 1.0]]), "NaN or inf"),
    (np.zeros((0, 3)), "non-empty"),
    (np.zeros((3, 0)), "X"),
    (np.ones(5), "2-D"),
    (np.array([["a", "b"]]), "numeric"),
    ([[1, 2], [3]], "numeric"),
])
def test_facility_location_rejects_bad_X(X, match):
    with pytest.raises(InputError, match=match):
        facility_location(X, 1)


@pytest.mark.parametrize("k", [0, -1, 51, 2.5, "3", None, True])
def test_facility_location_rejects_bad_k(k):
    with pytest.raises(InputError, match="k: got"):
        facility_location(GOOD, k)


def test_unknown_optimizer_and_method():
    with pytest.raises(InputError, match="optimizer.*'lazy'"):
        facility_location(GOOD, 3, optimizer="greedy")
    with pytest.raises(InputError, match="optimizer"):
        Craig(0.1, optimizer="fast")
    with pytest.raises(InputError, match="method: got 'gradmatchx'"):
        get_strategy("gradmatchx", fraction=0.1)
    with pytest.raises(InputError, match="budget"):
        Craig(0.1, budget="uniform")


@pytest.mark.parametrize("fraction", [0, 0.0, -0.5, 1.01, float("nan"), float("inf"), "0.1"])
def test_fraction_outside_unit_interval(fraction):
    with pytest.raises(InputError, match="fraction"):
        Craig(fraction)


def test_shapes_that_disagree():
    with pytest.raises(InputError, match="labels: got 49 labels, expected 50"):
        Craig(0.1).select(GOOD, LABELS[:49])
    with pytest.raises(InputError, match="hessian_diag: got shape"):
        AdaCore(0.1).select(GOOD, LABELS, hessian_diag=np.ones((50, 2)))
    with pytest.raises(InputError, match="hessian_diag"):
        AdaCore(0.1).select(GOOD, LABELS)
    with pytest.raises(InputError, match="grads"):
        Craig(0.1).select(None, LABELS)
    with pytest.raises(InputError, match="grads"):
        Craig(0.1).select(GOOD[:, 0], LABELS)


@pytest.mark.parametrize("labels, match", [
    (np.linspace(0, 1, 50), "integer"),
    (np.array(["a"] * 50), "integer"),
    (np.zeros((50, 1), dtype=int), "1-D"),
    (np.full(50, np.nan), "integer"),
])
def test_non_integer_labels(labels, match):
    with pytest.raises(InputError, match=match):
        Craig(0.1).select(GOOD, labels)


def test_nan_in_hessian_and_integer_valued_float_labels():
    diag = np.ones((50, 3))
    diag[3, 1] = np.nan
    with pytest.raises(InputError, match="hessian_diag"):
        AdaCore(0.1).select(GOOD, LABELS, hessian_diag=diag)
    # floats holding whole numbers are labels all the same
    assert len(RandomSubset(0.1).select(None, LABELS.astype(float))) == 5


def run_cli(tmp_path, *args):
    return subprocess.run([sys.executable, "-m", "adacore.cli", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_cli_errors_are_one_line_and_exit_2(tmp_path):
    np.save(tmp_path / "X.npy", GOOD)
    np.save(tmp_path / "y.npy", LABELS)
    np.save(tmp_path / "nan.npy", np.full((50, 3), np.nan))
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    cases = [
        (["--vectors", "missing.npy"], "--vectors: no file"),
        (["--vectors", "junk.npy"], "--vectors: cannot read"),
        (["--vectors", "objects.npy"], "--vectors: cannot read"),
        (["--vectors", "nan.npy"], "NaN or inf"),
        (["--vectors", "X.npy", "--fraction", "0"], "fraction"),
        (["--vectors", "X.npy", "--method", "craig", "--hessian", "X.npy"], "--hessian"),
        (["--vectors", "X.npy", "--method", "adacore"], "--hessian"),
    ]
    for extra, message in cases:
        args = {"--vectors": "X.npy", "--labels": "y.npy", "--fraction": "0.1",
                "--method": "craig", "--out": "c.npz"}
        for flag, value in zip(extra[::2], extra[1::2]):
            args[flag] = value
        flat = [item for pair in args.items() for item in pair]
        result = run_cli(tmp_path, "select", *flat)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)
        assert "Traceback" not in result.stderr
    assert not (tmp_path / "c.npz").exists()


def test_cli_select_writes_a_coreset(tmp_path, capsys):
    np.save(tmp_path / "X.npy", GOOD)
    np.save(tmp_path / "y.npy", LABELS)
    np.save(tmp_path / "H.npy", np.abs(GOOD) + 0.1)
    out = tmp_path / "c.npz"
    code = main(["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
                 str(tmp_path / "y.npy"), "--hessian", str(tmp_path / "H.npy"),
                 "--fraction", "0.2", "--method", "adacore", "--out", str(out)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "k = 10 of n = 50" in printed and "gradient error" in printed
    from adacore import Coreset
    coreset = Coreset.load(out)
    reference = AdaCore(0.2).select(GOOD, LABELS, hessian_diag=np.abs(GOOD) + 0.1)
    np.testing.assert_array_equal(coreset.indices, reference.indices)


@pytest.mark.parametrize("method", ["adacore", "craig", "gradmatch", "glister", "random",
                                    "rs2", "full"])
def test_cli_select_works_for_every_method(tmp_path, capsys, method):
    """Each listed method selects from files and writes what the strategy itself picks."""
    from adacore import Coreset, get_strategy

    rng = np.random.default_rng(3)
    val = rng.standard_normal((20, GOOD.shape[1]))
    val_labels = rng.integers(0, LABELS.max() + 1, 20)
    for name, array in (("X", GOOD), ("y", LABELS), ("H", np.abs(GOOD) + 0.1), ("V", val),
                        ("Vy", val_labels)):
        np.save(tmp_path / f"{name}.npy", array)
    flags = ["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
             str(tmp_path / "y.npy"), "--fraction", "0.2", "--method", method,
             "--out", str(tmp_path / "c.npz")]
    inputs = {}
    if method == "adacore":
        flags += ["--hessian", str(tmp_path / "H.npy")]
        inputs["hessian_diag"] = np.abs(GOOD) + 0.1
    if method == "glister":
        flags += ["--val-vectors", str(tmp_path / "V.npy"), "--val-labels",
                  str(tmp_path / "Vy.npy")]
        inputs.update(val_grads=val, val_labels=val_labels)
    assert main(flags) == 0
    assert f"{method}: k = " in capsys.readouterr().out
    reference = get_strategy(method, fraction=0.2).select(GOOD, LABELS, **inputs)
    coreset = Coreset.load(tmp_path / "c.npz")
    np.testing.assert_array_equal(coreset.indices, reference.indices)
    np.testing.assert_allclose(coreset.weights, reference.weights)


def test_cli_select_refuses_flags_a_method_does_not_use(tmp_path):
    np.save(tmp_path / "X.npy", GOOD)
    np.save(tmp_path / "y.npy", LABELS)
    base = ["select", "--vectors", str(tmp_path / "X.npy"), "--labels",
            str(tmp_path / "y.npy"), "--fraction", "0.2", "--out", str(tmp_path / "c.npz")]
    for extra, message in ((["--method", "gradmatch", "--optimizer", "lazy"], "--optimizer"),
                           (["--method", "craig", "--beta2", "0.5"], "--beta2"),
                           (["--method", "craig", "--val-vectors", "X.npy"], "--val-vectors"),
                           (["--method", "glister"], "--val-vectors")):
        result = run_cli(tmp_path, *base, *extra)
        assert result.returncode == 2, (extra, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (extra, result.stderr)


def test_cli_help_lists_commands():
    result = subprocess.run([sys.executable, "-m", "adacore.cli", "--help"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "select" in result.stdout


# -- training settings: every one checked before anything trains (issue 14) --

BAD_SETTINGS = [
    ({"lr": float("nan")}, "lr"), ({"lr": 0}, "lr"), ({"lr": "0.1"}, "lr"),
    ({"momentum": 1.0}, "momentum"), ({"momentum": -0.1}, "momentum"),
    ({"momentum": float("nan")}, "momentum"),
    ({"weight_decay": -1e-4}, "weight_decay"), ({"weight_decay": float("inf")}, "weight_decay"),
    ({"warmup_epochs": 40}, "warmup_epochs"), ({"warmup_epochs": -1}, "warmup_epochs"),
    ({"eps": 0}, "eps"), ({"eps": float("inf")}, "eps"),
    ({"beta2": 1.0}, "beta2"), ({"beta2": float("nan")}, "beta2"),
    ({"pool": 0.5}, "pool"), ({"pool": float("nan")}, "pool"), ({"pool": "8"}, "pool"),
    ({"refine": -1}, "refine"), ({"refine": 1.5}, "refine"), ({"refine": "2"}, "refine"),
    ({"max_weight": 0.5}, "max_weight"), ({"max_weight": float("nan")}, "max_weight"),
    ({"imbalance_ratio": 0.5}, "imbalance_ratio"),
    ({"imbalance_ratio": float("inf")}, "imbalance_ratio"),
    ({"seed": -1}, "seed"), ({"seed": 2**63}, "seed"), ({"seed": 1.5}, "seed"),
    ({"fraction": 0}, "fraction"), ({"fraction": 1.5}, "fraction"),
    ({"nesterov": "true"}, "nesterov"), ({"diagnostics": 1}, "diagnostics"),
    ({"schedule": 3}, "schedule"), ({"space": ["logits"]}, "space"),
    ({"budget": "uniform"}, "budget"), ({"curvature_average": "median"}, "curvature_average"),
    ({"device": 0}, "device"), ({"data_root": 3}, "data_root"),
    ({"projection_dim": 0}, "projection_dim"),
    ({"strategy_options": [1]}, "strategy_options"),
    ({"strategy_options": {1: 2}}, "strategy_options"),
    ({"strategy_options": {"bogus": 1}}, "strategy_options: method 'adacore' takes no "
                                         "option 'bogus'"),
    ({"method": "random", "strategy_options": {"beta2": 0.9}}, "method 'random'.*'beta2'"),
]


@pytest.mark.parametrize("settings, match", BAD_SETTINGS)
def test_train_config_refuses_bad_settings(settings, match):
    from adacore.training import TrainConfig
    with pytest.raises(InputError, match=match):
        TrainConfig(**settings).validate()


def test_train_config_accepts_the_edges():
    from adacore.training import TrainConfig
    TrainConfig(seed=2**63 - 1, imbalance_ratio=1, momentum=0, weight_decay=0, beta2=0,
                fraction=1, lr=1, warmup_epochs=39, curvature_average="rms").validate()


def test_cli_run_refuses_bad_flags_before_training(tmp_path):
    for flags, message in [(["--lr", "nan"], "lr"), (["--momentum", "1"], "momentum"),
                           (["--seed", str(2**63)], "seed")]:
        result = run_cli(tmp_path, "run", "--dataset", "digits", "--epochs", "1", "--quiet",
                         "--out", "x", *flags)
        assert result.returncode == 2, (flags, result.stderr)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (flags, result.stderr)
        assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("text, message", [
    ('nesterov = "true"\n', "nesterov"),
    ("lr = nan\n", "lr"),
    ('methods = ["random"]\nstrategy_options = { bogus = 1 }\n', "bogus"),
    ('methods = ["random", "craig"]\n[per_method.craig]\nstrategy_options = { bogus = 1 }\n',
     "method 'craig'"),
    ('methods = ["random"]\ntarget = 2\n', "target"),
    ('methods = "random"\n', "methods"),
    ('methods = ["random"]\nseeds = [0, "1"]\n', "seeds"),
])
def test_compare_checks_every_run_before_the_first_trains(tmp_path, text, message):
    (tmp_path / "bad.toml").write_text('dataset = "digits"\nepochs = 1\n' + text)
    result = run_cli(tmp_path, "compare", "--config", "bad.toml", "--quiet", "--out", "c")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "c").exists()          # not even the first method trained


def test_compare_refuses_a_bad_target_before_training(tmp_path):
    from adacore.experiments.runner import compare
    for target in (0, 1.5, float("nan"), "0.9"):
        with pytest.raises(InputError, match="target"):
            compare({"dataset": "digits", "epochs": 1}, ["random"], [0], tmp_path / "c",
                    target=target, quiet=True)
    assert not (tmp_path / "c").exists()


def test_a_second_compare_on_the_same_folder_is_refused(tmp_path):
    from adacore.experiments.runner import compare
    from adacore.training.lock import FolderLock
    settings = {"dataset": "digits", "fraction": 0.1, "epochs": 1, "batch_size": 32}
    with FolderLock(tmp_path / "c"):             # as a first compare holds it
        with pytest.raises(InputError, match="'.*c' is in use by another adacore process"):
            compare(settings, ["random"], [0], tmp_path / "c", quiet=True)
    assert not (tmp_path / "c" / "random").exists()
    # released: the comparison runs, its runs' own locks (one folder down) do not clash
    compare(settings, ["random"], [0], tmp_path / "c", quiet=True)
    assert (tmp_path / "c" / "results.json").exists()
    with FolderLock(tmp_path / "c"):             # and the comparison let it go again
        pass


def test_two_compare_processes_one_is_refused(tmp_path):
    import signal
    import time
    args = ["compare", "--dataset", "digits", "--methods", "random", "--seeds", "0",
            "--fraction", "0.1", "--epochs", "5000", "--batch-size", "32", "--quiet",
            "--out", "c"]
    first = subprocess.Popen([sys.executable, "-m", "adacore.cli", *args], cwd=tmp_path,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        # the first is training once its run has logged an epoch
        metrics = tmp_path / "c" / "random" / "seed_0" / "metrics.jsonl"
        deadline = time.monotonic() + 120
        while not (metrics.exists() and metrics.stat().st_size) and time.monotonic() < deadline:
            assert first.poll() is None, first.stderr.read()
            time.sleep(0.05)
        second = run_cli(tmp_path, *args)
        assert first.poll() is None              # the first still holds the folder
        assert second.returncode == 2, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "is in use by another adacore process" in lines[0], lines
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate(timeout=60)
