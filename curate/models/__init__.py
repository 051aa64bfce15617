"""The models layer: what stages need from a model, whatever serves it.

* ``LM`` (``base``): token log-probabilities of a target given a context, and sampled or
  greedy completions; every call cached on disk by (model identity, request, parameters).
* ``Embedder`` (``embeddings``): sentence embeddings (``embed(texts)``), the
  ``sentence_transformers`` backend; faiss nearest neighbours.
* Backends: ``transformers`` (``hf``: CPU or GPU), ``openai`` (``openai_api``: any
  OpenAI-compatible server), ``vllm`` (``vllm_offline``: offline ``vllm.LLM``),
  ``sentence_transformers`` (``embeddings``). Chosen per named model in a recipe's
  ``models:`` section (``config``; ``BUILTIN_MODELS`` are known without one: ``minilm``),
  held for a run by a ``ModelPool`` (``pool``), which owns what it loads and frees it in
  ``close()``.
* ``tiny``: trains the small local causal LM the demo and the tests use.
* ``serve``: serves a model over OpenAI-compatible HTTP routes (tests, local use).

Importing this package imports neither torch nor transformers.
"""

from .base import LM, CallStats, ModelError, Sampling, Scores
from .cache import CallCache, cache_root
from .config import (
    BUILTIN_MODELS,
    DEFAULT_EMBEDDER,
    OpenAISpec,
    SentenceTransformersSpec,
    TinyLMSpec,
    TransformersSpec,
    VLLMSpec,
    parse_spec,
)
from .embeddings import Embedder
from .pool import ModelPool

__all__ = [
    "BUILTIN_MODELS", "DEFAULT_EMBEDDER", "LM", "CallCache", "CallStats", "Embedder", "ModelError", "ModelPool",
    "OpenAISpec", "Sampling", "Scores", "SentenceTransformersSpec", "TinyLMSpec", "TransformersSpec", "VLLMSpec",
    "cache_root", "parse_spec",
]
