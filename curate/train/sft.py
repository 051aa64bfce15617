"""Supervised fine-tuning of a causal LM on rows of a dataset version, through TRL.

It reads top to bottom: load the base model -> format the rows -> train (checkpointing) ->
save -> report.

* **Format.** SFT rows (``messages``) become TRL prompt-completion conversations: the turns
  before the last assistant reply are the prompt, that reply is the completion, and with
  ``assistant_only_loss`` (the default) only the completion's tokens carry loss -- this works
  with any chat template, where TRL's own ``assistant_only_loss`` needs ``{% generation %}``
  markers most templates lack. Without it, whole conversations are trained on. Pretraining
  rows (``text``) are language-modelled as they are. A tokenizer without a chat template
  gets ChatML's (``<|im_start|>role ... <|im_end|>``), saved with the model.
* **Train.** TRL's ``SFTTrainer`` (LoRA through PEFT, or every weight), the loss logged at
  every step, a checkpoint every ``save_steps`` into the work folder. When the work folder
  holds a checkpoint -- a training of the same data, model and settings was interrupted --
  training resumes from the last one (weights, optimizer, scheduler, RNG and data order).
* **Save.** ``model/`` holds weights any tool loads (LoRA adapters merged in), ``adapter/``
  the LoRA adapter on its own; ``log.jsonl`` the loss per step.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import UsageError
from ..records import shape_of
from ..stage import Reporter
from .config import TrainConfig

CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


class TrainError(UsageError):
    """Training could not start or failed: a missing dependency, unusable rows, a model that
    cannot be loaded."""

    exit_code = 1


@dataclass(frozen=True)
class BaseWeights:
    """The model a training starts from: its local folder and content identity."""

    path: Path
    identity: str
    label: str  # what the recipe or user called it


def training_rows(table: pa.Table, assistant_only_loss: bool) -> tuple[list[dict], dict[str, int]]:
    """TRL dataset rows for ``table`` and what formatting counted (rows with no assistant
    reply cannot be trained on with assistant-only loss and are counted, not trained)."""
    shape = shape_of(table)
    counts = {"rows": len(table), "no_assistant_reply": 0, "multi_turn": 0}
    if shape == "text":
        return [{"text": t} for t in table.column("text").to_pylist() if t], counts
    out = []
    for messages in table.column("messages").to_pylist():
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            counts["no_assistant_reply"] += 1
            continue
        if sum(m["role"] == "assistant" for m in msgs) > 1:
            counts["multi_turn"] += 1
        if assistant_only_loss:
            out.append({"prompt": msgs[:last], "completion": [msgs[last]]})
        else:
            out.append({"messages": msgs[: last + 1]})
    return out, counts


# What a checkpoint holds once the Trainer has finished writing it (it writes in place, so a
# training killed while saving leaves a folder without some of these).
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.pt", "scheduler.pt", "rng_state.pth")
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin", "model.safetensors.index.json")


def last_checkpoint(work: Path) -> Path | None:
    """The newest complete checkpoint in ``work``; half-written ones (a kill during a save)
    are deleted, so the Trainer's rotation never counts them."""
    found = sorted((int(m.group(1)), p) for p in work.glob("checkpoint-*") if (m := CHECKPOINT_RE.match(p.name)) and p.is_dir())
    complete = None
    for _, path in found:
        if all((path / f).is_file() for f in CHECKPOINT_FILES) and any((path / f).is_file() for f in WEIGHT_FILES):
            complete = path
        else:
            shutil.rmtree(path, ignore_errors=True)
    return complete


def run_sft(table: pa.Table, config: TrainConfig, base: BaseWeights, work: Path, out: Path, reporter: Reporter | None = None) -> dict:
    """Fine-tune ``base`` on ``table`` with ``config``; checkpoints go to ``work`` (resumed
    from when they exist), the result to ``out``: ``model/``, ``adapter/`` (LoRA),
    ``log.jsonl``. Returns the training summary."""
    with _quiet_libraries():
        return _run_sft(table, config, base, work, out, reporter)


@contextlib.contextmanager
def _quiet_libraries() -> Iterator[None]:
    """transformers / datasets / accelerate at errors only and without their own progress bars
    (the reporter draws the one bar that matters) while training -- and as they were after:
    these settings are process-wide, and a notebook's own logging is not ours to change."""
    try:
        import datasets
        from transformers.utils import logging as hf_logging
    except ImportError:  # run_sft says what to install
        yield
        return
    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    datasets_bars = datasets.is_progress_bar_enabled()
    accelerate = logging.getLogger("accelerate")
    level = accelerate.level
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    datasets.disable_progress_bars()
    accelerate.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
        if datasets_bars:
            datasets.enable_progress_bars()
        accelerate.setLevel(level)


