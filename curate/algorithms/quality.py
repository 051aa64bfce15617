"""Model-based quality classification, trained here (DCLM: Li et al., "DataComp-LM: In search
of the next generation of training sets for language models", 2024, section 4.4 and the
``fasttext`` filter of the DCLM repository).

DCLM trains a bigram fastText classifier on positives (instruction-like text: OpenHermes 2.5
and r/ExplainLikeImFive answers) against negatives (a random sample of the web pool), scores
every document by the positive label's probability and keeps the top 10%. The same shape
works with any positives: a user's examples of the documents they want more of.

Two trainers, the same interface:

* ``fasttext``: fastText supervised (Joulin et al. 2017), word uni+bigrams hashed into
  ``buckets``, softmax over the two labels ``__label__hq`` / ``__label__cc`` (DCLM's names),
  one thread and a fixed seed, so the same data gives the same bytes. DCLM's settings are
  fastText's defaults with ``wordNgrams 2``; here ``dim`` 32 and ``buckets`` 2^18 (DCLM: 256 /
  2M): the model is carried to every block's task, and a 2M x 256 table is 2 GB.
* ``hashed_linear``: a logistic regression (scikit-learn, liblinear, L2) over L2-normalised
  counts of word uni+bigrams hashed into ``buckets`` (scikit-learn's HashingVectorizer): no
  compiled extra, slower to featurise than fastText (Python-level n-grams).

``benchmarks/pretrain.py`` measures both (precision@k of held-out documents of the positives'
domain, training and scoring docs/s) and docs/pretraining.md keeps the numbers;
``hashed_linear`` is the default: as precise or more with a few hundred positives, no
compiled extra, deterministic (fastText's SGD can diverge to NaN on small sets; it is trained
in a process of its own, see ``_train_fasttext``).

A trained model is bytes (a fastText ``.bin``, or an ``.npz`` of the linear weights), so it
is a cacheable artifact keyed by its training texts and settings, and travels to Ray tasks.
"""

from __future__ import annotations

import io
import os
import random
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..models.classifier import FASTTEXT_HQ, FASTTEXT_LQ, FastTextModel, fasttext_line, fasttext_module

METHODS = ("fasttext", "hashed_linear")


@dataclass(frozen=True)
class TrainSettings:
    method: str = "hashed_linear"
    dim: int = 32
    epochs: int = 5
    learning_rate: float = 0.1
    word_ngrams: int = 2
    buckets: int = 1 << 18
    min_count: int = 1
    lowercase: bool = True
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        return asdict(self)


def normalise(text: str, s: TrainSettings) -> str:
    line = fasttext_line(text)
    return line.lower() if s.lowercase else line


def train(positives: list[str], negatives: list[str], s: TrainSettings) -> bytes:
    """A classifier of positives against negatives, as bytes (``load`` reads them)."""
    if not positives or not negatives:
        raise ValueError(f"a classifier needs positives and negatives (got {len(positives)} and {len(negatives)})")
    if s.method == "fasttext":
        return _train_fasttext(positives, negatives, s)
    if s.method == "hashed_linear":
        return _train_linear(positives, negatives, s)
    raise ValueError(f"unknown method {s.method!r}; known: {', '.join(METHODS)}")


