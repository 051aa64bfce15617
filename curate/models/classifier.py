"""Text classifiers that score documents (the ``classifier`` backend): a fastText ``.bin``
file (DCLM's quality classifier, a PreSelect model, one ``quality_classifier`` trained here)
or a Hugging Face sequence-classification model (FineWeb-Edu's educational-value regressor,
NVIDIA's quality DeBERTa), from a local folder or the local Hugging Face cache.

``score(texts)`` is one number per text: the probability of ``label`` for a classifier (by
default ``__label__hq`` for fastText, as DCLM's and ours are labelled; the second of two
classes for a transformers model), or the raw output of a one-output regression head
(FineWeb-Edu's 0-5 scale). The identity is a content hash of the file or folder (the snapshot
commit of a cached hub id), computed without loading anything.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..fingerprint import hash_file, hash_parts
from .base import ModelError
from .config import ClassifierSpec

FASTTEXT_HQ = "__label__hq"  # DCLM's positive label (its negative is __label__cc)
FASTTEXT_LQ = "__label__cc"
FASTTEXT_HINT = "pip install 'curate[pretrain]' (the fasttext-numpy2-wheel package) to read fastText models"


@dataclass
class ClassifyStats:
    calls: int = 0  # texts scored

    def describe(self, name: str) -> str:
        return f"{name}: {self.calls:,} texts classified"


def fasttext_module() -> Any:
    """The ``fasttext`` package, or an ImportError saying how to get it."""
    try:
        import fasttext
    except ImportError:
        raise ImportError(f"fastText is not installed: {FASTTEXT_HINT}") from None
    return fasttext


def fasttext_line(text: str) -> str:
    """A document as fastText reads one: a single line (fastText splits examples at newlines)."""
    return " ".join(text.split())


class FastTextModel:
    """A loaded fastText supervised model; ``probability(texts, label)``."""

    def __init__(self, path: str | Path | None = None, data: bytes | None = None):
        ft = fasttext_module()
        if data is not None:  # a model carried as bytes (to a Ray task): fastText loads from a path only
            fd, tmp = tempfile.mkstemp(suffix=".bin")
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                self.model = ft.load_model(tmp)
            finally:
                os.unlink(tmp)
        else:
            try:
                self.model = ft.load_model(str(path))
            except ValueError as e:
                raise ModelError(f"{path} is not a fastText model file ({e})") from None
        self.labels: list[str] = list(self.model.get_labels())

    def probability(self, texts: list[str], label: str) -> np.ndarray:
        if label not in self.labels:
            raise ModelError(f"the fastText model has no label {label!r}; its labels: {', '.join(self.labels)}")
        if not texts:
            return np.zeros(0, dtype=np.float64)
        found, probs = self.model.predict([fasttext_line(t) for t in texts], k=len(self.labels))
        out = np.zeros(len(texts), dtype=np.float64)
        for i, (names, p) in enumerate(zip(found, probs)):
            for name, value in zip(names, p):
                if name == label:
                    out[i] = min(1.0, float(value))  # fastText's softmax can round a hair above 1
                    break
        return out


class TextClassifier:
    """A ``classifier`` entry of a recipe's ``models:``, built by the run's pool. The weights
    load on the first ``score`` and are freed by ``close``."""

    backend = "classifier"

    def __init__(self, name: str, spec: ClassifierSpec, cache: Any = None, reporter: Any = None, store: Any = None,
                 cache_root: str | None = None):
        # ``cache`` is taken for the pool's one constructor signature; scores are not cached on disk.
        self.name, self.spec = name, spec
        self.path = classifier_path(spec)
        self._identity = path_identity(self.path, cache_root)
        self.stats = ClassifyStats()
        self._loaded: Any = None

    @classmethod
    def spec_identity(cls, spec: ClassifierSpec, reporter: Any = None, store: Any = None, cache_root: str | None = None) -> str:
        return path_identity(classifier_path(spec), cache_root)

    def identity(self) -> str:
        return self._identity

    @property
    def kind(self) -> str:
        return "fasttext" if self.path.is_file() else "transformers"

    def score(self, texts: list[str]) -> np.ndarray:
        """One score per text (see the module's docstring), float64."""
        model = self._model()
        self.stats.calls += len(texts)
        if isinstance(model, FastTextModel):
            return model.probability(texts, self.spec.label or FASTTEXT_HQ)
        return model.score(texts)

    def _model(self) -> Any:
        if self._loaded is None:
            self._loaded = FastTextModel(self.path) if self.kind == "fasttext" else _SequenceClassifier(self.path, self.spec)
        return self._loaded

    def close(self) -> None:
        self._loaded = None


class _SequenceClassifier:
    """A transformers ``AutoModelForSequenceClassification``: texts cut at ``max_length``
    tokens, sorted by length into batches, the chosen output read per text."""

    def __init__(self, path: Path, spec: ClassifierSpec):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from .hf import device_and_dtype, quiet_transformers

        device, dtype = device_and_dtype(spec.device, spec.dtype)
        try:
            with quiet_transformers():
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True,
                                                               trust_remote_code=spec.trust_remote_code)
                model = AutoModelForSequenceClassification.from_pretrained(
                    path, local_files_only=True, trust_remote_code=spec.trust_remote_code, dtype=getattr(torch, dtype))
        except Exception as e:  # noqa: BLE001 - OSError, ValueError, unknown architectures: all mean "cannot load it"
            raise ModelError(f"cannot load the sequence classifier in {path}: {type(e).__name__}: {e}") from None
        self.model, self.device, self.spec = model.to(device).eval(), device, spec
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.output = _output_index(self.model.config, spec.label, path)

    def score(self, texts: list[str]) -> np.ndarray:
        import torch

        from .hf import tokenizer_threads_off

        out = np.zeros(len(texts), dtype=np.float64)
        if not texts:
            return out
        with tokenizer_threads_off():
            ids = self.tokenizer(texts, truncation=True, max_length=self.spec.max_length).input_ids
        order = sorted(range(len(texts)), key=lambda i: -len(ids[i]))
        pad = self.tokenizer.pad_token_id
        for s in range(0, len(order), self.spec.batch_size):
            idx = order[s : s + self.spec.batch_size]
            width = max(len(ids[i]) for i in idx)
            batch = torch.full((len(idx), width), pad, dtype=torch.long)
            mask = torch.zeros((len(idx), width), dtype=torch.long)
            for r, i in enumerate(idx):  # right padding: the classification head reads the last real token
                batch[r, : len(ids[i])] = torch.tensor(ids[i])
                mask[r, : len(ids[i])] = 1
            with torch.inference_mode():
                logits = self.model(input_ids=batch.to(self.device), attention_mask=mask.to(self.device)).logits.float()
            values = logits[:, 0] if self.output is None else logits.softmax(-1)[:, self.output]
            out[idx] = values.cpu().numpy()
        return out


