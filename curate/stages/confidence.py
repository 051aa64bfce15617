"""How much to trust a (prompt, response) pair, from the model's own behaviour: CLEAR's
confidence (Chen & Mueller, "Automated Data Curation for Robust Language Model
Fine-Tuning", 2024), which is BSDetector's (Chen & Mueller, "Quantifying Uncertainty in
Answers from any Language Model", 2023).

    C(x, y) = beta * O + (1 - beta) * S

* **O, observed consistency.** Sample k responses y_1..y_k from the model at temperature 1
  and compare each with the given response y: ``o_i = alpha * s_i + (1 - alpha) * r_i``,
  ``O = mean_i o_i``.

  - ``r_i``: the indicator that y_i says the same as y -- their extracted final answers are
    equivalent (``curate.algorithms.answers``: boxed / "answer is" / last number, exact or
    symbolic comparison) when both have one, else their normalised texts are equal.
  - ``s_i``: semantic agreement. BSDetector uses an NLI model's non-contradiction
    probability. Where both answers are extractable, two different final answers to the same
    question contradict each other, so ``s_i = r_i`` (an embedding would call "the answer is
    5" and "the answer is 7" near-identical). Otherwise ``s_i`` is the cosine similarity of
    sentence embeddings, clipped to [0, 1] (``similarity: embedding``, from the run's
    ``embedder``, by default the built-in ``minilm``; no NLI model ships offline), or absent
    (``similarity: none``).
* **S, self-reflection certainty.** The model is asked a fixed multiple-choice question
  ("Is the proposed answer (A) Correct (B) Incorrect (C) I am not sure") and the
  probabilities of the option letters are read from its next-token distribution (never
  parsed from text it writes), renormalised over the three options; ``S`` is the expected
  value with A -> 1, B -> 0, C -> 0.5, averaged over the reflection prompts asked.

A component that is absent (no embedding similarity; no reflection asked) is dropped and
the remaining weights are renormalised (``weighted_mean``: Cleanlab TLM's rule,
``np.average`` over the present components).

Defaults (BSDetector, the paper): k = 5, alpha = 0.8, beta = 0.7, sampling temperature 1,
two reflection prompts. Cleanlab TLM's presets take 4-8 consistency samples.

Every sample and every option probability is cached by the models layer, so ``rectify``
after ``confidence`` with the same settings asks the model nothing again.

    models:
      ref_lm: {backend: vllm, model: Qwen/Qwen2.5-1.5B-Instruct}
    stages:
      - confidence: {model: ref_lm, k: 5, similarity: embedding, embedder: minilm}
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field

from ..algorithms.answers import AnswerKind, Extracted, extract_answer, same_answer
from ..errors import StageError
from ..models import embeddings
from ..models.base import LM, Sampling, Track
from ..models.config import DEFAULT_EMBEDDER
from ..records import prompt_messages, prompt_of, response_of, shape_of
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns

# BSDetector's reflection prompt, and a second wording of it (the paper asks two and averages).
REFLECTION_PROMPTS = (
    ("Question: {question}\n\nProposed answer: {answer}\n\n"
     "Is the proposed answer:\n(A) Correct\n(B) Incorrect\n(C) I am not sure\n"
     "Reply with the letter of one option."),
    ("Here is a question and a response someone wrote.\n\nQuestion: {question}\n\nResponse: {answer}\n\n"
     "Grade the response:\n(A) The response is correct\n(B) The response is incorrect\n(C) I cannot tell\n"
     "Reply with the letter of one option."),
)
# The assistant turn is begun for the model, so its next token is the option letter.
REFLECTION_PREFIX = "The answer is ("
OPTIONS = ("A", "B", "C")
OPTION_VALUES = np.array([1.0, 0.0, 0.5])


class ConfidenceConfig(StageConfig):
    model: str
    """The model whose confidence is measured: the name of one of the run's models."""
    k: int = Field(5, ge=1, le=64)
    """Responses sampled per prompt for observed consistency (BSDetector: 5)."""
    alpha: float = Field(0.8, ge=0, le=1)
    """Weight of semantic agreement s_i against answer agreement r_i in each o_i (BSDetector: 0.8)."""
    beta: float = Field(0.7, ge=0, le=1)
    """Weight of observed consistency O against self-reflection S in C (BSDetector: 0.7)."""
    temperature: float = Field(1.0, gt=0)
    """Sampling temperature of the k responses (BSDetector: 1)."""
    top_p: float = Field(1.0, gt=0, le=1)
    """Nucleus sampling of the k responses."""
    max_tokens: int = Field(512, ge=1)
    """Longest sampled response, in tokens."""
    seed: int = 0
    """Seed of the sampling (the samples, and so the scores, are reproducible)."""
    reflections: int = Field(2, ge=0, le=len(REFLECTION_PROMPTS))
    """Reflection prompts asked per response (BSDetector: 2); 0 leaves S out (C = O)."""
    similarity: Literal["embedding", "none"] = "embedding"
    """s_i where answers cannot be extracted: sentence-embedding cosine, or none (then o_i = r_i)."""
    embedder: str = DEFAULT_EMBEDDER
    """similarity: embedding: the sentence encoder, a models: entry with backend sentence_transformers (built-in: minilm)."""
    answer_kind: AnswerKind = "math"
    """How final answers are extracted and compared: math, number or text (see ``verify``)."""


