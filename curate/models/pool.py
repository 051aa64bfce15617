"""The named models of one run: built on first use, each with its call cache and counters.

The pool owns what it loads (language models and embedders alike) and frees it in
``close()``; nothing is kept per process, so two pools never share weights behind the
caller's back, and a run's end frees its memory."""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..errors import RecipeError
from .base import LM, ModelError
from .cache import CallCache
from .config import (
    BUILTIN_MODELS,
    LM_SPECS,
    ClassifierSpec,
    ModelSpec,
    OpenAISpec,
    SentenceTransformersSpec,
    TransformersSpec,
    VLLMSpec,
    model_ref_hint,
    parse_spec,
)
from .classifier import TextClassifier
from .embeddings import Embedder

Built = LM | Embedder | TextClassifier  # what a pool hands out


class ModelPool:
    """``ModelPool({"ref_lm": TransformersSpec(model="path")})``; stages call ``get(name)``
    for a language model and ``embedder(name)`` for a sentence encoder. A value may also be
    an ``LM`` or ``Embedder`` already built; it is used as it is (and its owner closes it).
    The entries of ``BUILTIN_MODELS`` (``minilm``, the packaged all-MiniLM-L6-v2) are known
    without being given; a given entry of the same name replaces one.

    Identities are computed without loading weights (content hashes of local files, the
    snapshot commit of a cached hub id), so a fully cached rerun never imports torch.
    ``cache_root`` overrides ``$CURATE_CACHE``; ``cache=False`` turns call caching off.
    ``with ModelPool(...) as pool:`` closes it at the end of the block."""

    def __init__(self, specs: Mapping[str, Any] | None = None, reporter: Any = None, store: Any = None,
                 cache_root: str | None = None, cache: bool = True):
        specs = dict(specs or {})
        # An already-built model (an ``LM`` or ``Embedder`` object, e.g. from a notebook) is used as it is.
        self._given = {n for n, s in specs.items() if isinstance(s, (LM, Embedder))}
        self._models: dict[str, Built] = {n: specs[n] for n in self._given}
        self.specs: dict[str, Any] = {n: s if n in self._given else parse_spec(s) for n, s in specs.items()}
        self.reporter, self.store, self.cache_root, self.use_cache = reporter, store, cache_root, cache
        self._identities: dict[str, str] = {n: m.identity() for n, m in self._models.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.specs or name in BUILTIN_MODELS

    def __enter__(self) -> ModelPool:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def spec(self, name: str, role: str = "lm") -> Any:
        """The spec (or given object) of ``name``: the pool's entry, else a built-in one."""
        if name in self.specs:
            return self.specs[name]
        if name in BUILTIN_MODELS:
            return BUILTIN_MODELS[name]
        known = [*self.specs, *(n for n in BUILTIN_MODELS if n not in self.specs)]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = model_ref_hint(name, role) or (f"; did you mean '{close[0]}'?" if close else "")
        raise RecipeError(f"no model named '{name}' (models defined: {', '.join(known)}){hint}")

    def identity(self, name: str) -> str:
        if name not in self._identities:
            spec = self.spec(name)
            self._identities[name] = self._backend_class(spec).spec_identity(spec, self.reporter, self.store, self.cache_root)
        return self._identities[name]

    def get(self, name: str) -> LM:
        """The language model ``name``, loaded on first use."""
        model = self._build(name, "lm")
        if not isinstance(model, LM):
            raise ModelError(f"model '{name}' is a {_kind(model)}, not a language model; "
                             "name a transformers, openai or vllm entry here")
        return model

    def embedder(self, name: str) -> Embedder:
        """The sentence encoder ``name`` (its weights load on its first ``embed``)."""
        model = self._build(name, "embedder")
        if not isinstance(model, Embedder):
            raise ModelError(f"model '{name}' is a {_kind(model)}, not an embedder; "
                             "an embedder is a models: entry with backend: sentence_transformers")
        return model

    def classifier(self, name: str) -> TextClassifier:
        """The text classifier ``name`` (a fastText file or a sequence-classification model;
        its weights load on its first ``score``)."""
        model = self._build(name, "classifier")
        if not isinstance(model, TextClassifier):
            raise ModelError(f"model '{name}' is a {_kind(model)}, not a text classifier; "
                             "a classifier is a models: entry with backend: classifier")
        return model

    def _build(self, name: str, role: str) -> Built:
        if name not in self._models:
            spec = self.spec(name, role)
            identity = self.identity(name)
            cache = None
            if self.use_cache and isinstance(spec, LM_SPECS):
                cache = CallCache.for_model(identity, self.cache_root)
            elif self.use_cache and isinstance(spec, SentenceTransformersSpec):
                cache = CallCache.for_embedder(identity, self.cache_root)
            self._models[name] = self._backend_class(spec)(name, spec, cache=cache, reporter=self.reporter,
                                                            store=self.store, cache_root=self.cache_root)
        return self._models[name]

    @contextmanager
    def borrowed(self, name: str, spec: Any, cache: bool = True) -> Iterator[LM]:
        """A language model the run makes as it goes -- a fine-tuned model under evaluation,
        LLM2LLM's student of one round -- reached through this pool for one block, then freed
        and forgotten (its weights may be deleted after). ``cache=False``: its answers are not
        kept (a model that will not exist again)."""
        if name in self.specs or name in self._models:
            raise ModelError(f"a model named '{name}' is already in this run's pool")
        self.specs[name] = parse_spec(spec)
        use_cache = self.use_cache
        self.use_cache = use_cache and cache
        try:
            yield self.get(name)
        finally:
            self.use_cache = use_cache
            model = self._models.pop(name, None)
            if model is not None:
                model.close()
            self.specs.pop(name, None)
            self._identities.pop(name, None)

    def used(self) -> dict[str, Built]:
        """The models loaded so far (their ``stats`` say what they cost)."""
        return dict(self._models)

    def describe(self, name: str) -> dict[str, Any]:
        """What a manifest records of a model: its spec (never a secret) and identity."""
        spec = self.spec(name)
        given = {"backend": spec.backend, "object": type(spec).__name__} if name in self._given else None
        return {"spec": given or {"backend": spec.backend, **spec.model_dump(mode="json", exclude_defaults=True)},
                "identity": self.identity(name)}

    def close(self) -> None:
        for name, model in list(self._models.items()):
            if name not in self._given:  # a model given as an object belongs to its owner
                model.close()
                del self._models[name]

    @staticmethod
    def _backend_class(spec: ModelSpec) -> Any:
        if isinstance(spec, TransformersSpec):
            from .hf import TransformersLM

            return TransformersLM
        if isinstance(spec, OpenAISpec):
            from .openai_api import OpenAILM

            return OpenAILM
        if isinstance(spec, VLLMSpec):
            from .vllm_offline import VllmLM

            return VllmLM
        if isinstance(spec, SentenceTransformersSpec):
            return Embedder
        if isinstance(spec, ClassifierSpec):
            return TextClassifier
        raise TypeError(f"not a model spec: {spec!r}")


def _kind(model: Built) -> str:
    if isinstance(model, Embedder):
        return "sentence_transformers embedder"
    if isinstance(model, TextClassifier):
        return "text classifier"
    return f"language model ({model.backend})"


@contextmanager
def models_for(pool: ModelPool | None) -> Iterator[ModelPool]:
    """The run's ``pool``; or, for a stage called on its own (``stage(table)``, no run and so
    no pool), a pool of the built-in models for this call only, closed when it ends."""
    if pool is not None:
        yield pool
        return
    with ModelPool() as own:
        yield own