def _output_index(config: Any, label: str | None, path: Path) -> int | None:
    """Which output is the score: None for a one-output regression head; else the index of
    ``label`` (a label name or an index), by default the second of two classes."""
    n = int(getattr(config, "num_labels", 1))
    if n == 1:
        if label is not None:
            raise ModelError(f"classifier {path} is a regression head (one output); it has no label {label!r}")
        return None
    names = {str(v): int(k) for k, v in (getattr(config, "id2label", None) or {}).items()}
    if label is None:
        if n == 2:
            return 1
        raise ModelError(f"classifier {path} has {n} classes ({', '.join(names)}); say which one scores with label:")
    if label in names:
        return names[label]
    if label.isdigit() and int(label) < n:
        return int(label)
    raise ModelError(f"classifier {path} has no label {label!r}; its labels: {', '.join(names)}")


def classifier_path(spec: ClassifierSpec) -> Path:
    """The local file (fastText) or folder (transformers) of ``spec``'s model."""
    from .hf import cached_snapshot

    path = Path(spec.model).expanduser()
    if path.is_file():
        return path.resolve()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"classifier '{spec.model}': {path} is neither a fastText .bin file nor a Hugging Face "
                             "model folder (no config.json)")
        return path.resolve()
    if spec.model.endswith(".bin"):
        raise ModelError(f"classifier '{spec.model}': the fastText file {path} does not exist")
    return cached_snapshot(spec.model, spec.revision, spec.allow_download)


def path_identity(path: Path, cache_root: str | None = None) -> str:
    """A content hash of a classifier's file or folder."""
    from .hf import dir_identity

    if path.is_file():
        return hash_parts("fasttext", hash_file(path))
    return dir_identity(path, cache_root)
