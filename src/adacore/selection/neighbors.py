"""K-nearest-neighbour graphs for sparse facility location, never an n x n matrix.

Three searches behind one function, :func:`nearest_neighbors`:

- ``"exact"``: blocked brute force in torch (a few thousand query rows against all
  points at a time); O(n^2 d) flops, so for up to some tens of thousands of points.
- ``"ivf"``: an inverted-file partition searched in torch. The points are split into
  about 4 sqrt(n) cells by k-means (scikit-learn's, trained on a sample); the queries
  of one cell are compared exactly against the points of the ``probes`` cells whose
  centroids are nearest to that cell's centroid. Every distance it reports is exact;
  a true neighbour is missed only when it lies in a cell that was not probed.
- ``"faiss"``: faiss's ``IndexIVFFlat`` (when faiss is installed), with the same cell
  count and ``probes`` as ``nprobe``.

``"auto"`` is exact up to 20,000 points, faiss beyond when it is installed, ivf otherwise.
Every point is its own first neighbour (distance 0), so a selected point always covers
itself. :func:`neighbor_recall` measures an approximate graph against exact search.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from adacore.selection.distances import squared_distances
from adacore.validation import check_choice, check_int, fail

SEARCHES = ("auto", "exact", "ivf", "faiss")
EXACT_LIMIT = 20_000       # "auto" searches exactly up to this many points
_BLOCK_BYTES = 1 << 27     # one query block's distance temporary: 128 MiB


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_search(search: str, n: int) -> str:
    """The search ``"auto"`` stands for at ``n`` points."""
    check_choice("neighbor_search", search, SEARCHES)
    if search == "faiss" and not faiss_available():
        raise fail("neighbor_search", search, "'exact' or 'ivf': faiss is not installed "
                   "(pip install adacore[faiss])")
    if search != "auto":
        return search
    if n <= EXACT_LIMIT:
        return "exact"
    return "faiss" if faiss_available() else "ivf"


def _block_topk(queries: torch.Tensor, base: torch.Tensor,
                k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Distances to and rows of the k nearest rows of ``base``, per query, in blocks.

    Both sides should be centred on the same point (the callers centre on the data's
    mean); ranking uses squared distances, and only the k kept are square-rooted.
    """
    rows = max(1, _BLOCK_BYTES // (4 * max(1, base.shape[0])))
    norms = torch.einsum("ij,ij->i", base, base)
    out_d, out_i = [], []
    for start in range(0, queries.shape[0], rows):
        d2 = squared_distances(queries[start:start + rows], base, norms)
        if k == 1:
            values, index = torch.min(d2, dim=1, keepdim=True)
        else:
            values, index = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        out_d.append(values.clamp_min_(0.0).sqrt_())
        out_i.append(index)
    return torch.cat(out_d), torch.cat(out_i)


def _cells(n: int) -> int:
    # about 4 sqrt(n) cells, with at least 40 points each to train on (faiss asks 39)
    return max(1, min(n // 40, round(4 * math.sqrt(n))))


def _training_sample(n: int, cells: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(rng.choice(n, min(n, max(40 * cells, 10_000)), replace=False))


def _kmeans_centroids(X: torch.Tensor, cells: int, seed: int) -> torch.Tensor:
    from sklearn.cluster import KMeans

    rows = _training_sample(X.shape[0], cells, np.random.default_rng(seed))
    # random initial centres and few iterations, as coarse quantisers are trained: the
    # cells only need to be compact, not optimal (k-means++ would cost more than the search)
    fit = KMeans(n_clusters=cells, init="random", n_init=1, max_iter=10, random_state=seed)
    fit.fit(X[torch.from_numpy(rows)].cpu().numpy())
    return torch.as_tensor(fit.cluster_centers_, dtype=X.dtype, device=X.device)


def _grouped(assignment: torch.Tensor, cells: int) -> list[torch.Tensor]:
    """Rows of each cell."""
    order = torch.argsort(assignment, stable=True)
    counts = torch.bincount(assignment, minlength=cells).tolist()
    return list(torch.split(order, counts))


def _ivf(base: torch.Tensor, queries: torch.Tensor, k: int, *, probes: int, seed: int):
    center = base.mean(dim=0)
    base, queries = base - center, queries - center
    centroids = _kmeans_centroids(base, _cells(base.shape[0]), seed)
    cells = centroids.shape[0]
    in_base = _grouped(_block_topk(base, centroids, 1)[1][:, 0], cells)
    in_queries = _grouped(_block_topk(queries, centroids, 1)[1][:, 0], cells)
    _, nearby = _block_topk(centroids, centroids, min(probes, cells))
    # a cell always searches itself (with tied centroids, duplicates, topk may not say so)
    own = torch.arange(cells, device=nearby.device)
    missing = ~(nearby == own[:, None]).any(dim=1)
    nearby[missing, -1] = own[missing]
    distances = torch.full((queries.shape[0], k), math.inf, device=base.device)
    indices = torch.full((queries.shape[0], k), -1, dtype=torch.long, device=base.device)
    for cell in range(cells):
        members = in_queries[cell]
        if members.shape[0] == 0:
            continue
        pool = torch.cat([in_base[c] for c in nearby[cell].tolist()])
        take = min(k, pool.shape[0])
        found, local = _block_topk(queries[members], base[pool], take)
        distances[members, :take] = found
        indices[members, :take] = pool[local]
    return distances, indices


def _faiss(base: torch.Tensor, queries: torch.Tensor, k: int, *, probes: int, seed: int):
    import faiss

    center = base.mean(dim=0)
    data = np.ascontiguousarray((base - center).cpu().numpy(), dtype=np.float32)
    asked = np.ascontiguousarray((queries - center).cpu().numpy(), dtype=np.float32)
    cells = _cells(data.shape[0])
    index = faiss.IndexIVFFlat(faiss.IndexFlatL2(data.shape[1]), data.shape[1], cells)
    index.cp.seed = seed % 2**31           # faiss takes a signed 32-bit seed
    index.train(data[_training_sample(data.shape[0], cells, np.random.default_rng(seed))])
    index.add(data)
    index.nprobe = min(probes, cells)
    d2, found = index.search(asked, k)
    distances = torch.from_numpy(np.sqrt(np.maximum(d2, 0))).to(base.device)
    distances[torch.from_numpy(found < 0)] = math.inf   # faiss marks "none found" by -1
    return distances, torch.from_numpy(found.astype(np.int64)).to(base.device)


def search_neighbors(base: torch.Tensor, queries: torch.Tensor, k: int, *, search: str,
                     probes: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``base`` for each row of ``queries``.

    Returns float32 (m, k) distances in increasing order and int64 (m, k) rows of
    ``base``; where an approximate search found fewer than k, the rest are -1 at
    distance inf.
    """
    k = min(k, base.shape[0])
    method = resolve_search(search, base.shape[0])
    if method == "exact":
        center = base.mean(dim=0)
        return _block_topk(queries - center, base - center, k)
    if method == "ivf":
        return _ivf(base, queries, k, probes=probes, seed=seed)
    return _faiss(base, queries, k, probes=probes, seed=seed)


def nearest_neighbors(X, k: int, *, search: str = "auto", probes: int = 8,
                      seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest points of every row of ``X`` (itself first), by Euclidean distance.

    Parameters
    ----------
    X : Tensor, shape (n, d)
        Float32 points.
    k : int
        Neighbours per point, itself included; 1 <= k <= n.
    search : {"auto", "exact", "ivf", "faiss"}
        See the module docstring.
    probes : int
        Cells searched per query cell (``ivf``) or per query (``faiss``'s nprobe):
        more is slower and finds more of the true neighbours.
    seed : int
        Seed of the k-means sample and initialisation.

    Returns
    -------
    (distances, indices) : float32 (n, k) Euclidean distances in increasing order and
    int64 (n, k) row numbers; row i starts with i itself at distance 0. Where an
    approximate search found fewer than k points the rest are i again at distance inf
    (they add nothing to a facility-location gain).
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    n = X.shape[0]
    k = check_int("neighbors", k, 1, n)
    probes = check_int("probes", probes, 1)
    distances, index = search_neighbors(X, X, k, search=search, probes=probes, seed=seed)
    _self_first(distances, index)
    return distances, index


def _self_first(distances: torch.Tensor, index: torch.Tensor) -> None:
    """Make every row's first neighbour the point itself at distance 0 (in place).

    Rounding can rank an exact duplicate before the point itself, and an approximate
    search can miss the point; either way the point is put first and the row's entry
    that named it (or its last, farthest entry) makes room.
    """
    n, k = index.shape
    own = torch.arange(n, device=index.device)
    index[index < 0] = n          # "none found": never equal to a row, filled below
    hit = index == own[:, None]
    where = torch.where(hit.any(dim=1), hit.float().argmax(dim=1),
                        torch.full((n,), k - 1, device=index.device))
    for column in range(k - 1, 0, -1):   # shift entries before `where` one to the right
        move = where >= column
        index[move, column] = index[move, column - 1]
        distances[move, column] = distances[move, column - 1]
    index[:, 0] = own
    distances[:, 0] = 0.0
    missing = index == n
    index[missing] = own[:, None].expand(n, k)[missing]


def neighbor_recall(X, indices: torch.Tensor, *, queries: int = 1000, seed: int = 0) -> float:
    """Share of the true k nearest neighbours an approximate graph found, on sampled rows.

    The exact neighbours of ``queries`` random rows are found by brute force against
    all points (O(queries n d)); ties at the k-th distance count as found.
    """
    X = torch.as_tensor(X, dtype=torch.float32)
    n, k = indices.shape
    rng = np.random.default_rng(seed)
    rows = torch.from_numpy(np.sort(rng.choice(n, min(queries, n), replace=False)))
    X = X - X.mean(dim=0)
    true_distances, _ = _block_topk(X[rows], X, k)
    found = torch.linalg.vector_norm(X[indices[rows]] - X[rows][:, None, :], dim=2)
    # found neighbours within the true k-th distance count (ties included), each once
    threshold = true_distances[:, -1:] * (1 + 1e-5) + 1e-6
    distinct = torch.ones_like(found, dtype=torch.bool)
    sorted_rows, _ = torch.sort(indices[rows], dim=1)
    distinct[:, 1:] = sorted_rows[:, 1:] != sorted_rows[:, :-1]
    hits = torch.gather(found <= threshold, 1, torch.argsort(indices[rows], dim=1)) & distinct
    return float(hits.float().sum() / (rows.shape[0] * k))
