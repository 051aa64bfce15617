"""Rejection sampling with difficulty-aware targets: DART-Math's DARS (Tong et al., "DART-Math:
Difficulty-Aware Rejection Tuning for Mathematical Problem-Solving", NeurIPS 2024; code
hkust-nlp/dart-math). The stage ``rejection_sample``.

Vanilla rejection sampling (VRT) draws a fixed number of samples per query and keeps the
correct ones, so easy queries dominate the data. DARS keeps sampling each query until it
has a *target number of correct responses*, and gives harder queries larger targets. The
input rows are all kept; the verified responses are added (``curate.stages.augment``).

1. **Queries**: the distinct prompts (``group_by``, by default the prompt text) that have a
   non-empty reference answer (``answer_column``). The teacher is given the prompt turns of
   the group's first row with a reference (its system turns too, or ``system_prompt``).
2. **Targets** ``n_q``, ``sampling`` (DART's sampling strategies, defined once in
   ``curate.algorithms.allocate`` and shared with the ``difficulty`` stage):

   * ``{method: uniform, k_u: 40}`` (the default): ``n_q = k_u`` (DART README: 40,
     ``pipeline/curate.ipynb``: 50).
   * ``{method: prop2diff, k_p: 192}``: ``n_q = max(min_per_prompt, ceil(k_p * d_q /
     max_q' d_q'))``, the hardest query getting ``k_p`` (about 192 in the paper, no code
     default: required), ``min_per_prompt`` 1 as in DART. ``d_q`` is the fail rate in
     ``difficulty_column`` (the ``difficulty`` stage writes it); a query without one is
     allocated as the median of the others.

3. **Sampling loop**, in rounds: every unfinished query asks for ``samples_per_round``
   samples (never more than its trials left, nor than the budget left), all in one batched
   call per round (one per distinct count when some ask for fewer); round ``r`` samples with
   seed ``seed + r``, so the call cache, keyed by prompt and sampling parameters, never
   hands a round the samples of an earlier one. Each sample's final answer is checked
   against the reference as ``verify`` checks (``kind``); only a "true" verdict counts
   ("unknown" counts as a failed trial). A query is finished when it has ``n_q`` correct
   responses or has had ``max_trials`` samples.
4. **Curation**: the first ``n_q`` correct responses of each query, in sample order, become
   new SFT rows (prompt turns + the response).

**Defaults** (DART's ``scripts/synth-*.sh``): temperature 1.6, top_p 0.95, max_new_tokens
2048, zero-shot; trial cap 2048 (``synth-onpolicy.sh``). DART's VRT baseline is
``sampling: {method: uniform, k_u: 52}`` with ``max_trials: 52`` (every correct one of 52
samples). ``samples_per_round`` (8) is ours: larger rounds mean fewer calls but up to
``samples_per_round - 1`` samples drawn past a query's target.

**Differences from DART's code.**

* DART stops a query when correct > target (``is_dp_dars_finished``, strict) and then keeps
  the first k; we stop at correct == target, since the extra response would be discarded.
* DART counts truncated responses (finish reason "length" or "abort") as wrong. The models
  layer returns no finish reasons, so a truncated response cannot be counted as wrong: it is
  graded on its text like any other.
* **Budgets** (ours): ``max_calls`` caps the samples requested per run and
  ``max_tokens_budget`` the approximate tokens (``approx_tokens`` of the prompt's turns plus
  the response, per sample). Every requested sample counts, answered from the call cache or
  not, so results never depend on the cache. A round takes only what fits, reserving
  ``max_tokens`` for each response it has not seen yet, so the token budget is not exceeded
  (up to ``approx_tokens`` counting more than the teacher's tokenizer). When the budget
  stops the loop, what was kept so far is the result (a valid version) and the stats say
  ``budget_exhausted: 1``.

Examples (a recipe's steps)::

    - rejection_sample:            # DARS-Uniform: 40 verified teacher responses per prompt
        model: teacher

    - difficulty:                  # d_q from 8 samples of the teacher per problem
        estimate: {method: samples, model: teacher, k: 8, temperature: 1.6}
    - rejection_sample:            # DARS-Prop2Diff: the hardest problem gets 192
        model: teacher
        sampling: {method: prop2diff, k_p: 192}
        max_calls: 200000          # teacher samples, cached or not

Stats: ``prompts``, ``rounds``, ``trials``, ``tokens``, ``generated_correct``, ``kept_new``,
``prompts_short`` (stopped at the trial cap below target), ``prompts_unfinished`` (stopped by
the budget), ``budget_exhausted``, and per difficulty bin ``trials:d0.0-0.2``,
``yield:d0.0-0.2`` (correct / trials), ``target:d0.0-0.2`` and ``kept:d0.0-0.2``
(``report_bins`` equal-width bins; ``unknown`` for queries without a difficulty).
"""

