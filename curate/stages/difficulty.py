"""Difficulty-aware sampling: DART-Math (Tong et al., "DART-Math: Difficulty-Aware
Rejection Tuning for Mathematical Problem-Solving", NeurIPS 2024; code hkust-nlp/dart-math).

Vanilla rejection sampling keeps a fixed number of correct responses per query, so easy
queries dominate. DART measures each query's difficulty as its fail rate and gives hard
queries more responses. Both halves, on a pool of several responses (rows) per prompt:

1. **Difficulty** ``d_q`` in [0, 1] per prompt group (``group_by``: a column such as
   CHAMP's ``problem_id``; by default the prompt text), by ``estimate``:

   * ``{method: verified}`` (the default; also written ``estimate: verified``):
     ``#false / (#true + #false)`` over the group's ``verified`` verdicts (the ``verify``
     stage); "unknown" verdicts do not count.
   * ``{method: samples, model: M, k: 8}`` (DART's way): ``k`` responses sampled per
     distinct prompt from the run's model ``M``, each checked against the group's reference
     answer (``answer_column``) as ``verify`` checks (``kind``); ``d`` = the fail rate among
     the checkable samples (uncheckable ones are left out). DART samples DeepSeekMath-7B-RL
     at temperature 1.6, top_p 0.95, 2,048 tokens; our defaults are temperature 1.0 (safer
     for small models) and 512 tokens. DART counts truncated samples wrong; the models
     layer returns no finish reasons yet, so they cannot be counted so.
   * ``{method: column, score_column: C}``: the group mean of a numeric column (``ifd``,
     ``ppl``, a loss), as a percentile rank among groups (ties share their mean rank),
     1 = hardest (``higher_is_harder: false`` for a pass rate).

   A group with no estimate (no checkable verdict or score) gets a null ``difficulty``;
   allocation treats it as the median of the others.
2. **Allocation** of rows per prompt, ``sampling`` (the strategies of
   ``curate.algorithms.allocate``, shared with ``rejection_sample``; none: every row kept):

   * ``{method: uniform, k_u: 50}``: ``n_q = k_u`` (DART's ``pipeline/curate.ipynb``: 50).
   * ``{method: prop2diff, k_p: 192}``: ``n_q = max(min_per_prompt, ceil(k_p * d_q /
     max_q' d_q'))``, the hardest prompt getting ``k_p`` (about 192 in the paper, no code
     default, so it is given unless a budget picks it); ``min_per_prompt`` is 1 as in DART.
     When every d is 0, every prompt gets ``min_per_prompt``.
   * ``{method: histogram, bins: [0, 0.5, 1], weights: [1, 3]}``: target shares
     ``weights`` of the ``budget`` per difficulty bin (``bins`` edges; the last bin includes
     its right edge); within a bin every prompt gets the same count, then single extra rows
     fill the bin up to its share.

   ``n_q`` is capped at the rows the prompt has; within a prompt, rows verified "true" come
   first, then the rest, each in a seeded random order. With a ``budget`` (``{rows: N}``, or
   ``{tokens: N}``: ``token_column``, else ``approx_tokens`` of the conversation), uniform
   and prop2diff take the largest ``k_u`` / ``k_p`` whose selection fits (a ``k_u`` /
   ``k_p`` also given caps it; the stats say which was used). Unchosen rows are rejected
   (``not_sampled``).

Examples (a recipe's steps)::

    - difficulty:                  # the math SFT chain: verify's verdicts, DART's Prop2Diff
        group_by: problem_id
        drop_incorrect: true
        sampling: {method: prop2diff, k_p: 12}

    - difficulty:                  # DART's own estimate: 8 samples per problem from the run's model
        estimate: {method: samples, model: teacher, k: 8, temperature: 1.6}
        sampling: {method: uniform}
        budget: {tokens: 2000000}  # the largest k_u whose rows fit in 2M tokens

DART keeps only correct responses; its fail rate needs the wrong ones, so this stage sees
them and ``drop_incorrect`` rejects rows verified "false" (``wrong_answer``) after
measuring. ``order: curriculum`` sorts the kept rows easy to hard (null difficulty last).
Column added to kept and rejected rows: ``difficulty`` (float, null when unknown).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from functools import partial
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import Field, model_validator

from ..algorithms import allocate
from ..algorithms.allocate import Budget, Histogram, Prop2Diff, TokenBudget, Uniform, Variant, moved_into, one_of
from ..algorithms.answers import MATH_VERIFY_MISSING, AnswerKind
from ..algorithms.textstats import approx_token_counts
from ..errors import StageError, warn
from ..models.base import Sampling
from ..records import prompt_messages, shape_of, text_columns, texts
from ..stage import Decision, Rows, Stage, StageConfig, StageContext, StageOutput, TableRows, values_at
from ..store import Store
from .verify import BATCH_ROWS, verify_batch

READ_ROWS = 20_000  # rows read at a time when a column is scanned


class VerifiedEstimate(Variant):
    """The fail rate of the rows' ``verified`` verdicts (the verify stage)."""

    method: Literal["verified"] = "verified"


