"""What stages need from a causal language model, whatever serves it.

Two operations, both cached on disk (``curate.models.cache``):

* ``logprobs(pairs)``: for each ``(context, target)`` pair of raw strings, the natural-log
  probability of every token of ``target`` given ``context`` and the target tokens before
  it. ``context == ""`` scores the target as a text on its own (after the model's BOS token
  where it has one). Response-given-prompt scoring renders the prompt with
  ``chat_prompt(messages)`` and uses it as the context. Texts longer than the model's
  window are scored in overlapping windows, never truncated.
* ``generate(prompts, sampling)``: ``sampling.n`` completions per prompt (a raw string or a
  list of chat messages), greedy when ``temperature == 0``.
* ``choose(contexts, options)``: the log-probability of each option (e.g. "A", "B", "C") as
  the continuation of each context: multiple-choice answers read from the distribution,
  never parsed from free text.

A backend implements ``_logprobs`` / ``_generate`` (uncached, on the requests the cache
could not answer), ``chat_prompt`` and ``identity``; this class does the caching and the
call counting the runner reports ("ref_lm: 0 calls, 13,304 answered from the cache").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import CurateError
from ..fingerprint import hash_parts
from .cache import CallCache

Prompt = str | list[dict]  # a raw string, or chat messages [{role, content}, ...]
Track = Callable[..., Iterable]  # Reporter.track: (items, total=, description=)

# Requests are answered and cached in chunks of this many: a run killed half-way keeps
# what it computed, and a resumed run pays only for the rest.
CHUNK = 256


class ModelError(CurateError):
    """A model could not be loaded or a model call failed (server error after retries,
    a request the server rejects, logprobs the server does not provide...)."""


@dataclass(frozen=True)
class Sampling:
    """How to sample completions. ``temperature == 0`` is greedy decoding."""

    n: int = 1
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.n < 1 or self.max_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError(f"invalid sampling parameters: {self}")


@dataclass
class CallStats:
    """Per model and run: requests sent to the model, and requests the cache answered."""

    calls: int = 0
    cached: int = 0

    def describe(self, name: str) -> str:
        return f"{name}: {self.calls:,} model calls, {self.cached:,} answered from the cache"


class LM(ABC):
    """A causal LM behind one of the backends. ``name`` is what the recipe calls it."""

    backend: str = ""

    def __init__(self, name: str, cache: CallCache | None = None):
        self.name = name
        self.cache = cache
        self.stats = CallStats()

    # -- what backends implement -------------------------------------------------------
    @abstractmethod
    def identity(self) -> str:
        """What makes this model's outputs what they are (weights, revision, served model):
        part of every cache key and of the fingerprints of the steps that use it."""

    @abstractmethod
    def chat_prompt(self, messages: list[dict]) -> str:
        """``messages`` rendered with the model's chat template, ending where the assistant's
        reply starts (the generation prompt)."""

    @abstractmethod
    def _logprobs(self, pairs: Sequence[tuple[str, str]]) -> list[np.ndarray]:
        """Uncached ``logprobs``; one float array per pair, one value per target token."""

    @abstractmethod
    def _generate(self, prompts: Sequence[Prompt], sampling: Sampling) -> list[list[str]]:
        """Uncached ``generate``; ``sampling.n`` strings per prompt."""

    def settings(self) -> dict[str, Any]:
        """Backend settings that change the numbers (window size, dtype...): part of the
        cache key. Settings that change only speed (batch size, concurrency) are not."""
        return {}

    def close(self) -> None:
        """Free what the backend holds (GPU memory, connections)."""

    # -- what stages call ----------------------------------------------------------------
    def logprobs(self, pairs: Sequence[tuple[str, str]], track: Track | None = None, description: str = "scoring") -> list[np.ndarray]:
        """Token log-probabilities of each target given its context (see the module doc)."""
        key_of = self._keyer("logprobs")
        return self._cached(
            [key_of(c, t) for c, t in pairs], list(pairs), self._logprobs, _encode_floats, _decode_floats, track, description
        )

    def generate(self, prompts: Sequence[Prompt], sampling: Sampling = Sampling(), track: Track | None = None,
                 description: str = "generating") -> list[list[str]]:
        """``sampling.n`` completions for each prompt."""
        key_of = self._keyer("generate", asdict(sampling))
        return self._cached(
            [key_of(p) for p in prompts], list(prompts), lambda chunk: self._generate(chunk, sampling),
            _encode_json, _decode_json, track, description,
        )

    def choose(self, contexts: Sequence[str], options: Sequence[str], track: Track | None = None,
               description: str = "reading option probabilities") -> list[np.ndarray]:
        """For each context, the log-probability of each of ``options`` as its continuation
        (summed over the option's tokens; not normalised over the options). This is how a
        multiple-choice answer ("(A) Correct (B) Incorrect") is read from a model without
        parsing the text it would write."""
        opts = tuple(options)
        if not opts:
            raise ValueError("choose needs at least one option")
        key_of = self._keyer("choose", {"options": list(opts)})
        return self._cached(
            [key_of(c) for c in contexts], list(contexts), lambda chunk: self._choose(chunk, opts),
            _encode_floats, _decode_floats, track, description,
        )

    def _choose(self, contexts: Sequence[str], options: tuple[str, ...]) -> list[np.ndarray]:
        """Uncached ``choose``; this default scores every (context, option) pair. Backends
        that can read all options from one forward pass override it."""
        k = len(options)
        lp = self._logprobs([(c, o) for c in contexts for o in options])
        return [np.array([lp[i * k + j].sum() for j in range(k)], dtype=np.float32) for i in range(len(contexts))]

    # -- caching -------------------------------------------------------------------------
    def _keyer(self, kind: str, params: dict | None = None) -> Callable[..., str]:
        fixed = (self.identity(), kind, self.settings(), params or {})
        return lambda *request: hash_parts(*fixed, request)

    def _cached(self, keys: list[str], requests: list, compute: Callable[[list], list], encode, decode,
                track: Track | None, description: str) -> list:
        out: list = [None] * len(requests)
        found = self.cache.get_many(keys) if self.cache is not None else {}
        todo, first, repeats = [], {}, []
        for i, k in enumerate(keys):
            if k in found:
                out[i] = decode(found[k])
            elif k in first:  # the same request again in this call: one answer for both, as a rerun
                repeats.append((i, first[k]))  # (which reads the one cached answer) would give them
            else:
                first[k] = i
                todo.append(i)
        self.stats.cached += len(requests) - len(todo)  # a repeat is answered without a call too
        chunks = [todo[i : i + CHUNK] for i in range(0, len(todo), CHUNK)]
        if track is not None and chunks:
            chunks = track(chunks, total=len(chunks), description=f"{self.name}: {description} ({len(todo):,} requests)")
        for chunk in chunks:
            results = compute([requests[i] for i in chunk])
            if len(results) != len(chunk):
                raise ModelError(f"model '{self.name}' answered {len(results)} of {len(chunk)} requests")
            self.stats.calls += len(chunk)
            for i, r in zip(chunk, results):
                out[i] = r
            if self.cache is not None:
                self.cache.put_many([(keys[i], encode(r)) for i, r in zip(chunk, results)])
        for i, j in repeats:
            out[i] = decode(encode(out[j]))  # a copy: no two rows share one object
        return out


def _encode_floats(a: np.ndarray) -> bytes:
    return np.asarray(a, dtype=np.float32).tobytes()


def _decode_floats(b: bytes) -> np.ndarray:
    return np.frombuffer(b, dtype=np.float32).copy()


def _encode_json(v: Any) -> bytes:
    import json

    return json.dumps(v, ensure_ascii=False).encode()


def _decode_json(b: bytes) -> Any:
    import json

    return json.loads(b)


@dataclass
class Scores:
    """Summaries of one target's token log-probabilities."""

    logprobs: np.ndarray = field(repr=False)

    @property
    def tokens(self) -> int:
        return int(self.logprobs.size)

    @property
    def mean_nll(self) -> float:
        return float(-self.logprobs.mean()) if self.logprobs.size else float("nan")

    @property
    def ppl(self) -> float:
        return float(np.exp(self.mean_nll)) if self.logprobs.size else float("nan")

    def min_k(self, k: float) -> float:
        """Min-K% Prob (Shi et al., 2024): the mean log-probability of the ``k`` fraction of
        least likely tokens (at least one). Higher means the model is more likely to have
        seen the text."""
        if not self.logprobs.size:
            return float("nan")
        m = max(1, int(k * self.logprobs.size))
        return float(np.sort(self.logprobs)[:m].mean())
