"""A tiny causal LM trained here, on local text, in a few CPU minutes.

No pretrained causal LM ships on PyPI, yet the demo and the tests need a real one: a
reference LM for perplexity, IFD and Min-K%, and a small model to serve and sample from.
``curate models train-tiny`` (and a recipe's ``train_tiny:``) makes one:

1. a byte-level BPE tokenizer trained with ``tokenizers`` on the data (no unknown
   characters, ever), with BOS/EOS/PAD and chat-role special tokens;
2. a chat template (``<|user|>\\n...<|end|>\\n<|assistant|>\\n...``) that SFT rows are
   rendered with for training, so the model learns where a response starts;
3. a Llama-architecture decoder (RoPE, RMSNorm, SwiGLU; tied embeddings) trained with
   AdamW on packed sequences, with linear warm-up and cosine decay;
4. saved in the standard Hugging Face layout (``config.json``, ``model.safetensors``,
   tokenizer files), so the ``transformers`` backend, ``AutoModelForCausalLM``, vLLM or
   any other tool loads it like any other model. ``curate_tiny.json`` beside it records
   the training settings, the data fingerprint and the final loss.

Training is seeded; the folder is written to a temp name and renamed into place, so a
killed run never leaves a half-written model that a later run would trust.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path
from typing import Any

from ..errors import SourceError, UsageError
from ..fingerprint import hash_parts
from .base import ModelError
from .cache import cache_root
from .config import TinyLMSpec

SPECIALS = ("<|pad|>", "<|bos|>", "<|eos|>", "<|end|>", "<|system|>", "<|user|>", "<|assistant|>")
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
MARKER = "curate_tiny.json"


def render_chat(messages: list[dict]) -> str:
    """``CHAT_TEMPLATE`` in Python, for training text (identical output, no jinja)."""
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages)


def ensure_tiny(spec: TinyLMSpec, target: Path | None = None, reporter: Any = None, store: Any = None,
                root: str | None = None) -> Path:
    """The folder of the tiny model ``spec`` describes: reused when it exists, trained now
    when it does not. Without ``target`` it lives in ``$CURATE_CACHE/models/tiny-<hash>``,
    the hash covering the settings and the data's content."""
    data_fp, load = _data(spec.data, store)
    if target is None:
        target = cache_root(root) / "models" / f"tiny-{hash_parts(spec.model_dump(mode='json', exclude={'data'}), data_fp)}"
    if (target / MARKER).is_file():
        return target.resolve()
    if target.exists() and any(target.iterdir()):
        raise UsageError(f"{target} exists and is not a tiny model curate trained; give an empty or new folder")
    log = getattr(reporter, "log", None)
    if log:
        log(f"training a tiny causal LM into {target} (once; reused afterwards)")
    train_tiny(load(), target, spec, reporter=reporter, data_fingerprint=data_fp)
    return target.resolve()


def _data(data: str | dict, store: Any) -> tuple[str, Any]:
    """(content fingerprint, loader of training texts) for a source mapping, a file or a
    dataset reference."""
    from ..sources.refs import resolve_data

    ref = resolve_data(data, store, "train_tiny data")
    return ref.fingerprint, lambda: _table_texts(ref.load())


def _table_texts(table: Any) -> list[str]:
    if "messages" in table.column_names:
        return [render_chat(m) for m in table.column("messages").to_pylist()]
    if "text" in table.column_names:
        return [t for t in table.column("text").to_pylist() if t]
    raise SourceError(f"train_tiny data has neither 'messages' nor 'text' (columns: {table.column_names})")


def train_tiny(texts: list[str], out: Path, spec: TinyLMSpec, reporter: Any = None, data_fingerprint: str = "") -> dict:
    """Train the tokenizer and the model on ``texts`` and save both under ``out``."""
    texts = [t for t in texts if t and t.strip()]
    if len(texts) < 2:
        raise SourceError(f"train_tiny needs some text to learn from; got {len(texts)} non-empty documents")
    try:
        import torch
        from transformers import LlamaConfig, LlamaForCausalLM
        from transformers.utils import logging as hf_logging
    except ImportError as e:
        raise ModelError(f"train-tiny needs torch and transformers: pip install 'curate[embed]' ({e})") from None
    hf_logging.disable_progress_bar()
    start = time.perf_counter()
    tok = _train_tokenizer(texts, spec.vocab_size)
    ids = _pack(tok, texts, spec.context_length)
    if len(ids) < 1:
        raise SourceError(f"train_tiny data is too short: under one sequence of {spec.context_length} tokens")

    torch.manual_seed(spec.seed)
    inter = max(32, int(round(spec.hidden_size * 8 / 3 / 32)) * 32)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=spec.hidden_size, intermediate_size=inter, num_hidden_layers=spec.layers,
        num_attention_heads=spec.heads, num_key_value_heads=spec.heads, max_position_embeddings=spec.context_length,
        rms_norm_eps=1e-5, tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(config)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.9, 0.95), weight_decay=0.1)
    warmup = max(1, spec.steps // 20)

    def lr_at(step: int) -> float:  # linear warm-up, cosine decay to 10%
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, spec.steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    gen = torch.Generator().manual_seed(spec.seed)
    steps = range(spec.steps)
    if reporter is not None:
        steps = reporter.track(steps, total=spec.steps, description=f"training tiny LM ({ids.shape[0]:,} sequences)")
    losses = []
    for _ in steps:
        batch = ids[torch.randint(0, ids.shape[0], (spec.batch_size,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    model.eval()
    model.generation_config.eos_token_id = [tok.eos_token_id, tok.convert_tokens_to_ids("<|end|>")]
    model.generation_config.pad_token_id = tok.pad_token_id

    info = {
        "spec": spec.model_dump(mode="json", exclude={"data"}), "data_fingerprint": data_fingerprint,
        "documents": len(texts), "train_tokens_seen": spec.steps * spec.batch_size * spec.context_length,
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4), "seconds": round(time.perf_counter() - start, 1),
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / MARKER).write_text(json.dumps(info, indent=2))
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked by the caller)
    tmp.rename(out)
    return info


def _train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    bos = tok.token_to_id("<|bos|>")
    tok.post_processor = processors.TemplateProcessing(single="<|bos|> $A", pair="<|bos|> $A $B", special_tokens=[("<|bos|>", bos)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|bos|>", eos_token="<|eos|>", pad_token="<|pad|>",
                                   additional_special_tokens=list(SPECIALS[3:]))
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _pack(tok: Any, texts: list[str], length: int) -> Any:
    """Every document as BOS + tokens + EOS, concatenated and cut into rows of ``length``."""
    import torch

    stream: list[int] = []
    for ids in tok(texts, add_special_tokens=True).input_ids:
        stream.extend(ids)
        stream.append(tok.eos_token_id)
    n = len(stream) // length
    return torch.tensor(stream[: n * length], dtype=torch.long).view(n, length)
