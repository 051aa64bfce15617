"""Rejection sampling with difficulty-aware targets: DART-Math's DARS (Tong et al., "DART-Math:
Difficulty-Aware Rejection Tuning for Mathematical Problem-Solving", NeurIPS 2024; code
hkust-nlp/dart-math). The loop behind ``augment``'s ``method: rejection_sampling``; no stage here.

Vanilla rejection sampling (VRT) draws a fixed number of samples per query and keeps the
correct ones, so easy queries dominate the data. DARS keeps sampling each query until it
has a *target number of correct responses*, and gives harder queries larger targets.

1. **Queries**: the distinct prompts (``group_by``, by default the prompt text) that have a
   non-empty reference answer (``answer_column``). The teacher is given the prompt turns of
   the group's first row with a reference (its system turns too, or ``system_prompt``).
2. **Targets** ``n_q`` (``curate.algorithms.allocate``, shared with the ``difficulty`` stage):

   * ``uniform``: ``n_q = k_u`` (``per_prompt``; DART README: 40, ``pipeline/curate.ipynb``: 50).
   * ``prop2diff``: ``n_q = max(1, ceil(k_p * d_q / max_q' d_q'))``, the hardest query getting
     ``k_p`` (``max_per_prompt``; about 192 in the paper, no code default: required). ``d_q``
     is the fail rate in ``difficulty_column`` (the ``difficulty`` stage writes it); a query
     without one is allocated as the median of the others.

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
``targets: uniform`` with ``per_prompt`` = ``max_trials`` = 52 (every correct one of 52
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

Stats: ``prompts``, ``rounds``, ``trials``, ``tokens``, ``generated_correct``, ``kept_new``,
``prompts_short`` (stopped at the trial cap below target), ``prompts_unfinished`` (stopped by
the budget), ``budget_exhausted``, and per difficulty bin ``trials:d0.0-0.2``,
``yield:d0.0-0.2`` (correct / trials), ``target:d0.0-0.2`` and ``kept:d0.0-0.2`` (bin
``unknown`` for queries without a difficulty).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import StageError
from ..models.base import Sampling
from ..records import MESSAGES_TYPE, prompt_messages
from ..stage import StageContext, StageOutput, split
from ..algorithms import allocate
from ..algorithms.textstats import approx_tokens
from .verify import BATCH_ROWS, verify_batch

if TYPE_CHECKING:
    from .augment import AugmentConfig

# The teacher's sampling when augment's temperature / top_p / max_tokens are not set
# (DART's scripts/synth-*.sh).
TEACHER_SAMPLING = {"temperature": 1.6, "top_p": 0.95, "max_tokens": 2048}

# Columns a new row copies from the row whose prompt it answers (besides the configured
# answer, difficulty and group_by columns): they describe the prompt, not the response.
PROMPT_COLUMNS = ("prompt", "category")


@dataclass
class Query:
    """One distinct prompt with a reference answer, and what sampling it has given so far."""

    row: int  # the input row whose prompt (and id, answer, ...) the new rows take
    messages: list[dict]  # what the teacher is given
    reference: str
    difficulty: float  # NaN when unknown
    tokens: int  # approx_tokens of the prompt's turns
    target: int = 0
    trials: int = 0
    correct: int = 0
    kept: list[tuple[int, str, str | None, str | None]] = field(default_factory=list)  # (round, response, answer, rule)

    def wants(self, max_trials: int) -> bool:
        return len(self.kept) < self.target and self.trials < max_trials


@dataclass
class Budget:
    """What a run may still spend: samples and approximate tokens (None = no limit)."""

    calls: int | None
    tokens: int | None
    reserve: int  # tokens held back for a response not seen yet (max_tokens)

    def plan(self, want: list[int], cost: list[int]) -> list[int]:
        """Samples per query this round: all of ``want`` when it fits, else one sample at a
        time, query by query (round-robin), while the next one fits."""
        calls = math.inf if self.calls is None else self.calls
        tokens = math.inf if self.tokens is None else self.tokens
        need = [c + self.reserve for c in cost]
        if sum(want) <= calls and sum(w * n for w, n in zip(want, need)) <= tokens:
            return list(want)
        got = [0] * len(want)
        for level in range(1, max(want, default=0) + 1):
            for i, w in enumerate(want):
                if w >= level and calls >= 1 and need[i] <= tokens:
                    got[i] += 1
                    calls -= 1
                    tokens -= need[i]
        return got

    def spend(self, samples: int, tokens: int) -> None:
        if self.calls is not None:
            self.calls -= samples
        if self.tokens is not None:
            self.tokens -= tokens


def rejection_sample(table: pa.Table, ctx: StageContext, c: AugmentConfig) -> StageOutput:
    """Every input row, plus the verified responses the teacher ``c.model`` wrote (see the
    module doc); ``added`` counts the new rows."""
    queries = find_queries(table, c, c.system_prompt)
    assign_targets(queries, c, ctx)
    lm = ctx.model(c.model)
    budget = Budget(c.max_calls, c.max_tokens_budget, c.teacher("max_tokens"))
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
    rejected = split(table, [True] * table.num_rows, "none").rejected  # augment drops nothing
    stats = summary(queries, c, rounds, spent_tokens, exhausted)
    ctx.reporter.log(
        f"augment (rejection_sampling, {c.targets}): {stats['prompts']:,} prompts, {stats['trials']:,} samples from "
        f"'{c.model}' in {rounds:,} rounds, {stats['generated_correct']:,} correct; added {new.num_rows:,} rows; "
        f"{stats['prompts_short']:,} prompts short of their target at the {c.max_trials:,}-trial cap"
        + (f"; the budget ran out with {stats['prompts_unfinished']:,} prompts unfinished" if exhausted else ""))
    return StageOutput(kept, rejected, new.num_rows).with_stats(stats)


def sample_round(lm, todo: list[Query], got: list[int], r: int, c: AugmentConfig, ctx: StageContext,
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


# -- queries and targets ------------------------------------------------------------------
def find_queries(table: pa.Table, c: AugmentConfig, system_prompt: str | None = None) -> list[Query]:
    """The distinct prompts with a reference, in order of first appearance; each query's
    ``messages`` are its row's prompt turns, with ``system_prompt`` (when given) in place of
    the row's own system turns. Shared by both methods (LLM2LLM's seed questions)."""
    names = table.column_names
    if c.answer_column not in names:
        raise StageError(f"augment: answer_column '{c.answer_column}' is not a column of the table ({c.method} "
                         f"checks answers against the reference); columns are {', '.join(names)}")
    if "messages" in names:
        turns = [prompt_messages(m or []) for m in table.column("messages").to_pylist()]
    elif "prompt" in names:
        turns = [[{"role": "user", "content": p}] if p else [] for p in table.column("prompt").to_pylist()]
    else:
        raise StageError(f"augment: the rows have no prompt: a 'messages' (SFT) or 'prompt' column is needed; "
                         f"columns are {', '.join(names)}")
    if table.num_rows == 0:
        raise StageError("augment: the input has no rows, so there is no prompt to augment")
    texts = ["\n\n".join(m["content"] or "" for m in t if m["role"] != "system") for t in turns]
    if c.group_by is not None:
        if c.group_by not in names:
            raise StageError(f"augment: group_by '{c.group_by}' is not a column of the table; columns are {', '.join(names)}")
        keys = table.column(c.group_by).to_pylist()
        keys = [(0, k) if k is not None else (1, i) for i, k in enumerate(keys)]  # a null key is its own group
    else:
        keys = texts
    difficulty = difficulties(table, c)
    refs = [None if v is None else str(v) for v in table.column(c.answer_column).to_pylist()]
    seen: dict = {}
    queries: list[Query] = []
    for i, (key, ref, text) in enumerate(zip(keys, refs, texts)):
        if key in seen or ref is None or not ref.strip() or not text.strip():
            continue
        seen[key] = i
        messages = turns[i]
        if system_prompt is not None:
            messages = [{"role": "system", "content": system_prompt}, *(m for m in messages if m["role"] != "system")]
        messages = [{"role": m["role"], "content": m["content"]} for m in messages]
        tokens = sum(approx_tokens(m["content"] or "") for m in messages)
        queries.append(Query(i, messages, ref, difficulty[i], tokens))
    if not queries:
        raise StageError(f"augment: no row has both a prompt and a reference answer in '{c.answer_column}', "
                         "so there is nothing to augment")
    first: dict = {}  # a group's difficulty: its first known value
    for key, d in zip(keys, difficulty):
        if key in seen and key not in first and not math.isnan(d):
            first[key] = d
    for q in queries:
        q.difficulty = first.get(keys[q.row], math.nan)
    return queries


def difficulties(table: pa.Table, c: AugmentConfig) -> np.ndarray:
    """The difficulty column as floats, NaN where missing; all NaN without the column (uniform)."""
    name = c.difficulty_column
    if c.method != "rejection_sampling":  # only DARS's targets read difficulties
        return np.full(table.num_rows, math.nan)
    if name not in table.column_names:
        if c.targets == "prop2diff":
            raise StageError(f"augment: targets: prop2diff needs each prompt's difficulty in the column '{name}' "
                             "(difficulty_column), which the table lacks: run the difficulty stage first")
        return np.full(table.num_rows, math.nan)
    col = table.column(name)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise StageError(f"augment: difficulty_column '{name}' holds {col.type}, not numbers")
    return pc.cast(col, pa.float64()).combine_chunks().fill_null(math.nan).to_numpy(zero_copy_only=False)


def assign_targets(queries: list[Query], c: AugmentConfig, ctx: StageContext) -> None:
    if c.targets == "uniform":
        for q in queries:
            q.target = c.per_prompt
        return
    d = np.array([q.difficulty for q in queries])
    known = ~np.isnan(d)
    if not known.any():
        raise StageError(f"augment: targets: prop2diff needs difficulties, but no prompt has one in "
                         f"'{c.difficulty_column}'")
    if not known.all():
        median = float(np.median(d[known]))
        ctx.reporter.log(f"augment: {int((~known).sum()):,} prompts have no difficulty; their targets are "
                         f"allocated as the median, {median:.3f}")
        d = np.where(known, d, median)
    for q, t in zip(queries, allocate.prop2diff_quota(np.clip(d, 0, 1), c.max_per_prompt)):
        q.target = int(t)


# -- output -------------------------------------------------------------------------------
NEW_COLUMNS = {"generated_by": pa.string(), "round": pa.int64(), "seed_id": pa.string(), "verified": pa.string()}


def with_added_columns(table: pa.Table) -> pa.Table:
    """The input rows with the columns new rows carry, null where the input lacks them."""
    for name, typ in [("messages", MESSAGES_TYPE), *NEW_COLUMNS.items()]:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, typ), pa.nulls(table.num_rows, typ))
    return table


def row_ids(table: pa.Table) -> tuple[list[str], set[str]]:
    """Each input row's id (its index where the table has no ``id``) and the ids taken."""
    if "id" not in table.column_names:
        return [str(i) for i in range(table.num_rows)], set()
    ids = table.column("id").to_pylist()
    return ids, set(ids)


