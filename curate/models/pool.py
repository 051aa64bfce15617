"""The named models of one run: built on first use, each with its call cache and counters."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from ..errors import RecipeError
from .base import LM
from .cache import CallCache
from .config import ModelSpec, OpenAISpec, TransformersSpec, VLLMSpec, parse_spec


class ModelPool:
    """``ModelPool({"ref_lm": TransformersSpec(model="path")})``; stages call ``get(name)``.
    A value may also be an ``LM`` object already built; it is used as it is.

    Identities are computed without loading weights (content hashes of local files, the
    snapshot commit of a cached hub id), so a fully cached rerun never imports torch.
    ``cache_root`` overrides ``$CURATE_CACHE``; ``cache=False`` turns call caching off."""

    def __init__(self, specs: Mapping[str, Any] | None = None, reporter: Any = None, store: Any = None,
                 cache_root: str | None = None, cache: bool = True):
        specs = dict(specs or {})
        # An already-built model (an ``LM`` object, e.g. from a notebook) is used as it is.
        self._models: dict[str, LM] = {n: s for n, s in specs.items() if isinstance(s, LM)}
        self.specs: dict[str, Any] = {n: s if isinstance(s, LM) else parse_spec(s) for n, s in specs.items()}
        self.reporter, self.store, self.cache_root, self.use_cache = reporter, store, cache_root, cache
        self._identities: dict[str, str] = {n: lm.identity() for n, lm in self._models.items()}

    def __contains__(self, name: str) -> bool:
        return name in self.specs

    def spec(self, name: str) -> ModelSpec:
        if name not in self.specs:
            close = difflib.get_close_matches(name, list(self.specs), n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            known = ", ".join(self.specs) or "none"
            raise RecipeError(f"no model named '{name}' (models defined: {known}){hint}")
        return self.specs[name]

    def identity(self, name: str) -> str:
        if name not in self._identities:
            self._identities[name] = self._backend_class(self.spec(name)).spec_identity(
                self.spec(name), self.reporter, self.store, self.cache_root)
        return self._identities[name]

    def get(self, name: str) -> LM:
        if name not in self._models:
            spec = self.spec(name)
            cache = CallCache.for_model(self.identity(name), self.cache_root) if self.use_cache else None
            self._models[name] = self._backend_class(spec)(name, spec, cache=cache, reporter=self.reporter,
                                                            store=self.store, cache_root=self.cache_root)
        return self._models[name]

    def used(self) -> dict[str, LM]:
        """The models loaded so far (their ``stats`` say what they cost)."""
        return dict(self._models)

    def describe(self, name: str) -> dict[str, Any]:
        """What a manifest records of a model: its spec (never a secret) and identity."""
        spec = self.spec(name)
        given = {"backend": spec.backend, "object": type(spec).__name__} if isinstance(spec, LM) else None
        return {"spec": given or spec.model_dump(mode="json", exclude_defaults=True), "identity": self.identity(name)}

    def close(self) -> None:
        for name, lm in list(self._models.items()):
            if not isinstance(self.specs[name], LM):  # a model given as an object belongs to its owner
                lm.close()
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
        raise TypeError(f"not a model spec: {spec!r}")
