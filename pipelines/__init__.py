"""Named, reusable stage chains. Recipes reference them by name (``pipeline: math_sft``)
and notebooks import them (``from pipelines.math_sft import math_sft``): one definition,
not a YAML copy and a Python copy."""

from __future__ import annotations

from collections.abc import Callable

from curate.stage import Stage

from .math_sft import math_sft

PIPELINES: dict[str, Callable[[], list[Stage]]] = {"math_sft": math_sft}

__all__ = ["PIPELINES", "math_sft"]
