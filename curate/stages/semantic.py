"""Semantic deduplication on sentence embeddings (SemDeDup).

Abbas, Tirumala, Simig, Ganguli, Morcos, "SemDeDup: Data-efficient learning at web-scale
through semantic deduplication" (2023). Exact and MinHash dedup only see shared characters;
SemDeDup also removes rows that *say the same thing in other words*:

1. embed every row with a pre-trained encoder, L2-normalised (the paper: CLIP for LAION, a
   small OPT language model for C4; here the run's ``embedder``, by default the built-in
   ``minilm``: all-MiniLM-L6-v2, packaged, on CPU);
2. spherical k-means on the embeddings (the paper: 50,000 clusters for LAION-440M, about
   9,000 rows per cluster), so that only rows in the same cluster are compared;
3. within each cluster, pairs with cosine similarity > 1 - epsilon are duplicates, and one row
   of each duplicate group is kept.

The paper picks epsilon per dataset by the fraction of data it removes (on LAION it removes
about half with little loss of accuracy) and keeps in each group the row farthest from its
cluster centroid. Our defaults:

| knob | default | why |
|---|---|---|
| epsilon | 0.05 (cosine > 0.95) | see below |
| n_clusters | rows / 10,000 rounded, at least 1 | see below |
| keep | first | the earliest row, as in exact and MinHash dedup; or the longest, or the highest score |

**epsilon = 0.05.** With all-MiniLM-L6-v2, close rewordings of one sentence ("The cat sat on
the mat." / "A cat sat on the mat.") score 0.95-0.99, looser paraphrases (another tense, another
word order, one added word) 0.80-0.95, unrelated sentences under 0.45. On the 13,000 CHAMP
math responses, 0.95 removes 13%: almost all one model's solution of one problem, reworded
under another prompt setting; 0.90 would remove 41%, reaching solutions that share a problem
and an opening but not their steps. A dedup stage should err towards keeping (a kept duplicate
costs little; a dropped row is lost diversity), so 0.05; raise it to prune harder.

**n_clusters ≈ rows / 10,000.** Clusters only make the comparison cheaper; a duplicate pair
that k-means splits apart is missed. Embedding dominates the cost (~10 GFLOP a text for
MiniLM at 256 word pieces), while comparing a row with a cluster of m rows costs ~768 m FLOP,
under 0.1% of that at m = 10,000. So clusters are big (the paper's size), and under 15,000 rows
everything is compared with everything, exactly. On CHAMP, 13 clusters find 1.7% fewer
duplicates than all-pairs, 130 clusters 0.4% fewer (the greedy order shifts too). Similarities
are computed in blocks of ~16M entries (64 MB), so memory stays bounded however large a
cluster grows.

**Which row of a group is dropped.** Within a cluster the rows are ranked by the keep policy
(earliest row / longest text / highest score; ties to the earliest row) and visited in that
order: a row is dropped if its cosine similarity to a row *kept* before it exceeds 1 - epsilon,
and its ``duplicate_of`` is the most similar such row. This is the paper's per-cluster rule
(drop a row that has a near neighbour ranked before it) with one change: the paper also drops
a row whose only near neighbours were themselves dropped, so a chain a~b~c loses c even when
c is far from the kept a. Comparing with kept rows only means every dropped row has a kept
row within 1 - epsilon (its ``similarity`` column says how close), and no two kept rows of a
cluster are duplicates. Connected components (union-find) would chain further: in a dense
region of embedding space a component can grow to hold rows that share nothing.

**The encoder** is one of the run's models, named like any other:

    models:
      bge:                            # optional: the built-in minilm needs no entry
        backend: sentence_transformers
        model: BAAI/bge-small-en-v1.5 # a local folder or a cached hub id
        batch_size: 128
    stages:
      - semantic_dedup: {embedder: bge, epsilon: 0.05}

Its identity (a content hash of the model folder) is part of the step's fingerprint, so
another encoder, or changed weights, recomputes the step. The thresholds above were measured
with MiniLM; another encoder's similarities have another scale.

**Known limitations.** Duplicates that k-means puts in different clusters are never compared
(a pair at cosine > 0.95 almost always shares its nearest centroid; set ``n_clusters: 1`` for
an exact all-pairs pass). The encoder reads only the first
256 word pieces of a text, so long texts that open the same way look alike. Empty or
whitespace-only texts are not embedded (every one would embed to the same vector and be
"duplicates" of each other); they are kept with ``semantic_cluster`` = -1 and left to
``heuristic_filter`` and ``exact_dedup``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..errors import StageError
from ..models.config import DEFAULT_EMBEDDER
from ..models.embeddings import require
from ..models.pool import models_for
from ..records import default_text_field, text_columns, texts
from ..stage import Decision, Rows, Stage, StageConfig, StageContext, check_keep_policy, values_at

ROWS_PER_CLUSTER = 10_000  # default cluster size; see the module docstring
BLOCK_ENTRIES = 1 << 24  # similarity entries computed at once (64 MB of float32)
EMBED_ROWS = 20_000  # texts read and embedded at a time (fixed, so no result depends on how a run cuts blocks)


class SemanticDedupConfig(StageConfig):
    renamed = {
        "model": f"'embedder': the name of a models: entry with backend: sentence_transformers (a folder or hub id "
                 f"goes in that entry's model:); the packaged all-MiniLM-L6-v2 is the built-in '{DEFAULT_EMBEDDER}'",
        "batch_size": f"the embedder's own batch_size (models: {{{DEFAULT_EMBEDDER}: {{backend: sentence_transformers, "
                      f"batch_size: 64}}}})",
    }

    field: str | None = None
    """Text to embed: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    embedder: str = DEFAULT_EMBEDDER
    """The sentence encoder: a models: entry with backend sentence_transformers; the built-in minilm is the packaged all-MiniLM-L6-v2."""
    n_clusters: int | None = Field(None, ge=1)
    """k-means clusters; only rows in one cluster are compared. None = rows / 10,000, at least 1."""
    kmeans_iterations: int = Field(20, ge=1)
    """k-means iterations."""
    epsilon: float = Field(0.05, gt=0, lt=1)
    """Rows whose cosine similarity exceeds 1 - epsilon are duplicates (0.05: > 0.95)."""
    keep: Literal["first", "longest", "score"] = "first"
    """Which row of a duplicate group to keep: the earliest, the longest text, or the highest score_column."""
    score_column: str | None = None
    """Numeric column whose highest value is kept when keep is 'score' (missing values rank last)."""
    seed: int = 0
    """Seed of k-means (initial centroids and sampling)."""

    @model_validator(mode="after")
    def _score_column_goes_with_keep_score(self) -> SemanticDedupConfig:
        check_keep_policy(self.keep, self.score_column)
        return self


