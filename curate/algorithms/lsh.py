"""MinHash LSH building blocks, vectorised with numpy: shingle hashes, signatures,
banding, candidate pairs, verification and clusters.

Pure functions over arrays, no stage or store: ``minhash_dedup``, ``curate
dedup-calibrate`` and a distributed executor can all call them batch by batch.

**Shingles.** Text is normalised (``Normalizer``), then cut into word n-grams (tokens
are the runs of non-space bytes of the normalised UTF-8) or character n-grams (code
points). Each shingle's 32-bit hash is a polynomial hash mod 2^64 folded to 32 bits:
a token's hash is ``sum((byte_k + 1) * P^k)``, a shingle's is ``sum(unit_i * Q^i)`` over
its n units (token hashes, or code points + 1). Both are computed for a whole batch at
once from prefix sums (``(S[end] - S[start]) * P^-start``), so no Python code runs per
shingle -- shingling, which dominates every peer's run time, costs a few numpy passes
over the bytes. ``shingle_hash32`` computes the same hash of one shingle in plain Python.

**Signatures** follow datasketch 2.0's default ``affine32`` scheme exactly:
``a, b`` drawn from ``np.random.RandomState(seed)`` (``a`` odd), and
``sig_i = min over shingles of (a_i * fmix32(h) + b_i) mod 2^32``. So a signature equals
``datasketch.MinHash(num_perm, seed, hashfunc=shingle_hash32)`` fed the same shingles
(a test asserts it), and datasketch's LSH and ``LeanMinHash`` can read ours.

**Banding.** ``optimal_bands`` minimises the weighted false-positive and
false-negative areas under the candidate curve ``1 - (1 - s^r)^b`` (datasketch's and
text-dedup's ``optimal_param``). Candidates come from sorting each band's 64-bit hashes
(``np.argsort``), never from Python dicts of millions of keys.
"""

from __future__ import annotations

import string
import unicodedata
from dataclasses import dataclass

import numpy as np

MAX32 = np.uint32(0xFFFFFFFF)
_P = np.uint64(0x9E3779B97F4A7C15)  # odd 64-bit constants (golden ratio, splitmix64)
_Q = np.uint64(0xBF58476D1CE4E5B9)
_BAND_MIX = np.uint64(0x94D049BB133111EB)
_MASK64 = (1 << 64) - 1

# Every group of rows that share a band hash gets all its pairs checked when it is this
# small; larger groups (boilerplate copied hundreds of times) get a star to their first
# member plus a chain through the sorted order, which keeps the work linear.
ALL_PAIRS_UP_TO = 32


@dataclass(frozen=True)
class Normalizer:
    """lower-case, punctuation -> space, digits -> 0, Unicode NFKC; whitespace always collapsed."""

    lowercase: bool = True
    strip_punctuation: bool = True
    normalize_digits: bool = False
    unicode_nfkc: bool = False

    def __call__(self, text: str) -> str:
        if self.unicode_nfkc:
            text = unicodedata.normalize("NFKC", text)
        if self.lowercase:
            text = text.lower()
        if self.strip_punctuation:
            text = text.translate(_PUNCT_TO_SPACE)
        if self.normalize_digits:
            text = text.translate(_DIGITS_TO_ZERO)
        return " ".join(text.split())


_PUNCT_TO_SPACE = str.maketrans({c: " " for c in string.punctuation + "“”‘’«»–—…·•"})
_DIGITS_TO_ZERO = str.maketrans({c: "0" for c in string.digits})


# ---- shingle hashes --------------------------------------------------------------------
_POWERS: dict[int, np.ndarray] = {}


def _powers(base: np.uint64, n: int) -> np.ndarray:
    """base^0 .. base^(n-1) mod 2^64, from a per-process table grown by doubling."""
    table = _POWERS.get(int(base))
    if table is None or len(table) < n:
        size = max(n, 2 * len(table) if table is not None else 1 << 16)
        table = np.full(size, base, dtype=np.uint64)
        table[0] = 1
        with np.errstate(over="ignore"):
            table = np.cumprod(table, dtype=np.uint64)
        _POWERS[int(base)] = table
    return table[:n]


def _inverse(x: np.uint64) -> np.uint64:
    return np.uint64(pow(int(x), -1, 1 << 64))