def fresh_id(stem: str, k: int, taken: set[str]) -> tuple[str, int]:
    """``stem + k`` for the first ``k`` (counting up) not in ``taken``, which it joins."""
    while f"{stem}{k}" in taken:
        k += 1
    taken.add(f"{stem}{k}")
    return f"{stem}{k}", k


def build_rows(table: pa.Table, rows: list[int], values: dict[str, list], copy: set[str]) -> pa.Table:
    """New rows in the input's schema plus the new-row columns (``with_added_columns``):
    ``values`` where given (a column the table lacks is ignored), ``copy`` taken from the
    input row ``rows[j]`` each new row comes from, the rest null."""
    schema = with_added_columns(table.slice(0, 0)).schema
    index = pa.array(rows, pa.int64())
    columns = []
    for f in schema:
        if f.name in values:
            columns.append(pa.array(values[f.name], f.type))
        elif f.name in copy:
            columns.append(table.column(f.name).take(index))
        else:
            columns.append(pa.nulls(len(rows), f.type))
    return pa.Table.from_arrays(columns, schema=schema)


def added_rows(table: pa.Table, queries: list[Query], c: AugmentConfig) -> pa.Table:
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


def summary(queries: list[Query], c: AugmentConfig, rounds: int, tokens: int, exhausted: bool) -> dict[str, int | float]:
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
    labels = bin_labels(c.bins)
    for q in sorted(queries, key=lambda q: (math.isnan(q.difficulty), q.difficulty)):
        label = "unknown" if math.isnan(q.difficulty) else labels[bin_of(q.difficulty, c.bins)]
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
