"""GPU readiness: the CUDA results against the CPU ones, and one timed ResNet20 round.

    adacore bench gpu [--device cuda] [--n 50000] [--out DIR]

Checks, each on the same inputs on the CPU and on ``--device`` (TF32 off, so the two
differ by float32 rounding only):

1. dense facility location (3,000 x 64): the same picks and cluster sizes;
2. exact neighbour search and sparse facility location (5,000 x 32): the same graph
   and picks;
3. the probe of ResNet20 (256 CIFAR-sized images): logit-space gradients and
   closed-form Hessian diagonals within 1e-4 relative;
4. one AdaCore round from those vectors: the same coreset.

and, on ``--device``, against references that share no code with the library (plain
float64 NumPy, and brute force), so that they mean something on the CPU too, where
the comparisons above compare the CPU with itself:

5. facility location (1,000 x 16, k = 20): the picks and cluster sizes of a naive
   float64 greedy; on 10 points, every k = 1..3: the greedy's objective against the
   best subset found by enumeration (k = 1: equal; otherwise >= (1 - 1/e) of it);
6. exact neighbours of 500 query points (of 5,000 x 32) against float64 brute force;
   sparse facility location (1,000 x 16, K = 10) against a float64 greedy on the same
   K-nearest-neighbour similarity graph;
7. the probe (128 images) against the model run in float64 (softmax p, g = p - y,
   d = p (1 - p));
8. the AdaCore 10% round's covering cost, sum_i min_{j in S} ||u_i - u_j|| with
   u = g / (|d| + 1e-4) in float64, against a float64 greedy's per class.

Then, timed on ``--device`` with synthetic CIFAR-sized data (n x 3 x 32 x 32, ten
classes): one full-data training epoch of ResNet20 (batch 128) and one AdaCore 1%
selection round (probe + selection), with their ratio. Writes ``gpu_check.json`` to
``--out`` and exits 1 when a check fails. Without CUDA it says so and exits 0, unless
``--device cpu`` is asked for (a self-test of the script on the CPU).
"""

from __future__ import annotations

import argparse
import copy
import itertools
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


# --------------------------------------------------------------------------- references
# Plain float64 NumPy, written from the definitions: s_ij = c - ||x_i - x_j|| (c the
# largest distance), greedy gains sum_i max(0, s_ij - cover_i), ties to the lowest index.

def distances64(X) -> np.ndarray:
    """All pairwise Euclidean distances in float64, from differences (no Gram identity)."""
    X = np.asarray(X, dtype=np.float64)
    out = np.empty((X.shape[0], X.shape[0]))
    for start in range(0, X.shape[0], 64):
        block = X[start:start + 64, None, :] - X[None, :, :]
        out[start:start + 64] = np.sqrt((block * block).sum(axis=2))
    return out


def greedy64(similarity: np.ndarray, k: int) -> list[int]:
    """Naive greedy facility location on a similarity matrix (rows: points covered)."""
    cover = np.zeros(similarity.shape[0])
    picks: list[int] = []
    for _ in range(k):
        gains = np.maximum(similarity - cover[:, None], 0.0).sum(axis=0)
        gains[picks] = -np.inf
        best = int(np.argmax(gains))
        picks.append(best)
        cover = np.maximum(cover, similarity[:, best])
    return picks


def cluster_sizes64(distances: np.ndarray, picks) -> np.ndarray:
    """How many points have each pick as their nearest (ties: the earlier pick)."""
    nearest = np.argmin(distances[:, list(picks)], axis=1)
    return np.bincount(nearest, minlength=len(picks)).astype(np.float64)


def covering_cost64(distances: np.ndarray, picks) -> float:
    """sum_i min_{j in S} d_ij: the error bound facility location minimises."""
    return float(distances[:, list(picks)].min(axis=1).sum())


def knn_similarity64(distances: np.ndarray, neighbors: int) -> np.ndarray:
    """s_ij = c - d_ij for j among i's K nearest (itself included), else 0; c the
    largest distance the graph holds."""
    order = np.argsort(distances, axis=1, kind="stable")[:, :neighbors]
    rows = np.arange(distances.shape[0])[:, None]
    kept = distances[rows, order]
    similarity = np.zeros_like(distances)
    similarity[rows, order] = kept.max() - kept
    return similarity


def brute_force_best(similarity: np.ndarray, k: int) -> float:
    """The largest F(S) = sum_i max_{j in S} s_ij over every subset of size k."""
    return max(float(similarity[:, list(subset)].max(axis=1).sum())
               for subset in itertools.combinations(range(similarity.shape[1]), k))