def _run_sft(table: pa.Table, config: TrainConfig, base: BaseWeights, work: Path, out: Path, reporter: Reporter | None) -> dict:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
        from trl import SFTConfig, SFTTrainer
    except ImportError as e:
        raise TrainError(f"fine-tuning needs TRL and PEFT: pip install 'curate[train]' ({e})") from None
    if config.method == "lora":
        try:
            from peft import LoraConfig
        except ImportError as e:
            raise TrainError(f"method: lora needs PEFT: pip install 'curate[train]' ({e})") from None
    from datasets import Dataset

    rows, counts = training_rows(table, config.assistant_only_loss)
    if not rows:
        raise TrainError(f"nothing to train on: {counts['rows']} rows, {counts['no_assistant_reply']} without an "
                         "assistant reply (SFT rows need a 'messages' list ending in an assistant turn)")
    rows = _rows_the_steps_reach(rows, config, counts)
    cuda = torch.cuda.is_available()
    dtype = _dtype(config.dtype, cuda, torch)
    tok = AutoTokenizer.from_pretrained(base.path)
    if not getattr(tok, "chat_template", None) and "text" not in rows[0]:
        tok.chat_template = CHATML_TEMPLATE
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=dtype)
    peft_config = None
    if config.method == "lora":
        peft_config = LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                                 target_modules=config.lora_target_modules, task_type="CAUSAL_LM")
    args = SFTConfig(
        output_dir=str(work), seed=config.seed, data_seed=config.seed,
        num_train_epochs=config.epochs, max_steps=config.max_steps or -1,
        learning_rate=config.learning_rate, lr_scheduler_type=config.lr_scheduler, warmup_steps=config.warmup_ratio,
        per_device_train_batch_size=config.batch_size, gradient_accumulation_steps=config.gradient_accumulation,
        weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
        max_length=config.max_length, packing=config.packing, completion_only_loss=config.assistant_only_loss,
        **_checkpointing(SFTConfig, config.gradient_checkpointing),
        bf16=dtype is torch.bfloat16, fp16=dtype is torch.float16, use_cpu=not cuda,
        logging_steps=1, save_strategy="steps", save_steps=config.save_steps, save_total_limit=2,
        report_to="none", disable_tqdm=True, dataloader_num_workers=0,
    )
    resume = last_checkpoint(work)
    log = getattr(reporter, "log", None)
    if resume is not None and log:
        log(f"resuming the training from {resume.name} ({work})")
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config)
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    counts["truncated"] = sum(n >= config.max_length for n in lengths)  # cut at max_length (TRL keeps the head)
    counts["dropped_no_loss_tokens"] = len(rows) - len(lengths)  # TRL drops rows whose reply was cut away entirely
    total = trainer.args.max_steps if trainer.args.max_steps > 0 else None
    bar = _step_bar(reporter, total or _steps_per_run(trainer, config), f"fine-tuning {base.label} ({len(rows):,} rows)",
                   TrainerCallback)
    trainer.remove_callback(PrinterCallback)  # the loss goes to log.jsonl, not stdout
    trainer.add_callback(bar)
    start = time.perf_counter()
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    finally:
        bar.close()
    seconds = time.perf_counter() - start

    out.mkdir(parents=True, exist_ok=True)
    trained = trainer.model
    trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    if config.method == "lora":
        trained.save_pretrained(out / "adapter")
        trained = trained.merge_and_unload()
    trained.save_pretrained(out / "model")
    tok.save_pretrained(out / "model")
    history = [h for h in trainer.state.log_history if "loss" in h]
    with open(out / "log.jsonl", "w") as f:
        for h in history:
            f.write(json.dumps({k: h[k] for k in ("step", "epoch", "loss", "learning_rate", "grad_norm", "num_tokens") if k in h})
                    + "\n")
    losses = [float(h["loss"]) for h in history]
    head = losses[: max(1, len(losses) // 10)]
    tail = losses[-max(1, len(losses) // 10):]
    return {
        **counts, "trained_rows": len(rows), "steps": trainer.state.global_step, "epochs": round(trainer.state.epoch or 0, 3),
        "first_loss": round(sum(head) / len(head), 4) if losses else None,
        "final_loss": round(sum(tail) / len(tail), 4) if losses else None,
        "resumed_from": resume.name if resume is not None else None, "seconds": round(seconds, 1),
        "device": "cuda" if cuda else "cpu", "dtype": str(dtype).removeprefix("torch."),
        "trainable_parameters": trainable,
    }


def _rows_the_steps_reach(rows: list[dict], config: TrainConfig, counts: dict[str, int]) -> list[dict]:
    """With ``max_steps``, a training sees at most steps x effective batch rows. When the data
    holds many more (a raw pool trained at the budget of a curated set), a seeded random
    sample of that many (+5% for rows truncation empties) is what the trainer's own random
    sampler would draw, without tokenizing the rest (54 s for CHAMP's 19,440 rows on 2 cores)."""
    import math
    import os
    import random

    if not config.max_steps or config.packing:
        return rows
    world = int(os.environ.get("WORLD_SIZE", "1"))
    needed = math.ceil(config.max_steps * config.batch_size * config.gradient_accumulation * world * 1.05)
    if len(rows) <= needed:
        return rows
    counts["sampled_for_max_steps"] = needed
    return random.Random(config.seed).sample(rows, needed)


def _checkpointing(cls: type, on: bool) -> dict[str, bool]:
    """TRL turns activation checkpointing on by default (a GPU memory saving that costs a
    third more time); ours is off unless asked. transformers 5 renamed the setting."""
    import inspect

    names = inspect.signature(cls).parameters
    return {"activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing": on}


def _dtype(name: str, cuda: bool, torch: Any) -> Any:
    if name == "auto":
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    return getattr(torch, name)


def _steps_per_run(trainer: Any, config: TrainConfig) -> int:
    import math

    per_epoch = math.ceil(len(trainer.get_train_dataloader()) / config.gradient_accumulation)
    return max(1, math.ceil(per_epoch * config.epochs))


def _step_bar(reporter: Reporter | None, total: int, description: str, base: type) -> Any:
    """A ``TrainerCallback`` that moves the reporter's progress bar one step per optimizer
    step (the reporter draws bars over an iterable; the trainer pulls from it)."""

    class StepBar(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            self.it = iter(reporter.track(range(total), total=total, description=description)) if reporter else None
            self.done = 0

        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001 - the Trainer's signature
            while self.it is not None and self.done < min(state.global_step, total):
                next(self.it, None)
                self.done += 1

        def close(self) -> None:
            if self.it is not None:
                for _ in self.it:
                    pass
                self.it = None

    return StepBar()
