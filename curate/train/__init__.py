"""The bundled fine-tuning step: a dataset version in, a trained model (a versioned artifact
with its lineage, loss log and evaluations) out. See ``sft`` (TRL) and ``artifacts``."""

from .artifacts import ModelStore, TrainedModel, resolve_base
from .config import TrainConfig
from .sft import BaseWeights, TrainError, run_sft, training_rows

__all__ = ["BaseWeights", "ModelStore", "TrainConfig", "TrainError", "TrainedModel", "resolve_base", "run_sft",
           "training_rows"]
