"""One selection round (probe + selection) against one full-data training epoch, MNIST/MLP.

The DESIGN's budget: a round should cost at most one full epoch. Both are timed in one
process, interleaved and repeated; the table reports median seconds and the ratio
round / epoch. The model is trained for one epoch first, so the gradients are those of
a model part-way through training. The last column is the round's gradient error
(preconditioned, for AdaCore), so that a faster engine's price in quality shows.

    adacore bench round [--repeats 3] [--fraction 0.01]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.nn import functional as F

from adacore import get_strategy
from adacore.data import load_dataset
from adacore.models import build_model
from adacore.probe import probe


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


def selection_round(model, x, y, method, space, fraction, neighbors=None):
    """Probe ``model`` on (x, y) in ``space`` and select once with a fresh ``method``."""
    options = {} if neighbors is None else {"neighbors": neighbors}
    strategy = get_strategy(method, fraction=fraction, **options)
    wants_diag = "hessian_diag" in strategy.requires
    result = probe(model, x, y, space=space, hessian="closed_form" if wants_diag else None,
                   batch_size=4096)
    extra = {"hessian_diag": result.hessian_diag} if wants_diag else {}
    return strategy.select(result.grads, y.numpy(), **extra)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--neighbors", type=int, nargs="*", default=[32],
                        help="also time the sparse engine with these K (logit space)")
    args = parser.parse_args(argv)
    splits = load_dataset("mnist")
    x, y = splits.train.x, splits.train.y
    model = build_model("mlp", num_classes=10, input_shape=(784,), seed=0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(0)
    full_epoch(model, optimizer, x, y, generator)          # warm-up and a trained model
    cases = {"full epoch (SGD, batch 128)": lambda: full_epoch(model, optimizer, x, y,
                                                               generator)}
    for method in ("adacore", "craig"):
        for space in ("logits", "last_layer"):
            cases[f"{method} round, {space}"] = (
                lambda m=method, s=space: selection_round(model, x, y, m, s, args.fraction))
        for neighbors in args.neighbors:
            cases[f"{method} round, logits, sparse K = {neighbors}"] = (
                lambda m=method, k=neighbors: selection_round(model, x, y, m, "logits",
                                                              args.fraction, k))
    times = {name: [] for name in cases}
    errors = {}
    for _ in range(args.repeats):
        for name, case in cases.items():
            start = time.perf_counter()
            coreset = case()
            times[name].append(time.perf_counter() - start)
            if coreset is not None:
                errors[name] = round_error(coreset)
    epoch = statistics.median(times["full epoch (SGD, batch 128)"])
    print(f"\nMNIST 50,000 x 784, MLP 784-100-10, fraction {args.fraction}; median of "
          f"{args.repeats}; torch threads {torch.get_num_threads()}\n")
    print("| work | seconds | / full epoch | gradient error of the round |")
    print("|---|---|---|---|")
    for name in cases:
        seconds = statistics.median(times[name])
        error = f"{errors[name]:.4f}" if errors.get(name) is not None else "-"
        print(f"| {name} | {seconds:.2f} | {seconds / epoch:.2f} | {error} |")


if __name__ == "__main__":
    main()
