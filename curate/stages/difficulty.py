"""Difficulty-aware sampling: DART-Math (Tong et al., "DART-Math: Difficulty-Aware
Rejection Tuning for Mathematical Problem-Solving", NeurIPS 2024; code hkust-nlp/dart-math).

Vanilla rejection sampling keeps a fixed number of correct responses per query, so easy
queries dominate. DART measures each query's difficulty as its fail rate and gives hard
queries more responses. Both halves, on a pool of several responses (rows) per prompt:

1. **Difficulty** ``d_q`` in [0, 1] per prompt group (``group_by``: a column such as
   CHAMP's ``problem_id``; by default the prompt text), by ``estimate``:

   * ``verified``: ``#false / (#true + #false)`` over the group's ``verified`` verdicts
     (the ``verify`` stage); "unknown" verdicts do not count.
   * ``samples`` (DART's way): ``k`` responses sampled per distinct prompt from the run's
     model ``model``, each checked against the group's reference answer as ``verify``
     checks (``kind``); ``d`` = the fail rate among the checkable samples (uncheckable ones
     are left out). DART samples DeepSeekMath-7B-RL at temperature 1.6, top_p 0.95; our
     default temperature is 1.0, safer for small models. DART counts truncated samples
     wrong; the models layer returns no finish reasons yet, so they cannot be counted so.
   * ``column``: the group mean of a numeric ``score_column`` (``ifd``, ``ppl``, a loss),
     as a percentile rank among groups (ties share their mean rank), 1 = hardest.

   A group with no estimate (no checkable verdict or score) gets a null ``difficulty``;
   allocation treats it as the median of the others.
2. **Allocation** of rows per prompt, ``sampling``:

   * ``uniform``: ``n_q = k_u`` (``per_prompt``; DART's ``pipeline/curate.ipynb``: 50).
   * ``prop2diff``: ``n_q = max(min_per_prompt, ceil(k_p * d_q / max_q' d_q'))``, the
     hardest prompt getting ``k_p`` (``max_per_prompt``; about 192 in the paper, no code
     default, so it is a required setting unless a budget picks it). When every d is 0,
     every prompt gets ``min_per_prompt``.
   * ``histogram``: target shares ``weights`` of the ``budget`` per difficulty bin
     (``bins`` edges; the last bin includes its right edge); within a bin every prompt gets
     the same count, then single extra rows fill the bin up to its share.

   ``n_q`` is capped at the rows the prompt has; within a prompt, rows verified "true" come
   first, then the rest, each in a seeded random order. With a ``budget`` (rows, or tokens:
   ``token_column`` or ``approx_tokens`` of the conversation), uniform and prop2diff take
   the largest ``k_u`` / ``k_p`` whose selection fits (``per_prompt`` / ``max_per_prompt``,
   when also given, cap it). Unchosen rows are rejected (``not_sampled``).

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
from itertools import pairwise
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from ..errors import StageError, warn
from ..models.base import Sampling
from ..records import prompt_messages, shape_of, texts
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns
from ..algorithms import allocate
from ..algorithms.answers import MATH_VERIFY_MISSING, AnswerKind
from ..algorithms.textstats import approx_token_counts
from .verify import BATCH_ROWS, verify_batch


class DifficultyConfig(StageConfig):
    estimate: Literal["verified", "samples", "column"] = "verified"
    """How d is measured: fail rate of the ``verified`` verdicts, of ``k`` samples from ``model``, or a score ``column``."""
    group_by: str | None = None
    """The column naming the prompt a row answers (e.g. problem_id); None = the prompt text."""
    score_column: str | None = None
    """estimate column: the numeric column whose group mean ranks difficulty."""
    higher_is_harder: bool = True
    """estimate column: a higher score means a harder prompt (a loss, ifd); off for a pass rate."""
    model: str | None = None
    """estimate samples: the run's model that samples responses (DART: DeepSeekMath-7B-RL)."""
    k: int = Field(8, ge=1, le=1024)
    """estimate samples: responses sampled per prompt."""
    temperature: float = Field(1.0, ge=0)
    """estimate samples: sampling temperature (DART: 1.6)."""
    top_p: float = Field(0.95, gt=0, le=1)
    """estimate samples: nucleus sampling (DART: 0.95)."""
    max_tokens: int = Field(512, ge=1)
    """estimate samples: longest sampled response, in tokens (DART: 2048)."""
    answer_column: str = "answer"
    """estimate samples: the column holding each prompt's reference answer."""
    kind: AnswerKind = "math"
    """estimate samples: how answers compare: math, number or text (see verify)."""
    drop_incorrect: bool = False
    """Reject rows verified false (reason wrong_answer) after difficulty is measured."""
    sampling: Literal["none", "uniform", "prop2diff", "histogram"] = "none"
    """How many rows each prompt keeps: all (none), k_u each, proportional to d, or shares per difficulty bin."""
    per_prompt: int | None = Field(None, ge=1)
    """uniform: k_u, rows per prompt (DART: 50); with a budget, the most the search may pick."""
    max_per_prompt: int | None = Field(None, ge=1)
    """prop2diff: k_p, the hardest prompt's rows (paper: ~192); with a budget, the most the search may pick."""
    min_per_prompt: int = Field(1, ge=0)
    """prop2diff: the fewest rows a prompt with rows keeps (DART: 1)."""
    bins: list[float] | None = None
    """histogram: increasing difficulty edges in [0, 1], e.g. [0, 0.25, 0.5, 0.75, 1]."""
    weights: list[float] | None = None
    """histogram: the target share of the budget per bin (one per bin; normalised)."""
    budget: int | None = Field(None, ge=1)
    """The most rows (or tokens) to keep: picks k_u / k_p, or sizes the histogram's bins."""
    budget_unit: Literal["rows", "tokens"] = "rows"
    """What the budget counts: rows, or tokens (token_column, else approx_tokens of the conversation)."""
    token_column: str | None = None
    """budget_unit tokens: a numeric column with each row's token count."""
    order: Literal["input", "curriculum"] = "input"
    """Order of the kept rows: as they came, or easy to hard by difficulty (null last)."""
    seed: int = 0
    """Seed of the row choice within a prompt and of the sampling."""

    @model_validator(mode="after")
    def _consistent(self) -> DifficultyConfig:
        s = self.sampling
        only = (  # (fields, whether they mean something now, when they do)
            (("score_column", "higher_is_harder"), self.estimate == "column", "estimate: column"),
            (("model", "k", "temperature", "top_p", "max_tokens", "answer_column", "kind"),
             self.estimate == "samples", "estimate: samples"),
            (("per_prompt",), s == "uniform", "sampling: uniform"),
            (("max_per_prompt", "min_per_prompt"), s == "prop2diff", "sampling: prop2diff"),
            (("bins", "weights"), s == "histogram", "sampling: histogram"),
            (("budget",), s != "none", "a sampling other than none"),
            (("budget_unit",), self.budget is not None, "a budget"),
            (("token_column",), self.budget_unit == "tokens", "budget_unit: tokens"),
        )
        for fields, ok, when in only:
            for f in fields:
                if f in self.model_fields_set and not ok:
                    raise ValueError(f"{f} is only used with {when}")
        if self.estimate == "column" and self.score_column is None:
            raise ValueError("estimate: column needs score_column (the numeric column that ranks difficulty)")
        if self.estimate == "samples" and self.model is None:
            raise ValueError("estimate: samples needs model (the run's model that samples responses)")
        if s == "uniform" and self.per_prompt is None and self.budget is None:
            raise ValueError("sampling: uniform needs per_prompt (k_u; DART: 50) or a budget")
        if s == "prop2diff" and self.max_per_prompt is None and self.budget is None:
            raise ValueError("sampling: prop2diff needs max_per_prompt (k_p; the paper gives no default, ~192) or a budget")
        if s == "prop2diff" and self.max_per_prompt is not None and self.min_per_prompt > self.max_per_prompt:
            raise ValueError(f"min_per_prompt={self.min_per_prompt} is above max_per_prompt={self.max_per_prompt}")
        if s == "histogram":
            if self.bins is None or self.weights is None or self.budget is None:
                raise ValueError("sampling: histogram needs bins, weights and budget")
            b = self.bins
            if len(b) < 2 or any(not 0 <= e <= 1 for e in b) or any(x >= y for x, y in pairwise(b)):
                raise ValueError(f"bins must be at least two increasing edges in [0, 1] (got {b})")
            if len(self.weights) != len(b) - 1:
                raise ValueError(f"weights needs one value per bin: {len(b) - 1} for {len(b)} bins edges (got {len(self.weights)})")
            if any(w < 0 for w in self.weights) or sum(self.weights) <= 0:
                raise ValueError(f"weights must be non-negative and not all 0 (got {self.weights})")
        return self


