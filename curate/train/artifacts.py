"""Trained models as versioned artifacts beside the dataset versions they were trained on.

    .curate/models/<fingerprint>/
      manifest.json        written last: fingerprint, name, base model (path, identity), the
                           dataset (reference, fingerprint, rows, lineage), the resolved
                           config, the training summary (steps, first/final loss, seconds)
      train_config.json    the resolved training config
      dataset.json         the dataset version trained on: reference, fingerprint, lineage
      log.jsonl            loss, learning rate and gradient norm per step
      model/               weights any tool loads (LoRA adapters merged in) + tokenizer
      adapter/             the LoRA adapter on its own (method: lora)
      evals/<fp>/          evaluations, one per held-out set and settings: eval.json (written
                           last) and eval_items.jsonl (each question, answer and verdict)
    .curate/models/tmp/<fingerprint>/   checkpoints of a training under way (resumed from)

A model's fingerprint is hash(dataset version fingerprint, base model identity, the settings
that change the weights): training the same data the same way twice is free, and a killed
training resumes from its last checkpoint because the work folder has the same name.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._version import __version__
from ..errors import StoreError
from ..fingerprint import hash_parts
from ..stage import Reporter
from ..store import Store, Version, now
from .config import TrainConfig
from .sft import BaseWeights, TrainError, run_sft

if TYPE_CHECKING:
    from ..models import ModelPool

TRAIN_VERSION = "1"  # bump when the same config starts training something else


@dataclass
class TrainedModel:
    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def model_path(self) -> Path:
        """The folder ``transformers`` (or vLLM) loads: full or merged weights + tokenizer."""
        return self.path / "model"

    def log(self) -> list[dict[str, Any]]:
        with open(self.path / "log.jsonl") as f:
            return [json.loads(line) for line in f if line.strip()]


def resolve_base(model: str, pool: ModelPool | None = None, store: Store | None = None,
                 reporter: Reporter | None = None) -> BaseWeights:
    """The base model a ``train.model`` names: one of the run's models (transformers
    backend), a local folder, or a cached hub id."""
    from ..models.config import TransformersSpec
    from ..models.hf import dir_identity, model_dir

    if pool is not None and model in pool:
        spec = pool.spec(model)
        if not isinstance(spec, TransformersSpec):
            raise TrainError(f"train.model: '{model}' is a {spec.backend} model; fine-tuning needs weights to load "
                             "(a transformers entry, a local folder or a cached hub id)")
        return BaseWeights(model_dir(spec, reporter, store, pool.cache_root), pool.identity(model), model)
    path = model_dir(TransformersSpec(model=model), reporter, store)
    return BaseWeights(path, dir_identity(path), model)


class ModelStore:
    """The trained models of one store (``Store.root / "models"``)."""

    def __init__(self, store: Store):
        self.store = store
        self.root = store.area("models")

    def fingerprint(self, data_fingerprint: str, base: BaseWeights, config: TrainConfig) -> str:
        return hash_parts("finetune", data_fingerprint, base.identity, config.fingerprint_config(), TRAIN_VERSION)

    def has(self, fingerprint: str) -> bool:
        return (self.root / fingerprint / "manifest.json").is_file()

    def get(self, fingerprint: str) -> TrainedModel:
        path = self.root / fingerprint
        try:
            return TrainedModel(path, json.loads((path / "manifest.json").read_text()))
        except FileNotFoundError:
            raise StoreError(f"no model {fingerprint} in {self.root}") from None

    def list(self) -> list[TrainedModel]:
        """Every trained model, newest first."""
        if not self.root.is_dir():
            return []
        found = [self.get(p.name) for p in self.root.iterdir() if (p / "manifest.json").is_file()]
        return sorted(found, key=lambda m: m.manifest["created"], reverse=True)

    def resolve(self, ref: str) -> TrainedModel:
        """A model by fingerprint (or a unique prefix of one), or the newest model trained on
        the dataset reference ``ref`` (``math_sft``, ``math_sft/source``)."""
        models = self.list()
        exact = [m for m in models if m.fingerprint == ref or m.name == ref]
        if exact:
            return exact[0]
        prefixed = [m for m in models if m.fingerprint.startswith(ref)]
        if len(prefixed) == 1:
            return prefixed[0]
        if len(prefixed) > 1:
            raise StoreError(f"model reference '{ref}' is ambiguous: {', '.join(m.fingerprint for m in prefixed)}")
        known = ", ".join(sorted({m.name for m in models})) or "none yet (curate train)"
        raise StoreError(f"no trained model '{ref}' in {self.root} (models trained on: {known})")

    def train(self, version: Version, name: str, config: TrainConfig, base: BaseWeights, reporter: Reporter | None = None,
              force: bool = False) -> tuple[TrainedModel, bool]:
        """The model ``config`` trains from ``base`` on ``version`` (called ``name``), and
        whether it was already there. A training of the same fingerprint that was killed
        resumes from its last checkpoint."""
        fp = self.fingerprint(version.fingerprint, base, config)
        if self.has(fp) and not force:
            return self.get(fp), True
        work = self.root / "tmp" / fp
        staged = self.root / "tmp" / f"{fp}.out"
        if force:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(staged, ignore_errors=True)
        work.mkdir(parents=True, exist_ok=True)
        summary = run_sft(version.table(), config, base, work, staged, reporter)
        dataset = {"ref": name, "fingerprint": version.fingerprint, "name": version.manifest.get("name"),
                   "rows": version.num_rows, "lineage": version.manifest.get("lineage", [])}
        resolved = {**config.model_dump(mode="json"), "base_path": str(base.path), "base_identity": base.identity}
        manifest = {
            "fingerprint": fp, "kind": "model", "name": name, "created": now(), "curate_version": __version__,
            "base": {"label": base.label, "path": str(base.path), "identity": base.identity},
            "method": config.method, "dataset": {k: v for k, v in dataset.items() if k != "lineage"},
            "config": config.model_dump(mode="json"), "train": summary,
        }
        (staged / "train_config.json").write_text(json.dumps(resolved, indent=2))
        (staged / "dataset.json").write_text(json.dumps(dataset, indent=2))
        (staged / "manifest.json").write_text(json.dumps(manifest, indent=2))  # last: the model exists from now
        target = self.root / fp
        if target.exists():  # --force over an existing model
            shutil.rmtree(target)
        staged.rename(target)
        shutil.rmtree(work, ignore_errors=True)
        return self.get(fp), False

    @staticmethod
    def eval_dir(model: TrainedModel, eval_fingerprint: str) -> Path:
        """Where an evaluation of ``model`` is kept (``eval.json``, written last, and
        ``eval_items.jsonl``: every question, answer and verdict)."""
        return model.path / "evals" / eval_fingerprint

    def load_eval(self, model: TrainedModel, eval_fingerprint: str) -> dict[str, Any] | None:
        path = self.eval_dir(model, eval_fingerprint) / "eval.json"
        return json.loads(path.read_text()) if path.is_file() else None