class SemanticDedup(Stage):
    name = "semantic_dedup"
    version = "3"  # 2: the encoder is a models: entry (`embedder`); 3: embedded 20,000 rows at a time (decide)
    Config = SemanticDedupConfig
    config: SemanticDedupConfig
    model_refs = ("embedder",)

    def __init__(self, config: StageConfig | dict | None = None, /, **overrides):
        super().__init__(config, **overrides)
        require(self.name)

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """Reads the ids and the embedded field only, ``EMBED_ROWS`` texts at a time, and keeps
        their embeddings (4 x dim bytes a row), not the texts; the rows are then streamed past
        the decision."""
        c = self.config
        field = c.field or default_text_field(rows)
        n = rows.num_rows
        score = self.scores_for_keep(rows)  # checked before the (slow) embedding
        lengths, embedded, parts = np.zeros(n, dtype=np.int64), [], []
        with models_for(ctx.models) as models:
            offset = 0
            for batch in rows.scan(text_columns(field, rows.column_names), EMBED_ROWS):
                text = texts(batch, field)
                lengths[offset : offset + len(text)] = [len(t) for t in text]
                mine = [i for i, t in enumerate(text) if t.strip()]
                if mine:
                    parts.append(models.embedder(c.embedder).embed([text[i] for i in mine], normalize=True,
                                                                   track=ctx.reporter.track))
                    embedded.append(np.array(mine, dtype=np.int64) + offset)
                offset += len(text)
        rows_in = np.concatenate([np.zeros(0, np.int64), *embedded])
        if len(rows_in) < n:
            ctx.reporter.log(f"semantic_dedup: {n - len(rows_in)} empty {field} texts kept without comparing")
        order = self.keep_order(lengths, score)

        cluster = np.full(n, -1, dtype=np.int64)
        parent = np.full(n, -1, dtype=np.int64)  # row of the kept duplicate; -1 = kept
        similarity = np.zeros(n, dtype=np.float32)
        if len(rows_in):
            emb = np.vstack(parts)
            del parts
            k = c.n_clusters or max(1, round(len(rows_in) / ROWS_PER_CLUSTER))
            cluster[rows_in] = kmeans(emb, k, c.kmeans_iterations, c.seed)
            # Each cluster's rows in keep order; emb_of maps a row to its embedding.
            ranked = order[np.isin(order, rows_in)]
            ranked = ranked[np.argsort(cluster[ranked], kind="stable")]
            groups = np.split(ranked, np.flatnonzero(np.diff(cluster[ranked])) + 1)
            emb_of = np.empty(n, dtype=np.int64)
            emb_of[rows_in] = np.arange(len(rows_in))
            threshold = np.float32(1 - c.epsilon)
            for members in ctx.reporter.track(groups, total=len(groups), description="comparing within clusters"):
                local_parent, sims = greedy_duplicates(emb[emb_of[members]], threshold)
                dup = local_parent >= 0
                parent[members[dup]] = members[local_parent[dup]]
                similarity[members[dup]] = sims[dup]

        dups = np.flatnonzero(parent >= 0)
        duplicate_of = np.full(n, None, dtype=object)
        duplicate_of[dups] = values_at(rows, "id", parent[dups])
        sim = np.full(n, None, dtype=object)
        sim[dups] = [round(float(s), 6) for s in similarity[dups]]
        detail = np.full(n, None, dtype=object)
        detail[dups] = [f"{field} is a semantic duplicate of {i} (cosine {s:.4f} > {1 - c.epsilon:g})"
                        for i, s in zip(duplicate_of[dups], similarity[dups])]
        return Decision(parent < 0, "semantic_duplicate", pa.array(detail, pa.string()),
                        columns={"semantic_cluster": pa.array(cluster, type=pa.int64())},
                        extra={"duplicate_of": pa.array(duplicate_of, type=pa.string()),
                               "similarity": pa.array(sim, type=pa.float64())})

    def scores_for_keep(self, rows: Rows) -> np.ndarray | None:
        """``keep: score``'s column as floats (NaN where missing), checked; else None."""
        if self.config.keep != "score":
            return None
        col = self.config.score_column
        if col not in rows.column_names:
            raise StageError(f"semantic_dedup: score_column '{col}' is not a column; columns are {rows.column_names}")
        values = rows.column(col)
        if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type) or pa.types.is_boolean(values.type)):
            raise StageError(f"semantic_dedup: score_column '{col}' holds {values.type}, not numbers")
        return np.array([np.nan if v is None else float(v) for v in values.to_pylist()], dtype=np.float64)

    def keep_order(self, lengths: np.ndarray, score: np.ndarray | None) -> np.ndarray:
        """Row indices, the row to keep first: by keep policy, ties to the earliest row."""
        index = np.arange(len(lengths))
        if self.config.keep == "longest":
            return np.lexsort((index, -lengths))
        if self.config.keep == "score":
            missing = np.isnan(score)  # missing or NaN scores rank last
            return np.lexsort((index, -np.where(missing, 0.0, score), missing))
        return index


