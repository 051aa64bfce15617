"""The ``train:`` section of a recipe: how the bundled fine-tuning step trains a model on a
dataset version.

    train:
      model: Qwen/Qwen2.5-1.5B       # a name from models:, a local folder, or a cached hub id
      method: lora                   # or full
      epochs: 3
      learning_rate: 2.0e-5
      baselines: [source]            # also train on the raw pool, for the comparison table

Defaults follow "Unveiling the Secret Recipe: A Guide For Supervised Fine-Tuning Small LLMs"
(Pareja et al., ICLR 2025) where it makes a claim, and TRL's ``SFTConfig`` where it does not:

* a low learning rate (2e-5) with a large effective batch (8 x 16 = 128 sequences; the paper
  goes to ~4k, which a curated set of a few thousand rows cannot fill) generalises better
  than TULU's smaller batches at higher rates;
* no warm-up and a constant schedule: the paper finds neither warm-up nor cosine decay
  helps, so the simpler schedule is the default;
* 3 epochs, a 2,048-token window, loss on the assistant's tokens only (TRL);
* LoRA r = 16, alpha = 32, dropout 0.05 over every linear layer (PEFT's "all-linear"), so a
  laptop-sized GPU fine-tunes a 7B model; ``method: full`` trains every weight.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TrainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True, protected_namespaces=())

    model: str
    """The base model: a name from the recipe's ``models:`` section (transformers backend), a
    local Hugging Face folder, or a hub id already in the local cache."""
    method: Literal["lora", "full"] = "lora"
    """``lora``: train low-rank adapters (PEFT) and also write the merged weights; ``full``: every weight."""
    epochs: float = Field(3.0, gt=0)
    """Passes over the dataset (ignored when ``max_steps`` is set)."""
    max_steps: int | None = Field(None, ge=1)
    """Optimizer steps; fixes the compute, e.g. to compare datasets of different sizes at the same budget."""
    learning_rate: float = Field(2e-5, gt=0)
    lr_scheduler: Literal["constant", "constant_with_warmup", "linear", "cosine"] = "constant"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    """Fraction of the steps spent warming the learning rate up from 0."""
    batch_size: int = Field(8, ge=1)
    """Sequences per device per forward pass."""
    gradient_accumulation: int = Field(16, ge=1)
    """Forward passes per optimizer step: the effective batch is batch_size x this x devices."""
    max_length: int = Field(2048, ge=16)
    """Tokens per training sequence; longer conversations are truncated (the training summary counts them)."""
    packing: bool = False
    """Pack several short conversations into one sequence (TRL's best-fit-decreasing packing)."""
    assistant_only_loss: bool = True
    """Loss on the assistant's reply only, not on the prompt; false trains on every token."""
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    lora_r: int = Field(16, ge=1)
    lora_alpha: int = Field(32, ge=1)
    lora_dropout: float = Field(0.05, ge=0, lt=1)
    lora_target_modules: str | list[str] = "all-linear"
    """Which layers get adapters: PEFT's ``all-linear``, or module names (``[q_proj, v_proj]``)."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """``auto``: bfloat16 on a GPU that supports it, float32 on CPU."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less GPU memory, about 30% slower."""
    save_steps: int = Field(50, ge=1)
    """Write a checkpoint every this many steps; an interrupted training resumes from the last one."""
    seed: int = 0
    baselines: list[str] = Field(default_factory=list)
    """Other data to fine-tune the same way, for the comparison table: a step of this recipe
    (``source`` is the raw pool) or a dataset reference (``math_sft@1``)."""

    @model_validator(mode="after")
    def _lora_only(self) -> TrainConfig:
        if self.method == "full" and "lora_r" in self.model_fields_set:
            raise ValueError("lora_r is a LoRA setting; with method: full every weight is trained")
        return self

    def fingerprint_config(self) -> dict:
        """The settings that change the trained weights (how often checkpoints are written and
        which baselines sit beside it do not)."""
        return self.model_dump(mode="json", exclude_defaults=True, exclude={"save_steps", "baselines", "model"})


class EvalConfig(BaseModel):
    """The ``eval:`` section of a recipe: the held-out set every trained model (and the base
    model) answers, graded by the verify stage's answer check."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    data: str | dict
    """Held-out questions with reference answers: a local file (``prompt``/``problem``/
    ``question`` + ``answer``, optionally a reference ``solution`` for the held-out loss), a
    dataset reference or a source mapping. Paths are relative to the recipe."""
    kind: Literal["math", "number", "text"] = "math"
    """How answers compare (as in verify)."""
    max_tokens: int = Field(512, ge=1)
    """Tokens generated per answer (greedy)."""
    system_prompt: str | None = None
    instruction: str | None = None
    """Appended to each question, e.g. "Put the final answer in \\\\boxed{}."."""
    base: bool = True
    """Also evaluate the base model, untrained, as the table's first row."""
