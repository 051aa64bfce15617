"""What the two stages that add teacher-written rows share: ``rejection_sample`` (DART-Math's
difficulty-aware rejection sampling, ``curate.stages.dart``) and ``llm2llm`` (the LLM2LLM
loop, ``curate.stages.llm2llm``). No stage here.

Both add and never drop: every input row is kept unchanged, and each new row is counted as
``added`` (the runner's ``rows_in + added == kept + rejected``). Both ask the run's model
``model`` (the teacher) about the input's distinct prompts that have a reference answer
(``answer_column``; ``group_by`` says which rows share a prompt), under a budget of teacher
samples (``max_calls``) and approximate tokens (``max_tokens_budget``). Their settings in
common are ``TeacherConfig``'s; each stage's config adds its own. The teacher's sampling
(``temperature``, ``top_p``, ``max_tokens``) defaults to the stage's paper where it is not
set, and a value equal to that default is the same step (the same fingerprint) as none.

Columns added: ``generated_by`` (the teacher's name), ``round``, ``seed_id`` (the id of the
input row a new row was made from) and ``verified`` ("true" for rejection sampling's
verified responses; null for LLM2LLM's rows, whose teacher answers are not checked); all
null on input rows, except that an input column of one of these names keeps its values.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from ..algorithms.answers import MATH_VERIFY_MISSING, AnswerKind
from ..algorithms.textstats import approx_tokens
from ..errors import StageError
from ..records import MESSAGES_TYPE, prompt_messages
from ..stage import Stage, StageConfig, split
from ..store import Store

TeacherSetting = Literal["temperature", "top_p", "max_tokens"]


class TeacherConfig(StageConfig):
    """The settings of a stage whose teacher writes new rows; ``teacher_defaults`` holds the
    stage's paper defaults for the teacher's sampling."""

    teacher_defaults: ClassVar[dict[str, float | int]] = {}

    model: str
    """The run's model that writes the new rows (the teacher; DART: DeepSeekMath-7B-RL; LLM2LLM: gpt-3.5-turbo)."""
    answer_column: str = "answer"
    """The column holding each prompt's reference answer; prompts without one are not asked about."""
    kind: AnswerKind = "math"
    """How an answer is checked against the reference: math, number or text (see verify)."""
    group_by: str | None = None
    """The column naming the prompt a row answers (e.g. problem_id); None = the prompt text."""
    system_prompt: str | None = None
    """The teacher's system turn. rejection_sample: given before each prompt (replacing the prompt's own) and kept in
    the new rows; llm2llm: replaces LLM2LLM's problem-writing instructions (None = those, adapted to math)."""
    temperature: float | None = Field(None, ge=0)
    """Teacher sampling temperature; None = the stage's paper default (rejection_sample: 1.6; llm2llm: 1.0)."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Teacher nucleus sampling; None = the stage's paper default (rejection_sample: 0.95; llm2llm: 1.0)."""
    max_tokens: int | None = Field(None, ge=1)
    """Longest teacher response, in its tokens; None = the stage's paper default (rejection_sample: 2048; llm2llm:
    2149)."""
    max_calls: int | None = Field(None, ge=1)
    """Budget: the most teacher samples (responses) this step requests, answered from the cache or not; None = no
    limit. llm2llm's student answers are not counted."""
    max_tokens_budget: int | None = Field(None, ge=1)
    """Budget: the most approximate tokens (approx_tokens of prompt + response, per sample) the teacher spends; None =
    no limit."""
    seed: int = 0
    """Sampling seed; each round (and retry) samples with its own seed derived from it (see the stage's doc)."""

    def teacher(self, name: TeacherSetting) -> Any:
        """The teacher's sampling setting ``name``: as set, else the stage's paper default."""
        value = getattr(self, name)
        return self.teacher_defaults[name] if value is None else value


