"""Facility location: adacore against apricot (and submodlib when installed), side by side.

Each library selects k of the same n x d float32 points, distances included, in one
process; the runs are interleaved and repeated, and the table reports median seconds
and the ratio to adacore (these machines are noisy: only the ratios mean much). The
objective column is F(S) = sum_i max_{j in S} (c - ||x_i - x_j||) evaluated by adacore
for every library's picks, relative to adacore's, so a faster but worse answer shows.

    adacore bench facility [--n 5000] [--d 640] [--k 50 500]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
import torch

from adacore import facility_location
from adacore.selection import similarity_matrix


SETTLE_SECONDS = 2.0


def run_adacore(X, k):
    return facility_location(X, k, optimizer="lazy").indices


def run_apricot(X, k):
    from apricot import FacilityLocationSelection
    return np.asarray(FacilityLocationSelection(k, metric="euclidean", optimizer="lazy",
                                                verbose=False).fit(X).ranking)


def run_submodlib(X, k):
    from submodlib import FacilityLocationFunction
    function = FacilityLocationFunction(n=X.shape[0], mode="dense", data=X, metric="euclidean")
    picks = function.maximize(budget=k, optimizer="LazyGreedy", show_progress=False)
    return np.asarray([index for index, _ in picks])


def available_peers():
    peers = {"adacore": run_adacore}
    try:
        import apricot  # noqa: F401
        peers["apricot 0.6.1"] = run_apricot
    except ImportError:
        print("apricot-select is not installed (pip install -e '.[bench]'): skipped")
    try:
        import submodlib  # noqa: F401
        peers["submodlib"] = run_submodlib
    except ImportError:
        print("submodlib-py is not installed: skipped")
    return peers


def objective(similarity, picks):
    return float(similarity[:, torch.as_tensor(picks)].max(dim=1).values.double().sum())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--d", type=int, default=640)
    parser.add_argument("--k", type=int, nargs="+", default=[50, 500])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--settle", type=float, default=SETTLE_SECONDS,
                        help="seconds to pause after each call (default %(default)s)")
    args = parser.parse_args(argv)

    X = np.random.default_rng(args.seed).standard_normal((args.n, args.d)).astype(np.float32)
    peers = available_peers()
    for run in peers.values():           # warm-up: numba compilation, torch kernels
        run(X[:200], 5)
    similarity = similarity_matrix(torch.from_numpy(X))
    print(f"\nfacility location, n = {args.n}, d = {args.d}, float32, distances included; "
          f"median of {args.repeats}; torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| k | library | seconds | time / adacore | objective / adacore |")
    print("|---|---|---|---|---|")
    for k in args.k:
        times = {name: [] for name in peers}
        picks = {}
        for _ in range(args.repeats):
            for name, run in peers.items():
                start = time.perf_counter()
                picks[name] = run(X, k)
                times[name].append(time.perf_counter() - start)
                # submodlib leaves threads busy for about a second after it returns,
                # which slowed the next library by 3-5x when measured here: let it settle
                time.sleep(args.settle)
        base_time = statistics.median(times["adacore"])
        base_value = objective(similarity, picks["adacore"])
        for name in peers:
            seconds = statistics.median(times[name])
            value = objective(similarity, picks[name]) / base_value
            print(f"| {k} | {name} | {seconds:.3f} | {seconds / base_time:.2f} | {value:.4f} |")


if __name__ == "__main__":
    main()
