"""Perplexity filtering and Instruction-Following Difficulty under a reference LM.

Perplexity (CCNet, Wenzek et al. 2020; neural-LM version as in "A Pretrainer's Guide to
Training Data", Longpre et al. 2023): ``ppl = exp(-(1/T) * sum_t log p(x_t | x_<t))``,
pooled over the T scored tokens of a row (not a mean of per-window perplexities). What is
scored is configurable:

* ``response`` (SFT default): the response given the chat-templated prompt -- how
  plausible the answer is as an answer to that question;
* ``text`` (pretraining default): the text on its own;
* ``conversation``: every turn, rendered with the chat template.

Keeping is by absolute bounds (``min_ppl``/``max_ppl``) or by percentiles of the pool
(``min_percentile``/``max_percentile``), per group when ``group_by`` names a column
(CCNet computes its cut-offs per language; per-source percentiles avoid penalising a
source for its style). Every row also gets CCNet's bucket, ``ppl_bucket``: ``head`` below
the 30th percentile, ``middle`` below the 60th, else ``tail`` (``cc_net/mine.py``:
PerplexityBucket(30, 60)).

IFD (Cherry LLM, Li et al., NAACL 2024): ``IFD = s(A|Q) / s(A)``, the answer's mean
token loss given the instruction over its loss with no instruction (an empty user turn,
as Cherry's bare "### Response:"). The answer tokens are the same in both (the target
is tokenized on its own). IFD > 1 means the instruction does not help predict the
answer (Cherry discards those); high IFD below 1 marks instructions that are hard to
follow. Cherry keeps the top 5-10% by IFD after discarding IFD > 1.

Scoring is batched, length-sorted and cached by the models layer (``curate.models``); a
response scored here is not scored again by ``ifd_score`` (same request, same cache key).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..errors import StageError
from ..models.base import LM, Scores
from ..records import prompt_messages, response_of, shape_of
from ..stage import Decision, Rows, Stage, StageConfig, StageContext, StageOutput, split, with_columns

CCNET_BUCKETS = (30.0, 60.0)


class PerplexityConfig(StageConfig):
    model: str
    """The reference LM: the name of one of the run's models (a recipe's ``models:``)."""
    score: Literal["auto", "response", "text", "conversation"] = "auto"
    """What is scored: ``response`` (given the prompt; SFT), ``text`` (pretraining),
    ``conversation`` (all turns); ``auto`` picks response for SFT rows, text otherwise."""
    conditional: bool = True
    """With ``score: response``: condition on the prompt (off scores the response alone)."""
    min_ppl: float | None = Field(None, gt=0)
    """Reject rows with perplexity below this (degenerate, repetitive text scores very low)."""
    max_ppl: float | None = Field(None, gt=0)
    """Reject rows with perplexity above this."""
    min_percentile: float | None = Field(None, ge=0, le=100)
    """Reject rows below this percentile of the pool's perplexities (per ``group_by`` group)."""
    max_percentile: float | None = Field(None, ge=0, le=100)
    """Reject rows above this percentile of the pool's perplexities (per ``group_by`` group)."""
    group_by: str | None = None
    """A column whose groups get their own percentiles and buckets (source, language, model...)."""
    bucket_percentiles: tuple[float, float] = CCNET_BUCKETS
    """Percentiles separating the head / middle / tail buckets (CCNet: 30 and 60)."""

    @model_validator(mode="after")
    def _ranges(self) -> PerplexityConfig:
        if self.min_ppl is not None and self.max_ppl is not None and self.min_ppl >= self.max_ppl:
            raise ValueError(f"min_ppl ({self.min_ppl}) must be below max_ppl ({self.max_ppl})")
        if (self.min_percentile is not None and self.max_percentile is not None
                and self.min_percentile >= self.max_percentile):
            raise ValueError(f"min_percentile ({self.min_percentile}) must be below max_percentile ({self.max_percentile})")
        lo, hi = self.bucket_percentiles
        if not 0 < lo < hi < 100:
            raise ValueError(f"bucket_percentiles must be two increasing percentiles in (0, 100), got {self.bucket_percentiles}")
        return self


