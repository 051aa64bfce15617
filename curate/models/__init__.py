"""The models layer: what stages need from a model, whatever serves it.

* ``LM`` (``base``): token log-probabilities of a target given a context, and sampled or
  greedy completions; every call cached on disk by (model identity, request, parameters).
* Backends: ``transformers`` (``hf``: CPU or GPU), ``openai`` (``openai_api``: any
  OpenAI-compatible server), ``vllm`` (``vllm_offline``: offline ``vllm.LLM``). Chosen per
  named model in a recipe's ``models:`` section (``config``), held for a run by a
  ``ModelPool`` (``pool``).
* ``tiny``: trains the small local causal LM the demo and the tests use.
* ``serve``: serves a model over OpenAI-compatible HTTP routes (tests, local use).
* ``embeddings``: sentence-transformers embeddings and faiss nearest neighbours.

Importing this package imports neither torch nor transformers.
"""

from .base import LM, CallStats, ModelError, Sampling, Scores
from .cache import CallCache, cache_root
from .config import OpenAISpec, TinyLMSpec, TransformersSpec, VLLMSpec, parse_spec
from .pool import ModelPool

__all__ = [
    "LM", "CallCache", "CallStats", "ModelError", "ModelPool", "OpenAISpec", "Sampling", "Scores",
    "TinyLMSpec", "TransformersSpec", "VLLMSpec", "cache_root", "parse_spec",
]
