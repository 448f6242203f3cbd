"""GreeDi: facility location solved in two rounds on a Dask cluster.

Mirzasoleiman, Karbasi, Sarkar and Krause (NIPS 2013), "Distributed submodular
maximization". Each class's rows are split at random into m partitions; every
partition runs the ordinary greedy (:func:`adacore.selection.facility_location.solve`,
the same optimizer and engine) on a worker; the union of their
picks is solved once more by greedy on a worker; the answer is the better of that
merged solution and the best single-partition solution, both judged on all of the
class's points.

Judging without an n x n matrix: F(S) = sum_i max_{j in S} (c - ||x_i - x_j||) with c
the class's largest pairwise distance equals c n - cost(S), where
cost(S) = sum_i min_{j in S} ||x_i - x_j||. c n is common to every candidate of a class,
so candidates are compared by cost alone, and c (an O(n^2) quantity) is never needed.
Each worker measures the distances from its partition to the union of the picks (every
candidate is a subset of it) in row blocks and reports, per candidate, its share of the
cost and of the cluster sizes; the client adds the shares.

Dask is optional (the ``distributed`` extra) and imported only when a selection runs.
"""

from __future__ import annotations

import numbers
import os
import socket
from contextlib import ExitStack

import numpy as np
import torch

from adacore.coreset import Coreset
from adacore.selection.budgets import BUDGET_MODES, per_class_budgets
from adacore.selection.distances import pairwise_distances
from adacore.selection.facility_location import OPTIMIZERS, solve
from adacore.selection.memory import parse_memory
from adacore.selection.neighbors import SEARCHES
from adacore.validation import (InputError, as_labels, as_tensor, check_choice, check_int,
                                fail)

# Stages of the seed tree: SeedSequence([seed, stage, label, ...]). Stage 0 is the one
# per_class.class_seed uses for the centralised greedy, so one partition reproduces it.
_ASSIGN, _PARTITION, _MERGE = 1, 2, 3
# Rows per block of the evaluation: a distance block of about 16 MiB of float32.
_BLOCK_ELEMENTS = 1 << 22
_CONNECT_TIMEOUT = "10s"
# seconds for a plain TCP connection to the scheduler before Dask's handshake
_REACH_TIMEOUT = 5.0


