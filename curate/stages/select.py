"""select_target: choose the budget of candidates that best serves a target distribution, given
a small set of examples of what the model should be good at.

Methods (the algorithms are in their own modules, with their papers and defaults):

* ``got_d`` (default; ``curate.algorithms.ot``): GOT-D (Kang et al., ICLR 2024). Entropic OT
  between the embedded pool and the embedded target; a candidate's score is minus the
  calibrated gradient of the OT distance with respect to its mass, and the highest k are
  kept. It picks what moves the pool's distribution toward the target, not merely the
  nearest neighbours of the target.
* ``dsir`` (``curate.algorithms.dsir``): DSIR (Xie et al., NeurIPS 2023). Importance weights of a
  hashed unigram + bigram model of the target over one of the pool, Gumbel top-k resampling
  (seeded). No embeddings: the cheapest method, and the one for pretraining-scale pools.
* ``similarity`` (``curate.algorithms.rds``): RDS+ (Ivison et al., 2025). Cosine similarity of
  embeddings, round-robin over the target examples (over tasks when ``task_column`` labels
  the target rows), faiss for the search.

Embeddings come from the run's ``embedder`` (a ``models:`` entry with ``backend:
sentence_transformers``; by default the built-in ``minilm``, the packaged all-MiniLM-L6-v2),
L2-normalised, so the squared-Euclidean OT cost is 2 - 2 cos, of each row's ``field`` text cut
to ``max_chars`` characters (GOT-D cuts or joins texts to about 1,000 characters so that
padding patterns do not dominate). Identical texts are embedded once.

    select_target:
      target: {type: champ, include_model_solutions: false, include_reference: true, categories: [Number-Theory]}
      method: got_d
      fraction: 0.25
      embedder: minilm               # the default; or the name of your own sentence_transformers entry

The target is a data reference (``curate.sources.refs``): a dataset name in the store, a
local file, or a source mapping such as ``{type: champ, include_model_solutions: false,
include_reference: true, categories: [Number-Theory]}``. Its content fingerprint, and the
embedder's identity, are part of the step's fingerprint.

Every row gets ``selection_score`` (higher = chosen first: -g_hat for got_d, the log
importance weight for dsir, the best cosine similarity to a target example for similarity).
Rows not chosen are rejects with reason ``not_selected``, their score and rank, so the choice
can be audited. The budget is a row count (``budget``) or a share of the input (``fraction``).
"""

from __future__ import annotations

import importlib.util
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..algorithms import dsir, ot, rds
from ..errors import StageError, warn
from ..models import embeddings
from ..models.config import DEFAULT_EMBEDDER
from ..models.pool import models_for
from ..records import text_columns, texts
from ..sources.refs import DataRef, DataSpec, resolve_data
from ..stage import RECIPE_DATA, Decision, Rows, Stage, StageConfig, StageContext
from ..store import Store

READ_ROWS = 20_000  # pool rows read (and embedded) at a time: fixed, so no result depends on a run's blocks


