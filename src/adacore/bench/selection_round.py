"""One selection round (probe + selection) against one full-data training epoch, on MNIST.

The DESIGN's budget: a round should cost at most one full epoch (issue 12: at most a
quarter of one for a CNN). Both are timed in one process, interleaved and repeated; the
table reports median seconds and the ratio round / epoch. The model is trained for one
epoch first, so the gradients are those of a model part-way through training. The
gradient-error column is the round's relative error on the vectors the method selected
on (AdaCore's preconditioned ones), the mean over the repeats, repeat r selecting with
seed r (the seed draws the pool and the neighbour search; the dense engine is
deterministic), so that a faster engine's price in quality shows.

    adacore bench round [--model mlp|lenet|resnet20] [--repeats 3] [--fraction 0.01]
                        [--pool 8 16] [--refine 0 2] [--refine-to medoid mean]
                        [--neighbors 32] [--batch-size 128] [--json]

``--batch-size`` is the full epoch's: 128 by default; a scenario's own (64 for
``experiments/mnist_lenet_10pct.toml``) measures the round against the epochs that
scenario trains (BENCHMARKS.md: on LeNet-5 an epoch at 64 was no dearer than at 128).

``--json`` prints one object instead of the table:
``{"full_epoch_seconds": s, "model", "fraction", "threads", "repeats", "batch_size", "rounds":
[{"method", "space", "seconds", "epochs", "probe_seconds", "select_seconds",
"gradient_error", "neighbors", "pool", "refine", "refine_to"}, ...]}`` (``epochs`` =
seconds / full_epoch_seconds). ``probe_seconds`` and ``select_seconds`` are the round's
two parts as the probe and the strategy time themselves; the rest of ``seconds`` is
the strategy's set-up and the curvature smoothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch.nn import functional as F

from adacore import get_strategy
from adacore.data import load_dataset
from adacore.models import build_model
from adacore.probe import probe
from adacore.validation import check_int, check_real

EPOCH = "full epoch (SGD, batch {})"
# the networks it times, as the table's header names them
MODELS = {"mlp": "MLP 784-100-10", "lenet": "LeNet-5", "resnet20": "ResNet-20"}


def full_epoch(model, optimizer, x, y, generator, batch_size=128):
    order = torch.randperm(len(x), generator=generator)
    model.train()
    for start in range(0, len(x), batch_size):
        rows = order[start:start + batch_size]
        loss = F.cross_entropy(model(x[rows]), y[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


def round_error(coreset) -> float | None:
    """The table's quality column: the round's relative gradient error, on the vectors
    the method selected on (AdaCore's preconditioned ones, the raw gradients for CRAIG)."""
    if coreset is None:
        return None
    value = coreset.metadata.get("preconditioned_gradient_error")
    return coreset.metadata.get("gradient_error") if value is None else value


def selection_round(model, x, y, method, space, fraction, neighbors=None, pool=None,
                    seed=0, refine=None, refine_to=None):
    """Probe ``model`` on (x, y) in ``space`` and select once with a fresh ``method``
    (``seed``: the strategy's, which draws the pool and the neighbour search)."""
    options = {"seed": seed} if neighbors is None else {"neighbors": neighbors, "seed": seed}
    if pool is not None:
        options["pool"] = pool
    if refine is not None:
        options["refine"] = refine
    if refine_to is not None:
        options["refine_to"] = refine_to
    strategy = get_strategy(method, fraction=fraction, **options)
    wants_diag = "hessian_diag" in strategy.requires
    result = probe(model, x, y, space=space, hessian="closed_form" if wants_diag else None,
                   batch_size=512)
    extra = {"hessian_diag": result.hessian_diag} if wants_diag else {}
    coreset = strategy.select(result.grads, y.numpy(), **extra)
    coreset.metadata["probe_seconds"] = result.seconds
    return coreset


def _cases(model, x, y, args) -> dict:
    """Name -> (description, callable) of every timed round."""
    cases = {}
    for method in ("adacore", "craig"):
        spaces = ("logits",) if args.logits_only else ("logits", "last_layer")
        for space in spaces:
            cases[f"{method} round, {space}"] = (
                {"method": method, "space": space, "neighbors": None, "pool": None,
                 "refine": 0, "refine_to": None},
                lambda seed, m=method, s=space: selection_round(model, x, y, m, s,
                                                                args.fraction, seed=seed))
        for pool in args.pool:
            for refine in args.refine:
                for to in (args.refine_to if refine > 0 else args.refine_to[:1]):
                    name = f"{method} round, logits, pool {pool:g}, refine {refine}"
                    if refine > 0 and to != "medoid":
                        name += f" to {to}"
                    cases[name] = (
                        {"method": method, "space": "logits", "neighbors": None,
                         "pool": pool, "refine": refine, "refine_to": to},
                        lambda seed, m=method, p=pool, r=refine, t=to: selection_round(
                            model, x, y, m, "logits", args.fraction, pool=p, seed=seed,
                            refine=r, refine_to=t))
        for neighbors in args.neighbors:
            cases[f"{method} round, logits, sparse K = {neighbors}"] = (
                {"method": method, "space": "logits", "neighbors": neighbors, "pool": None,
                 "refine": 0, "refine_to": None},
                lambda seed, m=method, k=neighbors: selection_round(
                    model, x, y, m, "logits", args.fraction, k, seed=seed))
    return cases


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=tuple(MODELS), default="mlp")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--pool", type=float, nargs="*", default=[8],
                        help="also time the pool engine with these candidate factors "
                             "(logit space)")
    parser.add_argument("--refine", type=int, nargs="+", default=[2],
                        help="Voronoi iterations after the pool engine's greedy, one row "
                             "each (default 2, the engine's)")
    parser.add_argument("--neighbors", type=int, nargs="*", default=[32],
                        help="also time the sparse engine with these K (logit space)")
    parser.add_argument("--logits-only", action="store_true",
                        help="leave out the (slow) last-layer rounds")
    parser.add_argument("--refine-to", nargs="+", choices=("medoid", "mean"),
                        default=["medoid"],
                        help="where the refinement moves each pick, one row each (default "
                             "medoid)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="the full epoch's batch (default 128)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    check_int("--repeats", args.repeats, 1)
    check_int("--batch-size", args.batch_size, 1)
    check_real("--fraction", args.fraction, low=0, high=1, low_open=True)
    splits = load_dataset("mnist")
    x, y = splits.train.x, splits.train.y
    if args.model != "mlp":
        x = x.reshape(len(x), 1, 28, 28)
    model = build_model(args.model, num_classes=10, input_shape=tuple(x.shape[1:]), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    full_epoch(model, optimizer, x, y, generator)          # warm-up and a trained model
    epoch_name = EPOCH.format(args.batch_size)
    cases = {epoch_name: ({}, lambda seed: full_epoch(model, optimizer, x, y, generator,
                                                      args.batch_size)),
             **_cases(model, x, y, args)}
    times = {name: [] for name in cases}
    errors, selects, probes = {}, {}, {}
    for repeat in range(args.repeats):
        for name, (_, case) in cases.items():
            start = time.perf_counter()
            coreset = case(repeat)          # repeat r selects with seed r
            times[name].append(time.perf_counter() - start)
            if coreset is not None:
                errors.setdefault(name, []).append(round_error(coreset))
                selects.setdefault(name, []).append(coreset.metadata["select_seconds"])
                probes.setdefault(name, []).append(coreset.metadata["probe_seconds"])
    epoch = statistics.median(times[epoch_name])
    rows = []
    for name, (description, _) in cases.items():
        if name == epoch_name:
            continue
        seconds = statistics.median(times[name])
        rows.append({**description, "seconds": seconds, "epochs": seconds / epoch,
                     "probe_seconds": statistics.median(probes[name]),
                     "select_seconds": statistics.median(selects[name]),
                     "gradient_error": statistics.mean(errors[name])})
    if args.json:
        print(json.dumps({"full_epoch_seconds": epoch, "model": args.model,
                          "fraction": args.fraction, "threads": torch.get_num_threads(),
                          "repeats": args.repeats, "batch_size": args.batch_size,
                          "rounds": rows}, indent=1))
        return
    shape = MODELS[args.model]
    print(f"\nMNIST 50,000 x 784, {shape}, fraction {args.fraction}; median of "
          f"{args.repeats}; torch threads {torch.get_num_threads()}\n")
    print("| work | seconds | / full epoch | probe s | select s | gradient error of the round |")
    print("|---|---|---|---|---|---|")
    print(f"| {epoch_name} | {epoch:.2f} | 1.00 | - | - | - |")
    for name, row in zip([name for name in cases if name != epoch_name], rows):
        error = "-" if row["gradient_error"] is None else f"{row['gradient_error']:.4f}"
        print(f"| {name} | {row['seconds']:.2f} | {row['epochs']:.2f} | "
              f"{row['probe_seconds']:.2f} | {row['select_seconds']:.2f} | {error} |")


if __name__ == "__main__":
    main()