def weighted_mean(values: Sequence[float], weights: Sequence[float]) -> float:
    """The weighted mean of the values that are present (not NaN), weights renormalised; NaN
    when none is present or the present ones weigh nothing."""
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    present = ~np.isnan(v)
    total = w[present].sum()
    if not present.any() or total <= 0:
        return float("nan")
    return float((v[present] * w[present]).sum() / total)


def reflection_certainty(option_logprobs: np.ndarray) -> float:
    """S for one reflection: the option probabilities renormalised over A/B/C, valued 1/0/0.5."""
    lp = np.asarray(option_logprobs, dtype=np.float64)
    p = np.exp(lp - lp.max())
    return float((p / p.sum()) @ OPTION_VALUES)


def _normalised(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


class ConfidenceScorer:
    """Computes O, S and C for responses under one model and one set of settings.
    ``embedder`` returns the sentence encoder; it is called only when some pair needs it."""

    def __init__(self, lm: LM, c: ConfidenceConfig, track: Track | None = None,
                 embedder: Callable[[], embeddings.Embedder] | None = None):
        self.lm, self.c, self.track, self.embedder = lm, c, track, embedder
        self._answers: dict[str, Extracted | None] = {}

    def answer(self, text: str) -> Extracted | None:
        if text not in self._answers:
            self._answers[text] = extract_answer(text, self.c.answer_kind)
        return self._answers[text]

    def samples(self, prompts: list[list[dict]]) -> list[list[str]]:
        c = self.c
        sampling = Sampling(n=c.k, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=c.seed)
        return self.lm.generate(prompts, sampling, track=self.track, description=f"sampling {c.k} responses per prompt")

    def agreements(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """o for each (response, other response) pair (see the module docstring)."""
        n = len(pairs)
        r = np.zeros(n)
        s = np.full(n, np.nan)
        need: list[int] = []
        for p, (a, b) in enumerate(pairs):
            same = same_answer(self.answer(a), self.answer(b), self.c.answer_kind)
            if same is not None:
                r[p] = s[p] = float(same)
            else:
                r[p] = float(_normalised(a) == _normalised(b))
                need.append(p)
        if need and self.c.similarity == "embedding":
            if self.embedder is None:
                raise StageError("confidence: similarity: embedding needs an embedder (ConfidenceScorer(embedder=...))")
            texts = list(dict.fromkeys(t for p in need for t in pairs[p]))
            vecs = self.embedder().embed(texts, normalize=True, track=self.track)
            row = {t: i for i, t in enumerate(texts)}
            for p in need:
                a, b = pairs[p]
                s[p] = float(np.clip(vecs[row[a]] @ vecs[row[b]], 0.0, 1.0))
        return np.array([weighted_mean([s[p], r[p]], [self.c.alpha, 1 - self.c.alpha]) for p in range(n)])

    def consistency(self, responses: list[str], others: list[list[str]]) -> np.ndarray:
        """O per response: the mean agreement with its list of other responses (NaN if none)."""
        pairs = [(y, o) for y, group in zip(responses, others) for o in group]
        o = self.agreements(pairs)
        out, at = np.full(len(responses), np.nan), 0
        for i, group in enumerate(others):
            if group:
                out[i] = o[at : at + len(group)].mean()
            at += len(group)
        return out

    def reflection(self, questions: list[str], responses: list[str]) -> np.ndarray:
        """S per response: the mean certainty over the configured reflection prompts."""
        m = self.c.reflections
        if m == 0 or not questions:
            return np.full(len(questions), np.nan)
        contexts = [
            self.lm.chat_prompt([{"role": "user", "content": REFLECTION_PROMPTS[j].format(question=q, answer=y)}])
            + REFLECTION_PREFIX
            for q, y in zip(questions, responses) for j in range(m)
        ]
        lp = self.lm.choose(contexts, OPTIONS, track=self.track, description=f"self-reflection on {len(questions):,} responses")
        certainty = np.array([reflection_certainty(x) for x in lp]).reshape(len(questions), m)
        return certainty.mean(axis=1)

    def combine(self, consistency: np.ndarray, reflection: np.ndarray) -> np.ndarray:
        b = self.c.beta
        return np.array([weighted_mean([o, s], [b, 1 - b]) for o, s in zip(consistency, reflection)])


def sft_rows(table: pa.Table, stage: str) -> list[list[dict]]:
    if shape_of(table) != "sft":
        raise StageError(f"{stage} needs SFT rows (a 'messages' column): confidence is of a response to a prompt")
    rows = table.column("messages").to_pylist()
    for i, m in enumerate(rows):
        if not prompt_messages(m):
            raise StageError(f"{stage}: row {i} (id {table.column('id')[i].as_py()!r}) has no prompt before its response")
    return rows


def nullable(values: np.ndarray) -> pa.Array:
    return pa.array([None if math.isnan(v) else float(v) for v in values], pa.float64())


class ConfidenceStage(Stage):
    """What the stages that measure confidence share: the model they call, and the embedder
    (its packages checked when the stage is built; its identity in the fingerprint) when
    ``similarity: embedding`` uses it."""

    version = "2"  # 2: the embedder is a models: entry, its identity among the step's models
    model_refs = ("model", "embedder")
    config: ConfidenceConfig

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.similarity == "embedding":
            embeddings.require(self.name, faiss=False)

    def models_used(self) -> list[str]:
        c = self.config
        return [c.model, *([c.embedder] if c.similarity == "embedding" else [])]

    def scorer(self, ctx: StageContext) -> ConfidenceScorer:
        """The scorer over the run's model and, loaded only if a pair needs it, its embedder."""
        c = self.config
        return ConfidenceScorer(ctx.model(c.model), c, ctx.reporter.track, lambda: ctx.models.embedder(c.embedder))


class Confidence(ConfidenceStage):
    """CLEAR / BSDetector confidence of each row's response under a model: columns
    ``confidence`` (C), ``consistency`` (O) and ``reflection`` (S). Rejects nothing."""

    name = "confidence"
    Config = ConfidenceConfig
    # Not row-wise: a row's sampled answers (the transformers backend samples a batch with one
    # generator) depend on the rows batched with it, so a block boundary would change them.

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        rows = sft_rows(table, self.name)
        scorer = self.scorer(ctx)
        responses = [response_of(m) for m in rows]
        samples = scorer.samples([prompt_messages(m) for m in rows])
        o = scorer.consistency(responses, samples)
        s = scorer.reflection([prompt_of(m) for m in rows], responses)
        conf = scorer.combine(o, s)
        out = with_columns(table, {"confidence": nullable(conf), "consistency": nullable(o), "reflection": nullable(s)})
        return split(out, [True] * len(out), "none")
