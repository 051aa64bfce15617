"""How many rows each prompt keeps, by difficulty: DART-Math's Uniform and Prop2Diff targets
(Tong et al., NeurIPS 2024) and a target histogram over difficulty bins, under a budget in
rows or tokens. The ``difficulty`` stage measures; this module allocates (no stage here).

Every function works on per-row arrays -- ``gid`` (the row's prompt group), ``rank`` (the
row's place in its prompt's order of choice, ``choice_ranks``), ``cost`` (1 per row, or its
tokens) -- and per-group arrays -- ``d`` (difficulty), ``avail`` (rows the prompt can
give). A prompt keeps the rows whose rank is below its quota.

The strategies as a stage's config writes them live here too, defined once for the two
stages that use them: ``Uniform`` and ``Prop2Diff`` (DART-Math's two sampling strategies:
``rejection_sample``'s targets of correct responses per prompt, and ``difficulty``'s rows
kept per prompt), ``Histogram`` (difficulty only) and the row / token ``Budget``::

    sampling: {method: uniform, k_u: 40}
    sampling: {method: prop2diff, k_p: 192}          # the hardest prompt gets k_p
    sampling: {method: histogram, bins: [0, 0.5, 1], weights: [1, 3]}
    budget: {rows: 50000}                              # or {tokens: 2000000, token_column: n_tokens}
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from itertools import pairwise
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Discriminator, Field, Tag, model_validator

from ..errors import StageError
from ..stage import StageConfig, Variant, moved_into, one_of  # noqa: F401 (moved_into: re-exported)

EPS = 1e-9  # k * d / max d is a float; 8 * 0.5 must not round up to 5


def prop2diff_quota(difficulty: np.ndarray, k_p: int, minimum: int = 1) -> np.ndarray:
    """DART's Prop2Diff targets: ``max(minimum, ceil(k_p * d / max d))`` (all ``minimum`` when max d is 0)."""
    d = np.asarray(difficulty, dtype=np.float64)
    top = d.max(initial=0.0)
    scaled = np.ceil(k_p * d / top - EPS) if top > 0 else np.zeros_like(d)
    return np.maximum(minimum, scaled).astype(np.int64)


