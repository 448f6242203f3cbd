"""`adacore run` and `adacore compare`: one run, or every method x seed, then the report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path

from adacore.experiments.report import write_report
from adacore.experiments.run_records import check_margin
from adacore.experiments.summary import DEFAULT_FULL_MARGIN
from adacore.strategies import available_strategies
from adacore.training import TrainConfig, Trainer
from adacore.training.lock import FolderInUse, FolderLock
from adacore.training.trainer import describe_differences, settings_differences
from adacore.validation import (InputError, check_choice, check_fraction, check_int,
                                check_string, fail)

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = None

# keys a scenario file may hold besides the TrainConfig fields
# (full_margin: how far below full data's final test accuracy the report's time to
# accuracy is measured, a fraction in (0, 1); 0.01 when absent)
COMPARE_KEYS = {"methods", "seeds", "target", "full_margin", "name", "description",
                "per_method"}


def shipped_scenarios() -> dict:
    """The scenarios inside the installed package (the repository's ``experiments/``),
    by name: ``{"mnist_1pct": <adacore/scenarios/mnist_1pct.toml>, ...}``."""
    folder = resources.files("adacore") / "scenarios"
    if not folder.is_dir():
        return {}
    return {entry.name[:-len(".toml")]: entry for entry in sorted(
        folder.iterdir(), key=lambda entry: entry.name) if entry.name.endswith(".toml")}


def read_toml(path: str | Path) -> dict:
    """A TOML file as a dict; a missing or malformed file is an InputError on --config.

    ``path`` is a file, or the bare name of a shipped scenario (``"mnist_1pct"``: no
    folder, no ``.toml``, and no such file here), see :func:`shipped_scenarios`.
    """
    if tomllib is None:
        raise InputError("--config: reading TOML needs Python 3.11 or newer")
    text, file = str(path), Path(path)
    if not file.is_file():
        shipped = shipped_scenarios()
        names = ", ".join(shipped) or "none"
        if text != file.name or text.endswith(".toml"):
            raise InputError(f"--config: no file at {text!r}, expected a TOML scenario file "
                             f"or the name of a shipped scenario ({names})")
        if text not in shipped:
            raise InputError(f"--config: no file and no shipped scenario named {text!r}; "
                             f"shipped scenarios: {names}")
        file = shipped[text]
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, RecursionError, ValueError) as error:
        # ValueError: an integer of more than 4,300 digits; RecursionError: deep nesting
        raise InputError(f"--config: {str(path)!r} is not valid TOML ({error})") from error


def read_scenario(path: str | Path) -> dict:
    """A TOML scenario: TrainConfig fields plus ``methods``, ``seeds``, ``target``,
    ``full_margin`` (a fraction in (0, 1): the report's time to within that much of full
    data's final test accuracy; 0.01 when absent), ``name``, ``description`` and
    ``per_method``."""
    scenario = read_toml(path)
    known = {f.name for f in dataclasses.fields(TrainConfig)} | COMPARE_KEYS
    unknown = sorted(set(scenario) - known)
    if unknown:
        raise InputError(f"--config: unknown keys {unknown} in {str(path)!r}; expected some "
                         f"of {sorted(known)}")
    check_per_method(scenario.get("per_method", {}), f"--config: {str(path)!r}: per_method")
    where = f"--config: {str(path)!r}"
    methods = scenario.get("methods", [])
    if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
        raise fail(f"{where}: methods", methods, "a list of method names")
    seeds = scenario.get("seeds", [])
    if not isinstance(seeds, list):
        raise fail(f"{where}: seeds", seeds, "a list of integer seeds")
    for seed in seeds:
        check_int(f"{where}: seeds", seed, 0, 2**63 - 1)
    if scenario.get("target") is not None:
        check_fraction(f"{where}: target", scenario["target"])
    if "full_margin" in scenario:
        check_margin(scenario["full_margin"], f"{where}: full_margin")
    for key in ("name", "description"):
        if key in scenario:
            check_string(f"{where}: {key}", scenario[key])
    return scenario


def check_per_method(per_method, where: str = "per_method") -> dict:
    """``{method: {TrainConfig field: value}}``, the settings one method uses in a
    comparison on top of the shared ones (e.g. GradMatch's ``strategy_options``)."""
    if not isinstance(per_method, dict):
        raise InputError(f"{where}: expected a table of method -> settings, got "
                         f"{type(per_method).__name__}")
    # the data is loaded once per seed for every method, so data settings are shared
    fields = {f.name for f in dataclasses.fields(TrainConfig)} - {
        "method", "seed", "dataset", "data_root", "imbalance_ratio"}
    for method, overrides in per_method.items():
        check_choice(f"{where}: method", method, available_strategies())
        if not isinstance(overrides, dict):
            raise InputError(f"{where}.{method}: expected a table of settings, got "
                             f"{type(overrides).__name__}")
        unknown = sorted(set(overrides) - fields)
        if unknown:
            raise InputError(f"{where}.{method}: unknown or shared keys {unknown}; expected "
                             f"some of {sorted(fields)} (the data settings are shared by "
                             f"every method)")
        if not isinstance(overrides.get("strategy_options", {}), dict):
            raise InputError(f"{where}.{method}.strategy_options: expected a table of "
                             f"options, got {type(overrides['strategy_options']).__name__}")
    return per_method


def method_settings(settings: dict, per_method: dict | None, method: str) -> dict:
    """The settings ``method`` runs with: the shared ones, then its own from
    ``per_method`` (its ``strategy_options`` added to the shared ones)."""
    own = dict((per_method or {}).get(method, {}))
    merged = {**settings, **own}
    if "strategy_options" in own:
        merged["strategy_options"] = {**settings.get("strategy_options", {}),
                                      **own["strategy_options"]}
    return merged


def make_config(settings: dict) -> TrainConfig:
    """A validated TrainConfig from a dict of its fields (unknown keys rejected)."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(settings) - names)
    if unknown:
        raise InputError(f"settings: unknown keys {unknown}")
    config = TrainConfig(**settings).validate()
    check_choice("method", config.method, available_strategies())
    return config


def run_one(config: TrainConfig, out: str | Path, *, resume: bool = False,
            quiet: bool = False, splits=None) -> dict:
    """Train one method with one seed into ``out``; returns the run record."""
    return Trainer(config, out, quiet=quiet, splits=splits).run(resume=resume)


def compare(settings: dict, methods: list[str], seeds: list[int], out: str | Path, *,
            target: float | None = None, resume: bool = False, quiet: bool = False,
            command: str | None = None, per_method: dict | None = None,
            full_margin: float | None = None) -> dict:
    """Every method with every seed on the same settings, then ``results.json/.md`` and plots.

    Under ``torchrun`` every rank takes part in each run and rank 0 alone writes the
    report (the other ranks return an empty dict); with ``resume`` every rank checks
    for finished runs itself, so the folder must be on a file system all ranks see. Each run lives in ``out/METHOD/seed_S``; with ``resume`` finished runs are read back
    and unfinished ones continue from their checkpoints. All methods with a given seed
    share the model initialisation, the data split and the batch-order seed.
    ``command``: the command line that made the comparison, written into results.md.
    ``per_method``: settings of single methods on top of the shared ones
    (``{"gradmatch": {"strategy_options": {"per_gradient": True}}}``).
    ``full_margin``: the report's time to within that much of full data's final test
    accuracy (a fraction in (0, 1); None: 0.01), see
    :func:`adacore.experiments.summary.time_to_full_accuracy`.
    """
    if not methods:
        raise InputError("methods: expected at least one method")
    if not seeds:
        raise InputError("seeds: expected at least one seed")
    for method in methods:
        check_choice("method", method, available_strategies())
    for name, values in (("methods", methods), ("seeds", seeds)):
        repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
        if repeated:
            raise InputError(f"{name}: {', '.join(repeated)} given more than once")
    check_per_method(per_method or {})
    if not isinstance(settings.get("strategy_options", {}), dict):
        raise InputError(f"strategy_options: expected a table of options, got "
                         f"{type(settings['strategy_options']).__name__}")
    if target is not None:
        check_fraction("target", target)
    full_margin = (DEFAULT_FULL_MARGIN if full_margin is None
                   else check_margin(full_margin, "full_margin"))
    # every run's settings are checked before the first one trains
    configs = {(method, seed): make_config({**method_settings(settings, per_method, method),
                                            "method": method, "seed": seed})
               for seed in seeds for method in methods}
    out = Path(out)
    with _comparison_lock(out):
        return _run_comparison(configs, methods, seeds, out, target=target, resume=resume,
                               quiet=quiet, command=command, full_margin=full_margin)


def _read_finished(path: Path) -> dict:
    """A finished run's run.json, or one InputError naming the file and what is wrong
    (the report validates the rest of the record before writing anything)."""
    try:
        record = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise InputError(f"--resume: {str(path)!r} is not a readable run record "
                         f"({error.__class__.__name__}); delete it to train that run "
                         f"again") from None
    if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
        raise InputError(f"--resume: {str(path)!r} is not a run record (expected an object "
                         f"with a 'config' table); delete it to train that run again")
    return record


@contextlib.contextmanager
def _comparison_lock(out: Path):
    """Hold ``out/.lock`` for the whole comparison (rank 0 under torchrun), so a second
    ``compare`` on the same folder is refused instead of both writing results.json. Each
    run locks its own folder ``out/METHOD/seed_S``, a different file: no self-deadlock."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    lock = FolderLock(out)
    try:
        lock.__enter__()
    except FolderInUse:
        holder = lock.path.read_text(errors="replace").strip() if lock.path.exists() else ""
        raise InputError(f"--out: {str(out)!r} is in use by another adacore process"
                         f"{f' (pid {holder})' if holder.isdigit() else ''}; wait for it or "
                         f"choose another folder") from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def _run_comparison(configs: dict, methods: list[str], seeds: list[int], out: Path, *,
                    target, resume: bool, quiet: bool, command,
                    full_margin: float = DEFAULT_FULL_MARGIN) -> dict:
    """The runs of :func:`compare` (``configs``: checked, by (method, seed)), then the
    report; runs under the comparison's lock."""
    runs = []
    total = len(seeds) * len(methods)
    # progress on stderr (rank 0): "run i of N" before each run, a rough estimate after
    talk = not quiet and int(os.environ.get("RANK", "0")) == 0
    trained_seconds = []    # wall time of each run trained by this call
    for seed in seeds:
        splits = None
        for method in methods:
            config = configs[method, seed]
            folder = out / method / f"seed_{seed}"
            finished = folder / "run.json"
            if resume and finished.exists():
                record = _read_finished(finished)
                differences = settings_differences(record["config"], config)
                if differences:
                    raise InputError(f"--resume: the finished run in {str(folder)!r} used other "
                                     f"settings ({describe_differences(differences)}); use "
                                     f"another --out or the same settings")
                runs.append(record)
                if talk:
                    print(f"run {len(runs)} of {total}: {method} seed {seed}, finished "
                          f"before (read back)", file=sys.stderr, flush=True)
                continue
            if talk:
                print(f"run {len(runs) + 1} of {total}: {method} seed {seed}", file=sys.stderr,
                      flush=True)
            started = time.perf_counter()
            if splits is None:
                splits = config.load_splits(seed)
            record = run_one(config, folder, resume=resume, quiet=quiet, splits=splits)
            trained_seconds.append(time.perf_counter() - started)
            runs.append(record)
            # one line a run, with or without progress bars
            print(f"{method:>9} seed {seed}: test {record['test_accuracy_at_best_val']:.4f} "
                  f"at best val (epoch {record['best_val_epoch']}), selection "
                  f"{record['select_seconds']:.1f} s, training {record['train_seconds']:.1f} s, "
                  f"visited {record['fraction_visited']:.0%}", file=sys.stderr)
            left = total - len(runs)
            if talk and left:
                mean = sum(trained_seconds) / len(trained_seconds)
                print(f"about {_rough_duration(mean * left)} left, roughly: {left} more "
                      f"run{'s' if left > 1 else ''} at {mean:.0f} s, the mean of the "
                      f"{len(trained_seconds)} run{'s' if len(trained_seconds) > 1 else ''} "
                      f"this comparison trained so far", file=sys.stderr, flush=True)
    if int(os.environ.get("RANK", "0")) != 0:
        # under torchrun every rank ran the comparison (each run's group is closed by
        # now); the report is rank 0's to write
        return {}
    return write_report(runs, out, target=target, command=command, margin=full_margin)


def _rough_duration(seconds: float) -> str:
    """``40 s``, ``12 min`` or ``3.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def probe_run(run_dir: str | Path, *, space: str = "logits") -> dict:
    """Per-example last-layer terms of a trained run's model on its own training and
    validation data: ``grads``, ``hessian_diag``, ``labels``, ``val_grads``,
    ``val_hessian_diag``, ``val_labels`` (NumPy arrays), read from
    ``run_dir/checkpoint.pt``."""
    from adacore.models import build_model
    from adacore.probe import probe
    from adacore.training.checkpoint import load_checkpoint

    state = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    config = make_config(state["config"])
    splits = config.load_splits()
    model = build_model(config.model, num_classes=splits.train.num_classes,
                        input_shape=tuple(splits.train.x.shape[1:]), seed=config.seed)
    model.load_state_dict(state["model"])
    out = {}
    for prefix, part in (("", splits.train), ("val_", splits.val)):
        result = probe(model, part.x, part.y, space=space, hessian="closed_form")
        out[prefix + "grads"] = result.grads.cpu().numpy()
        out[prefix + "hessian_diag"] = result.hessian_diag.cpu().numpy()
    out["labels"] = splits.train.y.numpy()
    out["val_labels"] = splits.val.y.numpy()
    return out