from __future__ import annotations

import math
from collections import defaultdict
from functools import partial
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from ..algorithms import allocate
from ..algorithms.allocate import DartSampling, Uniform, moved_into
from ..algorithms.textstats import approx_tokens
from ..errors import StageError
from ..models.base import Sampling
from ..stage import StageContext, StageOutput
from .augment import (
    Budget,
    Query,
    TeacherConfig,
    TeacherStage,
    build_rows,
    find_queries,
    fresh_id,
    no_rejects,
    row_ids,
    teacher_budget,
    with_added_columns,
)
from .verify import BATCH_ROWS, verify_batch

# Columns a new row copies from the row whose prompt it answers (besides the configured
# answer, difficulty and group_by columns): they describe the prompt, not the response.
PROMPT_COLUMNS = ("prompt", "category")
NAME = "rejection_sample"


class RejectionSampleConfig(TeacherConfig):
    # DART's scripts/synth-*.sh
    teacher_defaults: ClassVar[dict[str, float | int]] = {"temperature": 1.6, "top_p": 0.95, "max_tokens": 2048}

    sampling: DartSampling = Uniform(k_u=40)
    """Correct responses wanted per prompt: {method: uniform, k_u: 40} (DART README: 40), or {method: prop2diff,
    k_p: 192} (proportional to difficulty_column, the hardest prompt getting k_p; the paper: ~192)."""
    max_trials: int = Field(2048, ge=1)
    """The most samples drawn for one prompt (DART's synth-onpolicy.sh: 2048; its VRT baseline: 52)."""
    samples_per_round: int = Field(8, ge=1)
    """Samples requested per unfinished prompt in each round (one batched call per round)."""
    difficulty_column: str = "difficulty"
    """The column with each prompt's difficulty in [0, 1] (the difficulty stage); needed by prop2diff, reported by bin."""
    report_bins: int = Field(5, ge=1, le=100)
    """Equal-width difficulty bins over [0, 1] for the trials / yield stats."""

    renamed: ClassVar[dict[str, str]] = {
        "targets": "'sampling' (e.g. sampling: {method: prop2diff, k_p: 192})",
        "per_prompt": moved_into("k_u", "sampling: {method: uniform, k_u: 40}"),
        "max_per_prompt": moved_into("k_p", "sampling: {method: prop2diff, k_p: 192}"),
        "bins": "'report_bins'",
        "method": "a stage of its own: rejection_sample (method: rejection_sampling) or llm2llm (method: llm2llm); "
                  "drop method:",
    }

    @model_validator(mode="after")
    def _targets(self) -> RejectionSampleConfig:
        s = self.sampling
        if s.method == "uniform" and s.k_u is None:
            raise ValueError("sampling: uniform needs k_u (correct responses per prompt; DART README: 40)")
        if s.method == "prop2diff" and s.k_p is None:
            raise ValueError("sampling: prop2diff needs k_p (the hardest prompt's target; the paper gives no code "
                             "default, ~192)")
        return self


class RejectionSample(TeacherStage):
    """Add verified teacher responses until each prompt has its target (DART-Math's DARS:
    uniform or Prop2Diff); the input rows are all kept."""

    name = NAME
    version = "2"  # 2: augment's method rejection_sampling, as its own stage with sampling: {method: ...}
    Config = RejectionSampleConfig
    config: RejectionSampleConfig
    model_refs = ("model",)

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        return rejection_sample(table, ctx, self.config)


