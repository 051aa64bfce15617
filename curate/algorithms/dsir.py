"""DSIR: data selection by importance resampling over hashed n-grams (Xie et al., "Data
Selection for Language Models via Importance Resampling", NeurIPS 2023; official code
p-lambda/dsir, ``data_selection/hashed_ngram_dsir.py``).

1. Features: lower-case the text, split it WordPunct-style (runs of word characters, runs of
   punctuation), hash every unigram and every space-joined i-gram for i = 2..n into B
   buckets. phi(x) in N^B counts them.
2. Fit: p_R = normalised bucket counts over the raw pool, p_T over all target examples (plus
   an optional Laplace pseudo-count), ``log_diff = log(p_T + 1e-8) - log(p_R + 1e-8)``.
3. Weight: ``log w(x) = phi(x) . log_diff``, the log likelihood ratio of the two bag-of-n-gram
   models.
4. Resample k without replacement in proportion to w: add Gumbel(0, 1) noise to log w and
   take the top k (the Gumbel top-k trick), seeded; ``top_k`` takes the top k without noise.
   Documents shorter than ``min_words`` are never chosen.

Defaults (the code): n = 2, B = 10,000, Laplace 0, min_example_length 100. The length filter
is off here by default (``min_words: 0``): DSIR chose among pretraining documents, and an SFT
row of 60 words is not a fragment. Buckets are xxh3 hashes modulo B (the code uses sha256;
any fixed hash gives the same estimator, xxh3 is ~20x faster and stable across processes).
"""

from __future__ import annotations

import re
from functools import partial

import numpy as np
import xxhash

from ..stage import StageContext

WORDPUNCT = re.compile(r"\w+|[^\w\s]+")
BATCH_ROWS = 2000
SMOOTH = 1e-8  # the code's additive constant inside both logs


def bucket_ids(text: str, ngrams: int, buckets: int) -> np.ndarray:
    """The bucket of every unigram .. ``ngrams``-gram of ``text``: len sum(phi) = sum_i (W - i + 1)."""
    words = WORDPUNCT.findall(text.lower())
    grams = list(words)
    for i in range(2, ngrams + 1):
        grams.extend(" ".join(words[j : j + i]) for j in range(len(words) - i + 1))
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(g.encode()) % buckets for g in grams), dtype=np.int32, count=len(grams))


def _batch(ngrams: int, buckets: int, texts: list[str]) -> list[np.ndarray]:
    return [bucket_ids(t, ngrams, buckets) for t in texts]


def featurize(texts: list[str], ngrams: int, buckets: int, ctx: StageContext, what: str) -> list[np.ndarray]:
    """Bucket ids per text, in ``ctx.workers`` processes."""
    return ctx.map_batches(partial(_batch, ngrams, buckets), texts, BATCH_ROWS, f"hashing {what} n-grams")


def counts(features: list[np.ndarray], buckets: int) -> np.ndarray:
    total = np.zeros(buckets, dtype=np.float64)
    for ids in features:
        total += np.bincount(ids, minlength=buckets)
    return total


def log_ratio(raw: np.ndarray, target: np.ndarray, laplace: float = 0.0) -> np.ndarray:
    """``log(p_T + 1e-8) - log(p_R + 1e-8)`` per bucket from raw and target bucket counts."""
    target = target + laplace
    p_t = target / max(target.sum(), 1e-300)
    p_r = raw / max(raw.sum(), 1e-300)
    return np.log(p_t + SMOOTH) - np.log(p_r + SMOOTH)


def log_weights(features: list[np.ndarray], log_diff: np.ndarray) -> np.ndarray:
    """log w(x) = phi(x) . log_diff for each document."""
    return np.fromiter((log_diff[ids].sum() for ids in features), dtype=np.float64, count=len(features))


def document_length(n_features: int, ngrams: int) -> int:
    """The word count recovered from sum(phi), as the code does: (sum + n(n-1)/2) // n."""
    return (n_features + ngrams * (ngrams - 1) // 2) // ngrams


def gumbel_top_k(log_w: np.ndarray, k: int, seed: int, eligible: np.ndarray | None = None, noise: bool = True) -> np.ndarray:
    """Indices of k items drawn without replacement with probability proportional to
    exp(log_w) (Gumbel top-k), best key first; ``eligible`` False items are never drawn."""
    keys = np.asarray(log_w, dtype=np.float64).copy()
    if noise:
        keys += np.random.default_rng(seed).gumbel(size=len(keys))
    if eligible is not None:
        keys[~eligible] = -np.inf
        k = min(k, int(eligible.sum()))
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    top = np.argpartition(-keys, k - 1)[:k] if k < len(keys) else np.arange(len(keys))
    return top[np.argsort(-keys[top], kind="stable")]
