"""The trainer behind `adacore run`: coreset training with logging, checkpoints and resume."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn import functional as F

from adacore._faults import fault_point
from adacore.atomic import (atomic_write_bytes, check_output_file, prepare_folder,
                            remove_stale_temporaries)
from adacore.data import load_dataset, random_crop_flip
from adacore.distributed import ddp
from adacore.models import build_model, takes_images
from adacore.selection.budgets import BUDGET_MODES
from adacore.selection.facility_location import check_pool, check_refine, check_refine_to
from adacore.selection.memory import parse_memory
from adacore.strategies import STRATEGIES, get_strategy
from adacore.training.checkpoint import (append_jsonl, check_run_checkpoint, load_checkpoint,
                                         read_jsonl, rewrite_jsonl, save_checkpoint)
from adacore.training.loader import CoresetLoader
from adacore.training.lock import FolderLock
from adacore.training.schedules import SCHEDULES, build_optimizer, build_scheduler
from adacore.validation import (InputError, check_bool, check_choice, check_fraction, check_int,
                                check_real, check_string, fail)

# batch augmentations: CIFAR's random crop (4-pixel padding) and horizontal flip
AUGMENTATIONS = ("none", "crop_flip")
# the gradient spaces the loader probes in, and AdaCore's curvature averages
LOADER_SPACES = ("auto", "logits", "last_layer")
CURVATURE_AVERAGES = ("geometric", "rms", "mean")


@dataclass
class TrainConfig:
    """Everything one run depends on; ``adacore run`` flags map onto these fields."""

    dataset: str = "mnist"
    model: str = "mlp"
    method: str = "adacore"
    fraction: float = 0.01
    epochs: int = 40
    select_every: int = 5
    warm_start_epochs: int = 0
    seed: int = 0
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: int = 0
    space: str = "auto"
    budget: str = "proportional"
    beta2: float = 0.999
    eps: float = 1e-4
    curvature_average: str = "geometric"
    diagnostics: bool = False
    data_root: str | None = None
    imbalance_ratio: float | None = None
    device: str = "auto"
    eval_batch_size: int = 4096
    # 512: as fast as 2048 for the MLP, twice as fast for LeNet (BENCHMARKS.md)
    probe_batch_size: int = 512
    augment: str = "none"
    projection_dim: int | None = None
    neighbors: int | None = None
    max_memory: str | None = None
    pool: float | None = None
    refine: int | None = None
    refine_to: str | None = None
    max_weight: float | None = None
    strategy_options: dict = field(default_factory=dict)

    def validate(self) -> "TrainConfig":
        """Check every setting (from flags or TOML alike) before anything trains: types,
        finiteness and ranges; builds the strategy once, so an option the method does
        not take is refused here, not after the data is loaded."""
        for name in ("dataset", "model", "method"):
            check_string(name, getattr(self, name))
        check_fraction("fraction", self.fraction)
        check_int("epochs", self.epochs, 1)
        check_int("select_every", self.select_every, 1)
        check_int("warm_start_epochs", self.warm_start_epochs, 0)
        # torch.manual_seed takes 64 bits; the augmentation generator gets seed + 1
        check_int("seed", self.seed, 0, 2**63 - 1)
        check_int("batch_size", self.batch_size, 1)
        check_int("eval_batch_size", self.eval_batch_size, 1)
        check_int("probe_batch_size", self.probe_batch_size, 1)
        check_real("lr", self.lr, low=0, low_open=True)
        check_real("momentum", self.momentum, low=0, high=1, high_open=True)
        check_bool("nesterov", self.nesterov)
        check_real("weight_decay", self.weight_decay, low=0)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_int("warmup_epochs", self.warmup_epochs, 0, self.epochs - 1)
        check_choice("space", self.space, LOADER_SPACES)
        check_choice("budget", self.budget, BUDGET_MODES)
        check_real("beta2", self.beta2, low=0, high=1, high_open=True)
        check_real("eps", self.eps, low=0, low_open=True)
        check_choice("curvature_average", self.curvature_average, CURVATURE_AVERAGES)
        check_bool("diagnostics", self.diagnostics)
        check_string("data_root", self.data_root, optional=True)
        if self.imbalance_ratio is not None:
            check_real("imbalance_ratio", self.imbalance_ratio, low=1)
        check_string("device", self.device)
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise InputError(f"device: got {self.device!r}, expected auto, cpu or cuda")
        check_choice("augment", self.augment, AUGMENTATIONS)
        if self.projection_dim is not None:
            check_int("projection_dim", self.projection_dim, 1)
        if self.neighbors is not None:
            check_int("neighbors", self.neighbors, 1)
        if self.max_memory is not None:
            parse_memory(self.max_memory)
        check_pool(self.pool)
        check_refine(self.refine)
        check_refine_to(self.refine_to)
        if self.max_weight is not None:
            check_real("max_weight", self.max_weight, low=1)
        if not isinstance(self.strategy_options, dict) or not all(
                isinstance(key, str) for key in self.strategy_options):
            raise fail("strategy_options", self.strategy_options,
                       "a table of option name -> value")
        self._check_strategy()
        return self

    def _check_strategy(self) -> None:
        """Build the strategy once: an unknown method or option is an InputError now."""
        check_choice("method", self.method, STRATEGIES)
        try:
            self.strategy()
        except InputError:
            raise   # the strategy's own check names the option
        except (TypeError, ValueError) as error:
            parameters = inspect.signature(STRATEGIES[self.method]).parameters
            if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
                unknown = []
            else:
                unknown = sorted(set(self.strategy_options) - set(parameters))
            if unknown:
                accepted = sorted(set(parameters) - {"fraction", "budget", "seed"})
                raise InputError(f"strategy_options: method {self.method!r} takes no option "
                                 f"{', '.join(map(repr, unknown))}; its options are "
                                 f"{', '.join(accepted) or 'none'}") from None
            raise InputError(f"strategy_options: method {self.method!r} refused its options "
                             f"{self.strategy_options!r} ({error})") from None

    def load_splits(self, seed: int | None = None):
        """The run's dataset (:func:`adacore.data.load_dataset`), in the layout its model
        reads: images for a convolutional model (MNIST's 784 values as 1 x 28 x 28)."""
        flatten = False if takes_images(self.model) else None
        return load_dataset(self.dataset, root=self.data_root,
                            imbalance_ratio=self.imbalance_ratio,
                            seed=self.seed if seed is None else seed, flatten=flatten)

    def resolved_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if str(self.device).startswith("cuda") and not torch.cuda.is_available():
            raise InputError("device: got 'cuda', but no CUDA device is available")
        return torch.device(self.device)

    def strategy(self):
        options = {"fraction": self.fraction, "budget": self.budget, "seed": self.seed,
                   **self.strategy_options}
        if self.method == "adacore":
            options.setdefault("beta2", self.beta2)
            options.setdefault("eps", self.eps)
            options.setdefault("average", self.curvature_average)
            options.setdefault("diagnostics", self.diagnostics)
        if self.method in ("adacore", "craig"):
            # the selection engine's bounds; the other methods build no n x n matrix
            if self.neighbors is not None:
                options.setdefault("neighbors", self.neighbors)
            if self.max_memory is not None:
                options.setdefault("max_memory", self.max_memory)
            if self.pool is not None:
                options.setdefault("pool", self.pool)
            if self.refine is not None:
                options.setdefault("refine", self.refine)
            if self.refine_to is not None:
                options.setdefault("refine_to", self.refine_to)
        if self.method == "glister":
            options.setdefault("eta", self.lr)   # the Taylor step is the training step
        if self.method == "infobatch":
            # its annealing counts the epochs it selects for: those after the warm start
            options.setdefault("epochs", max(1, self.epochs - self.warm_start_epochs))
        return get_strategy(self.method, **options)


# What a run saved before a field existed did instead of the field's default: runs of
# adacore < 0.2 (no curvature_average) smoothed AdaCore's curvature once per round and
# trained on sum(w l) / sum(w) per batch, so none of them continues as a run of today
LEGACY_SETTINGS = {"curvature_average": "rms once per round, ratio-weighted batches "
                                        "(adacore < 0.2)"}


def same_settings(stored: dict, config: TrainConfig) -> bool:
    """Whether a saved run used ``config``; fields added since it was saved count as their
    defaults (or as :data:`LEGACY_SETTINGS` says), so a newer adacore still resumes an
    older run where nothing it did has changed. NaN equals NaN."""
    return not settings_differences(stored, config)


def settings_differences(stored: dict, config: TrainConfig) -> list[str]:
    """The settings in which a saved run differs from ``config``, one line each:
    ``"lr: stored 0.1, given 0.05"`` (in field order; see :func:`same_settings`)."""
    saved = {**dataclasses.asdict(TrainConfig()), **LEGACY_SETTINGS, **stored}
    given = dataclasses.asdict(config)
    names = list(given) + [name for name in saved if name not in given]
    missing = object()
    lines = []
    for name in names:
        old, new = saved.get(name, missing), given.get(name, missing)
        if not _same_value(old, new):
            lines.append(f"{name}: stored {'nothing' if old is missing else repr(old)}, "
                         f"given {'nothing' if new is missing else repr(new)}")
    return lines


def describe_differences(lines: list[str], shown: int = 3) -> str:
    """The first ``shown`` of :func:`settings_differences`, for an error message."""
    text = "; ".join(lines[:shown])
    return text + (f"; and {len(lines) - shown} more" if len(lines) > shown else "")


def _same_value(a, b) -> bool:
    """``a == b``, except that NaN equals NaN, also inside dicts and lists."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same_value(a[key], b[key]) for key in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    try:
        return bool(a == b)
    except Exception:     # an array-like stored value: no single truth value
        return False


@torch.no_grad()
def evaluate(model, x, y, *, batch_size: int, device,
             distributed: bool = False) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) in eval mode, in batches.

    ``distributed``: each rank of the default process group evaluates a block of whole
    batches (:func:`adacore.distributed.ddp.shard_bounds`) and the sums are added up
    across ranks, so every rank returns the same figures (the loss up to the order of
    the float64 additions). ``model`` is the plain module, not a DDP wrapper.
    """
    was_training = model.training
    model.eval()
    first, stop = 0, len(x)
    if distributed:
        first, stop = ddp.shard_bounds(len(x), batch_size, ddp.rank(), ddp.world_size())
    correct, total_loss = 0, 0.0
    for start in range(first, stop, batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        logits = model(xb)
        total_loss += float(F.cross_entropy(logits, yb, reduction="sum"))
        correct += int((logits.argmax(dim=1) == yb).sum())
    model.train(was_training)
    if distributed:
        sums = ddp.all_sum(torch.tensor([float(correct), total_loss], dtype=torch.float64))
        correct, total_loss = int(sums[0]), float(sums[1])
    return correct / len(x), total_loss / len(x)


class NonFiniteLoss(InputError):
    """Training met a NaN or infinite loss or weights; the last good checkpoint is kept."""


# written beside the checkpoint when a run stops on a non-finite loss: a resume may then
# lower lr (and change nothing else); removed when the run finishes
NONFINITE_MARKER = "nonfinite.json"


def nonfinite_entries(*states: dict) -> str | None:
    """The first floating tensor, by its key, in these (nested) state dicts (the
    model's, then the optimizer's) that holds a NaN or inf, e.g.
    ``"model['fc.weight']"``; None when all are finite."""
    def walk(value, where):
        if isinstance(value, torch.Tensor):
            if value.is_floating_point() and not bool(torch.isfinite(value).all()):
                return where
            return None
        items = (value.items() if isinstance(value, dict)
                 else enumerate(value) if isinstance(value, (list, tuple)) else ())
        for key, item in items:
            found = walk(item, f"{where}[{key!r}]")
            if found:
                return found
        return None
    for name, state in zip(("model", "optimizer"), states):
        found = walk(state, name)
        if found:
            return found
    return None


def _scale_learning_rate(optimizer, scheduler, factor: float) -> None:
    """Multiply the learning rate by ``factor`` in the optimizer and the schedule,
    where training stands: every schedule here (constant, multistep, cosine, linear
    warm-up) is homogeneous in lr, so the rest of the run follows the schedule of the
    lower lr exactly."""
    for group in optimizer.param_groups:
        group["lr"] *= factor
        if "initial_lr" in group:
            group["initial_lr"] *= factor
    for each in [scheduler, *getattr(scheduler, "_schedulers", [])]:
        each.base_lrs = [lr * factor for lr in each.base_lrs]
        if getattr(each, "_last_lr", None) is not None:
            each._last_lr = [lr * factor for lr in each._last_lr]


class Trainer:
    """Train one model on one method's coresets, logging every epoch to ``out/``.

    ``out/metrics.jsonl`` gets one line per epoch as the run goes; ``out/checkpoint.pt``
    (model, optimizer, scheduler, strategy state, RNG states, visited set) is replaced
    atomically after every epoch; ``out/run.json`` holds the final record. With
    ``resume=True`` a run continues from its checkpoint and ends with the metrics an
    unbroken run would have (timings aside).

    Launched by ``torchrun`` (``WORLD_SIZE`` > 1), :meth:`run` opens the default
    process group itself (NCCL on CUDA, each rank on ``cuda:LOCAL_RANK``; gloo on the
    CPU) unless one is open already, trains a ``DistributedDataParallel`` copy on every
    rank and closes the group it opened. The ranks probe, evaluate and train on their
    shares, rank 0 selects (:mod:`adacore.distributed.ddp`); rank 0 alone holds the
    folder lock and writes the files, and on resume reads the checkpoint and hands it
    to the others. Every rank returns the same record, the single-process run's up to
    the order of float additions.
    """

    def __init__(self, config: TrainConfig, out: str | Path, *, quiet: bool = False,
                 splits=None):
        self.config = config.validate()
        self.out = Path(out)
        self.quiet = quiet
        self.splits = splits

    def _setup(self, device):
        config = self.config
        splits = self.splits or config.load_splits()
        if splits.val is None:
            raise InputError("dataset: a validation split is needed for model selection")
        torch.manual_seed(config.seed)
        model = build_model(config.model, num_classes=splits.train.num_classes,
                            input_shape=tuple(splits.train.x.shape[1:]), seed=config.seed,
                            device=device)
        optimizer = build_optimizer(model, lr=config.lr, momentum=config.momentum,
                                    nesterov=config.nesterov, weight_decay=config.weight_decay)
        scheduler = build_scheduler(optimizer, schedule=config.schedule, epochs=config.epochs,
                                    warmup_epochs=config.warmup_epochs)
        self.augment_generator = torch.Generator().manual_seed(config.seed + 1)
        # the augmentation runs in the loader, on whole global batches (see its transform)
        augment = None
        if config.augment == "crop_flip":
            def augment(inputs):
                return random_crop_flip(inputs, padding=4, generator=self.augment_generator)
        loader = CoresetLoader(splits.train.x, splits.train.y, config.strategy(),
                               batch_size=config.batch_size, select_every=config.select_every,
                               warm_start_epochs=config.warm_start_epochs, space=config.space,
                               probe_batch_size=config.probe_batch_size,
                               seed=config.seed, device=device, val_x=splits.val.x,
                               val_y=splits.val.y, projection_dim=config.projection_dim,
                               transform=augment, max_weight=config.max_weight)
        return splits, model, optimizer, scheduler, loader

    def run(self, *, resume: bool = False) -> dict:
        """Train (or continue) and return the run record; one run per folder at a time."""
        device = ddp.rank_device(self.config.resolved_device())
        with ddp.process_group(device), contextlib.ExitStack() as held:
            def lock() -> None:
                held.enter_context(FolderLock(self.out))

            # rank 0's lock covers the run: the other ranks write nothing to the folder
            ddp.on_rank0(lock)
            return self._run(resume=resume, device=device)

    def _open_folder(self, resume: bool) -> tuple[dict | None, list[dict]]:
        """Check ``out`` for this run (rank 0): the checkpoint to resume from (or None)
        and the metrics rows up to it; a fresh run starts an empty log.

        Runs under the folder lock, so the temporary files of atomic writes found here
        are leftovers of a killed run (never a live writer's) and are removed.
        """
        prepare_folder(self.out)
        for name in ("checkpoint.pt", "metrics.jsonl", "run.json"):
            check_output_file(self.out / name)      # a FIFO, device or link: refused
            remove_stale_temporaries(self.out, name)
        metrics_path, checkpoint_path = self.out / "metrics.jsonl", self.out / "checkpoint.pt"
        if resume and checkpoint_path.exists():
            state = check_run_checkpoint(load_checkpoint(checkpoint_path), checkpoint_path)
            differences = settings_differences(state["config"], self.config)
            if differences and self._lowers_lr_after_nonfinite_stop(state["config"]):
                differences = []          # the one change a stopped run may take
            if differences:
                raise InputError(f"--resume: the checkpoint in {str(self.out)!r} was written "
                                 f"with other settings ({describe_differences(differences)}); "
                                 f"use another --out or the same flags")
            # every check before the log is touched: a damaged checkpoint keeps its metrics
            check_run_checkpoint(state, checkpoint_path, epochs=self.config.epochs)
            epoch = state["loader"]["epoch"]
            rows = read_jsonl(metrics_path)
            for number, row in enumerate(rows, start=1):
                if isinstance(row.get("epoch"), bool) or not isinstance(row.get("epoch"), int):
                    raise InputError(f"{str(metrics_path)!r}: row {number} has epoch "
                                     f"{row.get('epoch')!r}, expected an int")
            history = [row for row in rows if row["epoch"] <= epoch]
            rewrite_jsonl(metrics_path, history)
            return state, history
        run_path = self.out / "run.json"
        if resume and run_path.exists():
            # a finished run whose checkpoint is gone: its record says what it ran
            self._refuse_other_finished_run(run_path)
        if resume and len(read_jsonl(metrics_path)) > 1:
            # a run logs a row, then its checkpoint: two rows mean one was written
            raise InputError(f"--resume: {str(self.out)!r} holds metrics of several epochs "
                             f"but no checkpoint.pt to continue from; use another --out "
                             f"(or delete the folder to train it again)")
        if not resume and (metrics_path.exists() or checkpoint_path.exists()):
            raise InputError(f"--out: {str(self.out)!r} already holds a run; pass --resume "
                             f"to continue it or choose another folder")
        # a fresh run, or a resume of one killed before its first checkpoint: whatever
        # rows it logged are redone, so the log starts empty
        rewrite_jsonl(metrics_path, [])
        return None, []

    def _lowers_lr_after_nonfinite_stop(self, stored: dict) -> bool:
        """Whether a resume changes only ``lr``, to a lower one, of a run stopped by a
        non-finite loss or weights (``out/nonfinite.json``, written at the stop)."""
        if not (self.out / NONFINITE_MARKER).exists():
            return False
        old_lr = stored.get("lr")
        if isinstance(old_lr, bool) or not isinstance(old_lr, (int, float)):
            return False
        return (self.config.lr < old_lr
                and not settings_differences({**stored, "lr": self.config.lr}, self.config))

    def _refuse_other_finished_run(self, run_path: Path) -> None:
        """A resume of a finished run whose checkpoint is gone: one InputError, naming
        the settings that differ when its run.json says it ran others."""
        try:
            record = json.loads(run_path.read_bytes())
        except (OSError, UnicodeDecodeError, ValueError, RecursionError) as error:
            raise InputError(f"--resume: {str(run_path)!r} is not a readable run record "
                             f"({type(error).__name__}) and there is no checkpoint.pt; use "
                             f"another --out") from None
        stored = record.get("config") if isinstance(record, dict) else None
        if not isinstance(stored, dict):
            raise InputError(f"--resume: {str(run_path)!r} is not a run record (expected an "
                             f"object with a 'config' table); use another --out")
        differences = settings_differences(stored, self.config)
        if differences:
            raise InputError(f"--resume: the finished run in {str(self.out)!r} (run.json; its "
                             f"checkpoint.pt is gone) used other settings "
                             f"({describe_differences(differences)}); use another --out or "
                             f"the same flags")
        raise InputError(f"--resume: the run in {str(self.out)!r} finished (run.json) and its "
                         f"checkpoint.pt is gone, so there is nothing to continue; its record "
                         f"is kept; use another --out to train it again")

    def _run(self, *, resume: bool, device) -> dict:
        config = self.config
        metrics_path, checkpoint_path = self.out / "metrics.jsonl", self.out / "checkpoint.pt"
        splits, model, optimizer, scheduler, loader = self._setup(device)
        state, history = ddp.on_rank0(lambda: self._open_folder(resume))
        totals = {"examples": 0, "wall": 0.0}
        lr_changes: list[dict] = []
        if state is not None:
            try:
                model.load_state_dict(state["model"])
                optimizer.load_state_dict(state["optimizer"])
                scheduler.load_state_dict(state["scheduler"])
                loader.load_state_dict(state["loader"])
                torch.set_rng_state(state["torch_rng"])
                self.augment_generator.set_state(state["augment_rng"])
                totals = dict(state["totals"])
                lr_changes = list(state.get("lr_changes", []))
                if state["config"]["lr"] != config.lr:   # lowered after a non-finite stop
                    _scale_learning_rate(optimizer, scheduler, config.lr / state["config"]["lr"])
                    lr_changes.append({"after_epoch": loader.epoch_,
                                       "from": state["config"]["lr"], "to": config.lr})
            except InputError:
                raise
            except (RuntimeError, KeyError, ValueError, TypeError, IndexError) as error:
                # entries of the right types whose contents do not fit this run
                first = str(error).strip().splitlines()[0] if str(error).strip() else ""
                raise InputError(f"--resume: the checkpoint in {str(self.out)!r} does not fit "
                                 f"this run ({error.__class__.__name__}: {first[:200]}); "
                                 f"use another --out") from None
        # trained through the DDP wrapper (the model itself in one process); probed,
        # evaluated and saved as the plain model
        trained = ddp.wrap_model(model, device)
        chief = ddp.rank() == 0

        progress = _progress(range(loader.epoch_, config.epochs), total=config.epochs,
                             initial=loader.epoch_, quiet=self.quiet or not chief,
                             desc=f"{config.method} seed {config.seed}")
        try:
            for _ in progress:
                row = self._epoch(trained, model, optimizer, scheduler, loader, splits,
                                  device, totals)
                history.append(row)

                def save(row=row) -> None:
                    # only finite weights with finite losses are kept: a step that
                    # overflowed leaves the last good checkpoint (and the log up to it)
                    bad = nonfinite_entries(model.state_dict(), optimizer.state_dict())
                    for name in ("train_loss", "val_loss", "test_loss"):
                        if bad is None and not math.isfinite(row[name]):
                            bad = f"the {name.replace('_', ' ')}"
                    if bad:
                        raise NonFiniteLoss(
                            f"training: {bad} became NaN or inf in epoch {loader.epoch_}; "
                            f"the last good checkpoint (epoch {loader.epoch_ - 1}) is kept in "
                            f"{str(self.out)!r}: resume it with a lower --lr")
                    append_jsonl(metrics_path, row)
                    save_checkpoint({"config": dataclasses.asdict(config),
                                     "model": model.state_dict(),
                                     "optimizer": optimizer.state_dict(),
                                     "scheduler": scheduler.state_dict(),
                                     "loader": loader.state_dict(),
                                     "torch_rng": torch.get_rng_state(),
                                     "augment_rng": self.augment_generator.get_state(),
                                     "totals": totals,
                                     # only after a lowered lr: the format is unchanged
                                     **({"lr_changes": lr_changes} if lr_changes else {})},
                                    checkpoint_path)

                # rank 0 writes; a failed write (disk full) is raised on every rank, so
                # none is left waiting in the next collective
                ddp.on_rank0(save)
                progress.show(row)
        except NonFiniteLoss:
            # the mark that lets a resume lower lr (the one change it may make); rank 0
            # writes it alone, no collective: a stop found while saving reaches the other
            # ranks from on_rank0 as a plain InputError, and they are leaving already
            if chief:
                atomic_write_bytes(self.out / NONFINITE_MARKER, json.dumps(
                    {"epoch": loader.epoch_, "lr": config.lr}).encode())
            raise
        record = run_record(config, history)
        if lr_changes:
            record["lr_changes"] = lr_changes

        def finish() -> None:
            atomic_write_bytes(self.out / "run.json", json.dumps(record, indent=1).encode())
            (self.out / NONFINITE_MARKER).unlink(missing_ok=True)

        ddp.on_rank0(finish)
        return record

    def _epoch(self, trained, model, optimizer, scheduler, loader, splits, device,
               totals) -> dict:
        trained.train()
        loss_sum, weight_sum = 0.0, 0.0   # weight_sum: examples seen this epoch
        start = time.perf_counter()
        batches = loader.epoch(model)
        select_seconds = 0.0
        for step, (xb, yb, wb) in enumerate(batches):
            if step == 0 and loader.last_selection_ is not None:
                select_seconds = loader.last_selection_["select_seconds"]
            losses = F.cross_entropy(trained(xb), yb, reduction="none")
            # distributed: this rank's share, scaled so that DDP's gradient average is
            # the global batch's; batch_loss is the global batch's on every rank, so a
            # non-finite one stops all ranks at the same step
            # mean(w l), w of mean 1 over the whole coreset (not per batch)
            loss, batch_loss, batch_size = ddp.weighted_loss(losses, wb)
            if not torch.isfinite(batch_loss):
                raise NonFiniteLoss(f"training: the loss became {float(batch_loss)} at epoch "
                                    f"{loader.epoch_}; the last good checkpoint is kept in "
                                    f"{str(self.out)!r}: resume it with a lower --lr")
            # each example's latest loss, for methods that prune by it (else a no-op)
            loader.record_losses(losses)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            fault_point("train_step")
            optimizer.step()
            loss_sum += float(batch_loss) * float(batch_size)
            weight_sum += float(batch_size)
        scheduler.step()
        # DDP hands rank 0's buffers out before each forward, not after the last one
        ddp.broadcast_buffers(model)
        train_seconds = time.perf_counter() - start - select_seconds
        examples = loader.examples_this_epoch()
        totals["examples"] += examples
        totals["wall"] += select_seconds + train_seconds
        start = time.perf_counter()
        distributed = ddp.is_distributed()
        val_accuracy, val_loss = evaluate(model, splits.val.x, splits.val.y,
                                          batch_size=self.config.eval_batch_size, device=device,
                                          distributed=distributed)
        test_accuracy, test_loss = evaluate(model, splits.test.x, splits.test.y,
                                            batch_size=self.config.eval_batch_size,
                                            device=device, distributed=distributed)
        selection = loader.last_selection_ or {}
        return {"epoch": loader.epoch_, "train_loss": loss_sum / max(weight_sum, 1e-12),
                "val_accuracy": val_accuracy, "val_loss": val_loss,
                "test_accuracy": test_accuracy, "test_loss": test_loss,
                "select_seconds": select_seconds, "train_seconds": train_seconds,
                "eval_seconds": time.perf_counter() - start,
                "examples_processed": totals["examples"], "wall_seconds": totals["wall"],
                "fraction_visited": loader.fraction_visited,
                "gradient_error": selection.get("gradient_error"),
                "preconditioned_gradient_error": selection.get("preconditioned_gradient_error"),
                "max_weight_over_mean": selection.get("max_weight_over_mean"),
                "singleton_clusters": selection.get("singleton_clusters"),
                "overlap_with_previous": selection.get("overlap_with_previous"),
                "curvature_ratio_median": selection.get("curvature_ratio_median"),
                "craig_overlap": selection.get("craig_overlap"),
                "kept_fraction": selection.get("kept_fraction"),
                "warm_start_examples": loader.warm_start_examples_,
                "coreset_size": examples, "lr": optimizer.param_groups[0]["lr"]}


def run_record(config: TrainConfig, history: list[dict]) -> dict:
    """The per-run summary the report reads: final and best-validation figures, times."""
    best = max(history, key=lambda row: (row["val_accuracy"], -row["epoch"]))
    last = history[-1]
    return {"method": config.method, "seed": config.seed, "fraction": config.fraction,
            "config": dataclasses.asdict(config),
            "dataset": config.dataset, "model": config.model,
            "final_test_accuracy": last["test_accuracy"], "final_test_loss": last["test_loss"],
            "best_val_epoch": best["epoch"], "best_val_accuracy": best["val_accuracy"],
            "test_accuracy_at_best_val": best["test_accuracy"],
            "select_seconds": sum(row["select_seconds"] for row in history),
            "train_seconds": sum(row["train_seconds"] for row in history),
            "eval_seconds": sum(row["eval_seconds"] for row in history),
            "fraction_visited": last["fraction_visited"],
            "warm_start_examples": last.get("warm_start_examples", 0), "history": history}


def _progress(epochs, *, total, initial, quiet, desc) -> "_Progress":
    """The epochs to run, reporting each one on stderr (see :class:`_Progress`)."""
    return _Progress(epochs, total=total, initial=initial, quiet=quiet, desc=desc)


class _Progress:
    """Progress of a run on stderr: a tqdm bar on a terminal; elsewhere (a log file, a
    pipe, CI) one line per epoch as it ends, e.g. ``adacore seed 0 epoch 3/40: val
    0.912 test 0.905, select 1.2 s, train 0.4 s``; nothing when ``quiet``."""

    def __init__(self, epochs, *, total, initial, quiet, desc):
        self.total, self.desc = total, desc
        stream = sys.stderr
        terminal = stream is not None and hasattr(stream, "isatty") and stream.isatty()
        self.lines = not quiet and stream is not None and not terminal
        self.bar = None
        if not quiet and terminal:
            from tqdm.auto import tqdm
            self.bar = tqdm(epochs, total=total, initial=initial, desc=desc, unit="epoch",
                            leave=False)
        self.epochs = epochs if self.bar is None else self.bar

    def __iter__(self):
        return iter(self.epochs)

    def show(self, row: dict) -> None:
        """Report an epoch's metrics row."""
        if self.bar is not None:
            self.bar.set_postfix(val=f"{row['val_accuracy']:.3f}",
                                 test=f"{row['test_accuracy']:.3f}")
        elif self.lines:
            print(f"{self.desc} epoch {row['epoch']}/{self.total}: val "
                  f"{row['val_accuracy']:.3f} test {row['test_accuracy']:.3f}, select "
                  f"{row['select_seconds']:.1f} s, train {row['train_seconds']:.1f} s",
                  file=sys.stderr, flush=True)
