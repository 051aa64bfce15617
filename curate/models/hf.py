"""The ``transformers`` backend: a causal LM from a local folder or the local Hugging Face
cache, on CPU or GPU.

Scoring is where curation spends its model time, so it is built for throughput:

* every context and target is tokenized in one call of the fast (Rust) tokenizer;
* sequences are sorted by length and packed into batches of at most ``batch_size`` rows
  and ``max_batch_tokens`` padded tokens, so a batch pads little;
* batches are right-padded with no attention mask (a causal LM's tokens never attend to
  the pads after them, so the result is exact and attention takes its causal fast path),
  and the LM head runs only over the span of positions holding the scored tokens
  (``logits_to_keep``), not over the prompts;
* a sequence longer than the window is scored in overlapping windows (each scored token
  sees at least half a window of context), never truncated.

The target is tokenized on its own, not jointly with its context, so the same response
has the same tokens whatever prompt precedes it (IFD compares exactly those spans).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint import hash_file, hash_parts
from .base import LM, ModelError, Prompt, Sampling
from .cache import CallCache, cache_root
from .config import TransformersSpec
from .windows import StartToken, Unit, scoring_units

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt", ".jinja", ".tiktoken", ".py")
MAX_DEFAULT_WINDOW = 4096
TOKENIZERS_PARALLELISM = "TOKENIZERS_PARALLELISM"


class TransformersLM(LM):
    backend = "transformers"

    def __init__(self, name: str, spec: TransformersSpec, cache: CallCache | None = None, reporter: Any = None,
                 store: Any = None, cache_root: str | None = None):
        super().__init__(name, cache)
        self.spec = spec
        self.path = model_dir(spec, reporter, store, cache_root)
        self._identity = dir_identity(self.path, cache_root)
        self.tokenizer, self.model, self.device = _load(self.path, spec)
        cfg = self.model.config
        limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None) or MAX_DEFAULT_WINDOW
        self.window = spec.max_length or min(int(limit), MAX_DEFAULT_WINDOW)
        tok = self.tokenizer
        with tokenizer_threads_off():
            self._start = StartToken(tok)
        self._pad = tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0)

    @classmethod
    def spec_identity(cls, spec: TransformersSpec, reporter: Any = None, store: Any = None, cache_root: str | None = None) -> str:
        return dir_identity(model_dir(spec, reporter, store, cache_root), cache_root)

    def identity(self) -> str:
        return self._identity

    def settings(self) -> dict[str, Any]:
        # The window changes the numbers for long texts; dtype changes them slightly.
        return {"window": self.window, "dtype": str(self.model.dtype)}

    def chat_prompt(self, messages: list[dict]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"model '{self.name}' ({self.path}) has no chat template, so prompts in chat form cannot be "
                             "rendered; score the 'text' field instead, or use an instruction-tuned model")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # -- scoring ---------------------------------------------------------------------------
    def _logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        import torch

        with tokenizer_threads_off():
            units = scoring_units(self.tokenizer, self._start, pairs, self.window, self.name)
        out = [np.zeros(0, dtype=np.float32) for _ in pairs]
        pieces: dict[int, list[tuple[int, np.ndarray]]] = {}
        for batch in self._batches(units):
            for (pair, part, _, _), lp in zip(batch, self._forward(batch, torch)):
                pieces.setdefault(pair, []).append((part, lp))
        for pair, parts in pieces.items():
            out[pair] = np.concatenate([lp for _, lp in sorted(parts, key=lambda x: x[0])])
        return out

    def _choose(self, contexts: Sequence[str], options: tuple[str, ...]) -> list[np.ndarray]:
        # One forward pass per context reads every option when each is a single token.
        import torch

        tok = self.tokenizer
        with tokenizer_threads_off():
            option_ids = tok(list(options), add_special_tokens=False).input_ids
            enc = [self._start.prefix(ids, scoring=True) for ids in tok(list(contexts), add_special_tokens=False).input_ids]
        if any(len(ids) != 1 for ids in option_ids) or any(not e or len(e) >= self.window for e in enc):
            return super()._choose(contexts, options)
        columns = [ids[0] for ids in option_ids]
        units = [Unit(i, 0, [*e, columns[0]], 1) for i, e in enumerate(enc)]
        out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(contexts)
        for batch in self._batches(units):
            for u, lp in zip(batch, self._forward(batch, torch, columns)):
                out[u.pair] = lp
        return out

    def _batches(self, units: list) -> list[list]:
        order = sorted(units, key=lambda u: -len(u[2]))
        batches, cur = [], []
        for u in order:
            width = len(cur[0][2]) if cur else len(u[2])
            if cur and (len(cur) >= self.spec.batch_size or width * (len(cur) + 1) > self.spec.max_batch_tokens):
                batches.append(cur)
                cur = []
            cur.append(u)
        if cur:
            batches.append(cur)
        return batches

    def _forward(self, batch: list, torch: Any, columns: list[int] | None = None) -> list[np.ndarray]:
        """Log-probabilities of each unit's scored tokens; with ``columns``, instead, the
        log-probabilities of those vocabulary entries at the last scored position.

        The batch is right-padded and given no attention mask: in a causal LM a real token
        attends only to the tokens before it, never to the pads after it, so the causal mask
        alone is exact, and the attention kernel takes its causal fast path (measured on the
        demo's tiny LM: a third less time than left padding with a padding mask). The LM
        head runs over the one span of positions that holds every row's scored tokens."""
        width = max(len(u[2]) for u in batch)
        ids = torch.full((len(batch), width), self._pad, dtype=torch.long)
        for r, u in enumerate(batch):
            ids[r, : len(u[2])] = torch.tensor(u[2])
        # logits at position j predict token j+1: a unit's last m tokens are predicted by
        # positions n-m-1 .. n-2; keep the logits from the earliest such position on
        first = min(len(u[2]) - u[3] - 1 for u in batch)
        keep = width - first
        ids = ids.to(self.device)
        with torch.inference_mode():
            try:
                logits = self.model(input_ids=ids, logits_to_keep=keep).logits
            except TypeError:  # a model class without logits_to_keep: all positions
                logits = self.model(input_ids=ids).logits[:, -keep:]
            out = []
            for r, u in enumerate(batch):
                n, m = len(u[2]), u[3]
                start = n - m - 1 - first
                rows = logits[r, start : start + m].float().log_softmax(-1)
                if columns is not None:
                    out.append(rows[-1, columns].cpu().numpy().astype(np.float32))
                    continue
                labels = ids[r, n - m : n].unsqueeze(-1)
                out.append(rows.gather(-1, labels).squeeze(-1).cpu().numpy().astype(np.float32))
        return out

    # -- generation ------------------------------------------------------------------------
    def _generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[str]]:
        import torch

        texts = [p if isinstance(p, str) else self.chat_prompt(p) for p in prompts]
        tok = self.tokenizer
        # The same rule for raw and chat-rendered prompts: BOS in front when the tokenizer
        # adds one and the text does not already start with it (chat templates often do).
        with tokenizer_threads_off():
            enc = [self._start.prefix(ids) for ids in tok(texts, add_special_tokens=False).input_ids]
        order = sorted(range(len(texts)), key=lambda i: -len(enc[i]))
        out: list[list[str]] = [[] for _ in texts]
        eos = _eos_ids(self.model, tok)
        bs = max(1, self.spec.generate_batch_size // sampling.n)
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            width = max(len(enc[i]) for i in idx)
            ids = torch.full((len(idx), width), self._pad, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(idx):
                ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
                mask[r, width - len(enc[i]):] = 1
            torch.manual_seed(sampling.seed + start)
            sample = sampling.temperature > 0
            with torch.inference_mode():
                gen = self.model.generate(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=sampling.max_tokens,
                    do_sample=sample, temperature=sampling.temperature if sample else None,
                    top_p=sampling.top_p if sample else None, top_k=None, num_return_sequences=sampling.n,
                    pad_token_id=self._pad, eos_token_id=eos,
                )
            new = gen[:, width:].cpu().tolist()
            for r, i in enumerate(idx):
                for seq in new[r * sampling.n : (r + 1) * sampling.n]:
                    out[i].append(_cut(tok.decode(seq, skip_special_tokens=True), sampling.stop))
        return out

    def close(self) -> None:
        self.model = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _cut(text: str, stop: tuple[str, ...]) -> str:
    cuts = [text.find(s) for s in stop if s and s in text]
    return text[: min(cuts)] if cuts else text


def _eos_ids(model: Any, tok: Any) -> list[int]:
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = list(ids) if isinstance(ids, (list, tuple)) else ([ids] if ids is not None else [])
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return ids


def device_and_dtype(device: str, dtype: str) -> tuple[str, str]:
    """``auto`` resolved: the GPU when there is one; bfloat16 on a GPU that supports it, else float32."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dtype = "bfloat16" if device.startswith("cuda") and torch.cuda.is_bf16_supported() else "float32"
    return device, dtype


def _load(path: Path, spec: TransformersSpec) -> tuple[Any, Any, str]:
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as e:
        raise ModelError(f"the transformers backend needs torch and transformers: pip install 'curate[embed]' ({e})") from None
    device, dtype = device_and_dtype(spec.device, spec.dtype)
    try:
        with quiet_transformers():
            tok = AutoTokenizer.from_pretrained(path, local_files_only=True, trust_remote_code=spec.trust_remote_code)
            model = AutoModelForCausalLM.from_pretrained(
                path, local_files_only=True, trust_remote_code=spec.trust_remote_code, dtype=getattr(torch, dtype)
            )
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, unknown architectures: all mean "cannot load it"
        raise ModelError(f"cannot load the causal LM in {path}: {type(e).__name__}: {e}") from None
    return tok, model.to(device).eval(), device


def model_dir(spec: TransformersSpec, reporter: Any = None, store: Any = None, root: str | None = None) -> Path:
    """The local folder holding ``spec``'s model: a given folder, a cached hub snapshot,
    or the tiny model ``train_tiny`` makes (trained now if it does not exist yet)."""
    if spec.train_tiny is not None:
        from .tiny import ensure_tiny

        target = Path(spec.model).expanduser() if spec.model else None
        return ensure_tiny(spec.train_tiny, target, reporter=reporter, store=store, root=root)
    assert spec.model is not None
    path = Path(spec.model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ModelError(f"model '{spec.model}': {path} is not a Hugging Face model folder (no config.json)")
        return path.resolve()
    return cached_snapshot(spec.model, spec.revision, spec.allow_download)


def cached_snapshot(model: str, revision: str | None = None, allow_download: bool = False) -> Path:
    """The local snapshot folder of hub id ``model`` (the local cache only, unless
    ``allow_download``); what is neither a folder nor a hub id is an error."""
    if model.startswith((".", "/", "~")) or model.count("/") > 1:
        raise ModelError(f"model folder {model} does not exist")
    try:
        from huggingface_hub import snapshot_download

        where = snapshot_download(model, revision=revision, local_files_only=not allow_download)
    except Exception as e:  # noqa: BLE001 - hub errors come in many classes; all mean "not available here"
        raise ModelError(
            f"model '{model}' is not a local folder and is not in the local Hugging Face cache; curate downloads "
            f"only when the recipe says allow_download: true. Fetch it once where there is network "
            f"(`hf download {model}`) or give a local folder. ({type(e).__name__})"
        ) from None
    return Path(where)


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers draws a 'Loading weights' bar per load; curate draws its own progress.
    The bar is switched off for the load only, and back on if it was on."""
    try:
        from transformers.utils import logging as hf_logging

        was_on = hf_logging.is_progress_bar_enabled()
    except (ImportError, AttributeError):  # a transformers without these: the bar is only cosmetic
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


@contextmanager
def tokenizer_threads_off() -> Iterator[None]:
    """Our tokenizer calls, on the calling thread only. Once the Rust tokenizers library has
    used its thread pool, every process forked afterwards (``StageContext.map`` forks its
    workers) prints a warning and turns the pool off, and a fork while it runs can deadlock.
    The library takes no argument for this, only the ``TOKENIZERS_PARALLELISM`` variable, which
    it reads at each call: so the variable is set for the block and put back after, and the
    user's own tokenizer calls keep whatever they had."""
    before = os.environ.get(TOKENIZERS_PARALLELISM)
    os.environ[TOKENIZERS_PARALLELISM] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TOKENIZERS_PARALLELISM, None)
        else:
            os.environ[TOKENIZERS_PARALLELISM] = before


def dir_identity(path: Path, root: str | None = None) -> str:
    """A content hash of the model folder's files (weights, config, tokenizer), memoised by
    (path, size, mtime) so a 15 GB model is hashed once, not on every run. A hub snapshot
    folder is named by its commit, which is identity enough."""
    path = Path(path)
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return hash_parts("hf-snapshot", path.parent.parent.name, path.name)
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    memo_path = cache_root(root) / "identities.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    parts, changed = [], False
    for f in files:
        st = f.stat()
        key, sig = str(f.resolve()), [st.st_size, st.st_mtime_ns]
        entry = memo.get(key)
        if entry is None or entry[0] != sig:
            entry = [sig, hash_file(f)]
            memo[key], changed = entry, True
        parts.append([str(f.relative_to(path)), entry[1]])
    if changed:
        try:
            memo_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo_path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(memo))
            tmp.replace(memo_path)
        except OSError:
            pass  # the memo only saves time
    return hash_parts("dir", parts)