def greedi(X, k: int, *, labels=None, client=None, partitions: int | None = None,
           optimizer: str = "lazy", seed: int = 0, epsilon: float = 0.01,
           budget: str = "proportional", neighbors: int | None = None,
           neighbor_search: str = "auto", max_memory=None) -> Coreset:
    """Select ``k`` rows of ``X`` by GreeDi facility location on a Dask cluster.

    Parameters
    ----------
    X : array-like, shape (n, d)
        NumPy array or torch tensor; Euclidean distances in float32, as in
        :func:`adacore.facility_location`.
    k : int
        Total number of picks, 1 <= k <= n. With ``labels`` it is split across classes
        by :func:`adacore.per_class_budgets` (every class gets at least one).
    labels : array-like of int, shape (n,), optional
        Class labels; one GreeDi problem per class. None: one problem over all rows.
    client : distributed.Client, str or None
        A client to use (left open), a scheduler address to connect to (the connection
        is closed afterwards), or None to start a local cluster of min(2, CPUs) workers
        of one thread each inside this process, closed afterwards. Threads, not worker
        processes: they need no ``if __name__ == "__main__":`` guard (spawned workers
        re-import the caller's main module, which fails in a script without one, on
        standard input and in some notebooks), start in milliseconds instead of
        seconds and share ``X`` instead of copying it; most of the greedy's time is in
        torch kernels, which release the GIL. For worker processes or machines, pass a
        client of your own or a scheduler address.
    partitions : int, optional
        Number of partitions m >= 1 per class (at most the class's size); defaults to
        the number of workers.
    optimizer : {"lazy", "naive", "stochastic"}
        Optimizer of both greedy rounds.
    seed : int
        Seeds the random partition and the stochastic optimizer; the same seed and
        cluster give the same coreset.
    epsilon : float
        Accuracy parameter of the stochastic optimizer, in (0, 1).
    budget : {"proportional", "equal"}
        How ``k`` is split across classes (ignored without ``labels``).
    neighbors, neighbor_search, max_memory
        The engine of each partition's and the union's greedy, as in
        :func:`adacore.facility_location`: the dense one by default, the sparse one on
        each point's ``neighbors`` nearest (within its partition), or when a dense
        block would exceed ``max_memory`` on the worker.

    Returns
    -------
    Coreset
        ``indices`` unique, in selection order, class by class in increasing label
        order; ``weights`` the cluster sizes over all of a class's points (each point
        counted at its nearest pick, ties to the earlier pick, every pick in its own
        cluster), summing to n_c per class; ``gains`` the marginal gains of the greedy
        that produced the winning set: on the union problem (similarities relative to
        the union's own largest distance) when the merged solution wins, on its
        partition when a single partition's does. ``metadata`` holds the partition
        count, the optimizer, the costs sum_i min_j ||x_i - x_j|| of the merged and of
        the best single-partition solution (lower is better; F = c n - cost) and the
        winner, overall and (with labels) per class.

    With one partition GreeDi is the centralised greedy: the same picks, gains and
    weights as :func:`adacore.facility_location` (per-class: as AdaCore's per-class run).
    """
    check_choice("optimizer", optimizer, OPTIMIZERS)
    X = as_tensor("X", X, ndim=2, device="cpu")
    if X.shape[1] == 0:
        raise fail("X", X, "at least one feature column")
    n = X.shape[0]
    k = check_int("k", k, 1, n)
    seed = check_int("seed", seed, 0)
    if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) \
            or not (0.0 < float(epsilon) < 1.0):
        raise fail("epsilon", epsilon, "a number in (0, 1)")
    epsilon = float(epsilon)
    check_choice("budget", budget, BUDGET_MODES)
    if partitions is not None:
        partitions = check_int("partitions", partitions, 1)
    engine = {"neighbors": None if neighbors is None else check_int("neighbors", neighbors, 1),
              "neighbor_search": check_choice("neighbor_search", neighbor_search, SEARCHES),
              "max_memory": None if max_memory is None else parse_memory(max_memory)}
    if labels is None:
        classes = {0: (np.arange(n), k)}
        budgets = {}
    else:
        labels = as_labels("labels", labels, n)
        budgets = per_class_budgets(labels, k, budget)
        classes = {label: (np.flatnonzero(labels == label), b) for label, b in budgets.items()}
    if isinstance(client, str):     # before importing Dask, which takes seconds
        _check_reachable(client)
    distributed = _require_distributed()
    if not (client is None or isinstance(client, (str, distributed.Client))):
        raise fail("client", client, "a distributed.Client, a scheduler address string or None")

    rows = X.numpy()
    plans, pending = {}, {}
    with ExitStack() as stack:
        active = _connect(stack, distributed, client)
        workers = len(active.nthreads())
        if workers == 0:
            # tasks would wait for a worker forever
            raise InputError(f"client: the scheduler at {active.scheduler.address} has no "
                             f"workers, expected at least one")
        partitions = partitions if partitions is not None else workers
        try:
            for label, (members, budget_c) in classes.items():
                centralised = seed if labels is None else (seed, 0, label & 0xFFFFFFFF)
                plans[label], pending[label] = _submit_class(
                    active, rows, members, budget_c, partitions, optimizer, epsilon, seed,
                    label, centralised_entropy=centralised, engine=engine)
            solved = active.gather({label: futures["results"]
                                    for label, futures in pending.items()})
        finally:
            # release the cluster's copies while the connection is still open
            pending.clear()
    results = {label: _decide(plans[label], solved[label]) for label in plans}
    return _coreset(results, budgets, partitions, optimizer, n, labelled=labels is not None)


def _require_distributed():
    try:
        import distributed
    except ImportError as error:
        raise InputError("client: GreeDi runs on Dask, which is not installed; install "
                         "the `distributed` extra: pip install adacore[distributed]") from error
    return distributed


def _connect(stack: ExitStack, distributed, client):
    """The client to use; anything started here is closed when ``stack`` unwinds."""
    if isinstance(client, distributed.Client):
        return client
    if isinstance(client, str):
        try:
            connection = distributed.Client(client, timeout=_CONNECT_TIMEOUT,
                                            set_as_default=False)
        except (OSError, TimeoutError, ValueError, TypeError) as error:
            raise InputError(f"client: cannot connect to a Dask scheduler at {client!r} "
                             f"({type(error).__name__}: {error})") from error
        stack.callback(connection.close)
        return connection
    # threads: nothing re-imports __main__ (see the docstring). Dashboard off, and its
    # HTTP server (health checks) on a free port, never 8787
    cluster = distributed.LocalCluster(n_workers=min(2, os.cpu_count() or 1),
                                       threads_per_worker=1, processes=False,
                                       dashboard_address=":0",
                                       scheduler_kwargs={"dashboard": False})
    stack.callback(cluster.close)
    connection = distributed.Client(cluster, set_as_default=False)
    stack.callback(connection.close)
    return connection


