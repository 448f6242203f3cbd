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
    """F(S) = sum_i max_{j in S} s_ij, summed in float64."""
    return float(similarity[:, torch.as_tensor(picks)].max(dim=1).values.double().sum())


def compare(X, ks, peers, *, repeats: int = 3, settle: float = SETTLE_SECONDS) -> list[dict]:
    """Every peer on every k, interleaved and repeated: the rows of the table.

    Parameters
    ----------
    X : ndarray, shape (n, d), float32
    ks : sequence of int
    peers : dict
        Name -> ``run(X, k) -> picks``; must hold ``"adacore"``, the reference of the
        ratios.
    repeats, settle
        Calls per peer and k; seconds to pause after each call.

    Returns
    -------
    list of dict
        One per (k, peer): ``k``, ``library``, ``seconds`` (median), ``time_ratio``
        (over adacore's), ``objective`` (F of the peer's picks, on adacore's similarity
        s = c - d), ``objective_ratio`` (over adacore's) and ``picks``.
    """
    similarity = similarity_matrix(torch.from_numpy(X))
    rows = []
    for k in ks:
        times = {name: [] for name in peers}
        picks = {}
        for _ in range(repeats):
            for name, run in peers.items():
                start = time.perf_counter()
                picks[name] = np.asarray(run(X, k))
                times[name].append(time.perf_counter() - start)
                # submodlib leaves threads busy for about a second after it returns,
                # which slowed the next library by 3-5x when measured here: let it settle
                time.sleep(settle)
        base_time = statistics.median(times["adacore"])
        base_value = objective(similarity, picks["adacore"])
        for name in peers:
            seconds = statistics.median(times[name])
            value = objective(similarity, picks[name])
            rows.append({"k": k, "library": name, "seconds": seconds,
                         "time_ratio": seconds / base_time, "objective": value,
                         "objective_ratio": value / base_value, "picks": picks[name].tolist()})
    return rows


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
    print(f"\nfacility location, n = {args.n}, d = {args.d}, float32, distances included; "
          f"median of {args.repeats}; torch threads {torch.get_num_threads()}, "
          f"{platform.processor() or platform.machine()}\n")
    print("| k | library | seconds | time / adacore | objective / adacore |")
    print("|---|---|---|---|---|")
    for row in compare(X, args.k, peers, repeats=args.repeats, settle=args.settle):
        print(f"| {row['k']} | {row['library']} | {row['seconds']:.3f} | "
              f"{row['time_ratio']:.2f} | {row['objective_ratio']:.4f} |")


if __name__ == "__main__":
    main()