class SampledEstimate(Variant):
    """DART's way: the fail rate of k responses sampled per distinct prompt."""

    method: Literal["samples"] = "samples"
    model: str
    """The run's model that samples responses (DART: DeepSeekMath-7B-RL)."""
    k: int = Field(8, ge=1, le=1024)
    """Responses sampled per prompt."""
    temperature: float = Field(1.0, ge=0)
    """Sampling temperature (DART: 1.6; 1.0 is safer for small models)."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus sampling (DART: 0.95)."""
    max_tokens: int = Field(512, ge=1)
    """Longest sampled response, in tokens (DART: 2048)."""
    answer_column: str = "answer"
    """The column holding each prompt's reference answer."""
    kind: AnswerKind = "math"
    """How answers compare: math, number or text (see verify)."""


class ColumnEstimate(Variant):
    """The group mean of a numeric score column, as a percentile rank among groups."""

    method: Literal["column"] = "column"
    score_column: str
    """The numeric column whose group mean ranks difficulty (ifd, ppl, a loss)."""
    higher_is_harder: bool = True
    """A higher score means a harder prompt (a loss, ifd); off for a pass rate."""


Estimate = one_of(VerifiedEstimate, SampledEstimate, ColumnEstimate)
# How many rows each prompt keeps; None keeps them all.
Allocation = one_of(Uniform, Prop2Diff, Histogram, optional=True)


SAMPLED = "estimate: {method: samples, model: teacher, k: 8}"


class DifficultyConfig(StageConfig):
    estimate: Estimate = VerifiedEstimate()
    """How d is measured: {method: verified} (the verify stage's verdicts), {method: samples, model: M, k: 8} (the
    fail rate of k samples from the run's model M) or {method: column, score_column: C} (a score's rank)."""
    group_by: str | None = None
    """The column naming the prompt a row answers (e.g. problem_id); None = the prompt text."""
    drop_incorrect: bool = False
    """Reject rows verified false (reason wrong_answer) after difficulty is measured."""
    sampling: Allocation = None
    """How many rows each prompt keeps: {method: uniform, k_u: 50}, {method: prop2diff, k_p: 192}, {method: histogram,
    bins: [...], weights: [...]} (with a budget); None keeps every row."""
    budget: Budget | None = None
    """The most to keep, {rows: N} or {tokens: N[, token_column: C]}: picks k_u / k_p, or sizes the histogram's bins."""
    order: Literal["input", "curriculum"] = "input"
    """Order of the kept rows: as they came, or easy to hard by difficulty (null last)."""
    seed: int = 0
    """Seed of the row choice within a prompt and of the sampling."""

    renamed: ClassVar[dict[str, str]] = {
        "score_column": moved_into("score_column", "estimate: {method: column, score_column: ifd}"),
        "higher_is_harder": moved_into("higher_is_harder",
                                       "estimate: {method: column, score_column: C, higher_is_harder: false}"),
        **{key: moved_into(key, SAMPLED)
           for key in ("model", "k", "temperature", "top_p", "max_tokens", "answer_column", "kind")},
        "per_prompt": moved_into("k_u", "sampling: {method: uniform, k_u: 50}"),
        "max_per_prompt": moved_into("k_p", "sampling: {method: prop2diff, k_p: 12}"),
        "min_per_prompt": moved_into("min_per_prompt", "sampling: {method: prop2diff, k_p: 12, min_per_prompt: 1}"),
        "bins": moved_into("bins", "sampling: {method: histogram, bins: [0, 0.5, 1], weights: [1, 1]}"),
        "weights": moved_into("weights", "sampling: {method: histogram, bins: [0, 0.5, 1], weights: [1, 1]}"),
        "budget_unit": "the key of budget (budget: {tokens: 100000} or budget: {rows: 5000})",
        "token_column": moved_into("token_column", "budget: {tokens: 100000, token_column: n_tokens}"),
    }

    @model_validator(mode="after")
    def _consistent(self) -> DifficultyConfig:
        s = self.sampling
        if s is None:
            if self.budget is not None:
                raise ValueError("budget needs a sampling (uniform, prop2diff or histogram): it says which rows the "
                                 "budget keeps")
            return self
        if s.method == "uniform" and s.k_u is None and self.budget is None:
            raise ValueError("sampling: uniform needs k_u (DART: 50) or a budget")
        if s.method == "prop2diff" and s.k_p is None and self.budget is None:
            raise ValueError("sampling: prop2diff needs k_p (the paper gives no default, ~192) or a budget")
        if s.method == "histogram" and self.budget is None:
            raise ValueError("sampling: histogram needs a budget (its weights are shares of it)")
        return self