class PerplexityFilter(Stage):
    """Per-row perplexity under a reference LM (``ppl``, ``ppl_tokens``, ``ppl_bucket``);
    rejects rows outside the configured bounds or percentiles."""

    name = "perplexity_filter"
    Config = PerplexityConfig
    model_refs = ("model",)

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        """``ppl`` and ``ppl_tokens`` of each row (row-wise: a block at a time, anywhere)."""
        c = self.config
        lm = ctx.model(c.model)
        scores = [Scores(a) for a in lm.logprobs(scoring_pairs(table, lm, c.score, c.conditional), track=ctx.reporter.track,
                                                 description=f"perplexity of {len(table):,} rows")]
        ppl = np.array([s.ppl for s in scores], dtype=np.float64)
        return with_columns(table, {"ppl": pa.array(_nullable(ppl), pa.float64()),
                                    "ppl_tokens": pa.array([s.tokens for s in scores], pa.int32())})

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """Buckets and percentile cut-offs over the whole pool's ``ppl`` (per ``group_by``
        group), read alone; then each row's verdict."""
        c = self.config
        ppl = rows.column("ppl").to_numpy(zero_copy_only=False).astype(np.float64)
        if c.group_by is not None and c.group_by not in rows.column_names:
            raise StageError(f"group_by: no column '{c.group_by}'; columns are {rows.column_names}")
        groups = _groups(None if c.group_by is None else rows.column(c.group_by), len(ppl))
        bucket = np.empty(len(ppl), dtype=object)
        lo_cut = np.full(len(ppl), -np.inf)
        hi_cut = np.full(len(ppl), np.inf)
        for idx in groups:
            vals = ppl[idx][~np.isnan(ppl[idx])]
            if not len(vals):
                continue
            b1, b2 = np.percentile(vals, c.bucket_percentiles)
            bucket[idx] = np.where(ppl[idx] < b1, "head", np.where(ppl[idx] < b2, "middle", "tail"))
            if c.min_percentile is not None:
                lo_cut[idx] = np.percentile(vals, c.min_percentile)
            if c.max_percentile is not None:
                hi_cut[idx] = np.percentile(vals, c.max_percentile)
        keep, reason, detail = [], [], []
        for i, p in enumerate(ppl):
            r, d = _verdict(p, c, lo_cut[i], hi_cut[i])
            keep.append(r is None)
            reason.append(r)
            detail.append(d)
        bucket = [None if b is None else str(b) for b in bucket]
        return Decision(np.array(keep, dtype=bool), pa.array(reason, pa.string()), pa.array(detail, pa.string()),
                        columns={"ppl_bucket": pa.array(bucket, pa.string())})


def _verdict(p: float, c: PerplexityConfig, lo: float, hi: float) -> tuple[str | None, str | None]:
    if math.isnan(p):
        return "unscorable", "nothing to score: the scored text has no tokens"
    if c.max_ppl is not None and p > c.max_ppl:
        return "ppl_too_high", f"ppl {p:.1f} > max_ppl {c.max_ppl:g}"
    if c.min_ppl is not None and p < c.min_ppl:
        return "ppl_too_low", f"ppl {p:.1f} < min_ppl {c.min_ppl:g}"
    if p > hi:
        return "ppl_too_high", f"ppl {p:.1f} above the {c.max_percentile:g}th percentile ({hi:.1f})"
    if p < lo:
        return "ppl_too_low", f"ppl {p:.1f} below the {c.min_percentile:g}th percentile ({lo:.1f})"
    return None, None