def choice_ranks(gid: np.ndarray, n_groups: int, is_true: np.ndarray, excluded: np.ndarray,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's place in its prompt's order of choice (verified true first, then the rest,
    each seeded-random; excluded rows never chosen), and the rows each prompt can give."""
    n = len(gid)
    priority = np.where(excluded, 2, np.where(is_true, 0, 1))
    order = np.lexsort((np.random.default_rng(seed).random(n), priority, gid))
    sizes = np.bincount(gid, minlength=n_groups)
    starts = np.cumsum(sizes) - sizes
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - starts[gid[order]]
    rank[excluded] = np.iinfo(np.int64).max
    return rank, np.bincount(gid, weights=(~excluded).astype(np.float64), minlength=n_groups).astype(np.int64)


def budgeted_quota(sampling: str, d: np.ndarray, rank: np.ndarray, gid: np.ndarray, avail: np.ndarray,
                   cost: np.ndarray, k_max: int | None, minimum: int, budget: int | None,
                   unit: str) -> tuple[np.ndarray, int]:
    """(quota per prompt, the k used) for ``uniform`` (k = rows per prompt) or ``prop2diff``
    (k = k_p): ``k_max`` when there is no budget, else the largest k (up to ``k_max``, when
    given) whose rows fit in ``budget``."""
    if sampling == "uniform":
        def at(k: int) -> np.ndarray:
            return np.minimum(avail, k)
        hi, key = k_max or max(int(avail.max(initial=0)), 1), "k_u"
    else:
        top = d.max(initial=0.0)
        rel = d / top if top > 0 else np.zeros_like(d)

        def at(k: int) -> np.ndarray:
            return np.minimum(avail, prop2diff_quota(rel, k, minimum))
        # past this k_p every quota is capped at the rows its prompt has
        smallest = rel[rel > 0].min(initial=1.0)
        hi, key = k_max or max(1, math.ceil(int(avail.max(initial=1)) / smallest)), "k_p"
    if budget is None:
        return at(hi), hi

    def spent(k: int) -> float:
        return float(cost[rank < at(k)[gid]].sum())

    k = largest(spent, 1, hi, budget)
    if k < 1:
        raise StageError(f"difficulty: a budget of {budget:,} {unit} is below what the smallest {key} (1) keeps "
                         f"({spent(1):,.0f} {unit}); raise the budget")
    return at(k), k


def histogram_quota(d: np.ndarray, rank: np.ndarray, gid: np.ndarray, avail: np.ndarray, cost: np.ndarray,
                    bins: list[float], weights: list[float], budget: int, whole_rows: bool,
                    seed: int) -> tuple[np.ndarray, dict[str, int], list[str]]:
    """(quota per prompt, rows per bin, bins short of their share). Per bin: the largest even
    count per prompt within the bin's share of the budget, then one more row for prompts in a
    seeded random order while the share allows. Difficulties outside the bins get 0."""
    edges = np.asarray(bins)
    w = np.asarray(weights) / sum(weights)
    target = w * budget
    if whole_rows:  # largest remainder: integer shares that sum to the budget
        base = np.floor(target)
        base[np.argsort(base - target, kind="stable")[: int(budget - base.sum())]] += 1
        target = base
    inside = (d >= edges[0]) & (d <= edges[-1])
    which = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, len(w) - 1)
    quota = np.zeros(len(d), dtype=np.int64)
    order = np.random.default_rng(seed + 1).permutation(len(d))
    per_bin: dict[str, int] = {}
    short = []
    for j in range(len(w)):
        members = inside & (which == j)
        row_in = members[gid]
        spent = partial(spent_below, cost[row_in], rank[row_in])
        hi = int(avail[members].max(initial=0))
        k = max(largest(spent, 0, hi, target[j]), 0)
        quota[members] = np.minimum(avail[members], k)
        room = target[j] - spent(k)
        nxt = np.zeros(len(d))  # the cost of each member's next row
        has_next = row_in & (rank == k)
        nxt[gid[has_next]] = cost[has_next]
        cand = order[members[order] & (avail[order] > k)]
        took = cand[np.cumsum(nxt[cand]) <= room]
        quota[took] += 1
        label = f"bin_{edges[j]:g}-{edges[j + 1]:g}"
        per_bin[label] = int((row_in & (rank < quota[gid])).sum())
        if spent(hi) < target[j]:
            short.append(f"{label} ({per_bin[label]:,} rows)")
    return quota, per_bin, short


def largest(spent: Callable[[int], float], lo: int, hi: int, budget: float) -> int:
    """The largest k in [lo, hi] with spent(k) <= budget (spent non-decreasing); lo - 1 if none."""
    if spent(lo) > budget:
        return lo - 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if spent(mid) <= budget else (lo, mid - 1)
    return lo


def spent_below(cost: np.ndarray, rank: np.ndarray, k: int) -> float:
    """What the rows of rank below k cost."""
    return float(cost[rank < k].sum())


# -- the strategies as configs write them ---------------------------------------------------
class Uniform(Variant):
    """DART's Uniform: the same count k_u for every prompt."""

    method: Literal["uniform"] = "uniform"
    k_u: int | None = Field(None, ge=1)
    """Rows (responses) per prompt: DART's README samples 40 correct responses per query, its
    pipeline/curate.ipynb keeps 50. None only under difficulty's budget, which then picks the
    largest k_u that fits (a k_u given with a budget caps that search)."""


class Prop2Diff(Variant):
    """DART's Prop2Diff: ``n_q = max(min_per_prompt, ceil(k_p * d_q / max d))``, the hardest
    prompt getting k_p."""

    method: Literal["prop2diff"] = "prop2diff"
    k_p: int | None = Field(None, ge=1)
    """The hardest prompt's count (the paper: about 192; no code default, so it is given). None
    only under difficulty's budget, which then picks the largest k_p that fits (a k_p given with
    a budget caps that search)."""
    min_per_prompt: int = Field(1, ge=0)
    """The fewest a prompt gets, however easy (DART: 1)."""

    @model_validator(mode="after")
    def _ordered(self) -> Prop2Diff:
        if self.k_p is not None and self.min_per_prompt > self.k_p:
            raise ValueError(f"min_per_prompt={self.min_per_prompt} is above k_p={self.k_p}")
        return self


class Histogram(Variant):
    """Target shares of the budget per difficulty bin; within a bin every prompt gets the same
    count, then single extra rows fill the bin up to its share."""

    method: Literal["histogram"] = "histogram"
    bins: list[float]
    """Increasing difficulty edges in [0, 1], e.g. [0, 0.25, 0.5, 0.75, 1] (the last bin includes its right edge)."""
    weights: list[float]
    """The target share of the budget per bin (one per bin; normalised)."""

    @model_validator(mode="after")
    def _shape(self) -> Histogram:
        b, w = self.bins, self.weights
        if len(b) < 2 or any(not 0 <= e <= 1 for e in b) or any(x >= y for x, y in pairwise(b)):
            raise ValueError(f"bins must be at least two increasing edges in [0, 1] (got {b})")
        if len(w) != len(b) - 1:
            raise ValueError(f"weights needs one value per bin: {len(b) - 1} for {len(b)} bin edges (got {len(w)})")
        if any(x < 0 for x in w) or sum(w) <= 0:
            raise ValueError(f"weights must be non-negative and not all 0 (got {w})")
        return self


# DART-Math's two sampling strategies (rejection_sample's targets); difficulty adds the histogram.
DartSampling = one_of(Uniform, Prop2Diff)


class RowBudget(StageConfig):
    rows: int = Field(ge=1)
    """The most rows to keep."""


class TokenBudget(StageConfig):
    tokens: int = Field(ge=1)
    """The most tokens to keep."""
    token_column: str | None = None
    """A numeric column with each row's token count; None = approx_tokens of the conversation (or text)."""


def _budget_unit(value: Any) -> str | None:
    if isinstance(value, dict):
        return "tokens" if "tokens" in value else "rows" if "rows" in value else None
    return "tokens" if isinstance(value, TokenBudget) else "rows" if isinstance(value, RowBudget) else None


Budget = Annotated[
    Annotated[RowBudget, Tag("rows")] | Annotated[TokenBudget, Tag("tokens")],
    Discriminator(_budget_unit, custom_error_type="budget",
                  custom_error_message="a mapping: {rows: N}, or {tokens: N} with an optional token_column"),
]
