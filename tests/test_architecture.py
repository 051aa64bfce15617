"""docs/architecture.md's import rules, checked: layers import downward only."""

import ast
from pathlib import Path

import pytest

from .conftest import ROOT

PKG = ROOT / "curate"
CORE = {"errors", "fingerprint", "records", "stage", "store"}
# module (or package) -> the curate modules it may import
ALLOWED = {
    "errors": set(),
    "fingerprint": set(),
    "records": {"errors"},
    "stage": {"errors", "fingerprint", "store"},
    "store": {"errors"},
    "sources": CORE | {"sources"},
    # algorithms shared by stages, evaluation and calibration: core and the models layer (rds's
    # nearest neighbours), never a stage
    "algorithms": CORE | {"algorithms", "models"},
    # stages: core, the models layer, sources (a target / mix component is a data reference) and
    # train (augment's LLM2LLM loop fine-tunes its student through the bundled step)
    "stages": CORE | {"stages", "algorithms", "models", "sources", "train"},
    # the models layer: core, and sources (train-tiny reads its data through them)
    "models": CORE | {"models", "sources"},
    "calibrate": CORE | {"algorithms", "stages"},
    # the fine-tuning step: core, models (base models, train-tiny), sources (data references)
    "train": CORE | {"models", "sources"},
    "finetune": CORE | {"train", "evaluate", "models"},
    "evaluate": CORE | {"algorithms", "models", "sources"},
    # where streamed steps run: core, and the models layer (a Ray worker builds its own pool)
    "executors": CORE | {"models"},
    # algorithms: the token counts of each version (``Pipeline.tokenizer``)
    "pipeline": CORE | {"models", "executors", "algorithms"},
    "versions": CORE | {"card", "algorithms"},  # algorithms: the token counts of shards and of the card's lineage
    "card": CORE,
    # the audit against labels: core, algorithms (Wilson intervals), sources (CHAMP's annotations)
    "audit": CORE | {"algorithms", "sources"},
    "report": CORE | {"pipeline"},
    "settings": {"errors", "pipeline"},  # pipeline: the step-name rule
}


def curate_imports(path: Path) -> set[str]:
    """The top-level curate modules a file imports (relative or absolute)."""
    tree = ast.parse(path.read_text())
    rel = path.relative_to(PKG).parts
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(rel[:-1])[: len(rel) - node.level]
                parts = base + (node.module.split(".") if node.module else [])
                names = parts[:1] if parts else [a.name for a in node.names]
                out.update(names)
            elif node.module and node.module.split(".")[0] == "curate":
                out.add(node.module.split(".")[1] if "." in node.module else "__init__")
            elif node.module and node.module.split(".")[0] == "pipelines":
                out.add("pipelines")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == "curate":
                    out.add(a.name.split(".")[1] if "." in a.name else "__init__")
                if a.name.split(".")[0] == "pipelines":
                    out.add("pipelines")
    return out


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_architecture_allows(layer):
    files = sorted((PKG / layer).rglob("*.py")) if (PKG / layer).is_dir() else [PKG / f"{layer}.py"]
    assert files
    for f in files:
        extra = curate_imports(f) - ALLOWED[layer] - {layer, "_version"}
        assert not extra, f"{f.relative_to(ROOT)} imports {sorted(extra)}, which docs/architecture.md forbids for {layer}"


def test_named_pipelines_use_only_stages_and_core():
    for f in (ROOT / "pipelines").glob("*.py"):
        text = f.read_text()
        for forbidden in ("curate.recipe", "curate.cli", "curate.pipeline"):
            assert forbidden not in text, f"{f.name} imports {forbidden}"
