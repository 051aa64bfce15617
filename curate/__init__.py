"""curate: curate and select training data for LLM fine-tuning and pretraining.

    import curate
    done = curate.load_recipe("recipes/math_sft.yaml").run()   # what `curate run` does
    done.final                      # the curated dataset version
    done.finished.table             # fine-tuned on it and on the raw pool: the comparison
    df = curate.load("math_sft", as_="polars")

``load_recipe(path).pipeline()`` is the chain alone; ``curate.Pipeline([...], source=...)``
builds one in Python. What curate notices and runs past is a ``CurateWarning``
(Python's ``warnings``); progress messages go to the ``curate`` logger.
"""

from . import sources, stages  # noqa: E402
from ._version import __version__
from .errors import CurateError, CurateWarning, RecipeError, SourceError, StageError, StoreError, UsageError  # noqa: E402
from .finetune import train_model  # noqa: E402
from .pipeline import Pipeline, RunResult  # noqa: E402
from .recipe import Recipe, RecipeRun, load_recipe  # noqa: E402
from .stage import Stage, StageConfig, StageContext, StageOutput  # noqa: E402
from .store import Store  # noqa: E402
from .versions import diff, export, list_datasets, load  # noqa: E402

__all__ = [
    "__version__", "CurateError", "CurateWarning", "Pipeline", "Recipe", "RecipeError", "RecipeRun", "RunResult", "SourceError", "Stage", "StageConfig",
    "StageContext", "StageError", "StageOutput", "Store", "StoreError", "UsageError", "diff", "export",
    "list_datasets", "load", "load_recipe", "sources", "stages", "train_model",
]