def kmeans(emb: np.ndarray, k: int, iterations: int, seed: int) -> np.ndarray:
    """Spherical k-means cluster of each row (faiss, seeded: the same input gives the same clusters)."""
    k = min(k, len(emb))
    if k == 1:
        return np.zeros(len(emb), dtype=np.int64)
    import faiss

    # min_points_per_centroid=1: a small table with many clusters is the user's choice, not a warning.
    km = faiss.Kmeans(emb.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False, min_points_per_centroid=1)
    km.train(emb)
    _, labels = km.index.search(emb, 1)
    return labels[:, 0].astype(np.int64)


def greedy_duplicates(emb: np.ndarray, threshold: np.float32) -> tuple[np.ndarray, np.ndarray]:
    """Visit the rows of ``emb`` (unit vectors, in keep-policy order); a row whose cosine
    similarity to an earlier *kept* row exceeds ``threshold`` is a duplicate of the most similar
    one (ties: the earliest). Returns (index of that kept row or -1, its similarity).

    The similarities are computed block by block against the rows kept so far, so memory stays
    near ``BLOCK_ENTRIES`` floats however big the cluster."""
    m, d = emb.shape
    parent = np.full(m, -1, dtype=np.int64)
    best = np.zeros(m, dtype=np.float32)
    kept_rows = np.empty(m, dtype=np.int64)
    kept_emb = np.empty((m, d), dtype=np.float32)
    nk = 0
    step = max(1, min(m, BLOCK_ENTRIES // max(m, 1)))
    for start in range(0, m, step):
        block = emb[start : start + step]
        to_kept = block @ kept_emb[:nk].T  # (b, nk): against rows kept in earlier blocks
        within = block @ block.T  # (b, b): against earlier rows of this block (strictly lower part)
        near_kept = to_kept > threshold
        near_within = np.tril(within > threshold, k=-1)
        kept = ~(near_kept.any(axis=1) | near_within.any(axis=1))  # rows with no near row are kept
        for r in np.flatnonzero(~kept):  # in order, so earlier rows of the block are decided
            sim, j = -np.inf, -1
            if near_kept[r].any():
                cand = np.where(near_kept[r], to_kept[r], -np.inf)
                j = int(kept_rows[int(np.argmax(cand))])
                sim = cand.max()
            earlier = np.flatnonzero(near_within[r, :r] & kept[:r])
            if len(earlier):
                i = int(np.argmax(within[r, earlier]))
                if within[r, earlier[i]] > sim:  # strictly: ties go to the earlier-ranked kept row
                    sim, j = within[r, earlier[i]], start + int(earlier[i])
            if j < 0:
                kept[r] = True
            else:
                parent[start + r], best[start + r] = j, sim
        new = np.flatnonzero(kept)
        kept_rows[nk : nk + len(new)] = start + new
        kept_emb[nk : nk + len(new)] = block[new]
        nk += len(new)
    return parent, best
