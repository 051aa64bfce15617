"""Near-duplicate removal with MinHash LSH, verified.

Method (Broder 1997; the settings behind the Hugging Face and BigCode corpora, as in
datatrove and text-dedup): normalise, cut into word 5-grams, take a 128-permutation
MinHash signature, band it, and treat rows sharing a band as candidates; the peers then close candidates
into clusters (union-find, connected components) and keep one row per cluster.

What we do differently from the peers (see shared/PEERS.md), and why:

* **Verified candidates** (``verify: exact``, default). Banding alone trades recall for
  precision: the optimal 9x13 bands for t = 0.8 miss ~1/5 of true pairs, while 16x8
  finds them but chains unrelated boilerplate into huge clusters. We band for recall
  (the cheapest bands with P(candidate | J = t) >= ``min_candidate_recall``) and then
  keep only candidate pairs whose true Jaccard of shingle sets is >= t before
  clustering. ``signature`` checks the signature estimate instead (no second pass over
  texts, +-0.035 noise at J = 0.8); ``none`` is the classic unverified LSH.
* **Removed only for a kept look-alike.** Connected components chain: A~B~C puts C in A's
  cluster although J(A, C) may be far below t (measured on real licence text: one cluster
  of 233 BSD variants held 27,028 internal pairs, 2,096 of them near-duplicates; removal
  precision 0.87). We visit rows in keep order and remove a row only when one of its own
  verified partners is already kept (as SemDeDup decides against kept rows):
  ``duplicate_of`` names that partner, always with J >= t; ``dup_cluster`` still names the
  component (its best row), for analysis.
* **Vectorised, batch by batch.** Shingle hashes and signatures are numpy passes over a
  batch (see ``lsh.py``); batches run in ``workers`` processes; memory is the signatures
  (num_perm x 4 bytes a row) plus band hashes, not the texts.
* **Deterministic.** Same input and config -> same kept set, whatever the batch size or
  worker count: signatures are pure functions of each text, candidate search sorts, and
  the keep rule depends on the keep order and the verified edges, not on their order.

Defaults (datatrove/text-dedup): 5-gram words, 128 permutations, threshold 0.8, seed 1.
Rows too short to form one shingle have no signature and are never removed (exact
duplicates of those are ``exact_dedup``'s job).
"""

from __future__ import annotations

import os
from functools import partial
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from ..algorithms import graph, lsh
from ..errors import StageError
from ..fingerprint import hash_parts
from ..records import default_text_field, text_columns, texts
from ..stage import Decision, Rows, Stage, StageConfig, StageContext, TableRows, check_keep_policy, release_memory
from ..store import Store, Version
from . import minhash_cluster


