"""The one registry of stages: name -> class. ``curate stages``, recipe validation and
the docs are generated from it and from the config classes."""

from __future__ import annotations

from ..stage import Stage
from .confidence import Confidence
from .dart import RejectionSample
from .decontaminate import Decontaminate
from .dedup import ExactDedup
from .difficulty import Difficulty
from .extract import ExtractText
from .heuristics import HeuristicFilter
from .language import LanguageId
from .lines import LineFilter
from .llm2llm import LLM2LLM
from .minhash import MinhashDedup
from .mix import Mix
from .perplexity import IfdScore, PerplexityFilter
from .pii import PiiRedact
from .quality import QualityClassifier
from .rectify import Rectify
from .select import SelectTarget
from .semantic import SemanticDedup
from .verify import Verify

REGISTRY: dict[str, type[Stage]] = {
    cls.name: cls
    for cls in (Confidence, Decontaminate, Difficulty, ExactDedup, ExtractText, HeuristicFilter, IfdScore, LanguageId,
                LineFilter, LLM2LLM, MinhashDedup, Mix, PerplexityFilter, PiiRedact, QualityClassifier, Rectify, RejectionSample,
                SelectTarget, SemanticDedup, Verify)
}

# Stage names an earlier release used -> what replaced them (recipes get "renamed to ...").
RENAMED: dict[str, str] = {
    "augment": "two stages: 'rejection_sample' (augment's default method, DART-Math's rejection sampling; "
               "sampling: {method: uniform, k_u: 40} replaces targets / per_prompt / max_per_prompt) or 'llm2llm' "
               "(augment's method: llm2llm)",
}

__all__ = [
    "REGISTRY", "RENAMED", "Confidence", "Decontaminate", "Difficulty", "ExactDedup", "ExtractText", "HeuristicFilter",
    "IfdScore", "LanguageId", "LineFilter", "LLM2LLM", "MinhashDedup", "Mix", "PerplexityFilter", "PiiRedact", "QualityClassifier",
    "Rectify", "RejectionSample", "SelectTarget", "SemanticDedup", "Verify",
]
