"""The ``adacore`` command line."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

from adacore.validation import InputError


def load_array(argument: str, path: str) -> np.ndarray:
    """Read a plain ``.npy`` array without ever unpickling; a bad file is an InputError.

    The header is read first and checked against the file's size, so a corrupt or
    hostile header cannot make NumPy allocate more than the file holds.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{argument}: no file at {path!r}, expected a .npy file")
    try:
        with open(file, "rb") as stream:
            version = np.lib.format.read_magic(stream)
            # the header's declared length, checked before anything reads that much
            width = 2 if version == (1, 0) else 4
            declared = int.from_bytes(stream.read(width), "little")
            if declared > min(file.stat().st_size - stream.tell(), 1 << 20):
                raise ValueError(f"the header claims {declared} bytes, more than the file "
                                 f"or any real header holds")
            stream.seek(-width, os.SEEK_CUR)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(stream)
            if dtype.hasobject:
                raise ValueError("object arrays are not accepted")
            expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if expected != file.stat().st_size - stream.tell():
                raise ValueError(f"the header promises {expected} bytes of data, the file "
                                 f"holds {file.stat().st_size - stream.tell()}")
        return np.load(file, allow_pickle=False)
    except (KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # NumPy raises many types for a malformed header
        raise InputError(f"{argument}: cannot read {path!r} as a .npy array "
                         f"({type(error).__name__}: {error})") from error


def _select(args: argparse.Namespace) -> int:
    from adacore.strategies import STRATEGIES, get_strategy

    # a class-level `requires` (GLISTER's depends on its options, and needs no losses)
    requires = getattr(STRATEGIES.get(args.method), "requires", ())
    if isinstance(requires, tuple) and "losses" in requires:
        raise InputError(f"--method: {args.method!r} prunes by each example's training loss "
                         f"during training, which a file of vectors does not give; use "
                         f"`adacore run --method {args.method}` or CoresetLoader in your loop")

    vectors = load_array("--vectors", args.vectors)
    labels = load_array("--labels", args.labels)
    options = {"fraction": args.fraction, "budget": args.budget, "seed": args.seed}
    method = args.method

    def only(flag: str, value, methods: tuple[str, ...]) -> bool:
        """Whether ``flag`` was given; refused for a method that does not use it."""
        if value is None:
            return False
        if method not in methods:
            raise InputError(f"{flag}: only method(s) {', '.join(methods)} use it, got "
                             f"--method {method}")
        return True

    if only("--optimizer", args.optimizer, ("adacore", "craig", "glister")):
        if method == "glister":   # GLISTER's greedy: exact (naive) or stochastic
            if args.optimizer not in ("naive", "stochastic"):
                raise InputError(f"--optimizer: glister's greedy is naive or stochastic, got "
                                 f"{args.optimizer!r}")
            options["greedy"] = args.optimizer
        else:
            options["optimizer"] = args.optimizer
    if only("--beta2", args.beta2, ("adacore",)):
        options["beta2"] = args.beta2
    if only("--eps", args.eps, ("adacore",)):
        options["eps"] = args.eps
    engine = {"neighbors": args.neighbors, "neighbor_search": args.neighbor_search,
              "max_memory": args.max_memory, "client": args.scheduler,
              "partitions": args.partitions, "pool": args.pool, "refine": args.refine,
              "refine_to": args.refine_to}
    given = {name: value for name, value in engine.items()
             if value is not None and not (name == "neighbor_search" and value == "auto")}
    if given and method not in ("adacore", "craig"):
        flag = "--" + next(iter(given)).replace("_", "-").replace("client", "scheduler")
        raise InputError(f"{flag}: only the facility-location methods (adacore, craig) use "
                         f"it, got --method {method}")
    if method in ("adacore", "craig"):
        options.update(engine)
    strategy = get_strategy(method, **options)
    inputs = {}
    if method == "adacore":
        if args.hessian is None:
            raise InputError("--hessian: method 'adacore' needs a .npy file of per-example "
                             "Hessian diagonals shaped like --vectors")
        inputs["hessian_diag"] = load_array("--hessian", args.hessian)
    elif args.hessian is not None:
        raise InputError(f"--hessian: only method 'adacore' uses it, got --method {method}")
    for flag, value in (("--val-vectors", args.val_vectors), ("--val-labels", args.val_labels),
                        ("--val-hessian", args.val_hessian)):
        only(flag, value, ("glister",))
    if method == "glister":
        if args.val_vectors is None:
            raise InputError("--val-vectors: method 'glister' selects against validation "
                             "vectors; pass a .npy file shaped (m, d) like --vectors")
        inputs["val_grads"] = load_array("--val-vectors", args.val_vectors)
        if "val_labels" in strategy.requires:
            if args.val_labels is None:
                raise InputError("--val-labels: method 'glister' per class needs the "
                                 "validation labels, a .npy file of (m,) integers")
            inputs["val_labels"] = load_array("--val-labels", args.val_labels)
        if args.val_hessian is not None:
            inputs["val_hessian_diag"] = load_array("--val-hessian", args.val_hessian)
    start = time.perf_counter()
    coreset = strategy.select(vectors, labels, **inputs)
    seconds = time.perf_counter() - start
    if len(coreset) == 0:
        why = ""
        if coreset.metadata.get("zero_weights"):
            why = (" (every OMP weight was zero: the ridge lam outweighs gradients this "
                   "small; pass a smaller lam, lam = 0 is scale-invariant, or rescale "
                   "the vectors)")
        raise InputError(f"--method: {method!r} selected no example of "
                         f"{labels.shape[0]}{why}; nothing written to {args.out!r}")
    coreset.save(args.out)
    budgets = ", ".join(f"{label}:{b}" for label, b in coreset.budgets.items())
    print(f"{coreset.method}: k = {len(coreset)} of n = {labels.shape[0]} "
          f"in {seconds:.3f} s -> {args.out}")
    print(f"  per-class budgets  {budgets}")
    print(f"  gradient error     {coreset.metadata['gradient_error']:.4f} "
          f"(||sum g - sum w g|| / ||sum g||)")
    if "preconditioned_gradient_error" in coreset.metadata:
        print(f"  preconditioned     {coreset.metadata['preconditioned_gradient_error']:.4f}")
    print(f"  largest weight     {coreset.weights.max() / coreset.weights.mean():.2f} x mean")
    if "engine" in coreset.metadata:
        print(f"  engine             {coreset.metadata['engine']}")
    return 0


# `adacore compare` without --methods or a scenario: every method, the flagship first
DEFAULT_METHODS = ["adacore", "craig", "gradmatch", "glister", "random", "rs2", "full"]

# TrainConfig fields the command line sets through other flags (or not at all)
_NOT_FLAGS = {"strategy_options", "method", "seed"}
_HELP = {
    "dataset": "mnist, digits or cifar10", "model": "mlp, linear, lenet, resnet20, resnet18",
    "fraction": "share of the training set in each coreset, (0, 1]",
    "epochs": "training epochs (passes over the current coreset)",
    "select_every": "R: reselect every R epochs",
    "warm_start_epochs": "full-data epochs before the first selection",
    "space": "gradient space of the probe: auto (each method's own), logits or last_layer",
    "budget": "per-class budgets: proportional or equal",
    "schedule": "learning-rate schedule: constant, multistep or cosine",
    "data_root": "folder of the data files (CIFAR-10, MNIST IDX)",
    "imbalance_ratio": "long-tailed training set: largest / smallest class",
    "device": "auto, cpu or cuda",
    "projection_dim": "randomly project the probe's vectors to this width (not for adacore)",
    "augment": "batch augmentation: none or crop_flip (CIFAR)",
    "probe_batch_size": "examples per batch of the selection's probe",
    "eval_batch_size": "examples per batch of evaluation",
    "beta2": "adacore: curvature smoothing per optimizer step, in [0, 1) (0: fresh each round)",
    "eps": "adacore: damping added to the curvature before dividing",
    "curvature_average": "adacore: what the smoothing averages: rms, mean or geometric",
    "diagnostics": "adacore: also run CRAIG each round and log the overlap (costs a round)",
    "neighbors": "adacore/craig: select on each point's K nearest neighbours (sparse engine)",
    "max_memory": "adacore/craig: memory one class's selection may use, e.g. 4GB (default "
                  "half the machine's); over it the sparse engine runs, or the run refuses",
    "pool": "adacore/craig: choose each class's k picks among pool * k candidates drawn "
            "by D^2 sampling (all examples still covered); unset: every example",
    "refine": "adacore/craig: Voronoi iterations after each class's greedy (each pick moves "
              "to its cluster's medoid); unset: 2 with --pool, 0 without",
    "refine_to": "adacore/craig: where a refinement step moves each pick: medoid (never "
                 "lowers F) or mean (the member nearest the cluster's mean); unset: medoid",
    "max_weight": "cap each coreset weight at this multiple of the mean (>= 1), the rest "
                  "scaled up to keep the mean 1; unset: the weights as selected",
}


def _config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field; defaults None so a scenario file can fill them."""
    import dataclasses

    from adacore.training import TrainConfig

    for field in dataclasses.fields(TrainConfig):
        if field.name in _NOT_FLAGS:
            continue
        flag = "--" + field.name.replace("_", "-")
        default = field.default
        if isinstance(default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                                help=f"(default {default})")
            continue
        kind = type(default) if default is not None else (
            {"imbalance_ratio": float, "projection_dim": int, "neighbors": int,
             "pool": float, "refine": int, "max_weight": float}.get(field.name, str))
        parser.add_argument(flag, type=kind, default=None,
                            help=f"{_HELP.get(field.name, '')} (default {default})".strip())


def _settings(args: argparse.Namespace, base: dict | None = None) -> dict:
    import dataclasses

    from adacore.training import TrainConfig

    settings = dict(base or {})
    for field in dataclasses.fields(TrainConfig):
        value = getattr(args, field.name, None)
        if value is not None and field.name not in _NOT_FLAGS:
            settings[field.name] = value
    return settings


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError as error:
        raise InputError(f"--seeds: got {text!r}, expected integers separated by commas") \
            from error


def _run(args: argparse.Namespace) -> int:
    from adacore.experiments.runner import make_config, run_one

    settings = _settings(args)
    settings.update(method=args.method, seed=args.seed)
    record = run_one(make_config(settings), args.out, resume=args.resume, quiet=args.quiet)
    print(f"{record['method']} seed {record['seed']}: test accuracy "
          f"{record['test_accuracy_at_best_val']:.4f} at the best validation epoch "
          f"({record['best_val_epoch']}), final {record['final_test_accuracy']:.4f}; "
          f"selection {record['select_seconds']:.1f} s, training {record['train_seconds']:.1f} s, "
          f"visited {record['fraction_visited']:.1%} -> {args.out}")
    return 0


def _compare_convex(args: argparse.Namespace) -> int:
    from adacore.experiments.convex import read_convex_scenario, run_convex_experiment

    if not args.config:
        raise InputError("--config: --task convex reads its settings from a TOML scenario "
                         "(see experiments/convex_*.toml)")
    settings = read_convex_scenario(args.config)
    if args.methods:
        settings["methods"] = [m.strip() for m in args.methods.split(",")]
    if args.seeds:
        settings["seeds"] = _int_list(args.seeds)
    run_convex_experiment(settings, args.out)
    print((Path(args.out) / "results.md").read_text())
    written = sorted(p.name for p in Path(args.out).iterdir() if p.is_file())
    print(f"wrote {args.out}: " + ", ".join(written))
    return 0


def _compare(args: argparse.Namespace) -> int:
    from adacore.experiments.runner import COMPARE_KEYS, compare, read_scenario

    if args.task == "convex":
        return _compare_convex(args)

    scenario = read_scenario(args.config) if args.config else {}
    base = {key: value for key, value in scenario.items() if key not in COMPARE_KEYS}
    settings = _settings(args, base)
    methods = (args.methods.split(",") if args.methods
               else scenario.get("methods", DEFAULT_METHODS))
    seeds = _int_list(args.seeds) if args.seeds else scenario.get("seeds", [0, 1, 2])
    target = args.target if args.target is not None else scenario.get("target")
    margin = (args.full_margin if args.full_margin is not None
              else scenario.get("full_margin"))
    import shlex

    command = "adacore " + " ".join(shlex.quote(part) for part in args.argv)
    # a flag on the command line applies to every method, over the scenario's per_method
    flagged = set(_settings(args))
    per_method = {method: {key: value for key, value in own.items() if key not in flagged}
                  for method, own in scenario.get("per_method", {}).items()}
    paths = compare(settings, [m.strip() for m in methods], seeds, args.out, target=target,
                    resume=args.resume, quiet=args.quiet, command=command,
                    per_method=per_method, full_margin=margin)
    if not paths:          # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print(Path(paths["results_md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values() if p is not None))
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from adacore.experiments.diagnose import diagnose, diagnose_run
    from adacore.experiments.diagnosis_report import diagnosis_markdown, write_diagnosis

    methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
    chosen = {"methods": methods} if methods else {}
    if args.from_run:
        given = [flag for flag, value in (("--vectors", args.vectors), ("--labels", args.labels),
                                          ("--hessian", args.hessian),
                                          ("--val-vectors", args.val_vectors),
                                          ("--val-hessian", args.val_hessian),
                                          ("--val-labels", args.val_labels)) if value]
        if given:
            raise InputError(f"--from-run: give either a run folder or {given[0]} and the "
                             f"other .npy files, not both")
        # the run's method continues from its checkpointed strategy state
        report = diagnose_run(args.from_run, fraction=args.fraction, seed=args.seed,
                              space=args.space, **chosen)
    else:
        missing = [flag for flag, value in (("--vectors", args.vectors),
                                            ("--labels", args.labels),
                                            ("--hessian", args.hessian)) if value is None]
        if missing:
            raise InputError(f"{missing[0]}: needed (or use --from-run DIR)")
        if args.space is not None:
            raise InputError("--space: only with --from-run (.npy vectors are in whatever "
                             "space they were computed)")
        optional = {name: (load_array(flag, value) if value else None)
                    for name, flag, value in (
                        ("val_grads", "--val-vectors", args.val_vectors),
                        ("val_hessian_diag", "--val-hessian", args.val_hessian),
                        ("val_labels", "--val-labels", args.val_labels))}
        report = diagnose(load_array("--vectors", args.vectors),
                          load_array("--labels", args.labels),
                          hessian_diag=load_array("--hessian", args.hessian),
                          fraction=args.fraction, seed=args.seed, **optional, **chosen)
    paths = write_diagnosis(report, args.out)
    print(diagnosis_markdown(report))
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _bench(args: argparse.Namespace) -> int:
    import importlib

    from adacore.bench import ALL, BENCHMARKS

    names = list(ALL) if args.name == "all" else [args.name]
    for name in names:
        module, function = BENCHMARKS[name].split(":")
        status = getattr(importlib.import_module(module), function)(args.options)
        if status:   # a check that failed (gpu) says so with its exit status
            return int(status)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from adacore.selection.budgets import BUDGET_MODES
    from adacore.selection.facility_location import OPTIMIZERS, REFINE_STEPS
    from adacore.selection.neighbors import SEARCHES
    from adacore.strategies import available_strategies

    parser = argparse.ArgumentParser(
        prog="adacore", description="Adaptive second-order coresets for data-efficient "
                                    "training.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    select = commands.add_parser(
        "select", help="select a coreset from per-example vectors in .npy files",
        description="Select a weighted coreset from per-example vectors (gradients) and "
                    "labels, and write it to an .npz file (indices, weights, gains).")
    select.add_argument("--vectors", required=True, help=".npy file, shape (n, d)")
    select.add_argument("--labels", required=True, help=".npy file of integer labels, (n,)")
    select.add_argument("--fraction", required=True, type=float, help="share to keep, (0, 1]")
    select.add_argument("--method", default="adacore", choices=available_strategies())
    select.add_argument("--hessian", help=".npy file of Hessian diagonals, shaped like "
                                          "--vectors (adacore only)")
    select.add_argument("--out", required=True, help="output .npz file")
    select.add_argument("--budget", default="proportional", choices=BUDGET_MODES)
    select.add_argument("--optimizer", choices=sorted(OPTIMIZERS),
                        help="greedy optimizer (adacore, craig; glister: naive or "
                             "stochastic); default: the method's own")
    select.add_argument("--beta2", type=float,
                        help="adacore: curvature smoothing per optimizer step (one round: "
                             "no effect)")
    select.add_argument("--eps", type=float, help="adacore: damping of the curvature")
    select.add_argument("--val-vectors", help="glister: .npy validation vectors (m, d)")
    select.add_argument("--val-labels", help="glister: .npy validation labels (m,)")
    select.add_argument("--val-hessian", help="glister: .npy validation Hessian diagonals")
    select.add_argument("--seed", type=int, default=0)
    select.add_argument("--neighbors", type=int, metavar="K",
                        help="solve on each point's K nearest neighbours (sparse engine, "
                             "O(n K) memory)")
    select.add_argument("--neighbor-search", default="auto", choices=SEARCHES,
                        help="neighbour search of the sparse engine (default: exact up to "
                             "20,000 points, then faiss if installed, else ivf)")
    select.add_argument("--max-memory", metavar="SIZE",
                        help="memory one class's problem may use, e.g. 4GB (default: half "
                             "the machine's); a larger dense problem switches to the sparse "
                             "engine or is refused")
    select.add_argument("--pool", type=float, metavar="FACTOR",
                        help="choose each class's k picks among ceil(FACTOR k) candidates "
                             "drawn by D^2 sampling, every point still covered (default: "
                             "every point a candidate)")
    select.add_argument("--refine", type=int, metavar="N",
                        help="Voronoi iterations after each class's greedy: each pick moves "
                             "to its cluster's medoid (default: 2 with --pool, 0 without)")
    select.add_argument("--refine-to", choices=sorted(REFINE_STEPS),
                        help="where a refinement step moves each pick: its cluster's medoid "
                             "(never lowers F) or the member nearest the cluster's mean "
                             "(default: medoid)")
    select.add_argument("--scheduler", metavar="ADDRESS",
                        help="run GreeDi on this Dask scheduler, e.g. tcp://host:8786")
    select.add_argument("--partitions", type=int,
                        help="GreeDi partitions per class (default: one per worker)")
    select.set_defaults(handler=_select)

    run = commands.add_parser(
        "run", help="train one model on one method's coresets",
        description="Train a model on coresets reselected every R epochs, logging every "
                    "epoch to OUT/metrics.jsonl and checkpointing to OUT/checkpoint.pt.")
    run.add_argument("--method", default="adacore", choices=available_strategies())
    run.add_argument("--seed", type=int, default=0)
    _config_flags(run)
    run.add_argument("--out", required=True, help="output folder")
    run.add_argument("--resume", action="store_true", help="continue the run in --out")
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    run.set_defaults(handler=_run)

    compare = commands.add_parser(
        "compare", help="train every method with every seed and write a report",
        description="Train each method with each seed on the same settings and write "
                    "OUT/results.json, OUT/results.md and PNG plots. Flags override the "
                    "--config scenario.")
    compare.add_argument("--config", help="TOML scenario (see experiments/)")
    compare.add_argument("--task", default="nn", choices=["nn", "convex"],
                         help="nn: networks trained on reselected coresets; convex: "
                              "logistic regression / SVM / ridge / LASSO on a coreset chosen "
                              "once (settings from --config; --methods and --seeds apply)")
    compare.add_argument("--methods", help="comma-separated (default: " + ",".join(DEFAULT_METHODS) + ")")
    compare.add_argument("--seeds", help="comma-separated, e.g. 0,1,2")
    compare.add_argument("--target", type=float,
                         help="validation accuracy (a fraction) for the speedup column")
    compare.add_argument("--full-margin", type=float, metavar="FRACTION",
                         help="time to accuracy: seconds to within this much of full "
                              "data's final test accuracy (default: the scenario's "
                              "full_margin, else 0.01)")
    _config_flags(compare)
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument("--resume", action="store_true", help="continue unfinished runs")
    compare.add_argument("--quiet", action="store_true", help="no progress bars")
    compare.set_defaults(handler=_compare)

    diagnose = commands.add_parser(
        "diagnose", help="one selection round, every method: per-dimension gradient error, "
                         "preconditioned error, curvature spread",
        description="Run every method once at the same budget on one round's vectors "
                    "(from .npy files, or probed from a finished run's checkpoint) and "
                    "report how well each coreset's weighted gradient estimates the full "
                    "one, dimension by dimension, and how its points spread over curvature.")
    diagnose.add_argument("--from-run", help="a run folder (adacore run --out) to probe; the "
                                             "run's method continues from its saved state")
    diagnose.add_argument("--space", default=None, choices=["logits", "last_layer"],
                          help="gradient space of the probe for --from-run (default: the "
                               "space the run selected in)")
    diagnose.add_argument("--vectors", help=".npy per-example vectors (n, d)")
    diagnose.add_argument("--labels", help=".npy integer labels (n,)")
    diagnose.add_argument("--hessian", help=".npy Hessian diagonals shaped like --vectors")
    diagnose.add_argument("--val-vectors", help=".npy validation vectors (for glister)")
    diagnose.add_argument("--val-hessian", help=".npy validation Hessian diagonals")
    diagnose.add_argument("--val-labels", help=".npy validation labels (for per-class glister)")
    diagnose.add_argument("--fraction", type=float, required=True)
    diagnose.add_argument("--methods", help="comma-separated (default: adacore, craig, "
                                            "gradmatch, glister, random)")
    diagnose.add_argument("--seed", type=int, default=0)
    diagnose.add_argument("--out", required=True, help="output folder")
    diagnose.set_defaults(handler=_diagnose)

    bench = commands.add_parser(
        "bench", help="run the benchmarks (ratios against peers, side by side)",
        description="facility: facility location against apricot and submodlib (install "
                    "the 'bench' extra); round: one selection round against one full-data "
                    "epoch on MNIST; sparse: 1% of 1,000,000 x 64 points on a neighbour graph (time, "
                    "peak memory, recall); scaling: dense, sparse and apricot from 1,000 to "
                    "1,000,000 points; gpu: the CUDA results against the CPU and float64 "
                    "references, and a timed ResNet20 round (--device cpu: a self-test). "
                    "all: facility, round, sparse and scaling. Options after the name go to "
                    "the benchmark.")
    from adacore.bench import BENCHMARKS
    bench.add_argument("name", choices=[*BENCHMARKS, "all"])
    bench.add_argument("options", nargs=argparse.REMAINDER,
                       help="the benchmark's own options, e.g. --repeats 5")
    bench.set_defaults(handler=_bench)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # for the record of a run
    try:
        return args.handler(args)
    except InputError as error:
        print(f"adacore {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"adacore {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