def logit_terms64(model, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """g = p - onehot(y) and d = p (1 - p) from the model run in float64 on the CPU
    (eval mode, as the probe runs it)."""
    reference = copy.deepcopy(model).to("cpu", torch.float64).eval()
    with torch.no_grad():
        logits = reference(x.to(torch.float64)).numpy()
    shifted = logits - logits.max(axis=1, keepdims=True)
    p = np.exp(shifted)
    p /= p.sum(axis=1, keepdims=True)
    onehot = np.eye(p.shape[1])[y.numpy()]
    return p - onehot, p * (1.0 - p)


def _relative(value: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(value - reference).max() / np.abs(reference).max())


def reference_facility_location(device) -> dict:
    X = torch.randn(1000, 16, generator=torch.Generator().manual_seed(5))
    distances = distances64(X.numpy())
    picks = greedy64(distances.max() - distances, 20)
    coreset = facility_location(X.to(device), 20)
    tiny = torch.randn(10, 3, generator=torch.Generator().manual_seed(6))
    tiny_similarity = distances64(tiny.numpy())
    tiny_similarity = tiny_similarity.max() - tiny_similarity
    ratios = []
    for k in (1, 2, 3):
        chosen = facility_location(tiny.to(device), k).indices.tolist()
        value = float(tiny_similarity[:, chosen].max(axis=1).sum())
        ratios.append(value / brute_force_best(tiny_similarity, k))
    return {"same_picks": coreset.indices.tolist() == picks,
            "same_weights": bool(np.array_equal(coreset.weights,
                                                cluster_sizes64(distances, picks))),
            "brute_force_ratio_k1": ratios[0],
            "brute_force_ratio_min": min(ratios)}


def reference_sparse(device) -> dict:
    X = torch.randn(5000, 32, generator=torch.Generator().manual_seed(2))
    distances, index = nearest_neighbors(X.to(device), 10, search="exact")
    base = X.numpy().astype(np.float64)
    exact = np.concatenate([np.sqrt(((base[start:start + 50, None, :] - base[None]) ** 2)
                                    .sum(axis=2)) for start in range(0, 500, 50)])
    order = np.argsort(exact, axis=1, kind="stable")[:, :10]
    found = index[:500].cpu().numpy()
    shared = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, order)])
    small = torch.randn(1000, 16, generator=torch.Generator().manual_seed(7))
    small_distances = distances64(small.numpy())
    picks = greedy64(knn_similarity64(small_distances, 10), 20)
    coreset = facility_location(small.to(device), 20, neighbors=10, neighbor_search="exact")
    return {"neighbor_overlap": float(shared),
            "max_distance_difference": float(np.abs(
                distances[:500].cpu().numpy() - np.take_along_axis(exact, order, axis=1)).max()),
            "same_sparse_picks": coreset.indices.tolist() == picks}


def reference_probe_and_round(device) -> dict:
    # 128 images: ResNet20 in float64 on the CPU is the slow part of the whole check
    x, y = synthetic_cifar(128, seed=8)
    model = build_model("resnet20", num_classes=10, input_shape=(3, 32, 32), seed=0,
                        device=device)
    result = probe(model, x, y, space="logits", hessian="closed_form")
    grads, diag = logit_terms64(model, x, y)
    vectors = grads / (np.abs(diag) + 1e-4)
    coreset = AdaCore(0.1).select(result.grads, y.numpy(), hessian_diag=result.hessian_diag)
    labels = y.numpy()
    engine_cost, reference_cost = 0.0, 0.0
    for label, budget in coreset.budgets.items():
        members = np.flatnonzero(labels == label)
        distances = distances64(vectors[members])
        chosen = np.flatnonzero(np.isin(members, coreset.indices))
        engine_cost += covering_cost64(distances, chosen)
        reference_cost += covering_cost64(distances, greedy64(distances.max() - distances,
                                                              budget))
    return {"grads_relative_difference": _relative(result.grads.cpu().numpy(), grads),
            "hessian_relative_difference": _relative(result.hessian_diag.cpu().numpy(), diag),
            "adacore_cost_ratio": engine_cost / reference_cost,
            "adacore_weights_sum": float(coreset.weights.sum())}


# --------------------------------------------------------------------------- CPU vs device

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
    parser = argparse.ArgumentParser(prog="adacore bench gpu",
                                     description=__doc__.splitlines()[0])
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
    report["reference"] = {"facility_location": reference_facility_location(device),
                           "sparse": reference_sparse(device),
                           "probe": reference_probe_and_round(device)}
    if device.type == "cpu":
        report["note"] = ("--device cpu: checks 1-4 compare the CPU with itself; checks 5-8 "
                          "(report['reference']) are the independent ones")
    report["timing"] = time_round(device, args.n)
    reference = report["reference"]
    failures = [name for name, passed in [
        ("facility_location picks", report["facility_location"]["same_picks"]),
        ("facility_location weights", report["facility_location"]["same_weights"]),
        ("sparse neighbours", report["sparse"]["same_neighbors"]),
        ("sparse picks", report["sparse"]["same_picks"]),
        ("probe gradients", report["probe"]["grads_relative_difference"] < 1e-4),
        ("probe Hessian", report["probe"]["hessian_relative_difference"] < 1e-4),
        ("AdaCore round", report["probe"]["same_adacore_coreset"]),
        ("facility location = float64 greedy (picks)",
         reference["facility_location"]["same_picks"]),
        ("facility location = float64 greedy (cluster sizes)",
         reference["facility_location"]["same_weights"]),
        ("facility location k = 1 = brute-force optimum",
         abs(reference["facility_location"]["brute_force_ratio_k1"] - 1) < 1e-9),
        ("facility location >= (1 - 1/e) brute-force optimum",
         reference["facility_location"]["brute_force_ratio_min"] >= 1 - 1 / np.e),
        ("exact neighbours = float64 brute force",
         reference["sparse"]["neighbor_overlap"] >= 0.999),
        ("neighbour distances = float64 brute force",
         reference["sparse"]["max_distance_difference"] < 1e-3),
        ("sparse facility location = float64 greedy on the graph",
         reference["sparse"]["same_sparse_picks"]),
        ("probe gradients = float64 softmax", reference["probe"]["grads_relative_difference"]
         < 1e-4),
        ("probe Hessian = float64 p (1 - p)", reference["probe"]["hessian_relative_difference"]
         < 1e-4),
        ("AdaCore covering cost = float64 greedy's",
         abs(reference["probe"]["adacore_cost_ratio"] - 1) < 1e-3),
        ("AdaCore weights sum to n", reference["probe"]["adacore_weights_sum"] == 128.0),
    ] if not passed]
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