class SelectTargetConfig(StageConfig):
    renamed = {
        "embed_batch_size": f"the embedder's own batch_size (models: {{{DEFAULT_EMBEDDER}: {{backend: "
                            f"sentence_transformers, batch_size: 64}}}})",
    }

    target: Annotated[DataSpec, RECIPE_DATA]
    """Examples of what the model should be good at: a dataset name, a local file, or a source mapping {type: ...}."""
    method: Literal["got_d", "dsir", "similarity"] = "got_d"
    """got_d (optimal-transport gradient), dsir (hashed n-gram importance resampling) or similarity (RDS+ round-robin)."""
    budget: int | None = Field(None, ge=1)
    """How many rows to keep (give this or fraction)."""
    fraction: float | None = Field(None, gt=0, le=1)
    """Share of the input rows to keep (give this or budget)."""
    field: str | None = None
    """The text of a pool row compared with the target: conversation, prompt, response, text or a string column;
    None = the whole conversation of an SFT row, ``text`` of a text row."""
    target_field: str | None = None
    """The text of a target row; None = field for SFT targets, text for text targets."""
    max_chars: int = Field(1000, ge=1)
    """Texts are cut to this many characters before embedding or hashing (GOT-D: about 1,000)."""
    embedder: str = DEFAULT_EMBEDDER
    """got_d and similarity: the sentence encoder, a models: entry with backend sentence_transformers (built-in: minilm)."""
    epsilon: float = Field(ot.DEFAULT_EPSILON, gt=0)
    """got_d: entropic regularisation of the OT problem (paper: 0.1)."""
    ot_batch_size: int = Field(ot.DEFAULT_BATCH, ge=1)
    """got_d: candidates per block of the online cost matrix (paper: 2,000); memory, never results."""
    ot_threshold: float = Field(ot.DEFAULT_THRESHOLD, gt=0)
    """got_d: Sinkhorn stops when the L1 error of the candidate marginal is below this (paper: 0.1)."""
    ot_max_iterations: int = Field(ot.DEFAULT_MAX_ITERATIONS, ge=1)
    """got_d: Sinkhorn iteration cap (paper: 2,000)."""
    ngrams: int = Field(2, ge=1)
    """dsir: hash unigrams up to n-grams (paper: 2)."""
    buckets: int = Field(10_000, ge=16)
    """dsir: hash buckets (paper: 10,000)."""
    laplace: float = Field(0.0, ge=0)
    """dsir: pseudo-count added to every target bucket (paper: 0)."""
    min_words: int = Field(0, ge=0)
    """dsir: never choose rows shorter than this many words (DSIR's pretraining default is 100)."""
    top_k: bool = False
    """dsir: take the k highest weights without Gumbel noise (deterministic, less diverse)."""
    task_column: str | None = None
    """similarity: a target column labelling tasks; selection takes turns over tasks (RDS+ multi-task)."""
    seed: int = 0
    """dsir: seed of the Gumbel noise."""

    @model_validator(mode="after")
    def _one_budget(self) -> SelectTargetConfig:
        if (self.budget is None) == (self.fraction is None):
            raise ValueError("give exactly one of budget (rows to keep) or fraction (share of the input)")
        if self.task_column and self.method != "similarity":
            raise ValueError(f"task_column is used by method similarity only (method is {self.method})")
        return self