def _window_hashes(units: np.ndarray, starts: np.ndarray, length: np.ndarray | int, base: np.uint64) -> np.ndarray:
    """sum(units[s + i] * base^i for i < length) mod 2^64 for every start s, via prefix sums."""
    with np.errstate(over="ignore"):
        pw = _powers(base, len(units) + 1)
        prefix = np.zeros(len(units) + 1, dtype=np.uint64)
        np.cumsum(units * pw[:-1], out=prefix[1:])
        inv = _powers(_inverse(base), len(units) + 1)
        return (prefix[starts + length] - prefix[starts]) * inv[starts]


def shingle_hashes(texts: list[str], ngram: int, unit: str = "word") -> tuple[np.ndarray, np.ndarray]:
    """32-bit hashes of every shingle of every (already normalised) text.

    Returns ``(hashes, offsets)``: text ``k``'s shingles are ``hashes[offsets[k]:offsets[k+1]]``.
    A text with fewer than ``ngram`` units has no shingles (and so no signature)."""
    if unit == "word":
        units, unit_offsets = _token_hashes(texts)
    else:
        units, unit_offsets = _code_points(texts)
    counts = np.diff(unit_offsets)
    shingle_counts = np.maximum(counts - ngram + 1, 0)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(shingle_counts, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.uint32), offsets
    # shingle starts: for each text, unit_offsets[k] + 0 .. shingle_counts[k] - 1
    doc_of = np.repeat(np.arange(len(texts)), shingle_counts)
    starts = unit_offsets[:-1][doc_of] + (np.arange(offsets[-1]) - offsets[:-1][doc_of])
    g = _window_hashes(units, starts, ngram, _Q)
    return _fold32(g), offsets


