"""GradMatch's OMP: the incremental Gram-form refit against the from-scratch one.

    OMP_NUM_THREADS=1 python benchmarks/omp_refit.py            # the engine table
    OMP_NUM_THREADS=1 python benchmarks/omp_refit.py --round    # and one GradMatch round

Engine rows: one pursuit on A of shape (d, 5000), b the sum of A's columns (GradMatch's
target), lam 0.5 and tol 1e-4 (GradMatch's defaults), A laid out as GradMatch hands it
over (a transposed (5000, d) float64 tensor); run with each refit in the same process,
``adacore.selection.omp._pursue(..., refit="scratch")`` (scipy's nnls on the augmented
system at every step, the solver before) and ``refit="incremental"`` (the default).
Seconds are the best of ``--repeats``. Problems: ``gaussian`` (N(0, 1) entries),
``clustered`` (20 centres, 3 times the noise), ``lenet`` (one class's synthetic LeNet-5
last-layer gradients (p - y) (x) [h, 1], 84 features, 850 wide; at d = 10 their logit
part p - y). "same" is the same support in the same order; "weights" the largest
weight difference over the largest weight.

``--round``: one ``adacore.get_strategy("gradmatch", fraction=0.1)`` round on synthetic
gradients of MNIST's shape (10 classes of 5,000, so k_c = 500), in the last-layer space
(850) and the logit space (10), with each refit.
"""

from __future__ import annotations

import argparse
import time
from contextlib import contextmanager

import numpy as np
import torch

import adacore
from adacore.selection import omp

CLASSES, FEATURES = 10, 84


def last_layer_gradients(label_of_rows: np.ndarray, seed: int, logits_only: bool = False
                         ) -> np.ndarray:
    """(n, C (D + 1)) float32 vectors (p - y) (x) [h, 1] of a model that fits most rows:
    h = relu(class mean + noise), a true-class logit margin of 4 plus noise; (n, C) when
    ``logits_only``."""
    rng = np.random.default_rng(seed)
    n = label_of_rows.shape[0]
    means = np.maximum(rng.standard_normal((CLASSES, FEATURES)), 0) * 2
    h = np.maximum(means[label_of_rows] + 0.7 * rng.standard_normal((n, FEATURES)), 0)
    onehot = np.eye(CLASSES)[label_of_rows]
    logits = (h @ (0.3 * rng.standard_normal((CLASSES, FEATURES))).T + 4.0 * onehot
              + rng.standard_normal((n, CLASSES)))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    residual = p - onehot
    if logits_only:
        return residual.astype(np.float32)
    weight_part = (residual[:, :, None] * h[:, None, :]).reshape(n, -1)
    return np.hstack([weight_part, residual]).astype(np.float32)


def problem(kind: str, d: int, m: int, seed: int = 0) -> np.ndarray:
    """Rows = candidates: an (m, d) float64 array (GradMatch's block)."""
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        return rng.standard_normal((m, d))
    if kind == "clustered":
        centres = 3 * rng.standard_normal((20, d))
        return centres[rng.integers(20, size=m)] + rng.standard_normal((m, d))
    rows = last_layer_gradients(np.zeros(m, dtype=np.int64), seed, logits_only=d == CLASSES)
    if rows.shape[1] != d:
        raise ValueError(f"lenet: d = {d}, expected {CLASSES * (FEATURES + 1)} "
                         f"or {CLASSES}")
    return rows.astype(np.float64)


def timed(function, repeats: int):
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def engine_rows(kinds, widths, budgets, m: int, repeats: int) -> list[str]:
    lines = ["| problem | A | k | scratch s | incremental s | ratio | same | weights |",
             "|---|---|---:|---:|---:|---:|---|---:|"]
    for kind in kinds:
        for d in widths:
            block = torch.from_numpy(problem(kind, d, m))
            matrix, target = block.T, block.sum(dim=0)
            for k in budgets:
                results = {}
                for refit in ("scratch", "incremental"):
                    results[refit] = timed(lambda: omp._pursue(matrix, target, k, 0.5, 1e-4,
                                                               refit=refit), repeats)
                (old_s, old), (new_s, new) = results["scratch"], results["incremental"]
                same = np.array_equal(old.support, new.support)
                gap = (np.max(np.abs(old.weights - new.weights)) / np.max(old.weights)
                       if same else np.nan)
                agree = "yes" if same else "NO"
                lines.append(f"| {kind} | ({d}, {m}) | {k} | {old_s:.2f} | {new_s:.3f} | "
                             f"{old_s / new_s:.1f} | {agree} | {gap:.1e} |")
                print(lines[-1], flush=True)
    return lines


@contextmanager
def scratch_refit():
    """Let nonnegative_omp (and so GradMatch) refit from scratch, as it did before."""
    saved = omp._REFITS["incremental"]
    omp._REFITS["incremental"] = omp._ScratchRefit
    try:
        yield
    finally:
        omp._REFITS["incremental"] = saved


def round_rows(per_class: int) -> list[str]:
    labels = np.repeat(np.arange(CLASSES), per_class)
    lines = ["| GradMatch round, 10% | vectors | scratch s | incremental s | ratio | "
             "same coreset |", "|---|---|---:|---:|---:|---|"]
    for space, logits_only in (("last layer", False), ("logits", True)):
        grads = last_layer_gradients(labels, seed=1, logits_only=logits_only)
        strategy = lambda: adacore.get_strategy("gradmatch", fraction=0.1)  # noqa: E731
        with scratch_refit():
            old_s, old = timed(lambda: strategy().select(grads, labels), 1)
        new_s, new = timed(lambda: strategy().select(grads, labels), 1)
        same = (np.array_equal(old.indices, new.indices)
                and np.allclose(old.weights, new.weights, rtol=1e-8, atol=0))
        lines.append(f"| {space} | {grads.shape} | {old_s:.1f} | {new_s:.2f} | "
                     f"{old_s / new_s:.1f} | {'yes' if same else 'NO'} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kinds", nargs="+", default=["gaussian", "clustered", "lenet"])
    parser.add_argument("--widths", nargs="+", type=int, default=[10, 850])
    parser.add_argument("--budgets", nargs="+", type=int, default=[50, 500])
    parser.add_argument("--columns", type=int, default=5000, help="m, candidates")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--round", action="store_true", help="also time a GradMatch round")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    lines = engine_rows(args.kinds, args.widths, args.budgets, args.columns, args.repeats)
    if args.round:
        lines += [""] + round_rows(args.columns)
    print("\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
