"""Selection at scale: seconds and peak memory from 1,000 to 1,000,000 points.

Every measurement runs in a fresh child process, so its peak resident memory
(VmHWM, which exec resets) is its own: the figure includes the Python interpreter, torch and the
data (reported apart as the baseline before the selection starts). Within one call the
engines are run side by side at each size, so their ratios are comparable even on a
noisy machine.

    adacore bench sparse   [--n 1000000] [--d 64] [--fraction 0.01] [--neighbors 10]
    adacore bench scaling  [--sizes 1000 10000 100000 1000000]

``sparse`` is the headline: stochastic greedy on the 10-nearest-neighbour graph of
1,000,000 x 64 float32 points (no labels), with the neighbour recall measured on
1,000 random points against exact search. ``scaling`` runs the dense engine where its
(n, n) matrix fits, the sparse one at every size, and apricot (when installed) at the
small sizes, and reports the dense objective of the sparse picks where dense ran.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import resource
import subprocess
import sys
import time

import numpy as np
import torch

DATA_KINDS = ("mixture", "gaussian")


def make_points(n: int, d: int, kind: str, seed: int = 0) -> torch.Tensor:
    """``mixture``: n points around n / 1,000 Gaussian centres (embedding-like clusters);
    ``gaussian``: i.i.d. standard normal, the hardest case for any neighbour index."""
    generator = torch.Generator().manual_seed(seed)
    if kind == "gaussian":
        return torch.randn(n, d, generator=generator)
    centers = torch.randn(max(1, n // 1000), d, generator=generator) * 2.0
    labels = torch.randint(0, centers.shape[0], (n,), generator=generator)
    points = torch.randn(n, d, generator=generator)
    points += centers[labels]
    return points


def _peak_bytes() -> int:
    """This process's peak resident memory (VmHWM: reset at exec, unlike ru_maxrss,
    which Linux carries over from the parent process)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(config: dict) -> dict:
    """One measurement, in this process (the child side).

    ``config``: ``n``, ``d``, ``data``, ``fraction``, ``engine`` ("dense", "sparse" or
    "apricot"), for sparse ``neighbors``, ``search``, ``probes``; optional ``optimizer``,
    ``seed``, ``recall`` (also measure the graph's neighbour recall), ``objective`` (also
    the covering cost of the picks) and ``return_picks``. Returns ``seconds``,
    ``peak_bytes``, ``baseline_bytes``, ``k``, ``covered_by_graph`` and those asked for.
    """
    from adacore import facility_location
    from adacore.selection.neighbors import nearest_neighbors, neighbor_recall

    engine = config["engine"]

    def select(points, k):
        if engine == "apricot":
            from apricot import FacilityLocationSelection
            return np.asarray(FacilityLocationSelection(k, metric="euclidean",
                                                        optimizer="lazy", verbose=False)
                              .fit(points.numpy()).ranking), {}
        options = {"optimizer": config.get("optimizer", "lazy"), "seed": 0}
        if engine == "sparse":
            options.update(neighbors=config["neighbors"], neighbor_search=config["search"],
                           probes=config["probes"])
        coreset = facility_location(points, k, **options)
        return coreset.indices, coreset.metadata

    # warm-up on 300 points: one-time costs (apricot's numba compilation, thread pools)
    # are not part of a selection's time
    select(make_points(300, config["d"], "gaussian", 1), 3)
    X = make_points(config["n"], config["d"], config["data"], config.get("seed", 0))
    k = max(1, round(config["fraction"] * config["n"]))
    baseline = _peak_bytes()
    start = time.perf_counter()
    picks, metadata = select(X, k)
    result = {"covered_by_graph": metadata.get("covered_by_graph")}
    result.update(seconds=time.perf_counter() - start, peak_bytes=_peak_bytes(),
                  baseline_bytes=baseline, k=k)
    if config.get("recall") and engine == "sparse":
        _, index = nearest_neighbors(X, config["neighbors"], search=config["search"],
                                     probes=config["probes"])
        result["recall"] = neighbor_recall(X, index, queries=1000)
    if config.get("objective"):
        result["cost"] = _cost(X, picks)
    if config.get("return_picks"):
        result["picks"] = np.asarray(picks).tolist()
    return result


def _cost(X: torch.Tensor, picks) -> float:
    """sum_i min_{j in S} ||x_i - x_j||: the facility-location objective up to n c."""
    from adacore.selection.distances import pairwise_distances
    chosen = X[torch.as_tensor(np.asarray(picks))]
    total = 0.0
    for start in range(0, X.shape[0], 4096):
        total += float(pairwise_distances(X[start:start + 4096], chosen).min(dim=1).values
                       .double().sum())
    return total


