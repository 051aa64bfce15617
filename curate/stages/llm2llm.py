"""LLM2LLM: iterative, targeted teacher augmentation (Lee et al., "LLM2LLM: Boosting LLMs with
Novel Iterative Data Enhancement", ACL Findings 2024; code SqueezeAILab/LLM2LLM, GSM8K). The
stage ``llm2llm``.

Fine-tune a student on a small seed set, find the seed examples it still gets wrong, and
have a teacher write new examples like them; retrain on the grown set and repeat. The input
rows are all kept; the new problems are added (``curate.stages.augment``). The teacher's
prompt text, the item parser and ROUGE-L are in ``curate.algorithms.llm2llm_text``.

1. **D_0** = the input rows. The *seed questions* are the distinct prompts with a reference
   answer (``answer_column``; ``group_by`` as in ``rejection_sample``).
2. **Round i** (``i = 0 .. rounds-1``): fine-tune the ``student`` **from its base weights**
   on D_i (``curate.train.run_sft`` with ``TrainConfig(model=student, **student_train)``),
   then have it answer every seed question greedily (``student_max_tokens``), given the
   prompt turns it was trained with. An answer is graded as ``verify`` grades (``kind``);
   a seed is *wrong* unless the verdict is "true" -- "unknown" (no final answer found)
   counts as wrong, as the paper's filter counts an answer without "#### N".
3. **Teacher**: one request per wrong seed (``llm2llm_text.request``): LLM2LLM's system
   prompt adapted to competition math, its worked few-shot exchange, and the seed question
   with its answer key (the seed's solution + "#### reference"), asking for
   ``min(per_seed + attempt, 10)`` similar problems in the fixed format
   ``1. Question: ... Answer: ... #### N``. Odd retries show the problems already kept for
   that seed and ask for different ones (as ``generate_data.py`` does).
4. **Filter**: the items are parsed (``parse_items``; an unreadable item is *unparseable*).
   An item whose question has ROUGE-L F1 > ``rouge_threshold`` with **any** question so far
   -- the input's and every kept generated one, including those kept earlier in the same
   round -- is a *near-copy* and dropped; a dropped item does not join that pool (as in the
   paper). Items beyond a seed's ``per_seed`` in one response are
   dropped (``surplus``). While a seed has fewer than ``per_seed`` kept items it is asked
   again, up to ``max_retries`` more times.
5. **D_{i+1}** = D_i + the kept items as SFT rows: the seed's system turns, the new
   question, and the teacher's solution ending "#### N" (the paper's training format);
   ``answer`` = N, ``generated_by`` = the teacher, ``round`` = i + 1, ``seed_id`` = the
   seed row's id, ids ``<seed id>#llm2llm<round>.<k>``.

**Defaults** (``GSM8K/config.yaml``, ``generate_data.py``, ``templates_gsm.py``): one new
example per wrong seed per round (``per_seed: 1``), teacher temperature 1.0, top_p 1.0,
max_tokens 2149, ROUGE-L threshold 0.95; the student trains 3 epochs at lr 2e-5 with a
cosine schedule, warm-up 0.03 and 1,024-token sequences at an effective batch of 128
(``TrainConfig``'s 8 x 16). The paper's 10 steps train 10 times and generate after the
first 9; this stage's output is data, trained on by the recipe's ``train:`` section, so
``rounds: 9`` is the paper's setting.

**Where we differ from the paper's code**

* *Only the seed rows are evaluated.* The paper evaluates the student on all of D_i and
  then keeps the wrong rows whose question is in the seed file; evaluating only the seed
  questions gives the same set for less compute, and makes it plain that wrong answers on
  generated rows never reach the teacher.
* Answers are graded by ``curate.algorithms.answers`` (``kind``), not by stripping everything
  but digits and comparing floats: competition answers are expressions, not only numbers.
* *Retries are capped* (``max_retries``; the paper loops until the quota is met), kept
  problems are shown in their order (the paper shuffles them), and each (round, attempt)
  samples with its own seed, ``seed + i * (max_retries + 1) + attempt``, so the call cache
  never hands a retry the answer of an earlier request.
* The items are read as ``llm2llm_text`` says (where its parser differs from the paper's).
* *Stopping*: the paper always runs all its steps. When the student gets every seed right,
  no row is added, so every later round would retrain on the same data and find the same
  (training on CPU is deterministic); the loop stops there (``stopped_all_right: 1``).
* The student fine-tunes with ``TrainConfig``'s defaults where the paper names nothing we
  follow (LoRA; the paper trains every weight: ``student_train: {method: full}``).
* *Budgets* (ours): ``max_calls`` caps the teacher requests and ``max_tokens_budget`` their
  approximate tokens (``augment.Budget``: prompt + response per request, ``max_tokens`` held
  back for each response not seen yet); the student's answers are not teacher spend. When
  the budget cannot pay for another request the loop stops after keeping what it has: a
  valid version, with ``budget_exhausted: 1``. A round is not trained when the budget could
  not pay for a single request after it.

**Round folders.** Round i trains in ``<store>/models/tmp/llm2llm-<hash>`` (a temp folder
outside a pipeline), the hash covering D_i's messages, the student's identity and the
training settings: ``work/`` holds the checkpoints, ``trained/`` the model, and once the
student has answered, ``verdicts-<hash>.json`` (its answers and verdicts, keyed by the seed
questions and grading settings) is written and the weights are deleted. A killed run resumes
from the checkpoints or reuses the verdicts (the teacher's answers come from the call cache),
and a round whose data did not change reuses the verdicts of the one before; the stage
removes its folders when it finishes.

Example (a recipe's step)::

    - llm2llm:                     # 3 rounds, 1 new problem per missed seed question
        model: teacher             # writes the new problems (the paper: gpt-3.5-turbo)
        student: student           # a transformers model of models:, fine-tuned each round
        student_train: {method: full, epochs: 3, learning_rate: 2.0e-5}
        rounds: 3
        max_calls: 2000            # teacher requests; the student's answers are not counted

Stats: ``seeds``, ``rounds``, totals ``wrong``, ``generated``, ``near_copies``,
``unparseable``, ``surplus``, ``seeds_short`` (requests for a wrong seed that ended below
``per_seed``), ``teacher_calls``, ``tokens``, ``budget_exhausted``, ``stopped_all_right``;
per round ``student_accuracy:r1`` (fraction of the seeds answered right), ``wrong:r1``,
``generated:r1``, ``near_copies:r1``, ``unparseable:r1``, ``teacher_calls:r1`` and
``train_loss:r1`` (the round's final training loss).
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, ValidationError, field_validator

from ..algorithms.llm2llm_text import MAX_ITEMS, Item, QuestionPool, parse_items, request
from ..algorithms.textstats import approx_tokens
from ..errors import StageError
from ..fingerprint import hash_parts
from ..models.base import Sampling
from ..records import prompt_of, response_of
from ..stage import Reporter, StageContext, StageOutput, validation_problems
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

if TYPE_CHECKING:
    from ..train.config import TrainConfig
    from ..train.sft import BaseWeights

NAME = "llm2llm"
# The student's training settings under student_train (templates_gsm.py).
STUDENT_TRAIN = {"lr_scheduler": "cosine", "warmup_ratio": 0.03, "max_length": 1024}
ROUND_VERSION = "1"  # bump when a round folder's content starts meaning something else


def student_train_config(student: str, overrides: dict[str, Any]) -> TrainConfig:
    """The student's ``TrainConfig``: LLM2LLM's settings, then ``student_train``'s."""
    from ..train.config import TrainConfig

    return TrainConfig(model=student, **{**STUDENT_TRAIN, **overrides})


