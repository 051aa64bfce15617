"""minhash_dedup's verification and clustering as a plan's shuffles, for candidate pairs too
many for the driver (``Plan.driver_pairs``): the same decision ``near_duplicates`` makes
in the driver, with every pair, signature and shingle set staying in the plan's tasks.

Block ``b`` of the input belongs to partition ``b mod P``; a row's partition is its block's.
Every step is one task per partition, each sending records to the partitions of the rows it
names next (a shuffle: P x P pieces):

1. ``_with_signature``: each candidate pair (i, j), at i's partition, takes i's signature
   (from the map output of i's block) and goes to j's partition;
2. ``_classify``: there it takes j's signature; the estimate accepts, drops or -- within 5
   sigma of the threshold, with ``verify: exact`` -- sends the pair with j's shingle set
   (j's text read there) to i's partition; ``_check``: i's set, the true Jaccard;
3. accepted pairs are edges of a graph cut by ``node mod P``: Large-Star / Small-Star rounds
   (``algorithms.graph``) until every component is a star around its smallest row;
   ``_roots``: each row's component, and each accepted edge sent to its component's partition;
4. ``_priority`` / ``_winners``: each row's keep priority (``keep``) at its partition, sent to
   its component's; there, per component, the keep rule (``graph.keep_in_order``: in keep
   order, a row is removed only for a verified partner already kept) and the component's
   name (its best row); ``_survivor_signatures`` / ``_estimate``: the estimated Jaccard of
   each removed row with its partner. Only (row, partner, cluster, estimate) of the rows in
   components reach the driver.

A component's edges meet in one task: memory there is O(the largest component's edges).
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pyarrow as pa

from ..algorithms import graph, lsh
from ..errors import StageError
from ..records import text_columns, texts
from ..stage import Plan, Rows

MAX_ROUNDS = 200

Records = dict  # column name -> numpy array, all of one length


def cluster(plan: Plan, rows: Rows, field: str, c, signatures: list, keys: list[tuple], starts: np.ndarray,
            label: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(kept_of, jaccard, cluster_of) as ``near_duplicates`` returns them, from ``signatures`` (the map
    output handle of each block: (signatures, valid, text lengths)) and ``keys`` (for each
    partition, the handles of its candidate pair keys ``i * n + j``, routed by i)."""
    n, parts = rows.num_rows, plan.partitions
    owned = [list(range(r, len(starts) - 1, parts)) for r in range(parts)]

    def step(fn, pieces: list[tuple], outputs: int, description: str, columns: list[str] | None = None) -> list[tuple]:
        """``fn`` at each partition r, given r's blocks' signatures and ``pieces[r]``."""
        args = [(r, len(owned[r]), *(signatures[b] for b in owned[r]), *pieces[r]) for r in range(parts)]
        reads = owned if columns is not None else None
        return plan.submit(partial(fn, starts, parts), args, outputs, rows=rows, columns=columns, reads=reads,
                           description=f"{label}: {description}")

    def routed(tasks: list[tuple], first: int = 0) -> list[tuple]:
        """For each partition, the pieces every task sent it (output ``first + r``)."""
        return [tuple(t[first + r] for t in tasks) for r in range(parts)]

    with_i = step(partial(_first_signatures, n), keys, parts, "signatures of candidate pairs")
    classify = partial(_classify, c.verify, c.threshold, c.num_perm, c.normalizer(), c.ngram, c.unit, field)
    classified = step(classify, routed(with_i), 2 * parts, "estimates", text_columns(field))
    checked = step(partial(_check, c.threshold, c.normalizer(), c.ngram, c.unit, field), routed(classified, parts),
                   parts, "true Jaccard of doubtful pairs", text_columns(field))
    edges = [routed(classified)[r] + routed(checked)[r] for r in range(parts)]
    for _ in range(MAX_ROUNDS):
        large = plan.submit(partial(_large_star, parts), edges, 1 + parts, description=f"{label}: components")
        if all(plan.fetch([t[0] for t in large])):
            break
        small = plan.submit(partial(_small_star, parts), routed(large, 1), parts, description=f"{label}: components")
        edges = routed(small)
    else:
        raise StageError(f"{label}: clustering did not converge in {MAX_ROUNDS} Large-Star/Small-Star rounds")
    verified = [routed(classified)[r] + routed(checked)[r] for r in range(parts)]
    roots = plan.submit(partial(_roots, starts, parts), [(len(edges[r]), *edges[r], *verified[r]) for r in range(parts)],
                        2 * parts, description=f"{label}: clusters")
    columns = [c.score_column] if c.keep == "score" else []  # read only for keep=score
    if c.keep == "score" and c.score_column not in rows.column_names:
        raise StageError(f"{label}: keep=score, but there is no column '{c.score_column}'")
    ranked = step(partial(_priority, c.keep, c.score_column), routed(roots), parts, "keep priorities", columns)
    winners = plan.submit(partial(_winners, starts, parts), [(len(ranked),) + routed(ranked)[r] + routed(roots, parts)[r]
                                                             for r in range(parts)], parts, description=f"{label}: keep rule")
    with_j = step(_survivor_signatures, routed(winners), parts, "signatures of partners")
    removed = plan.fetch([t[0] for t in step(_estimate, routed(with_j), 1, "estimates with partners")])
    kept_of = np.arange(n, dtype=np.int64)
    cluster_of = np.arange(n, dtype=np.int64)
    jac = np.ones(n, dtype=np.float32)
    for rec in removed:
        kept_of[rec["i"]] = rec["j"]
        cluster_of[rec["i"]] = rec["cluster"]
        jac[rec["i"]] = rec["jac"]
    return kept_of, jac, cluster_of