def run_child(config: dict, timeout: float = 1800) -> dict:
    """``measure(config)`` in a fresh interpreter; a failure is reported, not raised."""
    command = [sys.executable, "-m", "adacore.bench.scaling", "--child", json.dumps(config)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"over {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["exit %d" % done.returncode])[-1]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _mib(amount) -> str:
    return f"{amount / 2**20:,.0f}"


def main_sparse(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="adacore bench sparse")
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--probes", type=int, default=8)
    parser.add_argument("--search", default="auto", choices=["auto", "ivf", "faiss", "exact"])
    parser.add_argument("--data", nargs="+", default=["mixture", "gaussian"], choices=DATA_KINDS)
    args = parser.parse_args(argv)
    print(f"# sparse facility location: {args.n:,} x {args.d} float32, {args.fraction:.0%}, "
          f"stochastic greedy, K = {args.neighbors}, search {args.search}, probes "
          f"{args.probes} ({platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads)")
    print("| data | search | seconds | peak MiB | baseline MiB | recall@K | covered by graph |")
    print("|---|---|---:|---:|---:|---:|---:|")
    searches = ["ivf", "faiss"] if args.search == "auto" else [args.search]
    for kind in args.data:
        for search in searches:
            config = {"n": args.n, "d": args.d, "data": kind, "fraction": args.fraction,
                      "engine": "sparse", "optimizer": "stochastic",
                      "neighbors": args.neighbors, "search": search, "probes": args.probes}
            timed = run_child(config)
            if "error" in timed:
                print(f"| {kind} | {search} | failed: {timed['error']} | | | | |", flush=True)
                continue
            recall = run_child({**config, "recall": True, "fraction": 1e-6}).get("recall")
            print(f"| {kind} | {search} | {timed['seconds']:.1f} | {_mib(timed['peak_bytes'])} | "
                  f"{_mib(timed['baseline_bytes'])} | "
                  f"{'-' if recall is None else f'{recall:.3f}'} | "
                  f"{timed['covered_by_graph']:.2f} |", flush=True)


def scaling_rows(sizes, *, d: int = 64, fraction: float = 0.01, neighbors: int = 10,
                 dense_limit: int = 20_000, run=None) -> list[dict]:
    """The measurements of ``main_scaling``, one row per (size, engine).

    ``run`` takes a config and returns :func:`measure`'s result (default: in a child
    process). Each row is that result with ``n``, ``engine`` and ``cost_ratio`` (the
    covering cost over the dense engine's at the same size; None where dense did not
    run or failed).
    """
    run = run_child if run is None else run
    rows = []
    for n in sizes:
        base = {"n": n, "d": d, "data": "mixture", "fraction": fraction,
                "objective": n <= dense_limit}
        runs = {}
        engines = ["dense", "apricot"] if n <= dense_limit else []
        for engine in engines + ["sparse"]:
            if engine == "apricot" and importlib.util.find_spec("apricot") is None:
                continue
            config = {**base, "engine": engine}
            if engine == "sparse":
                config.update(optimizer="stochastic", neighbors=neighbors,
                              search="auto", probes=8)
            runs[engine] = run(config)
        dense_cost = runs.get("dense", {}).get("cost")
        for engine, result in runs.items():
            ratio = (result["cost"] / dense_cost
                     if dense_cost and "cost" in result and "error" not in result else None)
            rows.append({**result, "n": n, "engine": engine, "cost_ratio": ratio})
    return rows


def main_scaling(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="adacore bench scaling")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--fraction", type=float, default=0.01)
    parser.add_argument("--neighbors", type=int, default=10)
    parser.add_argument("--dense-limit", type=int, default=20_000,
                        help="largest n the dense engine and apricot are run at")
    args = parser.parse_args(argv)
    print(f"# scaling, {args.d}-d mixture, {args.fraction:.0%} selected; dense = lazy greedy "
          f"on the full matrix, sparse = stochastic greedy on K = {args.neighbors} "
          f"neighbours (search auto); cost = sum of distances to the nearest pick "
          f"(lower is better), relative to dense")
    print("| n | engine | seconds | peak MiB | baseline MiB | cost / dense cost |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in scaling_rows(args.sizes, d=args.d, fraction=args.fraction,
                            neighbors=args.neighbors, dense_limit=args.dense_limit):
        n, engine = row["n"], row["engine"]
        if "error" in row:
            print(f"| {n:,} | {engine} | failed: {row['error']} | | | |", flush=True)
            continue
        ratio = "-" if row["cost_ratio"] is None else f"{row['cost_ratio']:.3f}"
        print(f"| {n:,} | {engine} | {row['seconds']:.2f} | {_mib(row['peak_bytes'])} "
              f"| {_mib(row['baseline_bytes'])} | {ratio} |", flush=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        print(json.dumps(measure(json.loads(sys.argv[2]))))
    else:
        main_scaling(sys.argv[1:])
