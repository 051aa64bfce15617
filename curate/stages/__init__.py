"""The one registry of stages: name -> class. ``curate stages``, recipe validation and
the docs are generated from it and from the config classes."""

from __future__ import annotations

from ..stage import Stage
from .dedup import ExactDedup
from .heuristics import HeuristicFilter
from .minhash import MinhashDedup
from .semantic import SemanticDedup

REGISTRY: dict[str, type[Stage]] = {cls.name: cls for cls in (ExactDedup, HeuristicFilter, MinhashDedup, SemanticDedup)}

__all__ = ["REGISTRY", "ExactDedup", "HeuristicFilter", "MinhashDedup", "SemanticDedup"]
