"""GPU readiness: the CUDA results against the CPU ones, and one timed ResNet20 round.

    python benchmarks/gpu_check.py [--device cuda] [--n 50000] [--out DIR]

Checks, each on the same inputs on the CPU and on ``--device`` (TF32 off, so the two
differ by float32 rounding only):

1. dense facility location (3,000 x 64): the same picks and cluster sizes;
2. exact neighbour search and sparse facility location (5,000 x 32): the same graph
   and picks;
3. the probe of ResNet20 (256 CIFAR-sized images): logit-space gradients and
   closed-form Hessian diagonals within 1e-4 relative;
4. one AdaCore round from those vectors: the same coreset.

Then, timed on ``--device`` with synthetic CIFAR-sized data (n x 3 x 32 x 32, ten
classes): one full-data training epoch of ResNet20 (batch 128) and one AdaCore 1%
selection round (probe + selection), with their ratio. Writes ``gpu_check.json`` to
``--out`` and exits 1 when a check fails. Without CUDA it says so and exits 0, unless
``--device cpu`` is asked for (a self-test of the script on the CPU).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from adacore import AdaCore, facility_location
from adacore.models import build_model
from adacore.probe import probe
from adacore.selection.neighbors import nearest_neighbors


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_cifar(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose class shifts their mean colour: learnable, CIFAR-sized."""
    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 10, (n,), generator=generator)
    tint = torch.randn(10, 3, 1, 1, generator=generator) * 0.5
    x = torch.randn(n, 3, 32, 32, generator=generator) + tint[y]
    return x, y


def check_facility_location(device) -> dict:
    X = torch.randn(3000, 64, generator=torch.Generator().manual_seed(1))
    cpu = facility_location(X, 60)
    other = facility_location(X.to(device), 60)
    return {"same_picks": bool(np.array_equal(cpu.indices, other.indices)),
            "same_weights": bool(np.array_equal(cpu.weights, other.weights)),
            "max_gain_relative_difference": float(np.max(np.abs(cpu.gains - other.gains)
                                                         / np.abs(cpu.gains)))}


def check_sparse(device) -> dict:
    X = torch.randn(5000, 32, generator=torch.Generator().manual_seed(2))
    d_cpu, i_cpu = nearest_neighbors(X, 10, search="exact")
    d_dev, i_dev = nearest_neighbors(X.to(device), 10, search="exact")
    cpu = facility_location(X, 50, neighbors=10, neighbor_search="exact")
    other = facility_location(X.to(device), 50, neighbors=10, neighbor_search="exact")
    same_sets = torch.equal(torch.sort(i_cpu, 1).values, torch.sort(i_dev.cpu(), 1).values)
    return {"same_neighbors": bool(same_sets),
            "max_distance_difference": float((d_cpu - d_dev.cpu()).abs().max()),
            "same_picks": bool(np.array_equal(cpu.indices, other.indices))}


def check_probe_and_round(device) -> dict:
    x, y = synthetic_cifar(256, seed=3)
    results = []
    for where in (torch.device("cpu"), device):
        model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), seed=0,
                            device=where)
        results.append(probe(model, x, y, space="logits", hessian="closed_form"))
    cpu, other = results

    def relative(a, b):
        return float((a - b.cpu()).abs().max() / a.abs().max())

    picks = [AdaCore(0.05).select(r.grads, y.numpy(), hessian_diag=r.hessian_diag).indices
             for r in (cpu, other)]
    return {"grads_relative_difference": relative(cpu.grads, other.grads),
            "hessian_relative_difference": relative(cpu.hessian_diag, other.hessian_diag),
            "same_adacore_coreset": bool(np.array_equal(np.sort(picks[0]), np.sort(picks[1])))}


def time_round(device, n: int) -> dict:
    x, y = synthetic_cifar(n, seed=4)
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), seed=0,
                        device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    x_dev, y_dev = x.to(device), y.to(device)
    synchronize(device)
    start = time.perf_counter()
    model.train()
    order = torch.randperm(n, device=device)
    for begin in range(0, n, 128):
        rows = order[begin:begin + 128]
        loss = F.cross_entropy(model(x_dev[rows]), y_dev[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    synchronize(device)
    epoch = time.perf_counter() - start
    start = time.perf_counter()
    result = probe(model, x_dev, y_dev, space="logits", hessian="closed_form",
                   batch_size=1024)
    synchronize(device)
    probe_seconds = time.perf_counter() - start
    start = time.perf_counter()
    coreset = AdaCore(0.01).select(result.grads, y.numpy(), hessian_diag=result.hessian_diag)
    synchronize(device)
    select_seconds = time.perf_counter() - start
    return {"n": n, "epoch_seconds": epoch, "probe_seconds": probe_seconds,
            "select_seconds": select_seconds, "coreset_size": len(coreset),
            "round_over_epoch": (probe_seconds + select_seconds) / epoch}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--n", type=int, default=50_000, help="images in the timed round")
    parser.add_argument("--out", default=".", help="folder for gpu_check.json")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; nothing to check (use --device cpu for a "
              "self-test)")
        return 0
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    report = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
              else "cpu", "torch": torch.__version__}
    report["facility_location"] = check_facility_location(device)
    report["sparse"] = check_sparse(device)
    report["probe"] = check_probe_and_round(device)
    report["timing"] = time_round(device, args.n)
    failures = [name for name, passed in [
        ("facility_location picks", report["facility_location"]["same_picks"]),
        ("facility_location weights", report["facility_location"]["same_weights"]),
        ("sparse neighbours", report["sparse"]["same_neighbors"]),
        ("sparse picks", report["sparse"]["same_picks"]),
        ("probe gradients", report["probe"]["grads_relative_difference"] < 1e-4),
        ("probe Hessian", report["probe"]["hessian_relative_difference"] < 1e-4),
        ("AdaCore round", report["probe"]["same_adacore_coreset"])] if not passed]
    report["failures"] = failures
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    timing = report["timing"]
    print(f"ResNet20, {timing['n']:,} images on {report['device']}: epoch "
          f"{timing['epoch_seconds']:.2f} s, AdaCore 1% round {timing['probe_seconds']:.2f} "
          f"+ {timing['select_seconds']:.2f} s = {timing['round_over_epoch']:.2f} epochs")
    if failures:
        print("gpu_check: FAILED: " + ", ".join(failures))
        return 1
    print("gpu_check: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