class SelectTarget(Stage):
    name = "select_target"
    version = "3"  # 2: the encoder is a models: entry (`embedder`); 3: embedded 20,000 rows at a time (decide)
    Config = SelectTargetConfig
    config: SelectTargetConfig
    model_refs = ("embedder",)

    def __init__(self, config: StageConfig | dict | None = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.method == "got_d" and importlib.util.find_spec("ot") is None:
            raise StageError(ot.POT_MISSING)
        if self.uses_embeddings:
            embeddings.require(self.name)

    @property
    def uses_embeddings(self) -> bool:
        return self.config.method in ("got_d", "similarity")

    def target_ref(self, store: Store | None) -> DataRef:
        return resolve_data(self.config.target, store, f"{self.name}.target")

    def dependencies(self, store: Store | None) -> list[str]:
        return [self.target_ref(store).fingerprint]

    def models_used(self) -> list[str]:
        return super().models_used() if self.uses_embeddings else []  # dsir embeds nothing

    def fingerprint_config(self) -> dict[str, Any]:
        cfg = super().fingerprint_config()
        cfg["target"] = "content fingerprint in dependencies"  # not the path: a moved checkout stays cached
        return cfg

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """Reads the selected field only, ``READ_ROWS`` rows at a time, and keeps what the
        method scores from (embeddings, or DSIR's per-row weights after a first pass that counts
        the pool's n-grams), never the texts; the rows are then streamed past the decision."""
        c = self.config
        n = rows.num_rows
        k = c.budget if c.budget is not None else round(c.fraction * n)
        k = min(k, n)
        ref = self.target_ref(ctx.store)
        target = ref.load()
        if target.num_rows == 0:
            raise StageError(f"{self.name}: the target {ref.label} holds no rows")
        field = c.field or ("conversation" if "messages" in rows.column_names else "text")
        target_field = c.target_field or (field if "messages" in target.column_names else "text")
        target_text = [t[: c.max_chars] for t in texts(target, target_field)]
        stats: dict[str, int | float] = {"candidates": n, "target_rows": target.num_rows}
        if n == 0:
            return Decision(np.zeros(0, dtype=bool), "not_selected", columns={"selection_score": pa.array([], pa.float64())},
                            stats=stats)

        def pool_text():
            for batch in rows.scan(text_columns(field, rows.column_names), READ_ROWS):
                yield [t[: c.max_chars] for t in texts(batch, field)]

        if c.method == "dsir":
            score, order = self.dsir(pool_text, target_text, k, ctx, stats)
        else:
            with models_for(ctx.models) as models:
                embedder = models.embedder(c.embedder)
                pool_emb = np.vstack([embedder.embed(batch, track=ctx.reporter.track) for batch in pool_text()])
                target_emb = embedder.embed(target_text, track=ctx.reporter.track)
            if c.method == "got_d":
                ctx.reporter.log(f"{self.name}: Sinkhorn between {n:,} candidates and {len(target_text):,} target examples")
                score, result = ot.got_d_scores(pool_emb, target_emb, epsilon=c.epsilon, batch_size=c.ot_batch_size,
                                                threshold=c.ot_threshold, max_iterations=c.ot_max_iterations)
                order = np.lexsort((np.arange(n), -score))[:k]  # ties: input order
                stats.update(sinkhorn_iterations=result.iterations, marginal_error=result.marginal_error)
                if not result.converged:
                    warn(f"{self.name}: Sinkhorn stopped at {c.ot_max_iterations} iterations with marginal "
                         f"error {result.marginal_error:.3g} > {c.ot_threshold}; raise ot_max_iterations or epsilon")
            else:
                score = rds.best_similarity(pool_emb, target_emb)
                if c.task_column:
                    if c.task_column not in target.column_names:
                        raise StageError(f"{self.name}: task_column '{c.task_column}' is not a column of the target "
                                         f"{ref.label} (columns: {', '.join(target.column_names)})")
                    tasks = [str(t) for t in target.column(c.task_column).to_pylist()]
                    order = rds.task_round_robin(pool_emb, target_emb, tasks, k)
                    stats["tasks"] = len(set(tasks))
                else:
                    order = rds.round_robin(pool_emb, target_emb, k)
        return self.finish(n, score, order, k, stats, ctx)

    def dsir(self, pool_text, target_text: list[str], k: int, ctx: StageContext,
             stats: dict[str, int | float]) -> tuple[np.ndarray, np.ndarray]:
        """DSIR over the pool's texts (``pool_text()``: its batches, read twice: the n-gram
        counts, then each row's weight and length), so memory is a number a row."""
        c = self.config
        pool_counts = np.zeros(c.buckets, dtype=np.float64)
        for batch in pool_text():
            pool_counts += dsir.counts(dsir.featurize(batch, c.ngrams, c.buckets, ctx, "pool"), c.buckets)
        target_f = dsir.featurize(target_text, c.ngrams, c.buckets, ctx, "target")
        log_diff = dsir.log_ratio(pool_counts, dsir.counts(target_f, c.buckets), c.laplace)
        log_w, lengths = [], []
        for batch in pool_text():
            features = dsir.featurize(batch, c.ngrams, c.buckets, ctx, "pool")
            log_w.append(dsir.log_weights(features, log_diff))
            lengths.append(np.fromiter((dsir.document_length(len(f), c.ngrams) for f in features), dtype=np.int64,
                                       count=len(features)))
        log_w, lengths = np.concatenate(log_w), np.concatenate(lengths)
        eligible = lengths >= c.min_words
        stats["too_short"] = int((~eligible).sum())
        return log_w, dsir.gumbel_top_k(log_w, k, c.seed, eligible, noise=not c.top_k)

    def finish(self, n: int, score: np.ndarray, order: np.ndarray, k: int, stats: dict[str, int | float],
               ctx: StageContext) -> Decision:
        c = self.config
        keep = np.zeros(n, dtype=bool)
        keep[order] = True
        rank = np.empty(n, dtype=np.int64)
        rank[np.lexsort((np.arange(n), -score))] = np.arange(1, n + 1)  # 1 = highest score
        cutoff = float(score[order].min()) if len(order) else float("nan")
        detail = [None if kept else f"{c.method} score {s:.6g} ranks {r:,} of {n:,}; budget {k:,} (lowest kept {cutoff:.6g})"
                  for kept, s, r in zip(keep.tolist(), score.tolist(), rank.tolist())]
        if c.method == "dsir" and not c.top_k:
            detail = [d and d + "; Gumbel resampling keeps some lower scores" for d in detail]
        stats["selected"] = int(keep.sum())
        ctx.reporter.log(f"{self.name} ({c.method}): kept {int(keep.sum()):,} of {n:,} rows for target {self.config.target!r}")
        return Decision(keep, "not_selected", pa.array(detail, pa.string()),
                        columns={"selection_score": pa.array(score, pa.float64())}, stats=stats)
