"""The one registry of stages: name -> class. ``curate stages``, recipe validation and
the docs are generated from it and from the config classes."""

from __future__ import annotations

from ..stage import Stage
from .augment import Augment
from .confidence import Confidence
from .decontaminate import Decontaminate
from .dedup import ExactDedup
from .difficulty import Difficulty
from .heuristics import HeuristicFilter
from .minhash import MinhashDedup
from .mix import Mix
from .perplexity import IfdScore, PerplexityFilter
from .rectify import Rectify
from .select import SelectTarget
from .semantic import SemanticDedup
from .verify import Verify

REGISTRY: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (Augment, Confidence, Decontaminate, Difficulty, ExactDedup, HeuristicFilter, IfdScore, MinhashDedup, Mix, PerplexityFilter,
                Rectify, SelectTarget, SemanticDedup, Verify)
}

# Stage names an earlier release used -> what replaced them (recipes get "renamed to ...").
RENAMED: dict[str, str] = {}

__all__ = [
    "REGISTRY", "RENAMED", "Augment", "Confidence", "Decontaminate", "Difficulty", "ExactDedup", "HeuristicFilter", "IfdScore", "MinhashDedup", "Mix",
    "PerplexityFilter", "Rectify", "SelectTarget", "SemanticDedup", "Verify",
]