def route_keys(starts: np.ndarray, parts: int, total: int, keys: np.ndarray) -> tuple[np.ndarray, ...]:
    """Pair keys ``i * total + j`` split by the partition of row i's block."""
    where = partition_of(starts, parts, keys // total)
    return tuple(keys[where == r] for r in range(parts))


def partition_of(starts: np.ndarray, parts: int, rows: np.ndarray) -> np.ndarray:
    """The partition of each row: its block's index mod ``parts``."""
    return (np.searchsorted(starts, rows, side="right") - 1) % parts


def _split(rec: Records, where: np.ndarray, parts: int) -> tuple[Records, ...]:
    return tuple({k: v[where == r] for k, v in rec.items()} for r in range(parts))


def _concat(pieces: tuple) -> Records:
    """One partition's records from the pieces sent to it ({} if it got none with rows)."""
    full = [p for p in pieces if len(p["i"])]
    return {k: np.concatenate([p[k] for p in full]) for k in full[0]} if full else {}


def _signature_rows(starts: np.ndarray, parts: int, r: int, infos: tuple, rows: np.ndarray, which: int = 0) -> np.ndarray:
    """``infos[which]`` (0: signatures, 2: text lengths) of ``rows``, all in partition r's blocks
    (``infos[k]``: the map output of block ``r + k * parts``)."""
    block = np.searchsorted(starts, rows, side="right") - 1
    first = infos[0][which] if infos else np.zeros((0,), np.uint32)
    out = np.empty((len(rows), *first.shape[1:]), dtype=first.dtype)
    for b in np.unique(block):
        mask = block == b
        out[mask] = infos[(b - r) // parts][which][rows[mask] - starts[b]]
    return out


def _pairs_with(rec: Records, side: str, where: np.ndarray, parts: int, payload) -> tuple[Records, ...]:
    """Pair records split by ``where``, each piece carrying ``payload(rows)`` (signatures, or
    packed shingle sets) once per distinct row of ``side`` in it, and each pair's index into
    them (``inv``): a row in many pairs is sent once, not once a pair."""
    rows, inv_all = np.unique(rec[side], return_inverse=True)
    data = payload(rows)
    out = []
    for p in range(parts):
        mask = where == p
        used, inv = np.unique(inv_all[mask], return_inverse=True)
        piece = {k: v[mask] for k, v in rec.items()}
        piece.update(rows=rows[used], inv=inv.astype(np.int64), **_take_payload(data, used))
        out.append(piece)
    return tuple(out)


def _take_payload(data: dict, used: np.ndarray) -> dict:
    if "sig" in data:
        return {"sig": data["sig"][used]}
    sets = unpack_sets(data["values"], data["bounds"])
    values, bounds = pack_sets([sets[u] for u in used.tolist()])
    return {"values": values, "bounds": bounds}


def _merge(pieces: tuple) -> Records:
    """One partition's pair records from the pieces sent to it: pairs and extra columns
    concatenated, payloads too, each pair's ``inv`` shifted to its payload's place."""
    pieces = [p for p in pieces if len(p["i"])]
    if not pieces:
        return {}
    out: Records = {}
    pair_keys = [k for k in pieces[0] if k not in ("rows", "inv", "sig", "values", "bounds")]
    for key in pair_keys:
        out[key] = np.concatenate([p[key] for p in pieces])
    shift = np.cumsum([0] + [len(p["rows"]) for p in pieces[:-1]])
    out["inv"] = np.concatenate([p["inv"] + s for p, s in zip(pieces, shift)])
    out["rows"] = np.concatenate([p["rows"] for p in pieces])
    if "sig" in pieces[0]:
        out["sig"] = np.concatenate([p["sig"] for p in pieces])
    else:
        out["values"], out["bounds"] = pack_sets([s for p in pieces for s in unpack_sets(p["values"], p["bounds"])])
    return out


def _first_signatures(total: int, starts, parts, r, k, *handles) -> tuple[Records, ...]:
    """Candidate pair keys at i's partition: the pairs, with i's signature, to j's partition."""
    infos = handles[:k]
    keys = np.concatenate([np.zeros(0, np.int64), *handles[k:]])
    rec = {"i": keys // total, "j": keys % total}
    return _pairs_with(rec, "i", partition_of(starts, parts, rec["j"]), parts,
                       lambda rows: {"sig": _signature_rows(starts, parts, r, infos, rows)})


def _survivor_signatures(starts, parts, r, k, *handles) -> tuple[Records, ...]:
    """(row i, its partner j, its cluster) at j's partition: with j's signature, to i's partition."""
    infos = handles[:k]
    rec = _concat(handles[k:]) or {"i": np.zeros(0, np.int64), "j": np.zeros(0, np.int64), "cluster": np.zeros(0, np.int64)}
    return _pairs_with(rec, "j", partition_of(starts, parts, rec["i"]), parts,
                       lambda rows: {"sig": _signature_rows(starts, parts, r, infos, rows)})


def _estimates(rec: Records, infos: tuple, starts, parts, r, side: str, chunk: int = 1 << 15) -> np.ndarray:
    """Each pair's signature estimate: the sent signature (``rec["sig"][rec["inv"]]``) against
    ``side``'s, looked up here, a chunk of pairs at a time."""
    est = np.empty(len(rec["i"]), np.float32)
    for s in range(0, len(est), chunk):
        mine = _signature_rows(starts, parts, r, infos, rec[side][s : s + chunk])
        est[s : s + chunk] = (rec["sig"][rec["inv"][s : s + chunk]] == mine).mean(axis=1)
    return est


def _estimate(starts, parts, r, k, *handles) -> tuple[Records]:
    """(row i, its partner j, its cluster, their estimated Jaccard), at i's partition."""
    rec = _merge(handles[k:])
    if not rec:
        none = np.zeros(0, np.int64)
        return ({"i": none, "j": none, "cluster": none, "jac": np.zeros(0, np.float32)},)
    return ({"i": rec["i"], "j": rec["j"], "cluster": rec["cluster"],
             "jac": _estimates(rec, handles[:k], starts, parts, r, "i")},)


def _classify(verify, threshold, num_perm, normalize, ngram, unit, field, starts, parts, read, r, k, *handles) -> tuple:
    """At j's partition: the pairs' estimates; accepted edges (split by node mod P), and to
    i's partition the doubtful pairs with their estimates and j's shingle set (j's text read
    here)."""
    rec = _merge(handles[k:])
    none = np.zeros(0, np.int64)
    if not rec:
        rec = {"i": none, "j": none}
        est = np.zeros(0, np.float32)
    else:
        est = _estimates(rec, handles[:k], starts, parts, r, "j")
    if verify == "none":
        sure, doubtful = np.ones(len(est), bool), np.zeros(len(est), bool)
    elif verify == "signature":
        sure, doubtful = est >= threshold, np.zeros(len(est), bool)
    else:
        sure, doubtful = lsh.sure_and_doubtful(est, threshold, num_perm)
    i, j = rec["i"], rec["j"]
    to_check = {"i": i[doubtful], "j": j[doubtful]}
    where = partition_of(starts, parts, to_check["i"])
    pieces = _pairs_with(to_check, "j", where, parts,
                         lambda rows: dict(zip(("values", "bounds"), pack_sets(_sets_of(starts, read, rows, normalize, ngram,
                                                                                     unit, field)))))
    return (*_edges(i[sure], j[sure], parts), *pieces)


def _check(threshold, normalize, ngram, unit, field, starts, parts, read, r, k, *handles) -> tuple:
    """At i's partition: every doubtful pair checked by true Jaccard, j's set as sent, i's
    built here (the keep rule needs each row's own verified partners, so none is skipped)."""
    rec = _merge(handles[k:])
    if not rec:
        return _edges(np.zeros(0, np.int64), np.zeros(0, np.int64), parts)
    sets = dict(zip(rec["rows"].tolist(), unpack_sets(rec["values"], rec["bounds"])))  # the j rows' sets, as sent
    new = lsh.sorted_unique(rec["i"])
    sets.update(zip(new.tolist(), _sets_of(starts, read, new, normalize, ngram, unit, field)))
    ok = lsh.exact_jaccard(sets, np.stack([rec["i"], rec["j"]], axis=1)) >= threshold
    return _edges(rec["i"][ok], rec["j"][ok], parts)


def _sets_of(starts, read, idx: np.ndarray, normalize, ngram, unit, field) -> list[np.ndarray]:
    """The shingle sets of rows ``idx`` (any order), their texts read block by block."""
    out: list = [None] * len(idx)
    block = np.searchsorted(starts, idx, side="right") - 1
    for b in np.unique(block):
        where = np.flatnonzero(block == b)
        table = read(int(b))
        chosen = texts(table.take(pa.array(idx[where] - starts[b])), field)
        for w, s in zip(where.tolist(), lsh.shingle_sets([normalize(t) for t in chosen], ngram, unit)):
            out[w] = s
    return out


def pack_sets(sets: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Shingle sets as one flat array and each set's bounds in it (cheap to send)."""
    sizes = np.fromiter((len(s) for s in sets), dtype=np.int64, count=len(sets))
    return np.concatenate([np.zeros(0, np.uint32), *sets]), np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def unpack_sets(values: np.ndarray, bounds: np.ndarray) -> list[np.ndarray]:
    """``pack_sets``'s sets back, as views."""
    return [values[bounds[m] : bounds[m + 1]] for m in range(len(bounds) - 1)]


def _edges(a: np.ndarray, b: np.ndarray, parts: int) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Undirected edges as directed ones both ways, split by their first node mod P."""
    u, v = graph.both_ways(a.astype(np.int64), b.astype(np.int64))
    where = graph.route(u, parts)
    return tuple((u[where == p], v[where == p]) for p in range(parts))


def _gather(pieces: tuple) -> tuple[np.ndarray, np.ndarray]:
    u = np.concatenate([graph.EMPTY, *(p[0] for p in pieces)])
    v = np.concatenate([graph.EMPTY, *(p[1] for p in pieces)])
    return graph.unique_edges(u, v)


def _large_star(parts: int, *pieces) -> tuple:
    """(whether this partition's part of the graph is already stars, Large-Star's edges split by node)."""
    u, v = _gather(pieces)
    return (graph.is_star(u, v), *_edges(*graph.large_star(u, v), parts))


def _small_star(parts: int, *pieces) -> tuple:
    return _edges(*graph.small_star(*_gather(pieces)), parts)


def _roots(starts: np.ndarray, parts: int, k: int, *pieces) -> tuple[Records, ...]:
    """From this partition's stars (``pieces[:k]``) and verified edges (``pieces[k:]``, both
    cut by their first node mod P): each node with its component's smallest node (a centre
    is its own), sent to the node's partition; and each verified edge (u < v) with its
    component, sent to the component's partition (where the keep rule runs)."""
    u, v = _gather(pieces[:k])
    nodes = lsh.sorted_unique(u)
    root = nodes.copy()
    leaf = v < u  # a star's leaf has one neighbour, its centre
    root[np.searchsorted(nodes, u[leaf])] = v[leaf]
    eu, ev = _gather(pieces[k:])
    once = eu < ev
    edges = {"i": eu[once], "j": ev[once], "root": root[np.searchsorted(nodes, eu[once])]}
    return (*_split({"i": nodes, "root": root}, partition_of(starts, parts, nodes), parts),
            *_split(edges, graph.route(edges["root"], parts), parts))


def _priority(keep: str, score_column: str | None, starts, parts, read, r, k, *handles) -> tuple[Records, ...]:
    """Each node's keep priority (lower survives; ties: the first row), at its partition, sent
    to its component's: ``first`` 0, ``longest`` minus its text's length, ``score`` minus its score."""
    rec = _concat(handles[k:]) or {"i": np.zeros(0, np.int64), "root": np.zeros(0, np.int64)}
    priority = np.zeros(len(rec["i"]))
    if keep == "longest":
        priority = -_signature_rows(starts, parts, r, handles[:k], rec["i"], which=2).astype(np.float64)
    elif keep == "score":
        block = np.searchsorted(starts, rec["i"], side="right") - 1
        for b in np.unique(block):
            mask = block == b
            scores = read(int(b)).column(score_column).to_numpy(zero_copy_only=False).astype(np.float64)
            priority[mask] = -np.nan_to_num(scores[rec["i"][mask] - starts[b]], nan=-np.inf)
    rec["priority"] = priority
    return _split(rec, graph.route(rec["root"], parts), parts)


def _winners(starts: np.ndarray, parts: int, k: int, *pieces) -> tuple[Records, ...]:
    """This partition's components: their nodes with keep priorities (``pieces[:k]``) and
    verified edges (``pieces[k:]``). In the order (priority, row), the keep rule
    (``graph.keep_in_order``); each component is named by its first node. Every node as
    (i, j = its partner or itself if kept, cluster), sent to j's partition."""
    rec = _concat(pieces[:k])
    none = np.zeros(0, np.int64)
    if not rec or not len(rec["i"]):
        return _split({"i": none, "j": none, "cluster": none}, none, parts)
    order = np.lexsort((rec["i"], rec["priority"], rec["root"]))
    root, node = rec["root"][order], rec["i"][order]
    first = np.concatenate(([True], root[1:] != root[:-1]))
    cluster = node[first][np.cumsum(first) - 1]
    edges = _concat(pieces[k:]) or {"i": none, "j": none}
    local = np.argsort(node)  # node ids -> their place in ``node`` (ascending lookup)
    compact = np.stack([local[np.searchsorted(node[local], edges["i"])], local[np.searchsorted(node[local], edges["j"])]],
                       axis=1)
    keep_order = np.lexsort((node, rec["priority"][order]))  # one order for all components: each is independent
    partner = graph.keep_in_order(keep_order, compact)
    out = {"i": node, "j": np.where(partner >= 0, node[np.maximum(partner, 0)], node), "cluster": cluster}
    return _split(out, partition_of(starts, parts, out["j"]), parts)
