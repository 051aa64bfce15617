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
* ``llm2llm`` -- LLM2LLM (Lee et al., 2024): not in this module yet.

Columns added: ``generated_by`` (the teacher's name), ``round``, ``seed_id`` (the id of the
input row whose prompt a new row answers) and ``verified`` ("true" for new rows); all null
on input rows, except that an input column of one of these names keeps its values.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, model_validator

from ..errors import StageError
from ..stage import Stage, StageConfig, StageContext, StageOutput
from . import dart
from .answers import MATH_VERIFY_MISSING, AnswerKind

# Fields only ``method: rejection_sampling`` reads (a recipe that sets one for another
# method is told so).
REJECTION_SAMPLING_FIELDS = ("targets", "per_prompt", "max_per_prompt", "max_trials", "samples_per_round",
                             "difficulty_column", "bins")


class AugmentConfig(StageConfig):
    method: Literal["rejection_sampling", "llm2llm"] = "rejection_sampling"
    """How new rows are made: rejection_sampling (DART-Math's DARS) or llm2llm."""

    # -- every method ---------------------------------------------------------------------
    model: str
    """The run's model that writes the new responses (the teacher; DART: DeepSeekMath-7B-RL)."""
    answer_column: str = "answer"
    """The column holding each prompt's reference answer; prompts without one are not sampled."""
    kind: AnswerKind = "math"
    """How a response's answer is checked against the reference: math, number or text (see verify)."""
    group_by: str | None = None
    """The column naming the prompt a row answers (e.g. problem_id); None = the prompt text."""
    system_prompt: str | None = None
    """A system turn given to the teacher before each prompt (replacing the prompt's own); kept in the new rows."""
    temperature: float = Field(1.6, ge=0)
    """Sampling temperature (DART: 1.6)."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus sampling (DART: 0.95)."""
    max_tokens: int = Field(2048, ge=1)
    """Longest response, in the teacher's tokens (DART: 2048)."""
    max_calls: int | None = Field(None, ge=1)
    """Budget: the most teacher samples (responses) this step requests, answered from the cache or not; None = no limit."""
    max_tokens_budget: int | None = Field(None, ge=1)
    """Budget: the most approximate tokens (approx_tokens of prompt + response, per sample) this step spends; None = no limit."""
    seed: int = 0
    """Sampling seed; round r samples with seed + r."""

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

    @model_validator(mode="after")
    def _consistent(self) -> AugmentConfig:
        if self.method != "rejection_sampling":
            for f in REJECTION_SAMPLING_FIELDS:
                if f in self.model_fields_set:
                    raise ValueError(f"{f} is only used with method: rejection_sampling")
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
    """Add teacher-written, answer-verified responses as new SFT rows (DART-Math's DARS);
    the input rows are all kept."""

    name = "augment"
    version = "1"
    Config = AugmentConfig
    config: AugmentConfig
    model_fields = ("model",)

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)  # looked up, not imported: SymPy is slow to import

    def dependencies(self, store: Any) -> list[str]:
        """math-verify's version when it grades: a new one can change which responses are kept."""
        if self.config.kind != "math":
            return []
        return [f"math-verify=={importlib.metadata.version('math-verify')}"]

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        if c.method == "rejection_sampling":
            return dart.rejection_sample(table, ctx, c)
        # Placeholder until LLM2LLM lands in this stage.
        raise StageError(f"augment: method '{c.method}' is not in this module yet; use method: rejection_sampling")