class TeacherStage(Stage):
    """A stage whose teacher writes new rows: checks for math-verify when it grades, counts its
    version among the dependencies, and leaves a sampling setting equal to the paper's
    default out of the fingerprint."""

    config: TeacherConfig

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)  # looked up, not imported: SymPy is slow to import

    def fingerprint_config(self) -> dict[str, Any]:
        """The non-default config, a sampling setting equal to the paper's default left out
        (``temperature: 1.6`` in rejection_sample is the same step as no temperature)."""
        out = super().fingerprint_config()
        for name, default in self.config.teacher_defaults.items():
            if out.get(name) == default:
                del out[name]
        return out

    def dependencies(self, store: Store | None) -> list[str]:
        """math-verify's version when it grades: a new one can change which rows are kept."""
        if self.config.kind != "math":
            return []
        return [f"math-verify=={importlib.metadata.version('math-verify')}"]


# -- the prompts a teacher is asked about ------------------------------------------------------
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


def find_queries(table: pa.Table, c: TeacherConfig, stage: str, system_prompt: str | None = None,
                 difficulty: np.ndarray | None = None) -> list[Query]:
    """The distinct prompts with a reference, in order of first appearance; each query's
    ``messages`` are its row's prompt turns, with ``system_prompt`` (when given) in place of
    the row's own system turns, and its difficulty the first known value of its group in
    ``difficulty`` (per row; NaN where unknown, all NaN when not given). ``stage`` names the
    stage in errors."""
    names = table.column_names
    if c.answer_column not in names:
        raise StageError(f"{stage}: answer_column '{c.answer_column}' is not a column of the table (the teacher's "
                         f"answers are checked against the reference); columns are {', '.join(names)}")
    if "messages" in names:
        turns = [prompt_messages(m or []) for m in table.column("messages").to_pylist()]
    elif "prompt" in names:
        turns = [[{"role": "user", "content": p}] if p else [] for p in table.column("prompt").to_pylist()]
    else:
        raise StageError(f"{stage}: the rows have no prompt: a 'messages' (SFT) or 'prompt' column is needed; "
                         f"columns are {', '.join(names)}")
    if table.num_rows == 0:
        raise StageError(f"{stage}: the input has no rows, so there is no prompt to augment")
    texts = ["\n\n".join(m["content"] or "" for m in t if m["role"] != "system") for t in turns]
    if c.group_by is not None:
        if c.group_by not in names:
            raise StageError(f"{stage}: group_by '{c.group_by}' is not a column of the table; columns are {', '.join(names)}")
        keys = table.column(c.group_by).to_pylist()
        keys = [(0, k) if k is not None else (1, i) for i, k in enumerate(keys)]  # a null key is its own group
    else:
        keys = texts
    if difficulty is None:
        difficulty = np.full(table.num_rows, math.nan)
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
        raise StageError(f"{stage}: no row has both a prompt and a reference answer in '{c.answer_column}', "
                         "so there is nothing to augment")
    first: dict = {}  # a group's difficulty: its first known value
    for key, d in zip(keys, difficulty):
        if key in seen and key not in first and not math.isnan(d):
            first[key] = d
    for q in queries:
        q.difficulty = first.get(keys[q.row], math.nan)
    return queries


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


def teacher_budget(c: TeacherConfig) -> Budget:
    return Budget(c.max_calls, c.max_tokens_budget, c.teacher("max_tokens"))


# -- the new rows ------------------------------------------------------------------------------
NEW_COLUMNS = {"generated_by": pa.string(), "round": pa.int64(), "seed_id": pa.string(), "verified": pa.string()}


def with_added_columns(table: pa.Table) -> pa.Table:
    """The input rows with the columns new rows carry, null where the input lacks them."""
    for name, typ in [("messages", MESSAGES_TYPE), *NEW_COLUMNS.items()]:
        if name not in table.column_names:
            table = table.append_column(pa.field(name, typ), pa.nulls(table.num_rows, typ))
    return table


def no_rejects(table: pa.Table) -> pa.Table:
    """The (empty) rejected table of a stage that drops nothing."""
    return split(table, [True] * table.num_rows, "none").rejected


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


def __getattr__(name: str) -> Any:
    """An earlier release's ``Augment`` stage: say which two stages replaced it."""
    if name in ("Augment", "AugmentConfig"):
        raise ImportError(f"curate.stages.augment.{name} is now two stages: curate.stages.dart.RejectionSample "
                          "(rejection_sample, its default method) and curate.stages.llm2llm.LLM2LLM (llm2llm)")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