def _train_fasttext(positives: list[str], negatives: list[str], s: TrainSettings) -> bytes:
    """fastText trained in a fresh (spawned) process: measured, the same data and settings
    gave a degenerate model inside a long-lived process that had run Ray, torch and forked
    workers, and the right one in a fresh one; a process of its own makes the result depend
    on the data and settings alone."""
    fasttext_module()  # here, so a missing package is this process's clear error
    lines = [f"{FASTTEXT_HQ} {normalise(t, s)}" for t in positives] + [f"{FASTTEXT_LQ} {normalise(t, s)}" for t in negatives]
    random.Random(s.seed).shuffle(lines)  # fastText reads its file in order: mixed classes learn better
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with tempfile.TemporaryDirectory(prefix="curate-fasttext-") as tmp:
        data, out = os.path.join(tmp, "train.txt"), os.path.join(tmp, "model.bin")
        with open(data, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            error = pool.submit(_fasttext_process, data, out, s).result()
        if error:
            raise RuntimeError(error)
        with open(out, "rb") as f:
            return f.read()


def _fasttext_process(data: str, out: str, s: TrainSettings) -> str | None:
    """In the spawned process: train, save; the error's message, or None."""
    try:
        model = fasttext_module().train_supervised(
            input=data, dim=s.dim, epoch=s.epochs, lr=s.learning_rate, wordNgrams=s.word_ngrams, bucket=s.buckets,
            minCount=s.min_count, thread=1, seed=s.seed, verbose=0)
        model.save_model(out)
    except (RuntimeError, ValueError) as e:  # "Encountered NaN": the SGD diverged
        return str(e)
    return None


def _vectorizer(s: TrainSettings) -> Any:
    from sklearn.feature_extraction.text import HashingVectorizer

    return HashingVectorizer(ngram_range=(1, s.word_ngrams), n_features=s.buckets, alternate_sign=False,
                             lowercase=s.lowercase, norm="l2", dtype=np.float32)


def _train_linear(positives: list[str], negatives: list[str], s: TrainSettings) -> bytes:
    from sklearn.linear_model import LogisticRegression

    x = _vectorizer(s).transform([*positives, *negatives])
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    model = LogisticRegression(C=1.0, solver="liblinear", max_iter=1000, random_state=s.seed).fit(x, y)
    buf = io.BytesIO()
    np.savez(buf, coef=model.coef_[0].astype(np.float32), intercept=np.float64(model.intercept_[0]))
    return buf.getvalue()


class Trained:
    """A classifier trained here, loaded from its bytes: ``probability(texts)`` of the positive class."""

    def __init__(self, data: bytes, s: TrainSettings):
        self.settings = s
        if s.method == "fasttext":
            self._ft = FastTextModel(data=data)
        else:
            weights = np.load(io.BytesIO(data))
            self._coef, self._intercept = weights["coef"], float(weights["intercept"])
            self._vec = _vectorizer(s)

    def probability(self, texts: list[str]) -> np.ndarray:
        if self.settings.method == "fasttext":
            return self._ft.probability([normalise(t, self.settings) for t in texts], FASTTEXT_HQ)
        if not texts:
            return np.zeros(0, dtype=np.float64)
        z = self._vec.transform(texts) @ self._coef + self._intercept
        return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def probabilities(data: bytes, s: TrainSettings, texts: list[str], workers: int = 1, batch: int = 2_000,
                  loaded: Trained | None = None) -> np.ndarray:
    """``Trained(data, s).probability(texts)``, in ``workers`` forked processes when there are
    several batches: each worker loads the model once (its bytes sent once per worker, not
    per batch)."""
    if workers <= 1 or len(texts) <= batch:
        return (loaded or Trained(data, s)).probability(texts)
    from .workers import map_with_state

    parts = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    return np.concatenate(map_with_state(Trained, (data, s), _score, parts, workers))


def _score(model: Trained, texts: list[str]) -> np.ndarray:
    return model.probability(texts)


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, held-out) indices of ``n`` items, the held-out share ``fraction`` (at least one
    item when there are two or more, none when ``fraction`` is 0)."""
    order = np.random.default_rng(seed).permutation(n)
    k = 0 if fraction <= 0 or n < 2 else max(1, int(round(n * fraction)))
    return np.sort(order[k:]), np.sort(order[:k])


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """The probability that a random positive scores above a random negative (ties: half)."""
    if not len(pos) or not len(neg):
        return float("nan")
    scores = np.r_[pos, neg]
    order = scores.argsort(kind="stable")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # average ranks over ties
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts - 1) / 2.0 + 1
    ranks[order] = np.repeat(avg, counts)
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def precision_at_k(pos: np.ndarray, neg: np.ndarray, k: int | None = None) -> float:
    """Of the ``k`` best-scored items (default: as many as there are positives), the share of positives."""
    k = len(pos) if k is None else k
    if k <= 0:
        return float("nan")
    labels = np.r_[np.ones(len(pos)), np.zeros(len(neg))]
    scores = np.r_[pos, neg]
    top = np.lexsort((np.arange(len(scores)), -scores))[:k]
    return float(labels[top].mean())