class IfdConfig(StageConfig):
    model: str
    """The LM whose losses define IFD: the name of one of the run's models."""
    min_ifd: float | None = Field(None, ge=0)
    """Reject rows with IFD below this (instructions the answer barely needs)."""
    max_ifd: float | None = Field(None, gt=0)
    """Reject rows with IFD above this; Cherry LLM discards IFD > 1 (the instruction does
    not help predict the answer)."""

    @model_validator(mode="after")
    def _range(self) -> IfdConfig:
        if self.min_ifd is not None and self.max_ifd is not None and self.min_ifd >= self.max_ifd:
            raise ValueError(f"min_ifd ({self.min_ifd}) must be below max_ifd ({self.max_ifd})")
        return self


class IfdScore(Stage):
    """Instruction-Following Difficulty, s(A|Q) / s(A), as the column ``ifd``; with
    ``min_ifd``/``max_ifd``, rejects rows outside that range."""

    name = "ifd_score"
    Config = IfdConfig
    row_wise = True
    model_refs = ("model",)

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        if shape_of(table) != "sft":
            raise StageError("ifd_score needs SFT rows (a 'messages' column): IFD compares a response with and without its prompt")
        c = self.config
        lm = ctx.model(c.model)
        given = scoring_pairs(table, lm, "response", conditional=True)
        bare_context = lm.chat_prompt([{"role": "user", "content": ""}])
        alone = [(bare_context, target) for _, target in given]
        lp = lm.logprobs(given + alone, track=ctx.reporter.track, description=f"IFD of {len(table):,} rows")
        n = len(table)
        ifd = np.array([_ratio(Scores(lp[i]).mean_nll, Scores(lp[n + i]).mean_nll) for i in range(n)])
        keep, reason, detail = [], [], []
        for v in ifd:
            if math.isnan(v):
                keep.append(False), reason.append("unscorable"), detail.append("the response has no tokens")
            elif c.max_ifd is not None and v > c.max_ifd:
                keep.append(False), reason.append("ifd_too_high"), detail.append(f"IFD {v:.3f} > max_ifd {c.max_ifd:g}")
            elif c.min_ifd is not None and v < c.min_ifd:
                keep.append(False), reason.append("ifd_too_low"), detail.append(f"IFD {v:.3f} < min_ifd {c.min_ifd:g}")
            else:
                keep.append(True), reason.append(None), detail.append(None)
        return split(table.append_column("ifd", pa.array(_nullable(ifd), pa.float64())), keep, reason, detail)


def _ratio(given: float, alone: float) -> float:
    if math.isnan(given) or math.isnan(alone) or alone <= 0:
        return float("nan")
    return given / alone


def scoring_pairs(table: pa.Table, lm: LM, score: str, conditional: bool = True) -> list[tuple[str, str]]:
    """(context, target) per row for ``score`` (see the module docstring)."""
    shape = shape_of(table)
    if score == "auto":
        score = "response" if shape == "sft" else "text"
    if score == "text":
        if "text" not in table.column_names:
            raise StageError(f"score: text needs a 'text' column; columns are {table.column_names} (use score: response)")
        return [("", t or "") for t in table.column("text").to_pylist()]
    if shape != "sft":
        raise StageError(f"score: {score} needs SFT rows with a 'messages' column; columns are {table.column_names}")
    rows = table.column("messages").to_pylist()
    if score == "conversation":
        return [("", lm.chat_prompt(prompt_messages(m)) + response_of(m)) for m in rows]
    if not conditional:
        return [("", response_of(m)) for m in rows]
    return [(lm.chat_prompt(prompt_messages(m)), response_of(m)) for m in rows]


def _groups(column: pa.ChunkedArray | None, n: int) -> list[np.ndarray]:
    """Row indices of each group of ``column``'s values (one group of all ``n`` rows without one)."""
    if column is None:
        return [np.arange(n)]
    values = np.array([str(v) for v in column.to_pylist()], dtype=object)
    return [np.flatnonzero(values == v) for v in dict.fromkeys(values)]


def _nullable(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else float(v) for v in values]
