"""The ``vllm`` backend: offline ``vllm.LLM`` in this process, on a CUDA machine.

For generation at scale (teacher answers, k samples per problem for difficulty) and for
scoring large corpora on a GPU, with the same numbers' meaning as the ``transformers``
backend:

* ``logprobs``: ``SamplingParams(max_tokens=1, prompt_logprobs=0)`` over the token ids of
  ``[BOS] + context + target`` (target tokenized on its own, as ``transformers`` does);
  the log-probability of each actual target token is read from ``prompt_logprobs``.
  A sequence longer than the window (``max_model_len - 1``: one place is kept for the one
  token vLLM must generate) is scored in overlapping windows, each scored token seeing at
  least half a window of context, never truncated.
* ``generate``: ``SamplingParams(n, temperature, top_p, max_tokens, seed, stop)``; chat
  prompts rendered with the model's chat template and passed as token ids, so no second
  BOS is added. Greedy decoding (``temperature == 0``) asks for one completion and repeats
  it (vLLM rejects ``n > 1`` when greedy).

The model is resolved to a local folder first (a given folder or a cached hub snapshot,
as the ``transformers`` backend does), so vLLM never downloads on its own.

Written against vLLM's documented offline API (``LLM``, ``SamplingParams``, token-id
prompts, ``RequestOutput.prompt_logprobs``; vLLM >= 0.6). Not exercised by the test suite,
which runs without a GPU: only the parts that need no vLLM are tested there.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint import hash_parts
from .base import LM, ModelError, Prompt, Sampling
from .cache import CallCache
from .config import TransformersSpec, VLLMSpec
from .windows import StartToken, scoring_units


def _import_vllm() -> Any:
    try:
        import vllm
    except Exception as e:  # noqa: BLE001 - ImportError, or CUDA/driver errors raised at import
        raise ModelError(f"the vllm backend needs vLLM on a CUDA machine: pip install 'curate[gpu]' "
                         f"({type(e).__name__}: {e})") from None
    return vllm


def _local_dir(spec: VLLMSpec, reporter: Any = None, store: Any = None, cache_root: str | None = None) -> Path:
    from .hf import model_dir

    return model_dir(TransformersSpec(model=spec.model, revision=spec.revision, allow_download=spec.allow_download,
                                      trust_remote_code=spec.trust_remote_code), reporter, store, cache_root)


class VllmLM(LM):
    backend = "vllm"

    def __init__(self, name: str, spec: VLLMSpec, cache: CallCache | None = None, reporter: Any = None,
                 store: Any = None, cache_root: str | None = None):
        super().__init__(name, cache)
        self.spec = spec
        vllm = _import_vllm()
        self._vllm = vllm
        self.path = _local_dir(spec, reporter, store, cache_root)
        self._identity = _identity(self.path, cache_root)
        try:
            self.llm = vllm.LLM(model=str(self.path), tokenizer=str(self.path), dtype=spec.dtype,
                                gpu_memory_utilization=spec.gpu_memory_utilization, max_model_len=spec.max_model_len,
                                tensor_parallel_size=spec.tensor_parallel_size, seed=spec.seed,
                                trust_remote_code=spec.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - CUDA OOM, unsupported architecture, bad config: all "cannot load"
            raise ModelError(f"model '{name}': vLLM cannot load {self.path}: {type(e).__name__}: {e}. Lower "
                             "gpu_memory_utilization or max_model_len if the GPU is short of memory") from None
        self.tokenizer = self.llm.get_tokenizer()
        config = getattr(self.llm.llm_engine, "model_config", None)
        max_len = spec.max_model_len or getattr(config, "max_model_len", None)
        if not max_len:
            raise ModelError(f"model '{name}': cannot tell vLLM's max_model_len for {self.path}; set max_model_len")
        self.window = int(max_len) - 1
        self._dtype = str(getattr(config, "dtype", spec.dtype))
        self._start = StartToken(self.tokenizer)

    @classmethod
    def spec_identity(cls, spec: VLLMSpec, reporter: Any = None, store: Any = None, cache_root: str | None = None) -> str:
        return _identity(_local_dir(spec, reporter, store, cache_root), cache_root)

    def identity(self) -> str:
        return self._identity

    def settings(self) -> dict[str, Any]:
        return {"window": self.window, "dtype": self._dtype}

    def chat_prompt(self, messages: list[dict]) -> str:
        if not getattr(self.tokenizer, "chat_template", None):
            raise ModelError(f"model '{self.name}' ({self.path}) has no chat template, so prompts in chat form cannot be "
                             "rendered; use an instruction-tuned model")
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # -- scoring -----------------------------------------------------------------------------
    def _logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        units = scoring_units(self.tokenizer, self._start, pairs, self.window, self.name)
        out = [np.zeros(0, dtype=np.float32) for _ in pairs]
        if not units:
            return out
        params = self._vllm.SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
        results = self._run([{"prompt_token_ids": u.ids} for u in units], params)
        pieces: dict[int, list[np.ndarray]] = {}
        for (i, _, ids, m), res in zip(units, results):  # windows of a pair are in order
            pieces.setdefault(i, []).append(pick_logprobs(res.prompt_logprobs, ids, m))
        for i, parts in pieces.items():
            out[i] = np.concatenate(parts)
        return out

    # -- generation --------------------------------------------------------------------------
    def _generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[str]]:
        tok = self.tokenizer
        inputs = [p if isinstance(p, str) else
                  {"prompt_token_ids": tok(self.chat_prompt(p), add_special_tokens=False).input_ids} for p in prompts]
        n = 1 if sampling.temperature == 0 else sampling.n
        params = self._vllm.SamplingParams(n=n, temperature=sampling.temperature, top_p=sampling.top_p,
                                           max_tokens=sampling.max_tokens, seed=sampling.seed,
                                           stop=[s for s in sampling.stop if s] or None)
        texts = [[c.text for c in sorted(r.outputs, key=lambda c: c.index)] for r in self._run(inputs, params)]
        return [t * sampling.n if n == 1 else t for t in texts]

    def _run(self, inputs: list, params: Any) -> list:
        try:
            return self.llm.generate(inputs, params, use_tqdm=False)
        except ValueError as e:  # vLLM's way of saying a prompt does not fit, or a bad parameter
            raise ModelError(f"model '{self.name}' ({self.path}): vLLM rejected the request: {e}") from None

    def close(self) -> None:
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        # vLLM holds a process group and its KV cache until these are torn down; best
        # effort: the names moved between vLLM versions.
        with contextlib.suppress(Exception):
            from vllm.distributed.parallel_state import (
                destroy_distributed_environment,
                destroy_model_parallel,
            )

            destroy_model_parallel()
            destroy_distributed_environment()
        del llm
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass


def _identity(path: Path, cache_root: str | None) -> str:
    from .hf import dir_identity

    # The same weights give slightly different numbers under vLLM's kernels than under
    # transformers, so the two backends do not share cached answers.
    return hash_parts("vllm", dir_identity(path, cache_root))


def pick_logprobs(prompt_logprobs: Sequence[Any] | None, ids: Sequence[int], m: int) -> np.ndarray:
    """The log-probabilities of the last ``m`` tokens of ``ids`` from vLLM's
    ``prompt_logprobs`` (one entry per prompt token, ``None`` first; each a mapping from
    token id to a ``Logprob`` with ``.logprob``, the actual token always among them)."""
    if prompt_logprobs is None or len(prompt_logprobs) != len(ids):
        got = "none" if prompt_logprobs is None else len(prompt_logprobs)
        raise ModelError(f"vLLM returned prompt log-probabilities for {got} of {len(ids)} tokens")
    out = np.empty(m, dtype=np.float32)
    for k, j in enumerate(range(len(ids) - m, len(ids))):
        entry = prompt_logprobs[j]
        if entry is None or ids[j] not in entry:
            raise ModelError(f"vLLM returned no log-probability for prompt token {j} (id {ids[j]})")
        value = entry[ids[j]]
        out[k] = getattr(value, "logprob", value)
    return out
