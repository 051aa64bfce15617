"""curate: curate and select training data for LLM fine-tuning and pretraining.

    import curate
    result = curate.Pipeline.from_recipe("recipes/math_sft.yaml").run()
    df = curate.load("math_sft", as_="polars")
"""

from ._version import __version__

from . import sources, stages  # noqa: E402
from .finetune import train_model  # noqa: E402
from .errors import CurateError, RecipeError, SourceError, StageError, StoreError, UsageError  # noqa: E402
from .pipeline import Pipeline, RunResult  # noqa: E402
from .recipe import load_recipe  # noqa: E402
from .stage import Stage, StageConfig, StageContext, StageOutput  # noqa: E402
from .store import Store  # noqa: E402
from .versions import diff, export, list_datasets, load  # noqa: E402

__all__ = [
    "__version__", "CurateError", "Pipeline", "RecipeError", "RunResult", "SourceError", "Stage", "StageConfig",
    "StageContext", "StageError", "StageOutput", "Store", "StoreError", "UsageError", "diff", "export",
    "list_datasets", "load", "load_recipe", "sources", "stages", "train_model",
]