class Difficulty(Stage):
    """Per-prompt difficulty (fail rate or score rank) in a ``difficulty`` column, and
    DART-Math's difficulty-aware choice of rows per prompt (uniform, prop2diff, histogram)."""

    name = "difficulty"
    version = "1"
    Config = DifficultyConfig
    config: DifficultyConfig
    model_refs = ("model",)

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        c = self.config
        if c.estimate == "samples" and c.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)

    def dependencies(self, store: Any) -> list[str]:
        """math-verify's version when it grades samples: a new one can change difficulties."""
        c = self.config
        if c.estimate == "samples" and c.kind == "math":
            return [f"math-verify=={importlib.metadata.version('math-verify')}"]
        return []

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        n = table.num_rows
        gid, n_groups = self._groups(table)
        stats: dict[str, int | float] = {}
        has_verified = "verified" in table.column_names
        if not has_verified and (c.estimate == "verified" or c.drop_incorrect):
            raise StageError(f"difficulty: {'estimate: verified' if c.estimate == 'verified' else 'drop_incorrect'} "
                             "needs the 'verified' column: run the verify stage first"
                             + (" (or pick estimate: samples or column)" if c.estimate == "verified" else ""))
        is_true, is_false = (_equals(table.column("verified"), v) if has_verified else np.zeros(n, dtype=bool)
                             for v in ("true", "false"))
        if c.estimate == "verified":
            d = _fail_rate(gid, n_groups, is_true, is_false)
        elif c.estimate == "samples":
            d = self._sampled(table, gid, n_groups, ctx, stats)
        else:
            d = self._ranked(table, gid, n_groups)
        row_d = d[gid] if n else np.zeros(0)
        table = with_columns(table, {"difficulty": pa.array(row_d, pa.float64(), mask=np.isnan(row_d))})

        known = ~np.isnan(d)
        median = float(np.median(d[known])) if known.any() else math.nan
        alloc = np.where(known, d, median)
        wrong = is_false & c.drop_incorrect
        chosen, quota, avail = np.ones(n, dtype=bool), None, None
        if c.sampling != "none":
            if c.sampling != "uniform" and n and not known.any():
                raise StageError(f"difficulty: no prompt has a difficulty estimate, so sampling: {c.sampling} "
                                 "cannot allocate rows (check the verified / score column)")
            rank, avail = allocate.choice_ranks(gid, n_groups, is_true, wrong, c.seed)
            cost = np.ones(n) if c.budget_unit == "rows" else self._tokens(table, ctx)
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
        reason = np.where(wrong, "wrong_answer", "not_sampled").tolist()
        out = split(table, keep.tolist(), reason, detail.tolist())
        kept = out.kept
        if c.order == "curriculum":  # stable; numpy sorts NaN (unknown) last
            kept = kept.take(pa.array(np.argsort(row_d[keep], kind="stable")))

        unknown = int((~known).sum())
        # (kept / wrong / not-sampled row counts are the manifest's counts and reasons already)
        stats = {"prompts": n_groups, "prompts_unknown": unknown, **stats,
                 **({"difficulty_mean": float(d[known].mean())} if known.any() else {})}
        as_median = f" (allocated as the median, {median:.3f})" if unknown and quota is not None and known.any() else ""
        ctx.reporter.log(f"difficulty ({c.estimate}, sampling {c.sampling}): {n_groups:,} prompts, {unknown:,} without "
                         f"an estimate{as_median}; kept {int(keep.sum()):,} of {n:,} rows ({int(wrong.sum()):,} "
                         f"wrong, {int((~chosen & ~wrong).sum()):,} not sampled)")
        return StageOutput(kept, out.rejected).with_stats(stats)

    # -- difficulty -----------------------------------------------------------------------
    def _groups(self, table: pa.Table) -> tuple[np.ndarray, int]:
        """Each row's prompt group (0..G-1, in order of first appearance) and G. Rows with a
        null ``group_by`` value are groups of their own."""
        c = self.config
        if c.group_by is not None:
            keys = _column(table, c.group_by, "group_by").combine_chunks()
        elif "messages" in table.column_names:
            keys = pa.array(texts(table, "prompt"), pa.string())
        else:
            keys = _column(table, "prompt", "group_by: None (the prompt text)").combine_chunks()
        enc = pc.dictionary_encode(keys)
        nulls = enc.indices.is_null().to_numpy(zero_copy_only=False)
        gid = enc.indices.fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
        n_groups = len(enc.dictionary)
        gid[nulls] = n_groups + np.arange(int(nulls.sum()))
        return gid, n_groups + int(nulls.sum())

    def _sampled(self, table: pa.Table, gid: np.ndarray, n_groups: int, ctx: StageContext, stats: dict) -> np.ndarray:
        """DART's fail rate: k samples per prompt that has a reference, graded as ``verify`` grades."""
        c = self.config
        first = np.unique(gid, return_index=True)[1]  # each group's first row
        refs: list[str | None] = [None] * n_groups  # the group's first non-empty reference
        for g, ref in zip(gid.tolist(), _column(table, c.answer_column, "answer_column").to_pylist()):
            if refs[g] is None and ref is not None and str(ref).strip():
                refs[g] = str(ref)
        todo = [g for g in range(n_groups) if refs[g] is not None]
        if "messages" in table.column_names:
            messages = table.column("messages")
            prompts = [prompt_messages(messages[int(first[g])].as_py()) for g in todo]
        else:
            prompt = table.column("prompt")
            prompts = [[{"role": "user", "content": prompt[int(first[g])].as_py() or ""}] for g in todo]
        sampling = Sampling(n=c.k, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=c.seed)
        drawn = ctx.model(c.model).generate(prompts, sampling, track=ctx.reporter.track,
                                           description=f"sampling {c.k} responses per prompt")
        pairs = [(y, refs[g]) for g, ys in zip(todo, drawn) for y in ys]
        verdicts = [v for v, _, _ in ctx.map_batches(partial(verify_batch, c.kind), pairs, BATCH_ROWS, "grading samples")]
        owner = np.repeat(np.array(todo, dtype=np.int64), [len(ys) for ys in drawn])
        v = np.array(verdicts, dtype=object)
        stats.update(samples=len(pairs), samples_unknown=int((v == "unknown").sum()))
        return _fail_rate(owner, n_groups, v == "true", v == "false")

    def _ranked(self, table: pa.Table, gid: np.ndarray, n_groups: int) -> np.ndarray:
        """The percentile rank in [0, 1] of each group's mean score (ties share the mean rank)."""
        c = self.config
        x = _numbers(table, c.score_column, "score_column")
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
    def _tokens(self, table: pa.Table, ctx: StageContext) -> np.ndarray:
        c = self.config
        if c.token_column is None:
            field = "conversation" if shape_of(table) == "sft" else "text"
            return np.array(ctx.map_batches(approx_token_counts, texts(table, field), 10_000, "counting tokens"), dtype=np.float64)
        x = _numbers(table, c.token_column, "token_column")
        if np.isnan(x).any():
            raise StageError(f"difficulty: token_column '{c.token_column}' has {int(np.isnan(x).sum()):,} rows without a count")
        return x

    def _quota(self, d: np.ndarray, rank: np.ndarray, gid: np.ndarray, avail: np.ndarray, cost: np.ndarray,
               ctx: StageContext, stats: dict) -> np.ndarray:
        """Rows each prompt keeps (capped at what it has)."""
        c = self.config
        if c.sampling == "histogram":
            quota, per_bin, short = allocate.histogram_quota(d, rank, gid, avail, cost, c.bins, c.weights, c.budget,
                                                             c.budget_unit == "rows", c.seed)
            stats.update(per_bin)
            if short:
                warn(f"difficulty: these bins hold less than their share of the budget: {', '.join(short)}")
            return quota
        key = "per_prompt" if c.sampling == "uniform" else "max_per_prompt"
        quota, k = allocate.budgeted_quota(c.sampling, d, rank, gid, avail, cost, getattr(c, key), c.min_per_prompt,
                                           c.budget, c.budget_unit)
        stats[key] = k
        return quota


def _column(table: pa.Table, name: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise StageError(f"difficulty: {what} '{name}' is not a column of the table; columns are {', '.join(table.column_names)}")
    return table.column(name)


def _numbers(table: pa.Table, name: str, what: str) -> np.ndarray:
    """A numeric column as float64, nulls as NaN."""
    col = _column(table, name, what)
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
