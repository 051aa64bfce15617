"""How good are these MinHash settings on *my* data? (``curate dedup-calibrate REF``)

Users cannot reason about (num_perm, bands, rows, threshold) from formulas alone: the
answer depends on how Jaccard similarities are spread in their corpus. This samples
rows of a dataset version and measures, against true Jaccard of shingle sets:

* the candidates the chosen banding produces (precision: share with J >= t; recall:
  share of true pairs that become candidates),
* the pairs that survive the chosen verification (what ``minhash_dedup`` merges),
* the classic unverified banding that minimises weighted errors, for comparison,

plus the Jaccard histogram of candidates and example false positives and negatives.

The "true pairs" are found with a permissive reference banding (rows = 3 or 2) whose
probability of catching a pair at the threshold is printed (~1 for t >= 0.5); every
reference candidate's Jaccard is computed exactly, so truth has no false positives.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from .algorithms import lsh
from .records import default_text_field, texts
from .stage import StageContext
from .stages.minhash import MinhashDedupConfig, signatures_of


def calibrate(table: pa.Table, config: MinhashDedupConfig, sample: int = 20_000, seed: int = 0,
              examples: int = 3, ctx: StageContext | None = None) -> dict[str, Any]:
    ctx = ctx or StageContext()
    rng = np.random.default_rng(seed)
    if len(table) > sample:
        table = table.take(pa.array(np.sort(rng.choice(len(table), sample, replace=False))))
    field = config.field or default_text_field(table)
    sig, valid = signatures_of(table, field, config, ctx, "calibrate")
    normalize = config.normalizer()
    raw = texts(table, field)
    sets = lsh.shingle_sets([normalize(t) for t in raw], config.ngram, config.unit)
    t = config.threshold

    ref_rows = 3 if t >= 0.5 else 2
    ref_bands = config.num_perm // ref_rows
    ref_pairs = lsh.candidate_pairs(lsh.band_hashes(sig, ref_bands, ref_rows), valid)
    ref_j = lsh.exact_jaccard(dict(enumerate(sets)), ref_pairs)
    truth = {tuple(p) for p in ref_pairs[ref_j >= t].tolist()}
    jaccard = dict(zip(map(tuple, ref_pairs.tolist()), ref_j.tolist()))

    def exact(pairs: np.ndarray) -> np.ndarray:
        missing = [k for k, p in enumerate(pairs.tolist()) if tuple(p) not in jaccard]
        if missing:
            extra = lsh.exact_jaccard(dict(enumerate(sets)), pairs[missing])
            jaccard.update(zip(map(tuple, pairs[missing].tolist()), extra.tolist()))
        return np.array([jaccard[tuple(p)] for p in pairs.tolist()], dtype=np.float32)

    bands, rows = config.banding()
    candidates = lsh.candidate_pairs(lsh.band_hashes(sig, bands, rows), valid)
    cand_j = exact(candidates)
    if config.verify == "exact":
        merged = candidates[cand_j >= t]
    elif config.verify == "signature":
        merged = candidates[lsh.estimated_jaccard(sig, candidates) >= t]
    else:
        merged = candidates
    ob, orow = lsh.optimal_bands(t, config.num_perm)
    classic = lsh.candidate_pairs(lsh.band_hashes(sig, ob, orow), valid)

    def scores(pairs: np.ndarray) -> dict[str, Any]:
        found = {tuple(p) for p in pairs.tolist()}
        hit = len(found & truth)
        return {"pairs": len(found), "precision": hit / len(found) if found else None,
                "recall": hit / len(truth) if truth else None}

    def show(p: tuple[int, int]) -> dict[str, Any]:
        i, j = p
        return {"a": table.column("id")[i].as_py(), "b": table.column("id")[j].as_py(),
                "jaccard": round(float(jaccard.get(p, exact(np.array([p]))[0])), 3),
                "a_text": raw[i][:160], "b_text": raw[j][:160]}

    cand_set = {tuple(p) for p in candidates.tolist()}
    false_pos = [tuple(p) for p in candidates[cand_j < t].tolist()]
    false_neg = sorted(truth - {tuple(p) for p in merged.tolist()}, key=lambda p: -jaccard[p])
    hist, edges = np.histogram(cand_j, bins=10, range=(0.0, 1.0))
    return {
        "rows": len(table),
        "settings": {"threshold": t, "num_perm": config.num_perm, "ngram": config.ngram, "unit": config.unit,
                     "bands": bands, "rows": rows, "verify": config.verify},
        "banding": {"implied_threshold": round((1 / bands) ** (1 / rows), 3),
                    "p_candidate_at_threshold": round(float(lsh.candidate_probability(t, bands, rows)), 4)},
        "truth": {"pairs": len(truth), "reference_banding": [ref_bands, ref_rows],
                  "p_found_at_threshold": round(float(lsh.candidate_probability(t, ref_bands, ref_rows)), 6)},
        "candidates": scores(candidates),
        "merged": scores(merged),
        "classic_unverified": {"bands": ob, "rows": orow, **scores(classic)},
        "candidate_jaccard_histogram": {f"{edges[k]:.1f}-{edges[k + 1]:.1f}": int(hist[k]) for k in range(10)},
        "examples": {
            "false_positive_candidates": [show(p) for p in false_pos[:examples]],
            "missed_true_pairs": [show(p) for p in false_neg[:examples]],
            "missed_by_banding": sum(1 for p in truth if p not in cand_set),
        },
    }
