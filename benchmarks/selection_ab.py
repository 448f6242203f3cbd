"""The facility-location engine of this tree against the one of a git revision, A/B.

    python benchmarks/selection_ab.py [--ref HEAD~1] [--model lenet|mlp]
                                      [--fraction 0.01 0.1] [--pool 2 4 0]
                                      [--refine-to mean] [--repeats 5] [--threads 1]

A speed change to the selection should change nothing else. This script trains the
network for one epoch on MNIST (SGD, batch 128, as ``adacore bench round`` does),
probes it in logit space and forms AdaCore's first-round vectors, then solves every
class with both engines (``solve``, as the per-class code calls it, with the class's
own generator): this tree's ``adacore.selection.facility_location`` and the same file
at ``--ref`` (read with ``git show`` and loaded beside it; the rest of the package is
this tree's). It checks that picks, gains and weights are equal bit for bit, then
times the ten classes with each engine, interleaved, ``--repeats`` times, and prints
the median seconds and new / old. ``--pool 0`` is the exact engine (every example a
candidate, no refinement). Run it from the repository root, on a quiet machine.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from adacore.bench.selection_round import full_epoch
from adacore.data import load_dataset
from adacore.models import build_model
from adacore.probe import probe
from adacore.selection.per_class import class_seed
from adacore.strategies import get_strategy

ENGINE = "src/adacore/selection/facility_location.py"


def engine_at(ref: str):
    """The facility-location module as it was at git revision ``ref``."""
    source = subprocess.run(["git", "show", f"{ref}:{ENGINE}"], capture_output=True,
                            text=True, check=True).stdout
    folder = Path(tempfile.mkdtemp(prefix="selection_ab_"))
    path = folder / "facility_location_ref.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("adacore.selection._ab_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def vectors(model_name: str) -> tuple[torch.Tensor, np.ndarray]:
    """AdaCore's first-round vectors of a network trained one epoch on MNIST."""
    splits = load_dataset("mnist")
    x, y = splits.train.x, splits.train.y
    if model_name != "mlp":
        x = x.reshape(len(x), 1, 28, 28)
    model = build_model(model_name, num_classes=10, input_shape=tuple(x.shape[1:]), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    full_epoch(model, optimizer, x, y, torch.Generator().manual_seed(0))
    result = probe(model, x, y, space="logits", hessian="closed_form", batch_size=512)
    strategy = get_strategy("adacore", fraction=0.01)
    return strategy.smoother.precondition(result.grads, result.hessian_diag, 0), y.numpy()


def solve_all(module, X, labels, fraction, pool, refine_to):
    out = []
    for label in np.unique(labels):
        rows = torch.from_numpy(np.flatnonzero(labels == label))
        k = max(1, round(fraction * rows.shape[0]))
        out.append(module.solve(X[rows], k, rng=class_seed(0, int(label)),
                                pool=pool or None, refine=2 if pool else 0,
                                refine_to=refine_to))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ref", default="HEAD~1")
    parser.add_argument("--model", choices=("lenet", "mlp"), default="lenet")
    parser.add_argument("--fraction", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--pool", type=float, nargs="+", default=[2, 4, 0])
    parser.add_argument("--refine-to", choices=("medoid", "mean"), default="mean")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    old = engine_at(args.ref)
    new = importlib.import_module("adacore.selection.facility_location")
    X, labels = vectors(args.model)
    torch.set_num_threads(args.threads)
    print(f"\n{args.model} vectors, ten classes, {args.threads} thread(s), median of "
          f"{args.repeats}; old = {args.ref}\n")
    print("| fraction | pool | old s | new s | new / old | identical |")
    print("|---|---|---|---|---|---|")
    differ = False
    for fraction in args.fraction:
        for pool in args.pool:
            a = solve_all(old, X, labels, fraction, pool, args.refine_to)
            b = solve_all(new, X, labels, fraction, pool, args.refine_to)
            same = all(p[0] == q[0] and p[1] == q[1] and np.array_equal(p[2], q[2])
                       for p, q in zip(a, b))
            differ |= not same
            times = {"old": [], "new": []}
            for _ in range(args.repeats):
                for name, module in (("old", old), ("new", new)):
                    start = time.perf_counter()
                    solve_all(module, X, labels, fraction, pool, args.refine_to)
                    times[name].append(time.perf_counter() - start)
            o, n = statistics.median(times["old"]), statistics.median(times["new"])
            print(f"| {fraction:g} | {pool:g} | {o:.3f} | {n:.3f} | {n / o:.2f} | "
                  f"{'yes' if same else 'NO'} |")
    return 1 if differ else 0


if __name__ == "__main__":
    sys.exit(main())
