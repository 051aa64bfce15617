"""Exact deduplication by a hash of normalised text.

Normalisation (each step switchable) makes texts that differ only in case, Unicode
form or spacing count as the same: NFKC, lower-case, runs of whitespace collapsed to
one space, ends stripped. The first row with a given hash is kept; every later one
is rejected with ``duplicate_of`` = the id of the kept row, so the choice can be
audited and undone. Near-duplicates are the job of ``minhash_dedup``.
"""

from __future__ import annotations

import unicodedata

from functools import partial

import numpy as np
import pyarrow as pa
import xxhash

from ..records import default_text_field, text_columns, texts
from ..stage import Decision, Rows, Stage, StageConfig, StageContext, values_at

class ExactDedupConfig(StageConfig):
    renamed = {"normalize_unicode": "'unicode_nfkc'"}  # one name with minhash_dedup's option

    field: str | None = None
    """Text to hash: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    lowercase: bool = True
    """Compare case-insensitively."""
    unicode_nfkc: bool = True
    """Apply Unicode NFKC normalisation before hashing (full-width letters, ligatures...)."""
    collapse_whitespace: bool = True
    """Treat any run of whitespace as one space and ignore leading/trailing whitespace."""


class ExactDedup(Stage):
    name = "exact_dedup"
    version = "1"
    Config = ExactDedupConfig
    config: ExactDedupConfig

    def normalize(self, text: str) -> str:
        return normalize(self.config, text)

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """A hash-partitioned groupby (``StageContext.plan``: here, or Ray tasks): each block
        hashes its rows' normalised field and sends each (hash, row) to the partition of its
        hash; each partition keeps the first row of every hash; the driver gets the
        duplicates and the ids of the rows they duplicate -- memory O(duplicates), the texts
        never leave their blocks."""
        field = self.config.field or default_text_field(rows)
        plan = ctx.planner()
        n, parts = rows.num_rows, plan.partitions
        mapped = plan.map(rows, text_columns(field, rows.column_names), partial(_hash_block, self.config, field, parts), outputs=parts,
                          description=f"exact_dedup: hashing ({n:,} rows)")
        found = plan.call(_first_of_each_hash, [tuple(m[p] for m in mapped) for p in range(parts)],
                          "exact_dedup: grouping")
        dups = np.concatenate([d for d, _ in found] + [np.zeros(0, np.int64)])
        firsts = np.concatenate([f for _, f in found] + [np.zeros(0, np.int64)])
        order = np.argsort(dups, kind="stable")
        dups, firsts = dups[order], firsts[order]
        keep = np.ones(n, dtype=bool)
        keep[dups] = False
        duplicate_of = np.full(n, None, dtype=object)
        duplicate_of[dups] = values_at(rows, "id", firsts)
        detail = np.full(n, None, dtype=object)
        detail[dups] = [f"same normalised {field} as {i}" for i in duplicate_of[dups]]
        return Decision(keep, "exact_duplicate", pa.array(detail, pa.string()),
                        extra={"duplicate_of": pa.array(duplicate_of, pa.string())})


def normalize(c: ExactDedupConfig, text: str) -> str:
    if c.unicode_nfkc:
        text = unicodedata.normalize("NFKC", text)
    if c.lowercase:
        text = text.lower()
    if c.collapse_whitespace:
        text = " ".join(text.split())  # str.split() knows every Unicode space; 20x faster than re
    return text


def _hash_block(c: ExactDedupConfig, field: str, parts: int, table: pa.Table, offset: int) -> tuple:
    """One block's (hash, row) pairs, split by partition (hash mod ``parts``): for each
    partition, (the 128-bit hashes as (k, 2) uint64, the rows' indices)."""
    digests = b"".join(xxhash.xxh3_128_digest(normalize(c, t).encode()) for t in texts(table, field))
    h = np.frombuffer(digests, dtype=np.uint64).reshape(-1, 2)
    rows = np.arange(offset, offset + len(h), dtype=np.int64)
    which = h[:, 0] % np.uint64(parts)
    return tuple((h[which == p], rows[which == p]) for p in range(parts))


def _first_of_each_hash(*parts: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(duplicate rows, the first row with the same hash for each) of one partition."""
    h = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, 2), np.uint64)
    rows = np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, np.int64)
    order = np.lexsort((rows, h[:, 1], h[:, 0]))
    h, rows = h[order], rows[order]
    new = np.ones(len(rows), dtype=bool)
    new[1:] = (h[1:] != h[:-1]).any(axis=1)
    first = rows[new][np.cumsum(new) - 1]
    return rows[~new], first[~new]