class LLM2LLMConfig(TeacherConfig):
    # generate_data.py: temperature 1.0, top_p 1.0, max_tokens 2149
    teacher_defaults: ClassVar[dict[str, float | int]] = {"temperature": 1.0, "top_p": 1.0, "max_tokens": 2149}

    student: str
    """The run's model fine-tuned from its base weights each round (a transformers entry of models:); the seed
    questions it gets wrong go to the teacher."""
    student_train: dict[str, Any] = Field(default_factory=dict)
    """How the student is fine-tuned each round: fields of the train: section (curate.train.TrainConfig) except model,
    over LLM2LLM's lr_scheduler cosine, warmup_ratio 0.03 and max_length 1024 (the rest: TrainConfig's defaults, e.g.
    method lora; the paper trains every weight, method: full)."""
    rounds: int = Field(9, ge=1)
    """Train / evaluate / augment rounds. The paper's 10 steps train 10 times and augment after the first 9; the
    recipe's train: section is the 10th training."""
    per_seed: int = Field(1, ge=1)
    """New problems kept per wrong seed question per round (the paper's instructions_per_seed_task: 1)."""
    max_retries: int = Field(4, ge=0)
    """More teacher requests for a wrong seed question while it has fewer than per_seed new problems (near-copies,
    unreadable items); the paper retries without limit. Round i, attempt a samples with seed + i * (max_retries + 1) + a."""
    rouge_threshold: float = Field(0.95, ge=0, le=1)
    """A new question whose ROUGE-L F1 with any question so far (seed or generated) exceeds this is dropped."""
    student_max_tokens: int = Field(1024, ge=1)
    """Longest student answer (greedy) when it is checked on the seed questions."""

    renamed: ClassVar[dict[str, str]] = {
        "method": "a stage of its own: llm2llm (method: llm2llm) or rejection_sample (method: rejection_sampling); "
                  "drop method:",
    }

    @field_validator("student_train")
    @classmethod
    def _train_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "model" in v:
            raise ValueError("model is not set here: the student is the model the `student` field names")
        try:
            student_train_config("student", v)
        except ValidationError as e:
            from ..train.config import TrainConfig

            problems = validation_problems(e, TrainConfig)
            raise ValueError("; ".join(f"{'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in problems)) from None
        return v


class LLM2LLM(TeacherStage):
    """Add teacher-written problems like the seed questions a student gets wrong, round after
    round (LLM2LLM); the input rows are all kept."""

    name = NAME
    version = "2"  # 2: augment's method llm2llm, as its own stage
    Config = LLM2LLMConfig
    config: LLM2LLMConfig
    model_refs = ("model", "student")

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if importlib.util.find_spec("trl") is None:
            raise StageError("llm2llm fine-tunes its student every round and needs TRL: pip install 'curate[train]'")

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        return run_rounds(table, ctx, self.config)


# -- the loop ----------------------------------------------------------------------------------
@dataclass
class Seed:
    """A seed question: what the student is asked, and what the teacher is shown."""

    query: Query  # row, prompt turns (the student's prompt), reference
    id: str
    question: str  # the prompt's non-system text
    key: str  # the answer key: the seed's solution + "#### reference"
    system: list[dict] = field(default_factory=list)  # the seed's system turns, carried into its new rows


def run_rounds(table: pa.Table, ctx: StageContext, c: LLM2LLMConfig) -> StageOutput:
    """Every input row, plus the problems the teacher wrote for the seed questions the student
    got wrong, round after round (see the module doc); ``added`` counts the new rows."""
    if "messages" not in table.column_names:
        raise StageError(f"{NAME} fine-tunes the student on the rows, so they must be SFT rows (a "
                         f"'messages' column ending in a reference solution); columns are {', '.join(table.column_names)}")
    seeds = find_seeds(table, c)
    teacher = ctx.model(c.model)
    if ctx.models is None or not hasattr(ctx.models, "spec") or c.student not in ctx.models:
        raise StageError(f"{NAME}: student '{c.student}' is not one of the run's models; name a transformers entry "
                         "of models: (its weights are fine-tuned every round)")
    from ..train.artifacts import resolve_base

    base = resolve_base(c.student, ctx.models, ctx.store, ctx.reporter)
    train = student_train_config(c.student, c.student_train)
    messages = table.column("messages").to_pylist()
    pool = QuestionPool([prompt_of(ms or []) for ms in messages])  # every input question, seed or not
    budget = teacher_budget(c)
    data = with_added_columns(table)
    answer_type = data.schema.field(c.answer_column).type
    if not (pa.types.is_string(answer_type) or pa.types.is_large_string(answer_type)):  # new rows hold answer text
        data = data.set_column(data.column_names.index(c.answer_column), c.answer_column,
                               pc.cast(data.column(c.answer_column), pa.string()))
    taken = row_ids(table)[1]
    cheapest = min(tokens(request(s.question, s.key, min(c.per_seed, MAX_ITEMS), [], c.system_prompt)) for s in seeds)
    temporary = ctx.store is None
    root = Path(tempfile.mkdtemp(prefix="curate-llm2llm-")) if temporary else ctx.store.area("models", "tmp")
    stats: dict[str, int | float] = {"seeds": len(seeds), "rounds": 0}
    totals: Counter = Counter()
    folders: set[Path] = set()
    try:
        for i in range(c.rounds):
            r = i + 1
            if not budget.plan([1], [cheapest])[0]:
                totals["budget_exhausted"] = 1
                break
            right, summary, folder = check_student(data, seeds, c, ctx, base, train, root)
            folders.add(folder)
            wrong = [s for s, ok in zip(seeds, right) if not ok]
            stats["rounds"] = r
            stats[f"student_accuracy:r{r}"] = 1 - len(wrong) / len(seeds)
            stats[f"wrong:r{r}"] = len(wrong)
            if summary.get("final_loss") is not None:
                stats[f"train_loss:r{r}"] = summary["final_loss"]
            totals["wrong"] += len(wrong)
            if not wrong:
                totals["stopped_all_right"] = 1
                ctx.reporter.log(f"{NAME} round {r}: the student answers all {len(seeds):,} seed questions "
                                 "right; later rounds would add nothing, so the loop stops")
                break
            round_counts: Counter = Counter()
            kept, exhausted = ask_teacher(wrong, i, teacher, pool, budget, c, ctx, round_counts)
            new = new_rows(data, wrong, kept, r, c, taken)
            data = pa.concat_tables([data, new])
            round_counts["generated"] = new.num_rows
            round_counts["seeds_short"] = sum(len(k) < c.per_seed for k in kept)
            totals.update(round_counts)
            for name in ("generated", "near_copies", "unparseable", "teacher_calls"):
                stats[f"{name}:r{r}"] = round_counts[name]
            ctx.reporter.log(
                f"{NAME} round {r}/{c.rounds}: the student gets {len(wrong):,} of {len(seeds):,} seed "
                f"questions wrong; {round_counts['teacher_calls']:,} requests to '{c.model}' gave {new.num_rows:,} new "
                f"problems ({round_counts['near_copies']:,} near-copies and {round_counts['unparseable']:,} unreadable "
                f"items dropped)" + ("; the teacher budget is spent, so the loop stops" if exhausted else ""))
            if exhausted:
                totals["budget_exhausted"] = 1
                break
        if not temporary:  # finished: a rerun of this step is a new run; a killed one resumes from these
            for folder in folders:
                shutil.rmtree(folder, ignore_errors=True)
    finally:
        if temporary:
            shutil.rmtree(root, ignore_errors=True)

    added = data.num_rows - table.num_rows
    for name in ("wrong", "generated", "near_copies", "unparseable", "surplus", "seeds_short", "teacher_calls",
                 "tokens", "budget_exhausted", "stopped_all_right"):
        stats[name] = totals[name]
    ctx.reporter.log(f"{NAME}: {stats['rounds']} rounds over {len(seeds):,} seed questions; added {added:,} "
                     f"rows from {totals['teacher_calls']:,} teacher requests")
    return StageOutput(data, no_rejects(table), added).with_stats(stats)


def find_seeds(table: pa.Table, c: LLM2LLMConfig) -> list[Seed]:
    ids = row_ids(table)[0]
    messages = table.column("messages").to_pylist()
    seeds = []
    for q in find_queries(table, c, NAME):
        solution = response_of(messages[q.row] or []).strip()
        seeds.append(Seed(q, ids[q.row], "\n\n".join(m["content"] or "" for m in q.messages if m["role"] != "system"),
                          f"{solution}\n#### {q.reference}" if solution else f"#### {q.reference}",
                          [m for m in q.messages if m["role"] == "system"]))
    return seeds


def check_student(data: pa.Table, seeds: list[Seed], c: LLM2LLMConfig, ctx: StageContext, base: Any,
                  train: TrainConfig, root: Path) -> tuple[list[bool], dict, Path]:
    """Whether the student fine-tuned from ``base`` on ``data`` answers each seed question
    right; its training summary; the round's folder (see the module doc)."""
    content = hash_parts(data.column("messages").to_pylist())
    folder = root / f"llm2llm-{hash_parts(ROUND_VERSION, content, base.identity, train.fingerprint_config())}"
    asked = [(s.query.messages, s.query.reference) for s in seeds]
    verdicts = folder / f"verdicts-{hash_parts(ROUND_VERSION, asked, c.kind, c.student_max_tokens)}.json"
    if verdicts.is_file():
        saved = json.loads(verdicts.read_text())
        ctx.reporter.log(f"{NAME}: reusing the verdicts of a student trained on the same {data.num_rows:,} "
                         f"rows ({folder.name})")
        return saved["right"], saved["train"], folder
    trained = folder / "trained"
    if not (trained / "summary.json").is_file():
        staged = folder / "staged"
        shutil.rmtree(staged, ignore_errors=True)
        summary = train_student(data, train, base, folder / "work", staged, ctx.reporter)
        (staged / "summary.json").write_text(json.dumps(summary))
        shutil.rmtree(trained, ignore_errors=True)
        staged.rename(trained)
    summary = json.loads((trained / "summary.json").read_text())
    answers = student_answers(trained / "model", [s.query.messages for s in seeds], c, ctx)
    graded = ctx.map_batches(partial(verify_batch, c.kind), [(y, s.query.reference) for y, s in zip(answers, seeds)],
                             BATCH_ROWS, "grading the student's answers")
    right = [verdict == "true" for verdict, _, _ in graded]
    tmp = verdicts.with_suffix(".tmp")
    tmp.write_text(json.dumps({"right": right, "train": summary, "answers": answers,
                               "verdicts": [v for v, _, _ in graded]}))
    tmp.replace(verdicts)  # written whole, then the weights go
    shutil.rmtree(folder / "work", ignore_errors=True)
    shutil.rmtree(trained, ignore_errors=True)
    return right, summary, folder


def train_student(data: pa.Table, train: TrainConfig, base: BaseWeights, work: Path, out: Path,
                  reporter: Reporter | None) -> dict:
    """One round's fine-tuning, always from ``base``; ``out / "model"`` is the student."""
    from ..train.sft import run_sft

    work.mkdir(parents=True, exist_ok=True)
    return run_sft(data, train, base, work, out, reporter)


def student_answers(model: Path, prompts: list[list[dict]], c: LLM2LLMConfig, ctx: StageContext) -> list[str]:
    """The fine-tuned student's greedy answers, loaded with the student's own settings
    (device, dtype, batch sizes); not cached: the weights are deleted after this."""
    spec = ctx.models.spec(c.student).model_copy(update={"model": str(model), "train_tiny": None, "revision": None})
    with ctx.models.borrowed(f"{c.student} (llm2llm round)", spec, cache=False) as student:
        out = student.generate(prompts, Sampling(n=1, temperature=0.0, max_tokens=c.student_max_tokens),
                               track=ctx.reporter.track, description="answering the seed questions")
    return [ys[0] for ys in out]


def tokens(chat: list[dict]) -> int:
    return sum(approx_tokens(m["content"]) for m in chat)


def ask_teacher(wrong: list[Seed], i: int, teacher: Any, pool: QuestionPool, budget: Budget, c: LLM2LLMConfig,
                ctx: StageContext, counts: Counter) -> tuple[list[list[Item]], bool]:
    """Up to ``per_seed`` new problems per wrong seed (attempt by attempt, one batched call
    each, near-copies dropped in seed order); and whether the budget ran out."""
    kept: list[list[Item]] = [[] for _ in wrong]
    for attempt in range(c.max_retries + 1):
        todo = [j for j in range(len(wrong)) if len(kept[j]) < c.per_seed]
        if not todo:
            break
        n = min(c.per_seed + attempt, MAX_ITEMS)
        chats = [request(wrong[j].question, wrong[j].key, n, kept[j] if attempt % 2 else [], c.system_prompt)
                 for j in todo]
        costs = [tokens(chat) for chat in chats]
        funded = [k for k, g in enumerate(budget.plan([1] * len(todo), costs)) if g]
        if funded:
            sampling = Sampling(n=1, temperature=c.teacher("temperature"), top_p=c.teacher("top_p"),
                                max_tokens=c.teacher("max_tokens"), seed=c.seed + i * (c.max_retries + 1) + attempt)
            outs = teacher.generate([chats[k] for k in funded], sampling, track=ctx.reporter.track,
                                    description=f"round {i + 1}, attempt {attempt + 1}: new problems for "
                                                f"{len(funded):,} seed questions")
            spent = 0
            for k, ys in zip(funded, outs):
                j, response = todo[k], ys[0]
                spent += costs[k] + approx_tokens(response)
                items, bad = parse_items(response)
                counts["unparseable"] += bad
                for item in items:
                    if len(kept[j]) >= c.per_seed:
                        counts["surplus"] += 1
                    elif pool.near_copy(item.question, c.rouge_threshold):
                        counts["near_copies"] += 1
                    else:
                        pool.add(item.question)
                        kept[j].append(item)
            budget.spend(len(funded), spent)
            counts["teacher_calls"] += len(funded)
            counts["tokens"] += spent
        if len(funded) < len(todo):
            return kept, True
    return kept, False


def new_rows(data: pa.Table, wrong: list[Seed], kept: list[list[Item]], r: int, c: LLM2LLMConfig,
             taken: set[str]) -> pa.Table:
    """The kept problems as SFT rows in ``data``'s schema (the seed's category copied)."""
    rows, values = [], {k: [] for k in ("id", "messages", c.answer_column, "prompt", "generated_by", "round", "seed_id")}
    for seed, items in zip(wrong, kept):
        k = 0
        for item in items:
            new_id, k = fresh_id(f"{seed.id}#llm2llm{r}.", k + 1, taken)
            rows.append(seed.query.row)
            values["id"].append(new_id)
            values["messages"].append([*seed.system, {"role": "user", "content": item.question},
                                       {"role": "assistant", "content": item.response()}])
            values[c.answer_column].append(item.answer)
            values["prompt"].append(item.question)
            values["generated_by"].append(c.model)
            values["round"].append(r)
            values["seed_id"].append(seed.id)
    return build_rows(data, rows, values, {"category"})