class MinhashDedupConfig(StageConfig):
    renamed = {"normalize_unicode": "'unicode_nfkc'"}  # exact_dedup's earlier name for the same option

    field: str | None = None
    """Text to compare: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    ngram: int = Field(5, ge=1)
    """Shingle size, in units."""
    unit: Literal["word", "char"] = "word"
    """Shingle units: words (runs of non-space characters after normalising) or characters."""
    lowercase: bool = True
    """Normalise case before shingling."""
    strip_punctuation: bool = True
    """Replace ASCII and common Unicode punctuation with spaces before shingling."""
    normalize_digits: bool = False
    """Replace every digit with 0 (numbers then never make two texts differ)."""
    unicode_nfkc: bool = False
    """Apply Unicode NFKC normalisation first (full-width letters, ligatures...)."""
    num_perm: int = Field(128, ge=2, le=1024)
    """MinHash permutations (signature length)."""
    threshold: float = Field(0.8, gt=0.0, le=1.0)
    """Jaccard similarity at or above which two rows are near-duplicates."""
    bands: int | None = Field(None, ge=1)
    """LSH bands; with rows, overrides the automatic choice."""
    rows: int | None = Field(None, ge=1)
    """Rows per band; with bands, overrides the automatic choice."""
    verify: Literal["exact", "signature", "none"] = "exact"
    """Check candidate pairs before clustering: true Jaccard of shingle sets, the signature estimate, or not at all."""
    min_candidate_recall: float = Field(0.99, gt=0.0, lt=1.0)
    """With verification: pick the cheapest bands that make a pair at exactly the threshold a candidate with this probability."""
    keep: Literal["first", "longest", "score"] = "first"
    """Which row of a cluster survives: the first, the longest text, or the highest score_column (ties: the first)."""
    score_column: str | None = None
    """Numeric column for keep=score."""
    seed: int = 1
    """Seed of the permutations (datasketch's default is 1)."""
    batch_size: int = Field(2000, ge=1)
    """Rows per batch of signature work (memory and progress granularity; never changes results)."""
    against: list[str] = []
    """Dataset references to dedup against: rows near-duplicating any row there are removed."""

    @model_validator(mode="after")
    def _consistent(self) -> MinhashDedupConfig:
        if (self.bands is None) != (self.rows is None):
            raise ValueError("give both bands and rows, or neither")
        if self.bands is not None and self.bands * self.rows > self.num_perm:
            raise ValueError(f"bands x rows = {self.bands * self.rows} exceeds num_perm = {self.num_perm}")
        check_keep_policy(self.keep, self.score_column)
        return self

    def normalizer(self) -> lsh.Normalizer:
        return lsh.Normalizer(self.lowercase, self.strip_punctuation, self.normalize_digits, self.unicode_nfkc)

    def banding(self) -> tuple[int, int]:
        if self.bands is not None:
            return self.bands, self.rows
        if self.verify == "none":
            return lsh.optimal_bands(self.threshold, self.num_perm)
        return lsh.recall_bands(self.threshold, self.num_perm, self.min_candidate_recall)


class MinhashDedup(Stage):
    name = "minhash_dedup"
    version = "1"
    Config = MinhashDedupConfig
    config: MinhashDedupConfig

    def dependencies(self, store: Store | None) -> list[str]:
        if not self.config.against:
            return []
        if store is None:
            raise StageError("minhash_dedup: 'against' needs a store to resolve its references")
        return [store.resolve(ref).fingerprint for ref in self.config.against]

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """The distributed plan of ``near_duplicates`` (here, or Ray tasks: see there); the
        driver holds the ids, the candidate pairs and the signatures and shingle sets of the
        rows in them, never the texts or every signature."""
        c = self.config
        field = c.field or default_text_field(rows)
        n = rows.num_rows
        refs = [self._reference(ref, ctx) for ref in c.against]
        kept_of, jac, cluster_of = near_duplicates(rows, field, c, ctx,
                                                   [(t, s, v, c.field or default_text_field(t)) for t, s, v in refs], self.name)
        ids = pa.chunked_array([*rows.column("id").chunks, *(c for t, _, _ in refs for c in t.column("id").chunks)],
                               pa.string())
        partner_ids = ids.take(pa.array(kept_of)).combine_chunks()  # Arrow all along: ~ (4 + id) B a row
        cluster_ids = ids.take(pa.array(cluster_of)).combine_chunks()
        is_kept = kept_of == np.arange(n)
        reasons = pc.if_else(pa.array(kept_of >= n), "near_duplicate_of_earlier_version", "near_duplicate")
        gone = np.flatnonzero(~is_kept)
        details = np.full(n, None, dtype=object)
        details[gone] = [f"estimated Jaccard {j:.2f} with {cid}"
                         for j, cid in zip(jac[gone].tolist(), partner_ids.take(pa.array(gone)).to_pylist())]
        return Decision(is_kept, reasons, pa.array(details, pa.string()),
                        columns={"dup_cluster": cluster_ids},
                        extra={"duplicate_of": partner_ids, "jaccard": pa.array(jac, pa.float32())})

    def _reference(self, ref: str, ctx: StageContext) -> tuple[pa.Table, np.ndarray, np.ndarray]:
        """An `against` version's rows and signatures; signatures are cached in the store
        (keyed by version and every setting that shapes them), so a reference pool is
        hashed once however many new datasets are checked against it."""
        if ctx.store is None:
            raise StageError("minhash_dedup: 'against' needs a store (run it inside a pipeline)")
        c = self.config
        version = ctx.store.resolve(ref)
        ref_table = version.table()
        ref_field = c.field or default_text_field(ref_table)
        key = hash_parts(version.fingerprint, ref_field, c.normalizer().__dict__, c.ngram, c.unit, c.num_perm, c.seed)
        path = ctx.store.area("cache", "minhash") / f"{key}.npz"
        if path.is_file():
            cached = np.load(path)
            return ref_table, cached["sig"], cached["valid"]
        sig, valid = signatures_of(ref_table, ref_field, c, ctx, f"{self.name} against {ref}")
        tmp = path.with_name(f"{key}.{os.getpid()}.tmp.npz")
        np.savez(tmp, sig=sig, valid=valid)
        os.replace(tmp, path)
        return ref_table, sig, valid


def signatures_of(table: pa.Table, field: str, c: MinhashDedupConfig, ctx: StageContext, label: str):
    """Signatures of every row of a table, batch by batch (texts of one batch at a time)."""
    batches = (texts(b, field) for b in TableRows(table).scan(text_columns(field), c.batch_size))
    return fill_signatures(batches, len(table), c, ctx, label)


def near_duplicates(rows: Rows, field: str, c: MinhashDedupConfig, ctx: StageContext,
                    refs: list[tuple[pa.Table, np.ndarray, np.ndarray, str]] = (), label: str = "minhash_dedup"
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row of ``rows``: the index of the kept row it is removed for (itself if kept;
    ``n`` and above: a row of the ``refs``, the ``against`` versions, as (table, signatures,
    valid, field)), the estimated Jaccard with it, and its cluster (the best row, by ``keep``,
    of its connected component of verified pairs). Runs through
    ``ctx.planner()``, the same steps here and on Ray:

    1. map over the blocks: signatures (they stay where the block ran) and each row's band
       hashes, split by hash into ``plan.partitions`` partitions;
    2. one reduce per partition: the rows sharing a (band, hash) become candidate pairs
       (``lsh.pair_keys``, the grouping ``lsh.candidate_pairs`` uses);
    3. the driver: the unique candidate pairs, and the signatures of the rows in them
       (taken from the blocks' signatures, nothing else moves);
    4. verification (``verified_pairs``): the shingle sets of the rows in doubtful pairs,
       built in the blocks that hold them;
    5. on the driver, the keep rule over the verified edges (``graph.keep_in_order``): rows in
       keep order, each removed only for a verified partner already kept; the connected
       components name the clusters. Memory O(candidate pairs + rows in them)."""
    plan = ctx.planner()
    n, parts = rows.num_rows, plan.partitions
    bands, band_rows = c.banding()
    a, b = lsh.permutations(c.num_perm, c.seed)
    fn = partial(_minhash_block, c.normalizer(), c.ngram, c.unit, a, b, bands, band_rows, parts, field, c.keep == "longest",
                 c.batch_size)
    mapped = plan.map(rows, text_columns(field, rows.column_names), fn, outputs=1 + parts,
                      description=f"{label}: signatures ({n:,} rows)")
    total, ref_parts = n, []
    for table, sig, valid, _ in refs:
        ref_parts.append(band_records(sig, valid, total, bands, band_rows, parts))
        total += len(table)
    starts = np.array([s for s, _ in plan.spans(rows)] + [n], dtype=np.int64)
    found = plan.submit(partial(_pair_keys, total, parts), [tuple(m[1 + p] for m in mapped) + tuple(r[p] for r in ref_parts)
                                                           for p in range(parts)], parts, description=f"{label}: candidate pairs")
    keys = plan.submit(partial(_unique_keys, starts, parts, total), [tuple(f[q] for f in found) for q in range(parts)],
                       1 + parts, description=f"{label}: unique candidate pairs")
    del found
    count = sum(plan.fetch([k[0] for k in keys]))
    if not refs and plan.driver_pairs is not None and count > plan.driver_pairs:
        ctx.reporter.log(f"{label}: {count:,} candidate pairs, more than the driver's {plan.driver_pairs:,}: "
                         "verified and clustered by the plan's tasks")
        return minhash_cluster.cluster(plan, rows, field, c, [m[0] for m in mapped],
                                       [tuple(k[1 + r] for k in keys) for r in range(parts)], starts, label)
    fetched = plan.fetch([h for k in keys for h in k[1:]])
    pairs = lsh.pairs_of(lsh.sorted_unique(np.concatenate([np.zeros(0, np.int64), *fetched])), total)
    del keys, fetched
    pairs = pairs[pairs[:, 0] < n]  # pairs are sorted (i < j): this drops pairs of two reference rows
    nodes = lsh.sorted_unique(pairs.ravel())  # every row in a candidate pair, ascending: the graph's nodes
    ours = int(np.searchsorted(nodes, n))
    by_block = _by_block(nodes[:ours], starts)
    taken = plan.call(_take_rows, [(mapped[i][0], local) for i, local in by_block.items()],
                      f"{label}: signatures of {ours:,} candidate rows")
    del mapped
    sig = np.vstack([np.zeros((0, c.num_perm), np.uint32), *(t[0] for t in taken), *_ref_rows(refs, nodes[ours:], n)])
    sizes = np.concatenate([np.zeros(0, np.int64), *(t[1] for t in taken)]) if c.keep == "longest" else None
    del taken  # its signatures are in sig now
    release_memory()
    cpairs = np.searchsorted(nodes, pairs)
    del pairs

    def sets_of(compact: np.ndarray) -> list[np.ndarray]:
        """Shingle sets of the nodes ``compact`` (ascending), built where their texts are."""
        want = nodes[compact]
        mine = want[want < n]
        args = {i: (local,) for i, local in _by_block(mine, starts).items()}
        shingled = partial(_shingle_block, c.normalizer(), c.ngram, c.unit)
        built = plan.fetch([m[0] for m in plan.map(rows, text_columns(field), partial(shingled, field, c.batch_size),
                                                    args=args, description=f"verify ({len(want):,} rows)")])
        start = n
        for table, _, _, ref_field in refs:  # the reference rows' sets, here (their tables are in memory)
            theirs = want[(want >= start) & (want < start + len(table))] - start
            if len(theirs):
                built.append(shingled(ref_field, c.batch_size, table, start, theirs)[0])
            start += len(table)
        return [s for values, bounds in built for s in minhash_cluster.unpack_sets(values, bounds)]

    verified = verified_pairs(cpairs, sig, c, sets_of)
    release_memory()  # the shingle sets are gone
    labels = lsh.components(len(nodes), verified)
    priority = np.zeros(len(nodes))  # keep=first: rows in their order
    if c.keep == "longest":
        priority[:ours] = -sizes.astype(np.float64)
    elif c.keep == "score":
        if c.score_column not in rows.column_names:
            raise StageError(f"{label}: keep=score, but there is no column '{c.score_column}'")
        scores = rows.column(c.score_column).to_numpy(zero_copy_only=False).astype(np.float64)
        priority[:ours] = -np.nan_to_num(scores[nodes[:ours]], nan=-np.inf)
    order = np.lexsort((np.arange(len(nodes)), priority, nodes < n))  # reference rows first: always kept
    partner = graph.keep_in_order(order, verified)[:ours]
    _, at = np.unique(labels[order], return_index=True)  # each cluster's first row in keep order: its name
    best = np.empty(len(at), dtype=np.int64)
    best[labels[order][at]] = order[at]
    first = best[labels[:ours]]
    gone = partner >= 0
    kept_of = np.arange(n, dtype=np.int64)
    kept_of[nodes[:ours][gone]] = nodes[partner[gone]]
    cluster_of = np.arange(n, dtype=np.int64)
    cluster_of[nodes[:ours]] = nodes[first]
    jac = np.ones(n, dtype=np.float32)  # a kept row's estimate with itself
    jac[nodes[:ours][gone]] = lsh.estimated_jaccard(sig, np.stack([np.flatnonzero(gone), partner[gone]], axis=1))
    return kept_of, jac, cluster_of


def band_records(sig: np.ndarray, valid: np.ndarray, offset: int, bands: int, band_rows: int, parts: int) -> tuple:
    """The band hashes of rows ``offset ..`` with a signature, split by hash into ``parts``:
    for each partition, for each band, (hashes, rows), rows ascending."""
    idx = np.flatnonzero(valid)
    bh = lsh.band_hashes(sig[idx], bands, band_rows)
    rows = (idx + offset).astype(np.int64)
    which = [(bh[:, k] % np.uint64(parts)).astype(np.int64) for k in range(bands)]
    return tuple([(bh[w == p, k], rows[w == p]) for k, w in enumerate(which)] for p in range(parts))


def _minhash_block(normalize, ngram, unit, a, b, bands, band_rows, parts, field, lengths, batch_size, table,
                   offset) -> tuple:
    """One block: ((signatures, valid, text lengths or None), band records of each partition).
    Signatures are computed ``batch_size`` texts at a time (their work arrays are shingles x
    num_perm: a 10,000-row block at once would take GBs)."""
    batch = texts(table, field)
    done = [_signature_batch(normalize, ngram, unit, a, b, batch[s : s + batch_size]) for s in range(0, len(batch), batch_size)]
    sig = np.vstack([np.zeros((0, len(a)), np.uint32), *(d[0] for d in done)])
    valid = np.concatenate([np.zeros(0, bool), *(d[1] for d in done)])
    size = np.array([len(t) for t in batch], dtype=np.int64) if lengths else None
    return ((sig, valid, size), *band_records(sig, valid, offset, bands, band_rows, parts))


def _pair_keys(total: int, parts: int, *records: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, ...]:
    """One partition's candidate pair keys: band by band, the rows sharing a hash (each
    block's records of the band, in block order: rows stay ascending); split by key mod
    ``parts`` (a pair found in two bands is in two partitions' keys)."""
    out = [np.zeros(0, np.int64)]
    for k in range(len(records[0]) if records else 0):
        keys = np.concatenate([r[k][0] for r in records])
        rows = np.concatenate([r[k][1] for r in records])
        out.append(lsh.pair_keys(keys, rows, total))
    keys = lsh.sorted_unique(np.concatenate(out))
    return tuple(keys[keys % parts == q] for q in range(parts))


def _unique_keys(starts: np.ndarray, parts: int, total: int, *pieces: np.ndarray) -> tuple:
    """(how many, the pair keys split by the partition of their first row): the distinct keys
    of one key partition (no other partition holds them)."""
    keys = lsh.sorted_unique(np.concatenate([np.zeros(0, np.int64), *pieces]))
    return (len(keys), *minhash_cluster.route_keys(starts, parts, total, keys))


def _by_block(idx: np.ndarray, starts: np.ndarray) -> dict[int, np.ndarray]:
    """Ascending row indices grouped by the block that holds them, as indices within it."""
    block = np.searchsorted(starts, idx, side="right") - 1
    cuts = np.flatnonzero(np.diff(block)) + 1
    return {int(g[0]): i - starts[g[0]] for g, i in zip(np.split(block, cuts), np.split(idx, cuts)) if len(i)}


def _take_rows(info: tuple, local: np.ndarray) -> tuple:
    sig, _, size = info
    return sig[local], (size[local] if size is not None else None)


def _ref_rows(refs, idx: np.ndarray, n: int) -> list[np.ndarray]:
    """Signatures of the reference rows ``idx`` (global indices, ascending, all >= n)."""
    out, start = [], n
    for table, sig, _, _ in refs:
        out.append(sig[idx[(idx >= start) & (idx < start + len(table))] - start])
        start += len(table)
    return out


def _shingle_block(normalize, ngram, unit, field, batch_size, table, offset, local) -> tuple:
    """The shingle sets of rows ``local`` of a block, ``batch_size`` texts at a time, packed
    (``minhash_cluster.pack_sets``: cheap to send)."""
    chosen = texts(table.take(pa.array(local)), field)
    sets = [x for s in range(0, len(chosen), batch_size)
            for x in lsh.shingle_sets([normalize(t) for t in chosen[s : s + batch_size]], ngram, unit)]
    return (minhash_cluster.pack_sets(sets),)


def fill_signatures(batches, n: int, c: MinhashDedupConfig, ctx: StageContext, label: str):
    """(signatures, has-shingles) of ``n`` texts arriving in ``batches`` of ``c.batch_size``,
    computed in the workers and written into one preallocated array."""
    a, b = lsh.permutations(c.num_perm, c.seed)
    sig = np.empty((n, c.num_perm), dtype=np.uint32)
    valid = np.empty(n, dtype=bool)
    fn = partial(_signature_batch, c.normalizer(), c.ngram, c.unit, a, b)
    start = 0
    for batch_sig, batch_valid in ctx.imap(fn, batches, -(-n // c.batch_size), f"{label} ({n:,} rows)"):
        sig[start : start + len(batch_sig)] = batch_sig
        valid[start : start + len(batch_sig)] = batch_valid
        start += len(batch_sig)
    if start != n:
        raise StageError(f"{label}: {start:,} texts arrived for {n:,} rows")
    return sig, valid


def dedup_parquet(path: str, column: str, c: MinhashDedupConfig, ctx: StageContext | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``minhash_dedup`` over a Parquet file without loading it (``near_duplicates`` over
    the file read as a one-shard version, block by block): memory is the signatures and
    band records plus a few blocks. Returns (kept_of, jaccard, cluster_of): for each row, the
    index of the kept row it is removed for (itself if kept), the estimated Jaccard with it,
    and the index of its cluster's best row."""
    import pyarrow.parquet as pq

    if c.against:
        raise StageError("dedup_parquet does not take 'against'; use the stage")
    file = Path(path)
    n = pq.ParquetFile(file).metadata.num_rows
    rows = Version(file.parent, {"fingerprint": file.name, "shards": [file.name], "counts": {"kept": n},
                                 "columns": {column: "string"}})
    return near_duplicates(rows, column, c, ctx or StageContext(), label=f"minhash {path}")


def _signature_batch(normalize, ngram, unit, a, b, batch: list[str]) -> tuple[np.ndarray, np.ndarray]:
    hashes, offsets = lsh.shingle_hashes([normalize(t) for t in batch], ngram, unit)
    return lsh.signatures(hashes, offsets, a, b), np.diff(offsets) > 0


def verified_pairs(pairs: np.ndarray, sig: np.ndarray, c: MinhashDedupConfig, sets_of) -> np.ndarray:
    """The candidate pairs that pass ``c.verify`` at ``c.threshold``. For ``exact``:

    1. pairs whose signature estimate lies more than 5 sigma below the threshold are dropped
       unchecked, and pairs more than 5 sigma above it are accepted unchecked (either way
       the estimate is wrong with probability < 1e-6; sigma = sqrt(t(1-t)/num_perm));
    2. every other pair is checked by the true Jaccard of its shingle sets, built once by
       ``sets_of(rows)`` (ascending row indices -> their sets, in order) for the rows of
       those pairs. Every pair is checked, also one whose rows other pairs already connect:
       the keep rule (``graph.keep_in_order``) needs each row's own verified partners."""
    if c.verify == "none" or len(pairs) == 0:
        return pairs
    est = lsh.estimated_jaccard(sig, pairs)
    if c.verify == "signature":
        return pairs[est >= c.threshold]
    sure, unsure = lsh.sure_and_doubtful(est, c.threshold, c.num_perm)
    doubtful = pairs[unsure]
    rows = lsh.sorted_unique(doubtful.ravel())
    sets = dict(zip(rows.tolist(), sets_of(rows))) if len(rows) else {}
    return np.concatenate([pairs[sure], doubtful[lsh.exact_jaccard(sets, doubtful) >= c.threshold]])