def _check_reachable(address: str) -> None:
    """Fail fast on a TCP scheduler address nothing listens on: Dask's client retries a
    refused connection until its whole timeout has passed."""
    from urllib.parse import urlsplit

    text = address if "://" in address else "tcp://" + address
    parts = urlsplit(text)
    if parts.scheme not in ("tcp", "tls"):
        return                      # inproc://, ucx://...: left to Dask
    try:
        host, port = parts.hostname, parts.port
    except ValueError as error:     # a port that is no number, or out of range
        raise InputError(f"client: got {address!r}, expected a scheduler address such as "
                         f"tcp://host:8786 ({error})") from None
    if not host or port is None:
        raise InputError(f"client: got {address!r}, expected a scheduler address such as "
                         f"tcp://host:8786")
    try:
        socket.create_connection((host, port), timeout=_REACH_TIMEOUT).close()
    except OSError as error:        # refused, unreachable, unknown host, timed out
        raise InputError(f"client: cannot connect to a Dask scheduler at {address!r} "
                         f"({type(error).__name__}: {error.strerror or error})") from None


def _submit_class(client, rows: np.ndarray, members: np.ndarray, budget: int,
                  partitions: int, optimizer: str, epsilon: float, seed: int, label: int,
                  centralised_entropy, engine: dict) -> tuple[dict, dict]:
    """Submit one class's whole GreeDi graph; nothing is waited for here.

    Returns the partitions' row numbers and the futures (data and results).
    """
    key = label & 0xFFFFFFFF
    count = min(partitions, members.shape[0])
    if count == 1:
        parts = [members]
        entropies = [centralised_entropy]
    else:
        # random assignment, each partition kept in row order
        rng = np.random.default_rng(np.random.SeedSequence([seed, _ASSIGN, key]))
        parts = [np.sort(part) for part in np.array_split(rng.permutation(members), count)]
        entropies = [(seed, _PARTITION, key, p) for p in range(count)]
    # fresh keys for every call (hash=False, pure=False): a repeated call must not
    # adopt keys that the previous call is still releasing (scattered data cannot be
    # recomputed, so a key released under it would cancel the new graph)
    data = client.scatter([rows[part] for part in parts], hash=False)

    def submit(function, *arguments):
        return client.submit(function, *arguments, pure=False)

    solutions = [submit(_solve_partition, chunk, min(budget, part.shape[0]), optimizer,
                        epsilon, entropy, engine)
                 for chunk, part, entropy in zip(data, parts, entropies)]
    merged = submit(_solve_union, solutions, budget, optimizer, epsilon, (seed, _MERGE, key),
                    engine)
    shares = [submit(_evaluate, chunk, p, merged) for p, chunk in enumerate(data)]
    small = [submit(_without_rows, solution) for solution in solutions]
    return {"parts": parts}, {"data": data, "results": {
        "partitions": small, "merged": submit(_without_rows, merged), "shares": shares}}


def _solve(points: np.ndarray, budget: int, optimizer: str, epsilon: float, entropy,
           engine: dict):
    """One greedy on a worker, on the engine the local problem calls for (dense, or the
    neighbour graph when ``neighbors`` is given or the dense block exceeds max_memory)."""
    return solve(_tensor(points), budget, optimizer=optimizer,
                 rng=np.random.default_rng(np.random.SeedSequence(entropy)), epsilon=epsilon,
                 seed=int(np.random.SeedSequence(entropy).generate_state(1)[0]), **engine)


def _solve_partition(chunk: np.ndarray, budget: int, optimizer: str, epsilon: float,
                     entropy, engine: dict) -> dict:
    """Round one on a worker: greedy on one partition, with its picks' rows."""
    # the partition's own cluster sizes: the exact weights when it is the whole class
    order, gains, weights, _ = _solve(chunk, budget, optimizer, epsilon, entropy, engine)
    order = np.asarray(order, dtype=np.int64)
    return {"order": order, "gains": np.asarray(gains, dtype=np.float64),
            "weights": weights, "rows": chunk[order]}


def _solve_union(solutions: list[dict], budget: int, optimizer: str, epsilon: float,
                 entropy, engine: dict) -> dict:
    """Round two on a worker: greedy on the union of the partitions' picks."""
    rows = np.concatenate([solution["rows"] for solution in solutions])
    sizes = [solution["order"].shape[0] for solution in solutions]
    owner = np.repeat(np.arange(len(solutions)), sizes)
    local = np.concatenate([solution["order"] for solution in solutions])
    # the first round's picks sum to at least min(budget, n_c) = budget
    order, gains, _, _ = _solve(rows, budget, optimizer, epsilon, entropy, engine)
    return {"order": np.asarray(order, dtype=np.int64),
            "gains": np.asarray(gains, dtype=np.float64),
            "offsets": np.concatenate([[0], np.cumsum(sizes)]),
            "owner": owner, "local": local, "rows": rows}


def _tensor(array: np.ndarray) -> torch.Tensor:
    """A tensor view of a worker's array (copied when Dask hands it over read-only)."""
    return torch.from_numpy(array if array.flags.writeable else array.copy())


