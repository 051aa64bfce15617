"""Augment: add teacher-written training rows to the input.

A stage that adds and never drops: every input row is kept unchanged, and each new row is
counted as ``added`` (the runner's ``rows_in + added == kept + rejected``). ``method`` picks
how the new rows are made:

* ``rejection_sampling`` -- DART-Math's Difficulty-Aware Rejection Sampling (DARS; Tong et
  al., NeurIPS 2024): sample the teacher ``model`` on every prompt with a reference answer
  until the prompt has its target number of verified-correct responses (``uniform``, or
  ``prop2diff`` from the ``difficulty`` column) or reaches its trial cap; keep only the
  verified responses. The loop, its defaults and what differs from DART's code are in
  ``curate.stages.dart``.
* ``llm2llm`` -- LLM2LLM (Lee et al., ACL Findings 2024): in each of ``rounds`` rounds,
  fine-tune the ``student`` from its base weights on the data so far, have it answer every
  input (seed) question, and ask the teacher ``model`` for ``per_seed`` new, similar
  problems with worked solutions for each seed question it gets wrong; new questions that
  are near-copies (ROUGE-L F1 > ``rouge_threshold``) of any question so far are dropped.
  The loop, its defaults and what differs from the paper's code are in
  ``curate.stages.llm2llm``.

Columns added: ``generated_by`` (the teacher's name), ``round``, ``seed_id`` (the id of the
input row a new row was made from) and ``verified`` ("true" for rejection sampling's
verified responses; null for LLM2LLM's rows, whose teacher answers are not checked); all
null on input rows, except that an input column of one of these names keeps its values.

Examples (a recipe's steps)::

    - augment:                     # DARS: 40 verified teacher responses per prompt
        model: teacher
        per_prompt: 40

    - augment:                     # LLM2LLM: 3 rounds, 1 new problem per missed seed question
        method: llm2llm
        model: teacher             # writes the new problems (the paper: gpt-3.5-turbo)
        student: student           # a transformers model of models:, fine-tuned each round
        student_train: {method: full, epochs: 3, learning_rate: 2.0e-5}
        rounds: 3
        max_calls: 2000            # teacher requests; the student's answers are not counted
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, ValidationError, field_validator, model_validator

from ..errors import StageError
from ..stage import Stage, StageConfig, StageContext, StageOutput, validation_problems
from ..train.config import TrainConfig
from . import dart, llm2llm
from ..algorithms.answers import MATH_VERIFY_MISSING, AnswerKind

# Fields only one method reads (a recipe that sets one for the other method is told so).
METHOD_FIELDS = {
    "rejection_sampling": ("targets", "per_prompt", "max_per_prompt", "max_trials", "samples_per_round",
                           "difficulty_column", "bins"),
    "llm2llm": ("student", "student_train", "rounds", "per_seed", "max_retries", "rouge_threshold",
                "student_max_tokens"),
}
REJECTION_SAMPLING_FIELDS = METHOD_FIELDS["rejection_sampling"]
LLM2LLM_FIELDS = METHOD_FIELDS["llm2llm"]
# The teacher's sampling where temperature / top_p / max_tokens are not set: each method's paper.
TEACHER_SAMPLING = {"rejection_sampling": dart.TEACHER_SAMPLING, "llm2llm": llm2llm.TEACHER_SAMPLING}


class AugmentConfig(StageConfig):
    method: Literal["rejection_sampling", "llm2llm"] = "rejection_sampling"
    """How new rows are made: rejection_sampling (DART-Math's DARS) or llm2llm."""

    # -- every method ---------------------------------------------------------------------
    model: str
    """The run's model that writes the new rows (the teacher; DART: DeepSeekMath-7B-RL; LLM2LLM: gpt-3.5-turbo)."""
    answer_column: str = "answer"
    """The column holding each prompt's reference answer; prompts without one are not sampled (nor, in llm2llm, asked)."""
    kind: AnswerKind = "math"
    """How a response's answer is checked against the reference: math, number or text (see verify)."""
    group_by: str | None = None
    """The column naming the prompt a row answers (e.g. problem_id); None = the prompt text."""
    system_prompt: str | None = None
    """The teacher's system turn. rejection_sampling: given before each prompt (replacing the prompt's own) and kept
    in the new rows; llm2llm: replaces LLM2LLM's problem-writing instructions (None = those, adapted to math)."""
    temperature: float | None = Field(None, ge=0)
    """Teacher sampling temperature; None = the method's default (DART: 1.6; LLM2LLM: 1.0)."""
    top_p: float | None = Field(None, gt=0, le=1)
    """Teacher nucleus sampling; None = the method's default (DART: 0.95; LLM2LLM: 1.0)."""
    max_tokens: int | None = Field(None, ge=1)
    """Longest teacher response, in its tokens; None = the method's default (DART: 2048; LLM2LLM: 2149)."""
    max_calls: int | None = Field(None, ge=1)
    """Budget: the most teacher samples (responses) this step requests, answered from the cache or not; None = no
    limit. llm2llm's student answers are not counted."""
    max_tokens_budget: int | None = Field(None, ge=1)
    """Budget: the most approximate tokens (approx_tokens of prompt + response, per sample) the teacher spends; None =
    no limit."""
    seed: int = 0
    """Sampling seed; rejection_sampling's round r samples with seed + r, llm2llm's round i, attempt a with
    seed + i * (max_retries + 1) + a."""

    # -- method: rejection_sampling (DART-Math's DARS; see curate.stages.dart) ---------------
    targets: Literal["uniform", "prop2diff"] = "uniform"
    """rejection_sampling: correct responses wanted per prompt: k_u each (uniform) or proportional to difficulty (prop2diff)."""
    per_prompt: int = Field(40, ge=1)
    """rejection_sampling, targets uniform: k_u, correct responses per prompt (DART README: 40)."""
    max_per_prompt: int | None = Field(None, ge=1)
    """rejection_sampling, targets prop2diff: k_p, the hardest prompt's target (paper: ~192; no code default, so required)."""
    max_trials: int = Field(2048, ge=1)
    """rejection_sampling: the most samples drawn for one prompt (DART's synth-onpolicy.sh: 2048; its VRT baseline: 52)."""
    samples_per_round: int = Field(8, ge=1)
    """rejection_sampling: samples requested per unfinished prompt in each round (one batched call per round)."""
    difficulty_column: str = "difficulty"
    """rejection_sampling: the column with each prompt's difficulty in [0, 1] (the difficulty stage); needed by prop2diff."""
    bins: int = Field(5, ge=1, le=100)
    """rejection_sampling: equal-width difficulty bins over [0, 1] for the trials / yield report."""

    # -- method: llm2llm (LLM2LLM; see curate.stages.llm2llm) --------------------------------
    student: str | None = None
    """llm2llm (required): the run's model fine-tuned from its base weights each round (a transformers entry of
    models:); the seed questions it gets wrong go to the teacher."""
    student_train: dict[str, Any] = Field(default_factory=dict)
    """llm2llm: how the student is fine-tuned each round: fields of the train: section (curate.train.TrainConfig)
    except model, over LLM2LLM's lr_scheduler cosine, warmup_ratio 0.03 and max_length 1024 (the rest: TrainConfig's
    defaults, e.g. method lora; the paper trains every weight, method: full)."""
    rounds: int = Field(9, ge=1)
    """llm2llm: train / evaluate / augment rounds. The paper's 10 steps train 10 times and augment after the first 9;
    the recipe's train: section is the 10th training."""
    per_seed: int = Field(1, ge=1)
    """llm2llm: new problems kept per wrong seed question per round (the paper's instructions_per_seed_task: 1)."""
    max_retries: int = Field(4, ge=0)
    """llm2llm: more teacher requests for a wrong seed question while it has fewer than per_seed new problems (near-
    copies, unreadable items); the paper retries without limit."""
    rouge_threshold: float = Field(0.95, ge=0, le=1)
    """llm2llm: a new question whose ROUGE-L F1 with any question so far (seed or generated) exceeds this is dropped."""
    student_max_tokens: int = Field(1024, ge=1)
    """llm2llm: longest student answer (greedy) when it is checked on the seed questions."""

    @field_validator("student_train")
    @classmethod
    def _train_settings(cls, v: dict[str, Any]) -> dict[str, Any]:
        if "model" in v:
            raise ValueError("model is not set here: the student is the model the `student` field names")
        try:
            llm2llm.student_train_config("student", v)
        except ValidationError as e:
            problems = validation_problems(e, TrainConfig)
            raise ValueError("; ".join(f"{'.'.join(str(p) for p in loc)}: {msg}" for loc, msg in problems)) from None
        return v

    def teacher(self, name: Literal["temperature", "top_p", "max_tokens"]) -> Any:
        """The teacher's sampling setting ``name``: as set, else the method's default."""
        value = getattr(self, name)
        return TEACHER_SAMPLING[self.method][name] if value is None else value

    @model_validator(mode="after")
    def _consistent(self) -> AugmentConfig:
        for method, fields in METHOD_FIELDS.items():
            if method != self.method:
                for f in fields:
                    if f in self.model_fields_set:
                        raise ValueError(f"{f} is only used with method: {method}")
        if self.method == "llm2llm":
            if self.student is None:
                raise ValueError("method: llm2llm needs student: the run's model fine-tuned each round "
                                 "(a transformers entry of models:)")
            return self
        if self.targets == "prop2diff" and self.max_per_prompt is None:
            raise ValueError("targets: prop2diff needs max_per_prompt (k_p, the hardest prompt's target; "
                             "the paper gives no code default, ~192)")
        if self.targets == "prop2diff" and "per_prompt" in self.model_fields_set:
            raise ValueError("per_prompt is only used with targets: uniform (prop2diff reads max_per_prompt)")
        if self.targets == "uniform" and self.max_per_prompt is not None:
            raise ValueError("max_per_prompt is only used with targets: prop2diff (uniform reads per_prompt)")
        return self


class Augment(Stage):
    """Add teacher-written rows to the input: verified responses (DART-Math's DARS) or new
    problems for what a student gets wrong (LLM2LLM); the input rows are all kept."""

    name = "augment"
    version = "1"
    Config = AugmentConfig
    config: AugmentConfig
    model_refs = ("model", "student")

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)  # looked up, not imported: SymPy is slow to import
        if self.config.method == "llm2llm" and importlib.util.find_spec("trl") is None:
            raise StageError("augment with method: llm2llm fine-tunes its student every round and needs TRL: "
                             "pip install 'curate[train]'")

    def fingerprint_config(self) -> dict[str, Any]:
        """The non-default config, a sampling setting equal to its method's default left out
        (``temperature: 1.6`` under rejection_sampling is the same step as no temperature)."""
        out = super().fingerprint_config()
        for name, default in TEACHER_SAMPLING[self.config.method].items():
            if out.get(name) == default:
                del out[name]
        return out

    def dependencies(self, store: Any) -> list[str]:
        """math-verify's version when it grades: a new one can change which responses are kept."""
        if self.config.kind != "math":
            return []
        return [f"math-verify=={importlib.metadata.version('math-verify')}"]

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        if c.method == "rejection_sampling":
            return dart.rejection_sample(table, ctx, c)
        return llm2llm.augment(table, ctx, c)