def _token_hashes(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hash of every space-separated token, and each text's range of tokens."""
    encoded = [t.encode() for t in texts]
    blob = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
    if len(blob) == 0:
        return np.zeros(0, dtype=np.uint64), np.zeros(len(texts) + 1, dtype=np.int64)
    is_char = blob != 32
    edges = np.diff(np.concatenate(([False], is_char, [False])).astype(np.int8))
    tok_starts = np.flatnonzero(edges == 1)
    tok_ends = np.flatnonzero(edges == -1)
    byte_starts = np.zeros(len(texts), dtype=np.int64)
    np.cumsum([len(e) + 1 for e in encoded[:-1]], out=byte_starts[1:])
    doc_of = np.searchsorted(byte_starts, tok_starts, side="right") - 1
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(np.bincount(doc_of, minlength=len(texts)), out=offsets[1:])
    with np.errstate(over="ignore"):
        h = _window_hashes(blob.astype(np.uint64) + np.uint64(1), tok_starts, tok_ends - tok_starts, _P)
    return h, offsets


def _code_points(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    points = np.frombuffer("".join(texts).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64) + np.uint64(1)
    offsets = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum([len(t) for t in texts], out=offsets[1:])
    return points, offsets


def _fold32(g: np.ndarray) -> np.ndarray:
    return ((g ^ (g >> np.uint64(32))) & np.uint64(0xFFFFFFFF)).astype(np.uint32)


def shingle_hash32(shingle: str, unit: str = "word") -> int:
    """The hash ``shingle_hashes`` gives one shingle (tokens joined by single spaces, or n
    characters), in plain Python: the reference the vectorised code is tested against."""
    pieces = shingle.split(" ") if unit == "word" else list(shingle)
    g = 0
    for i, piece in enumerate(pieces):
        if unit == "word":
            u = 0
            for k, byte in enumerate(piece.encode()):
                u = (u + (byte + 1) * pow(int(_P), k, 1 << 64)) & _MASK64
        else:
            u = ord(piece) + 1
        g = (g + u * pow(int(_Q), i, 1 << 64)) & _MASK64
    return (g ^ (g >> 32)) & 0xFFFFFFFF


def shingles(text: str, ngram: int, unit: str = "word") -> list[str]:
    """The shingles of one normalised text as strings (for tests and examples)."""
    pieces = text.split() if unit == "word" else list(text)
    sep = " " if unit == "word" else ""
    return [sep.join(pieces[i : i + ngram]) for i in range(len(pieces) - ngram + 1)]


# ---- signatures ------------------------------------------------------------------------
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch 2.0 ``affine32`` permutation parameters (a odd), drawn the same way."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


def fmix32(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer (datasketch pre-mixes every hash with it)."""
    with np.errstate(over="ignore"):
        h = h ^ (h >> np.uint32(16))
        h = h * np.uint32(0x85EBCA6B)
        h = h ^ (h >> np.uint32(13))
        h = h * np.uint32(0xC2B2AE35)
        return h ^ (h >> np.uint32(16))


def signatures(hashes: np.ndarray, offsets: np.ndarray, a: np.ndarray, b: np.ndarray,
               chunk_shingles: int = 1 << 13) -> np.ndarray:
    """(n, num_perm) uint32 MinHash signatures; a text without shingles gets all MAX32.

    Works on (num_perm, chunk) blocks of ~8k shingles so the permuted values stay in
    cache and the per-text minimum runs over contiguous memory (5x faster than
    (chunk, num_perm) blocks of 64k)."""
    n = len(offsets) - 1
    sig = np.full((n, len(a)), MAX32, dtype=np.uint32)
    hv = fmix32(hashes)
    docs = np.flatnonzero(np.diff(offsets))
    a_col, b_col = a[:, None], b[:, None]
    start = 0
    while start < len(docs):  # chunks of whole texts, about chunk_shingles shingles each
        stop = int(np.searchsorted(offsets[docs + 1], offsets[docs[start]] + chunk_shingles, side="right"))
        stop = max(stop, start + 1)
        chunk = docs[start:stop]
        lo, hi = offsets[chunk[0]], offsets[chunk[-1] + 1]
        with np.errstate(over="ignore"):
            phv = a_col * hv[None, lo:hi]
            phv += b_col
        sig[chunk] = np.minimum.reduceat(phv, offsets[chunk] - lo, axis=1).T
        start = stop
    return sig


# ---- banding and candidates ------------------------------------------------------------
def candidate_probability(s: float | np.ndarray, bands: int, rows: int):
    return 1.0 - (1.0 - np.power(s, rows)) ** bands


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands * rows <= num_perm minimising
    fp_weight * P(candidate | s < t) area + fn_weight * P(miss | s >= t) area."""
    lo, hi = np.linspace(0.0, threshold, 201), np.linspace(threshold, 1.0, 201)
    best, best_err = (1, num_perm), float("inf")
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
            fn = np.trapezoid(1.0 - candidate_probability(hi, bands, rows), hi)
            err = fp_weight * fp + fn_weight * fn
            if err < best_err - 1e-12:
                best, best_err = (bands, rows), err
    return best


def recall_bands(threshold: float, num_perm: int, min_recall: float = 0.99) -> tuple[int, int]:
    """The (bands, rows) with the smallest false-positive area among those that make a pair
    at exactly ``threshold`` a candidate with probability >= ``min_recall`` -- the right
    banding when candidates are verified afterwards (e.g. (21, 6) for 0.8 / 128)."""
    lo = np.linspace(0.0, threshold, 201)
    best, best_fp = None, float("inf")
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) < min_recall:
            continue
        fp = np.trapezoid(candidate_probability(lo, bands, rows), lo)
        if fp < best_fp:
            best, best_fp = (bands, rows), fp
    return best or (num_perm, 1)


def band_hashes(sig: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64: each band's ``rows`` values hashed together (band index mixed in,
    so equal values in different bands never meet)."""
    n = sig.shape[0]
    out = np.empty((n, bands), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for k in range(bands):
            h = np.full(n, np.uint64(k + 1) * _BAND_MIX, dtype=np.uint64)
            for v in sig[:, k * rows : (k + 1) * rows].T:
                h = (h ^ v.astype(np.uint64)) * _BAND_MIX
                h ^= h >> np.uint64(29)
            out[:, k] = h
    return out


def candidate_pairs(bh: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Unique (i, j) row pairs, i < j, that share at least one band hash; (m, 2) int64,
    sorted. Rows where ``valid`` is False (no signature) never pair. Pairs are kept as
    int64 keys ``i * n + j``, made unique within each band before they are merged."""
    n = bh.shape[0]
    rows_idx = np.arange(n) if valid is None else np.flatnonzero(valid)
    per_band = [np.zeros(0, dtype=np.int64)]
    for k in range(bh.shape[1]):
        per_band.append(pair_keys(bh[rows_idx, k], rows_idx, n))
    return pairs_of(sorted_unique(np.concatenate(per_band)), n)


def pair_keys(keys: np.ndarray, rows: np.ndarray, n: int) -> np.ndarray:
    """The sorted unique pair keys ``i * n + j`` (i < j) of the rows of one band that share a
    hash: ``keys[k]`` is row ``rows[k]``'s hash, ``rows`` ascending. The pairs depend only on
    the (key, row) multiset, so a band cut into hash partitions gives, partition by
    partition, the same pairs as the whole band."""
    order = np.argsort(keys, kind="stable")
    sk, members = keys[order], rows[order]
    starts = np.concatenate(([0], np.flatnonzero(np.diff(sk)) + 1)) if len(sk) else np.zeros(0, np.int64)
    sizes = np.diff(np.concatenate((starts, [len(sk)])))
    multi = sizes > 1
    pairs = _group_pairs(members, starts[multi], sizes[multi])
    lo, hi = np.minimum(pairs[:, 0], pairs[:, 1]), np.maximum(pairs[:, 0], pairs[:, 1])
    return sorted_unique(lo * n + hi)


def pairs_of(keys: np.ndarray, n: int) -> np.ndarray:
    """(m, 2) int64 pairs from pair keys ``i * n + j``."""
    return np.stack([keys // n, keys % n], axis=1) if len(keys) else np.zeros((0, 2), dtype=np.int64)


def sorted_unique(a: np.ndarray) -> np.ndarray:
    """``np.unique(a)`` of a 1-d integer array: a sort and a mask (numpy 2's ``np.unique``
    takes ~50x longer than its own ``np.sort`` on 500k uint64 keys)."""
    if len(a) == 0:
        return a.copy()
    a = np.sort(a)
    keep = np.empty(len(a), dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _group_pairs(members: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    out = [np.zeros((0, 2), dtype=np.int64)]
    small = sizes <= ALL_PAIRS_UP_TO
    for size in np.unique(sizes[small]):  # all pairs, for every group of this size at once
        s = starts[small][sizes[small] == size]
        ii, jj = np.triu_indices(size, k=1)
        out.append(np.stack([members[s[:, None] + ii].ravel(), members[s[:, None] + jj].ravel()], axis=1))
    for s, size in zip(starts[~small], sizes[~small]):  # star to the first + chain
        group = members[s : s + size]
        out.append(np.stack([np.full(size - 1, group[0]), group[1:]], axis=1))
        out.append(np.stack([group[1:-1], group[2:]], axis=1))
    return np.concatenate(out).astype(np.int64)


# ---- verification and clusters ---------------------------------------------------------
def estimated_jaccard(sig: np.ndarray, pairs: np.ndarray, chunk: int = 1 << 15) -> np.ndarray:
    """Fraction of equal signature slots for each pair (an unbiased Jaccard estimate)."""
    out = np.empty(len(pairs), dtype=np.float32)
    for s in range(0, len(pairs), chunk):
        p = pairs[s : s + chunk]
        out[s : s + chunk] = (sig[p[:, 0]] == sig[p[:, 1]]).mean(axis=1)
    return out


def exact_jaccard(sets: dict[int, np.ndarray], pairs: np.ndarray) -> np.ndarray:
    """True Jaccard of the shingle-hash sets (sorted unique arrays) of each pair."""
    out = np.empty(len(pairs), dtype=np.float32)
    for k, (i, j) in enumerate(pairs):
        a, b = sets[int(i)], sets[int(j)]
        inter = len(np.intersect1d(a, b, assume_unique=True))
        union = len(a) + len(b) - inter
        out[k] = inter / union if union else 0.0
    return out


def shingle_sets(texts: list[str], ngram: int, unit: str) -> list[np.ndarray]:
    """Each text's sorted, unique shingle hashes (one sort over (text, hash) keys for the
    whole batch instead of one ``np.unique`` per text)."""
    hashes, offsets = shingle_hashes(texts, ngram, unit)
    doc = np.repeat(np.arange(len(texts), dtype=np.uint64), np.diff(offsets))
    keys = sorted_unique((doc << np.uint64(32)) | hashes.astype(np.uint64))
    bounds = np.searchsorted(keys >> np.uint64(32), np.arange(len(texts) + 1, dtype=np.uint64))
    values = (keys & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    return [values[bounds[k] : bounds[k + 1]] for k in range(len(texts))]


def components(n: int, pairs: np.ndarray) -> np.ndarray:
    """Connected-component label of each of n rows given undirected edges (union-find
    semantics; scipy's C implementation)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(pairs) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def sure_and_doubtful(est: np.ndarray, threshold: float, num_perm: int) -> tuple[np.ndarray, np.ndarray]:
    """(sure, doubtful) masks of signature estimates: more than 5 sigma above the threshold,
    and within 5 sigma of it (sigma = sqrt(t(1-t)/num_perm), the estimate's standard
    deviation at t: either way it is wrong with probability < 1e-6)."""
    sigma = (threshold * (1 - threshold) / num_perm) ** 0.5
    sure = est >= threshold + 5 * sigma
    return sure, ~sure & (est >= threshold - 5 * sigma)
