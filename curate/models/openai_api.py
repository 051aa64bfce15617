"""The ``openai`` backend: any OpenAI-compatible server (vLLM, TGI, llama.cpp, SGLang, a
hosted API) through the ``openai`` client.

* Generation: ``/v1/chat/completions`` for chat prompts, ``/v1/completions`` for raw text,
  one request per prompt (``n`` completions each), at most ``max_concurrency`` in flight,
  results in input order.
* Log-probabilities: ``/v1/completions`` with ``echo=True, logprobs=1, max_tokens=1``
  returns the prompt's tokens with their log-probabilities (vLLM's OpenAI server does;
  hosted chat APIs do not). The tokens of ``context + target`` that cover the target are
  kept; the one generated token is dropped. ``max_tokens=0`` would save that token, but
  some servers reject it.
* Retries: the ``openai`` client's own, on 408, 409, 429, 5xx, timeouts and dropped
  connections, with exponential backoff (0.5 s doubling to at most 8 s, minus up to 25 %
  jitter, ``Retry-After`` honoured), ``max_retries`` times. Other 4xx are not retried: a
  retry cannot fix a wrong model name or a rejected parameter.

The API key is read from the variable ``api_key_env`` names and never appears in a message.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..fingerprint import hash_parts
from .base import LM, ModelError, Prompt, Sampling
from .cache import CallCache
from .config import OpenAISpec

NO_KEY = "not-needed"  # local servers ignore the key, but the client insists on one
MAX_SERVER_MESSAGE = 500


class OpenAILM(LM):
    backend = "openai"

    def __init__(self, name: str, spec: OpenAISpec, cache: CallCache | None = None, reporter: Any = None,
                 store: Any = None, cache_root: str | None = None):
        super().__init__(name, cache)
        self.spec = spec
        try:
            import openai
        except ImportError as e:
            raise ModelError(f"the openai backend needs the openai package: pip install 'curate[api]' ({e})") from None
        self._openai = openai
        self.base_url = spec.base_url.rstrip("/")
        self._key = _api_key(name, spec)
        self.client = openai.OpenAI(base_url=self.base_url, api_key=self._key, max_retries=spec.max_retries,
                                    timeout=spec.timeout_s)
        self._identity = self.spec_identity(spec)
        self._tokenizer: Any = None

    @classmethod
    def spec_identity(cls, spec: OpenAISpec, reporter: Any = None, store: Any = None, cache_root: str | None = None) -> str:
        # The served weights are invisible from here: the server and the name it serves
        # them under stand for them. Redeploying other weights under the same name at the
        # same URL reuses cached answers; change the name (or clear the cache) when you do.
        return hash_parts("openai", spec.base_url.rstrip("/"), spec.model)

    def identity(self) -> str:
        return self._identity

    def settings(self) -> dict[str, Any]:
        return {}  # concurrency, retries and timeouts change only speed

    def close(self) -> None:
        self.client.close()

    def chat_prompt(self, messages: list[dict]) -> str:
        return self._chat_tokenizer().apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    # -- generation --------------------------------------------------------------------------
    def _generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[str]]:
        return self._map(lambda p: self._complete(p, sampling), prompts)

    def _complete(self, prompt: Prompt, s: Sampling) -> list[str]:
        # Greedy decoding is deterministic: ask once and repeat it (vLLM rejects n > 1 when greedy).
        n = 1 if s.temperature == 0 else s.n
        args: dict[str, Any] = {"n": n, "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                                "seed": s.seed}
        if s.stop:
            args["stop"] = list(s.stop)
        if isinstance(prompt, str):
            r = self._call("/completions", self.client.completions.create, prompt=prompt, **args)
            texts = [c.text or "" for c in sorted(r.choices, key=lambda c: c.index)]
        else:
            r = self._call("/chat/completions", self.client.chat.completions.create, messages=prompt, **args)
            texts = [c.message.content or "" for c in sorted(r.choices, key=lambda c: c.index)]
        if len(texts) != n:
            raise ModelError(f"model '{self.name}' ({self.spec.model} at {self.base_url}) returned {len(texts)} "
                             f"completions where {n} were asked for")
        return texts * s.n if n == 1 else texts

    # -- scoring -----------------------------------------------------------------------------
    def _logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        return self._map(self._score, pairs)

    def _score(self, pair: tuple[str, str]) -> np.ndarray:
        context, target = pair
        if not target:
            return np.zeros(0, dtype=np.float32)
        text = context + target
        r = self._call("/completions", self.client.completions.create, scoring=True, prompt=text, echo=True,
                       logprobs=1, max_tokens=1, temperature=0.0)
        lp = r.choices[0].logprobs if r.choices else None
        if lp is None or lp.token_logprobs is None or lp.text_offset is None or not lp.token_logprobs:
            raise ModelError(self._no_logprobs())
        usage = getattr(r, "usage", None)
        generated = getattr(usage, "completion_tokens", None)
        generated = 1 if generated is None else min(max(int(generated), 0), 1)
        try:
            values = target_logprobs(lp.text_offset, lp.token_logprobs, lp.tokens, len(context), len(text), generated)
        except ValueError as e:
            raise ModelError(f"model '{self.name}' ({self.spec.model} at {self.base_url}): the prompt log-probabilities "
                             f"the server returned cannot be matched to the text ({e})") from None
        return np.asarray(values, dtype=np.float32)

    def _no_logprobs(self) -> str:
        return (f"model '{self.name}': the server at {self.base_url} does not return prompt log-probabilities "
                f"through /v1/completions (echo + logprobs), so '{self.spec.model}' cannot score text there. vLLM's "
                "OpenAI server does; hosted chat APIs do not. Serve the model with vLLM, or use the transformers or "
                "vllm backend for scoring.")

    # -- plumbing ----------------------------------------------------------------------------
    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list:
        if len(items) <= 1:
            return [fn(x) for x in items]
        pool = ThreadPoolExecutor(max_workers=min(self.spec.max_concurrency, len(items)), thread_name_prefix=self.name)
        try:
            futures = [pool.submit(fn, x) for x in items]
            return [f.result() for f in futures]
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # on a failure: send nothing more

    def _call(self, route: str, create: Callable[..., Any], scoring: bool = False, **kwargs: Any) -> Any:
        openai = self._openai
        where = f"model '{self.name}' ({self.spec.model} at {self.base_url}{route})"
        try:
            return create(model=self.spec.model, **kwargs)
        except openai.APIStatusError as e:
            message = self._status_message(where, e, scoring)
        except openai.APITimeoutError:
            message = (f"{where}: no answer within timeout_s={self.spec.timeout_s:g} s, "
                       f"{_retries(self.spec.max_retries)}; the server is overloaded or stuck: raise timeout_s, "
                       "lower max_concurrency, or check the server")
        except openai.APIConnectionError as e:
            cause = e.__cause__ or e.__context__
            detail = f" ({type(cause).__name__}: {cause})" if cause else ""
            message = (f"{where}: cannot connect{detail}, {_retries(self.spec.max_retries)}; is the server running "
                       "and is base_url right?")
        except openai.APIError as e:  # an answer that is not what the API promises
            message = f"{where}: the server's answer is not a valid OpenAI response: {e}"
        raise ModelError(self._redact(message)) from None

    def _status_message(self, where: str, e: Any, scoring: bool) -> str:
        status = e.status_code
        body = e.body
        server = body.get("message") if isinstance(body, dict) else body
        server = str(server or "").strip()[:MAX_SERVER_MESSAGE] or "(no message)"
        retried = status in (408, 409, 429) or status >= 500
        msg = f"{where}: HTTP {status}: {server}"
        if retried:
            msg += f" ({_retries(self.spec.max_retries)})"
        if status in (401, 403):
            key = f"the key in ${self.spec.api_key_env}" if self.spec.api_key_env else "an API key (set api_key_env)"
            msg += f". The server refused the credentials: check {key}"
        elif status == 404:
            msg += f". Check `model:` (the names the server knows: GET {self.base_url}/models) and `base_url:`"
        if scoring and not retried and status not in (401, 403):
            msg += (". The request asked for prompt log-probabilities (/v1/completions with echo + logprobs): vLLM's "
                    "OpenAI server returns them; hosted chat APIs do not")
        return msg

    def _redact(self, message: str) -> str:
        return message.replace(self._key, "***") if self._key and self._key != NO_KEY else message

    def _chat_tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.spec.tokenizer:
                raise ModelError(
                    f"model '{self.name}' (openai backend) cannot render chat prompts itself: the server applies its chat "
                    "template only on /v1/chat/completions, and scoring goes through /v1/completions. Set `tokenizer:` "
                    f"to a local folder or cached hub id holding {self.spec.model}'s tokenizer")
            try:
                from transformers import AutoTokenizer
            except ImportError as e:
                raise ModelError(f"rendering chat prompts needs transformers: pip install 'curate[embed]' ({e})") from None
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.spec.tokenizer, local_files_only=True)
            except Exception as e:  # noqa: BLE001 - OSError, ValueError...: all mean "not here"
                raise ModelError(f"model '{self.name}': cannot load the tokenizer '{self.spec.tokenizer}' from a local "
                                 f"folder or the local Hugging Face cache ({type(e).__name__}: {e})") from None
            if not getattr(self._tokenizer, "chat_template", None):
                raise ModelError(f"model '{self.name}': the tokenizer '{self.spec.tokenizer}' has no chat template; "
                                 "give the instruction-tuned model's tokenizer")
        return self._tokenizer


def target_logprobs(offsets: Sequence[int], logprobs: Sequence[float | None], tokens: Sequence[str] | None,
                    context_len: int, text_len: int, generated: int) -> list[float]:
    """The log-probabilities of the echoed prompt tokens that cover ``text[context_len:]``.

    The last ``generated`` tokens are the completion and are dropped. Offsets are aligned so
    the prompt ends at ``text_len``: vLLM counts offsets in token strings, so a BOS token
    (``<s>``) shifts them; anchoring at the end keeps the target, at the end of the text,
    right. A token that straddles the context/target boundary counts as a target token
    (it holds target characters). The first token of the text has no log-probability."""
    n = len(offsets) - generated
    if n < 0 or len(logprobs) != len(offsets):
        raise ValueError(f"{len(offsets)} offsets and {len(logprobs)} log-probabilities for {generated} generated tokens")
    if generated:
        end = offsets[n]
    elif tokens:
        end = offsets[-1] + len(tokens[-1])
    else:
        end = text_len
    shift = end - text_len
    if shift < 0:
        raise ValueError(f"the prompt's tokens end at offset {end}, before the end of the {text_len}-character text")
    out = []
    for i in range(n):
        token_end = offsets[i + 1] - shift if i + 1 < n else text_len
        if token_end <= context_len:
            continue
        if logprobs[i] is None:
            if i == 0:
                continue  # the first token of a text is not predicted by anything
            raise ValueError(f"no log-probability for prompt token {i}")
        out.append(float(logprobs[i]))
    return out


def _api_key(name: str, spec: OpenAISpec) -> str:
    if spec.api_key_env is None:
        return NO_KEY
    key = os.environ.get(spec.api_key_env)
    if not key:
        raise ModelError(f"model '{name}': the environment variable {spec.api_key_env} (named by api_key_env) is not set "
                         f"or empty; export it with the API key for {spec.base_url}")
    return key


def _retries(n: int) -> str:
    return f"after {n} retries" if n else "not retried (max_retries: 0)"