def rejection_sample(table: pa.Table, ctx: StageContext, c: RejectionSampleConfig) -> StageOutput:
    """Every input row, plus the verified responses the teacher ``c.model`` wrote (see the
    module doc); ``added`` counts the new rows."""
    queries = find_queries(table, c, NAME, c.system_prompt, difficulties(table, c))
    assign_targets(queries, c, ctx)
    lm = ctx.model(c.model)
    budget = teacher_budget(c)
    rounds = spent_tokens = 0
    exhausted = False
    while True:
        todo = [q for q in queries if q.wants(c.max_trials)]
        if not todo:
            break
        want = [min(c.samples_per_round, c.max_trials - q.trials) for q in todo]
        got = budget.plan(want, [q.tokens for q in todo])
        if sum(got) == 0:
            exhausted = True
            break
        spent_tokens += sample_round(lm, todo, got, rounds, c, ctx, budget)
        rounds += 1

    new = added_rows(table, queries, c)
    kept = pa.concat_tables([with_added_columns(table), new])
    stats = summary(queries, c, rounds, spent_tokens, exhausted)
    ctx.reporter.log(
        f"{NAME} ({c.sampling.method}): {stats['prompts']:,} prompts, {stats['trials']:,} samples from "
        f"'{c.model}' in {rounds:,} rounds, {stats['generated_correct']:,} correct; added {new.num_rows:,} rows; "
        f"{stats['prompts_short']:,} prompts short of their target at the {c.max_trials:,}-trial cap"
        + (f"; the budget ran out with {stats['prompts_unfinished']:,} prompts unfinished" if exhausted else ""))
    return StageOutput(kept, no_rejects(table), new.num_rows).with_stats(stats)


def sample_round(lm: Any, todo: list[Query], got: list[int], r: int, c: RejectionSampleConfig, ctx: StageContext,
                 budget: Budget) -> int:
    """Draw ``got[i]`` samples for ``todo[i]`` (one call per distinct count), grade them and
    record the correct ones; the approximate tokens spent."""
    drawn: list[list[str]] = [[] for _ in todo]
    for n in sorted({g for g in got if g}, reverse=True):
        idx = [i for i, g in enumerate(got) if g == n]
        sampling = Sampling(n=n, temperature=c.teacher("temperature"), top_p=c.teacher("top_p"),
                            max_tokens=c.teacher("max_tokens"), seed=c.seed + r)
        outs = lm.generate([todo[i].messages for i in idx], sampling, track=ctx.reporter.track,
                           description=f"round {r}: {n} samples for {len(idx):,} prompts")
        for i, ys in zip(idx, outs):
            drawn[i] = list(ys)[:n]
    pairs = [(y, q.reference) for q, ys in zip(todo, drawn) for y in ys]
    graded = iter(ctx.map_batches(partial(verify_batch, c.kind), pairs, BATCH_ROWS, f"round {r}: grading samples"))
    tokens = 0
    for q, ys, n in zip(todo, drawn, got):
        q.trials += n  # requested, whatever came back
        for y in ys:
            verdict, answer, rule = next(graded)
            tokens += q.tokens + approx_tokens(y)
            if verdict == "true":
                q.correct += 1
                if len(q.kept) < q.target:
                    q.kept.append((r, y, answer, rule))
    budget.spend(sum(got), tokens)
    return tokens


# -- targets ------------------------------------------------------------------------------
def difficulties(table: pa.Table, c: RejectionSampleConfig) -> np.ndarray:
    """The difficulty column as floats, NaN where missing; all NaN without the column (uniform)."""
    name = c.difficulty_column
    if name not in table.column_names:
        if c.sampling.method == "prop2diff":
            raise StageError(f"{NAME}: sampling: prop2diff needs each prompt's difficulty in the column '{name}' "
                             "(difficulty_column), which the table lacks: run the difficulty stage first")
        return np.full(table.num_rows, math.nan)
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise StageError(f"{NAME}: difficulty_column '{name}' holds {col.type}, not numbers")
    return pc.cast(col, pa.float64()).combine_chunks().fill_null(math.nan).to_numpy(zero_copy_only=False)