class Difficulty(Stage):
    """Per-prompt difficulty (fail rate or score rank) in a ``difficulty`` column, and
    DART-Math's difficulty-aware choice of rows per prompt (uniform, prop2diff, histogram)."""

    name = "difficulty"
    version = "2"  # 2: estimate, sampling and budget became tagged sub-configs
    Config = DifficultyConfig
    config: DifficultyConfig

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        e = self.config.estimate
        if e.method == "samples" and e.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)

    def models_used(self) -> list[str]:
        """The sampling model of ``estimate: {method: samples, model: M}`` (a sub-config's field,
        which ``model_refs`` cannot name)."""
        e = self.config.estimate
        return [e.model] if e.method == "samples" else []

    def dependencies(self, store: Store | None) -> list[str]:
        """math-verify's version when it grades samples: a new one can change difficulties."""
        e = self.config.estimate
        if e.method == "samples" and e.kind == "math":
            return [f"math-verify=={importlib.metadata.version('math-verify')}"]
        return []

    def decides(self) -> bool:
        """Streamed past its decision unless ``order: curriculum`` reorders the kept rows (then
        the input is one table)."""
        return self.config.order != "curriculum"

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        out = self.decide(TableRows(table), ctx).apply(table)
        if self.config.order == "curriculum":  # stable; NaN (unknown) last
            d = out.kept.column("difficulty").combine_chunks().fill_null(math.nan).to_numpy(zero_copy_only=False)
            kept = out.kept.take(pa.array(np.argsort(d, kind="stable")))
            out = StageOutput(kept, out.rejected, out.added).with_stats(out.stats or {})
        return out

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """Reads the columns its estimate and budget need (verified, the group key, the score
        or answer column, token counts a batch at a time), never the rows' texts beyond them."""
        c = self.config
        method = c.estimate.method
        n = rows.num_rows
        gid, n_groups = self._groups(rows)
        stats: dict[str, int | float] = {}
        has_verified = "verified" in rows.column_names
        if not has_verified and (method == "verified" or c.drop_incorrect):
            raise StageError(f"difficulty: {'estimate: verified' if method == 'verified' else 'drop_incorrect'} "
                             "needs the 'verified' column: run the verify stage first"
                             + (" (or pick estimate: samples or column)" if method == "verified" else ""))
        is_true, is_false = (_equals(rows.column("verified"), v) if has_verified else np.zeros(n, dtype=bool)
                             for v in ("true", "false"))
        if method == "verified":
            d = _fail_rate(gid, n_groups, is_true, is_false)
        elif method == "samples":
            d = self._sampled(rows, gid, n_groups, ctx, stats)
        else:
            d = self._ranked(rows, gid, n_groups)
        row_d = d[gid] if n else np.zeros(0)

        known = ~np.isnan(d)
        median = float(np.median(d[known])) if known.any() else math.nan
        alloc = np.where(known, d, median)
        wrong = is_false & c.drop_incorrect
        chosen, quota, avail = np.ones(n, dtype=bool), None, None
        if c.sampling is not None:
            if c.sampling.method != "uniform" and n and not known.any():
                raise StageError(f"difficulty: no prompt has a difficulty estimate, so sampling: {c.sampling.method} "
                                 "cannot allocate rows (check the verified / score column)")
            rank, avail = allocate.choice_ranks(gid, n_groups, is_true, wrong, c.seed)
            cost = self._tokens(rows, ctx) if isinstance(c.budget, TokenBudget) else np.ones(n)
            quota = self._quota(alloc, rank, gid, avail, cost, ctx, stats)
            chosen = rank < quota[gid]
        keep = chosen & ~wrong

        detail = np.full(n, None, dtype=object)
        if wrong.any():
            detail[wrong] = "verified false (drop_incorrect)"
        if quota is not None:
            unknown_as = "difficulty unknown" + (f" (allocated as the median, {median:.3f})" if known.any() else "")
            shown = [f"difficulty {v:.3f}" if k else unknown_as for v, k in zip(d, known)]
            per_group = np.array([f"prompt {s}: quota {q} of its {a} rows" for s, q, a in zip(shown, quota, avail)], dtype=object)
            dropped = ~chosen & ~wrong
            detail[dropped] = per_group[gid[dropped]]
        reason = pa.array(np.where(wrong, "wrong_answer", "not_sampled").tolist(), pa.string())

        unknown = int((~known).sum())
        # (kept / wrong / not-sampled row counts are the manifest's counts and reasons already)
        stats = {"prompts": n_groups, "prompts_unknown": unknown, **stats,
                 **({"difficulty_mean": float(d[known].mean())} if known.any() else {})}
        as_median = f" (allocated as the median, {median:.3f})" if unknown and quota is not None and known.any() else ""
        ctx.reporter.log(f"difficulty ({method}, sampling {c.sampling.method if c.sampling else 'none'}): {n_groups:,} "
                         f"prompts, {unknown:,} without "
                         f"an estimate{as_median}; kept {int(keep.sum()):,} of {n:,} rows ({int(wrong.sum()):,} "
                         f"wrong, {int((~chosen & ~wrong).sum()):,} not sampled)")
        return Decision(keep, reason, pa.array(detail.tolist(), pa.string()),
                        columns={"difficulty": pa.array(row_d, pa.float64(), mask=np.isnan(row_d))},
                        stats=StageOutput(None, None).with_stats(stats).stats)

    # -- difficulty -----------------------------------------------------------------------
    def _groups(self, rows: Rows) -> tuple[np.ndarray, int]:
        """Each row's prompt group (0..G-1, in order of first appearance) and G. Rows with a
        null ``group_by`` value are groups of their own. SFT rows' prompts are read a batch at
        a time and kept as 16-byte hashes."""
        c = self.config
        if c.group_by is not None:
            keys = _column(rows, c.group_by, "group_by").combine_chunks()
        elif "messages" in rows.column_names:
            keys = pa.array([xxhash.xxh3_128_digest(t.encode()) for b in rows.scan(["messages"], READ_ROWS)
                             for t in texts(b, "prompt")], pa.binary(16))
        else:
            keys = _column(rows, "prompt", "group_by: None (the prompt text)").combine_chunks()
        enc = pc.dictionary_encode(keys)
        nulls = enc.indices.is_null().to_numpy(zero_copy_only=False)
        gid = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        n_groups = len(enc.dictionary)
        gid[nulls] = n_groups + np.arange(int(nulls.sum()))
        return gid, n_groups + int(nulls.sum())

    def _sampled(self, rows: Rows, gid: np.ndarray, n_groups: int, ctx: StageContext, stats: dict) -> np.ndarray:
        """DART's fail rate: k samples per prompt that has a reference, graded as ``verify`` grades."""
        c, seed = self.config.estimate, self.config.seed
        first = np.unique(gid, return_index=True)[1]  # each group's first row
        refs: list[str | None] = [None] * n_groups  # the group's first non-empty reference
        for g, ref in zip(gid.tolist(), _column(rows, c.answer_column, "answer_column").to_pylist()):
            if refs[g] is None and ref is not None and str(ref).strip():
                refs[g] = str(ref)
        todo = [g for g in range(n_groups) if refs[g] is not None]
        column = "messages" if "messages" in rows.column_names else "prompt"
        firsts = values_at(rows, column, first[todo], READ_ROWS)
        if column == "messages":
            prompts = [prompt_messages(m) for m in firsts]
        else:
            prompts = [[{"role": "user", "content": p or ""}] for p in firsts]
        sampling = Sampling(n=c.k, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=seed)
        drawn = ctx.model(c.model).generate(prompts, sampling, track=ctx.reporter.track,
                                           description=f"sampling {c.k} responses per prompt")
        pairs = [(y, refs[g]) for g, ys in zip(todo, drawn) for y in ys]
        verdicts = [v for v, _, _ in ctx.map_batches(partial(verify_batch, c.kind), pairs, BATCH_ROWS, "grading samples")]
        owner = np.repeat(np.array(todo, dtype=np.int64), [len(ys) for ys in drawn])
        v = np.array(verdicts, dtype=object)
        stats.update(samples=len(pairs), samples_unknown=int((v == "unknown").sum()))
        return _fail_rate(owner, n_groups, v == "true", v == "false")

    def _ranked(self, rows: Rows, gid: np.ndarray, n_groups: int) -> np.ndarray:
        """The percentile rank in [0, 1] of each group's mean score (ties share the mean rank)."""
        c = self.config.estimate
        x = _numbers(rows, c.score_column, "score_column")
        ok = ~np.isnan(x)
        total = np.bincount(gid[ok], weights=x[ok], minlength=n_groups)
        count = np.bincount(gid[ok], minlength=n_groups)
        out = np.full(n_groups, math.nan)
        has = count > 0
        mean = total[has] / count[has]
        _, inv, cnt = np.unique(mean, return_inverse=True, return_counts=True)
        start = np.cumsum(cnt) - cnt
        rank = start[inv] + (cnt[inv] - 1) / 2
        pct = rank / (len(mean) - 1) if len(mean) > 1 else np.full(len(mean), 0.5)
        out[has] = pct if c.higher_is_harder else 1 - pct
        return out

    # -- allocation -----------------------------------------------------------------------
    def _tokens(self, rows: Rows, ctx: StageContext) -> np.ndarray:
        column = self.config.budget.token_column
        if column is None:
            field = "conversation" if shape_of(rows) == "sft" else "text"
            counts = [ctx.map_batches(approx_token_counts, texts(b, field), 10_000, "counting tokens")
                      for b in rows.scan(text_columns(field, rows.column_names), READ_ROWS)]
            return np.array([x for batch in counts for x in batch], dtype=np.float64)
        x = _numbers(rows, column, "budget.token_column")
        if np.isnan(x).any():
            raise StageError(f"difficulty: budget.token_column '{column}' has {int(np.isnan(x).sum()):,} rows without a count")
        return x

    def _quota(self, d: np.ndarray, rank: np.ndarray, gid: np.ndarray, avail: np.ndarray, cost: np.ndarray,
               ctx: StageContext, stats: dict) -> np.ndarray:
        """Rows each prompt keeps (capped at what it has)."""
        c, s = self.config, self.config.sampling
        unit = "tokens" if isinstance(c.budget, TokenBudget) else "rows"
        size = None if c.budget is None else getattr(c.budget, unit)
        if s.method == "histogram":
            quota, per_bin, short = allocate.histogram_quota(d, rank, gid, avail, cost, s.bins, s.weights, size,
                                                             unit == "rows", c.seed)
            stats.update(per_bin)
            if short:
                warn(f"difficulty: these bins hold less than their share of the budget: {', '.join(short)}")
            return quota
        if s.method == "uniform":
            quota, stats["k_u"] = allocate.budgeted_quota("uniform", d, rank, gid, avail, cost, s.k_u, 1, size, unit)
        else:
            quota, stats["k_p"] = allocate.budgeted_quota("prop2diff", d, rank, gid, avail, cost, s.k_p,
                                                          s.min_per_prompt, size, unit)
        return quota


def _column(rows: Rows, name: str, what: str) -> pa.ChunkedArray:
    if name not in rows.column_names:
        raise StageError(f"difficulty: {what} '{name}' is not a column of the table; columns are {', '.join(rows.column_names)}")
    return rows.column(name)


def _numbers(rows: Rows, name: str, what: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    col = _column(rows, name, what)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise StageError(f"difficulty: {what} '{name}' holds {col.type}, not numbers")
    return pc.cast(col, pa.float64()).combine_chunks().fill_null(math.nan).to_numpy(zero_copy_only=False)


def _equals(col: pa.ChunkedArray, value: str) -> np.ndarray:
    return pc.fill_null(pc.equal(col, value), False).combine_chunks().to_numpy(zero_copy_only=False)


def _fail_rate(gid: np.ndarray, n_groups: int, right: np.ndarray, wrong: np.ndarray) -> np.ndarray:
    """#wrong / (#right + #wrong) per group; NaN where nothing was checkable."""
    t = np.bincount(gid, weights=right.astype(np.float64), minlength=n_groups)
    f = np.bincount(gid, weights=wrong.astype(np.float64), minlength=n_groups)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(t + f > 0, f / (t + f), math.nan)
