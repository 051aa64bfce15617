"""The one registry of stages: name -> class. ``curate stages``, recipe validation and
the docs are generated from it and from the config classes."""

from __future__ import annotations

from ..stage import Stage
from .decontaminate import Decontaminate
from .dedup import ExactDedup
from .heuristics import HeuristicFilter
from .minhash import MinhashDedup
from .perplexity import IfdScore, PerplexityFilter
from .semantic import SemanticDedup

REGISTRY: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (Decontaminate, ExactDedup, HeuristicFilter, IfdScore, MinhashDedup, PerplexityFilter, SemanticDedup)
}

__all__ = [
    "REGISTRY", "Decontaminate", "ExactDedup", "HeuristicFilter", "IfdScore", "MinhashDedup", "PerplexityFilter",
    "SemanticDedup",
]