def assign_targets(queries: list[Query], c: RejectionSampleConfig, ctx: StageContext) -> None:
    s = c.sampling
    if s.method == "uniform":
        for q in queries:
            q.target = s.k_u
        return
    d = np.array([q.difficulty for q in queries])
    known = ~np.isnan(d)
    if not known.any():
        raise StageError(f"{NAME}: sampling: prop2diff needs difficulties, but no prompt has one in "
                         f"'{c.difficulty_column}'")
    if not known.all():
        median = float(np.median(d[known]))
        ctx.reporter.log(f"{NAME}: {int((~known).sum()):,} prompts have no difficulty; their targets are "
                         f"allocated as the median, {median:.3f}")
        d = np.where(known, d, median)
    for q, t in zip(queries, allocate.prop2diff_quota(np.clip(d, 0, 1), s.k_p, s.min_per_prompt)):
        q.target = int(t)


# -- output -------------------------------------------------------------------------------
def added_rows(table: pa.Table, queries: list[Query], c: RejectionSampleConfig) -> pa.Table:
    """One SFT row per kept response, with the input's columns (``with_added_columns``):
    the prompt's columns copied from its row, the rest null."""
    seed_ids, taken = row_ids(table)
    rows, values = [], defaultdict(list)
    for q in queries:
        k = 0
        for r, y, answer, rule in q.kept:
            new_id, k = fresh_id(f"{seed_ids[q.row]}#dart", k + 1, taken)
            rows.append(q.row)
            values["id"].append(new_id)
            values["messages"].append([*q.messages, {"role": "assistant", "content": y}])
            values["generated_by"].append(c.model)
            values["round"].append(r)
            values["seed_id"].append(seed_ids[q.row])
            values["verified"].append("true")
            values["extracted_answer"].append(answer)  # verify's columns, used where the input has them
            values["answer_rule"].append(rule)
    copy = {c.answer_column, c.difficulty_column, *PROMPT_COLUMNS, *([c.group_by] if c.group_by else [])}
    return build_rows(table, rows, values, copy)


def summary(queries: list[Query], c: RejectionSampleConfig, rounds: int, tokens: int,
            exhausted: bool) -> dict[str, int | float]:
    """The run's counts, and trials / yield / targets / kept rows per difficulty bin."""
    stats: dict[str, int | float] = {
        "prompts": len(queries),
        "rounds": rounds,
        "trials": sum(q.trials for q in queries),
        "tokens": tokens,
        "generated_correct": sum(q.correct for q in queries),
        "kept_new": sum(len(q.kept) for q in queries),
        "prompts_short": sum(len(q.kept) < q.target and q.trials >= c.max_trials for q in queries),
        "prompts_unfinished": sum(q.wants(c.max_trials) for q in queries),
        "budget_exhausted": int(exhausted),
    }
    per_bin: dict[str, list[Query]] = {}
    labels = bin_labels(c.report_bins)
    for q in sorted(queries, key=lambda q: (math.isnan(q.difficulty), q.difficulty)):
        label = "unknown" if math.isnan(q.difficulty) else labels[bin_of(q.difficulty, c.report_bins)]
        per_bin.setdefault(label, []).append(q)
    for label, qs in per_bin.items():
        trials = sum(q.trials for q in qs)
        stats[f"trials:{label}"] = trials
        stats[f"yield:{label}"] = sum(q.correct for q in qs) / trials if trials else 0.0
        stats[f"target:{label}"] = sum(q.target for q in qs)
        stats[f"kept:{label}"] = sum(len(q.kept) for q in qs)
    return stats


def bin_of(d: float, bins: int) -> int:
    """The equal-width bin of [0, 1] that holds ``d`` (the last bin includes 1)."""
    return min(max(math.floor(d * bins + 1e-9), 0), bins - 1)


def bin_labels(bins: int) -> list[str]:
    """'d0.0-0.2', ...: edges with one decimal, or two where one would not tell them apart."""
    def edge(x: float) -> str:
        return f"{x:.1f}" if abs(round(x, 1) - x) < 1e-9 else f"{x:.2f}"
    return [f"d{edge(j / bins)}-{edge((j + 1) / bins)}" for j in range(bins)]