def _without_rows(solution: dict) -> dict:
    return {name: value for name, value in solution.items() if name != "rows"}


def _candidates(merged: dict) -> list[np.ndarray]:
    """Columns of the union held by each candidate: every partition's picks, then the merge's."""
    offsets = merged["offsets"]
    return ([np.arange(offsets[p], offsets[p + 1]) for p in range(offsets.shape[0] - 1)]
            + [merged["order"]])


def _evaluate(chunk: np.ndarray, part: int, merged: dict) -> dict:
    """One partition's share of every candidate's cost and cluster sizes.

    For candidate S (in pick order): sum over the partition's points of the distance to
    the nearest pick, and how many of them each pick serves (ties to the earlier pick;
    a pick held by this partition serves itself, at distance 0). Distances to the union
    are computed a row block at a time, never more than one block alive.
    """
    points = _tensor(chunk)
    union = _tensor(merged["rows"])
    candidates = [torch.from_numpy(columns) for columns in _candidates(merged)]
    nearest = [torch.empty(points.shape[0], dtype=torch.long) for _ in candidates]
    distance = [torch.empty(points.shape[0], dtype=torch.float32) for _ in candidates]
    block = max(1, _BLOCK_ELEMENTS // union.shape[0])
    for start in range(0, points.shape[0], block):
        stop = min(start + block, points.shape[0])
        distances = pairwise_distances(points[start:stop], union)
        for columns, near, dist in zip(candidates, nearest, distance):
            dist[start:stop], near[start:stop] = distances[:, columns].min(dim=1)
    costs, counts = [], []
    for columns, near, dist in zip(_candidates(merged), nearest, distance):
        own = np.flatnonzero(merged["owner"][columns] == part)
        held = torch.from_numpy(merged["local"][columns[own]])
        near[held] = torch.from_numpy(own)
        dist[held] = 0.0
        costs.append(float(dist.double().sum()))
        counts.append(torch.bincount(near, minlength=columns.shape[0]).numpy())
    return {"costs": np.asarray(costs), "counts": counts}


def _decide(plan: dict, solved: dict) -> dict:
    """Add the workers' shares; keep the better of the best partition and the merge."""
    parts, partitions, merged = plan["parts"], solved["partitions"], solved["merged"]
    costs = sum(share["costs"] for share in solved["shares"])
    counts = [sum(share["counts"][c] for share in solved["shares"])
              for c in range(costs.shape[0])]
    best = int(np.argmin(costs[:-1]))                     # ties to the lower partition
    summary = {"partitions": len(parts), "merged_cost": float(costs[-1]),
               "best_partition_cost": float(costs[best]), "best_partition": best}
    if len(parts) == 1 or costs[best] <= costs[-1]:
        # one partition is the whole class: its own cluster sizes are exact, and the
        # merge (all k_c of its k_c picks) is the same set
        solution = partitions[best]
        weights = solution["weights"] if len(parts) == 1 else counts[best]
        indices = parts[best][solution["order"]]
        summary.update(winner="partition", cost=float(costs[best]))
        return {"indices": indices, "weights": weights, "gains": solution["gains"],
                "summary": summary}
    picks = merged["order"]
    indices = np.array([parts[owner][local] for owner, local in
                        zip(merged["owner"][picks], merged["local"][picks])], dtype=np.int64)
    summary.update(winner="merged", cost=float(costs[-1]))
    return {"indices": indices, "weights": counts[-1], "gains": merged["gains"],
            "summary": summary}


def _coreset(results: dict, budgets: dict, partitions: int, optimizer: str, n: int,
             *, labelled: bool) -> Coreset:
    labels = sorted(results)
    weights = np.concatenate([np.asarray(results[c]["weights"], np.float64) for c in labels])
    summaries = {c: results[c]["summary"] for c in labels}
    winners = {summary["winner"] for summary in summaries.values()}
    metadata = {"partitions": partitions, "optimizer": optimizer, "n": n,
                "merged_cost": sum(s["merged_cost"] for s in summaries.values()),
                "best_partition_cost": sum(s["best_partition_cost"] for s in summaries.values()),
                "cost": sum(s["cost"] for s in summaries.values()),
                "winner": winners.pop() if len(winners) == 1 else "mixed",
                "max_weight_over_mean": float(weights.max() / weights.mean()),
                "singleton_clusters": int((weights == 1).sum())}
    if labelled:
        metadata["per_class"] = summaries
    else:
        metadata["best_partition"] = summaries[0]["best_partition"]
    return Coreset(indices=np.concatenate([results[c]["indices"] for c in labels]),
                   weights=weights,
                   gains=np.concatenate([results[c]["gains"] for c in labels]),
                   method="greedi", budgets=dict(budgets), metadata=metadata)
