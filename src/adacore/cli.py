"""The ``adacore`` command line."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from adacore.validation import InputError


def load_array(argument: str, path: str) -> np.ndarray:
    """Read a ``.npy`` file without ever unpickling; a bad file is an InputError."""
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{argument}: no file at {path!r}, expected a .npy file")
    try:
        return np.load(file, allow_pickle=False)
    except (OSError, ValueError, EOFError) as error:
        raise InputError(f"{argument}: cannot read {path!r} as a .npy array ({error})") \
            from error


def _select(args: argparse.Namespace) -> int:
    from adacore.strategies import get_strategy

    vectors = load_array("--vectors", args.vectors)
    labels = load_array("--labels", args.labels)
    options = {"fraction": args.fraction, "budget": args.budget, "seed": args.seed}
    if args.method != "random":
        options["optimizer"] = args.optimizer
    if args.method == "adacore":
        options.update(beta2=args.beta2, eps=args.eps)
    strategy = get_strategy(args.method, **options)
    inputs = {}
    if args.method == "adacore":
        if args.hessian is None:
            raise InputError("--hessian: method 'adacore' needs a .npy file of per-example "
                             "Hessian diagonals shaped like --vectors")
        inputs["hessian_diag"] = load_array("--hessian", args.hessian)
    elif args.hessian is not None:
        raise InputError(f"--hessian: only method 'adacore' uses it, got --method {args.method}")
    start = time.perf_counter()
    coreset = strategy.select(vectors, labels, **inputs)
    seconds = time.perf_counter() - start
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
    return 0


def build_parser() -> argparse.ArgumentParser:
    from adacore.selection.budgets import BUDGET_MODES
    from adacore.selection.facility_location import OPTIMIZERS
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
    select.add_argument("--optimizer", default="lazy", choices=sorted(OPTIMIZERS))
    select.add_argument("--beta2", type=float, default=0.999)
    select.add_argument("--eps", type=float, default=1e-4)
    select.add_argument("--seed", type=int, default=0)
    select.set_defaults(handler=_select)
    return parser




def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
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
