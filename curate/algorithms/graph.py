"""Connected components of an edge list cut into partitions: alternating Large-Star and
Small-Star (Kiveris, Lattanzi, Mirrokni, Rastogi, Vassilvitskii, "Connected Components in
MapReduce and Beyond", SoCC 2014), the algorithm a shuffle can run when the edges do not
fit one machine.

The graph is held as directed edges ``(u, v)``, both directions of each undirected edge,
each in the partition of its first node (``u mod parts``). One round is two shuffles:

* **Large-Star**: each node ``u`` links every larger neighbour to ``m(u)``, the smallest of
  ``u`` and its neighbours;
* **Small-Star**: each node ``u`` links itself and its smaller neighbours to the smallest of
  them.

Each keeps the components and, within O(log^2 n) rounds, leaves every component a star
around its smallest node -- checked locally (``is_star``: a node with a smaller neighbour
has no other). Each step looks at one partition's edges: O(edges / parts) memory a task.
"""

from __future__ import annotations

import numpy as np

EMPTY = np.zeros(0, np.int64)


def _groups(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The edges sorted by (u, v), the start of each u's run and its length."""
    order = np.lexsort((v, u))
    u, v = u[order], v[order]
    starts = np.flatnonzero(np.concatenate(([True], u[1:] != u[:-1]))) if len(u) else EMPTY
    sizes = np.diff(np.append(starts, len(u)))
    return u, v, starts, sizes


def large_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One partition's Large-Star: the undirected edges (v, m(u)) for each edge (u, v) with v > u."""
    if len(u) == 0:
        return EMPTY, EMPTY
    u, v, starts, sizes = _groups(u, v)
    m = np.minimum(np.minimum.reduceat(v, starts), u[starts])
    mu = np.repeat(m, sizes)
    larger = v > u
    return v[larger], mu[larger]


def small_star(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One partition's Small-Star: for each node u with smaller neighbours, m = the smallest;
    the undirected edges (x, m) for u and each smaller neighbour x != m."""
    smaller = v < u
    u, v = u[smaller], v[smaller]
    if len(u) == 0:
        return EMPTY, EMPTY
    u, v, starts, sizes = _groups(u, v)
    m = v[starts]  # sorted by (u, v): the first is the smallest
    mu = np.repeat(m, sizes)
    rest = v != mu
    return np.concatenate([v[rest], u[starts]]), np.concatenate([mu[rest], m])


def both_ways(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Undirected edges (a, b) as directed edges in both directions, self-loops dropped."""
    keep = a != b
    a, b = a[keep], b[keep]
    return np.concatenate([a, b]), np.concatenate([b, a])


def unique_edges(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The distinct directed edges, sorted by (u, v)."""
    if len(u) == 0:
        return EMPTY, EMPTY
    u, v, _, _ = _groups(u, v)
    keep = np.concatenate(([True], (u[1:] != u[:-1]) | (v[1:] != v[:-1])))
    return u[keep], v[keep]


def is_star(u: np.ndarray, v: np.ndarray) -> bool:
    """Whether every node of this partition with a smaller neighbour has no other neighbour
    (distinct directed edges of the whole graph, both directions present): true of every
    partition exactly when every component is a star around its smallest node."""
    if len(u) == 0:
        return True
    u, v, starts, sizes = _groups(u, v)
    has_smaller = v[starts] < u[starts]  # sorted: the first neighbour is the smallest
    return bool(np.all(~has_smaller | (sizes == 1)))


def route(keys: np.ndarray, parts: int) -> np.ndarray:
    """The partition of each key: ``key mod parts``."""
    return keys % parts


def star_components(n: int, pairs: np.ndarray, parts: int = 3, max_rounds: int = 200) -> np.ndarray:
    """Each node's component label (its smallest node) by Large-Star / Small-Star over ``parts``
    partitions, in one process: the reference the partitioned runs are tested against."""
    a, b = both_ways(pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64))
    edges = _shuffle([(a, b)], parts)
    for _ in range(max_rounds):
        if all(is_star(*e) for e in edges):
            break
        edges = _shuffle([both_ways(*large_star(*e)) for e in edges], parts)
        edges = _shuffle([both_ways(*small_star(*e)) for e in edges], parts)
    else:
        raise RuntimeError(f"Large-Star/Small-Star did not converge in {max_rounds} rounds")
    labels = np.arange(n)
    for u, v in edges:
        leaf = v < u
        labels[u[leaf]] = v[leaf]
    return labels


def _shuffle(pieces: list[tuple[np.ndarray, np.ndarray]], parts: int) -> list[tuple[np.ndarray, np.ndarray]]:
    out = []
    for p in range(parts):
        us, vs = zip(*[(u[route(u, parts) == p], v[route(u, parts) == p]) for u, v in pieces]) if pieces else ((), ())
        out.append(unique_edges(np.concatenate([EMPTY, *us]), np.concatenate([EMPTY, *vs])))
    return out


def keep_in_order(order: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Greedy keep rule over undirected edges ``pairs`` of nodes ``0 .. len(order)``, visited in
    ``order`` (the keep order: best first): a node is removed when an edge joins it to a node
    already kept, otherwise kept. Returns each node's partner: -1 if kept, else the kept
    neighbour earliest in the order (the one it is removed for).

    Unlike "one survivor per connected component", a removed node always has a direct edge to
    its partner, so a chain A~B~C never removes C for an A it does not resemble (when B is
    removed for A, C is kept unless it has a kept neighbour of its own). The kept nodes are a
    maximal independent set: no edge joins two kept nodes, and every removed one has a kept
    neighbour. O(edges log edges) to sort, then one pass over the nodes with earlier neighbours."""
    n = len(order)
    partner = np.full(n, -1, dtype=np.int64)
    if n == 0 or len(pairs) == 0:
        return partner
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    a, b = pairs[:, 0].astype(np.int64), pairs[:, 1].astype(np.int64)
    keep = a != b
    a, b = a[keep], b[keep]
    later = np.where(rank[a] > rank[b], a, b)
    earlier = np.where(rank[a] > rank[b], b, a)
    by = np.lexsort((rank[earlier], rank[later]))  # each later node's earlier neighbours, best first
    later, earlier = later[by], earlier[by]
    starts = np.flatnonzero(np.concatenate(([True], later[1:] != later[:-1])))
    ends = np.append(starts[1:], len(later))
    kept = np.ones(n, dtype=bool)  # a node is final before any later node looks at it
    for x, s, e in zip(later[starts].tolist(), starts.tolist(), ends.tolist()):
        for y in earlier[s:e].tolist():
            if kept[y]:
                kept[x] = False
                partner[x] = y
                break
    return partner
