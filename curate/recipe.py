"""Recipes: one YAML file that names a source, a chain of stages and a dataset name.

    # curate run recipes/demo.yaml
    name: demo
    source:
      type: jsonl
      path: data/pool.jsonl          # relative paths are relative to this file
      fields: {prompt: question, response: solution, answer: final_answer}
    stages:
      - exact_dedup: {}
      - heuristic_filter: {min_words: 20}

Instead of ``stages:`` a recipe may name a chain defined in Python under ``pipelines/``
(``pipeline: math_sft``) and adjust its steps with ``overrides: {STEP: {key: value}}`` --
one definition shared by recipes and notebooks. ``input: NAME@N`` starts from a dataset
version already in the store instead of a source.

Validation reports every problem at once, each with its file, line and YAML path, and
suggests the closest valid name for a misspelled stage or key.
"""

from __future__ import annotations

import difflib
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from .errors import RecipeError
from .pipeline import Pipeline, RecipeInfo, step_names
from .stage import RECIPE_DATA, RECIPE_PATHS, Stage, validation_problems
from .store import _NAME_RE

TOP_KEYS = ("name", "description", "source", "input", "models", "pipeline", "overrides", "stages", "train", "eval")
PATH_KEYS = ("path",)  # source keys holding paths, resolved against the recipe's folder

Loc = tuple[Any, ...]


@dataclass
class Recipe:
    path: Path
    name: str
    source: Any  # a Source, or a dataset reference string (``input:``)
    stages: list[Stage]
    sha256: str
    description: str = ""
    models: dict[str, Any] = field(default_factory=dict)
    train: Any = None  # curate.train.TrainConfig: fine-tune on the final version (and the baselines)
    eval: Any = None  # curate.train.EvalConfig: the held-out set every trained model answers

    def pipeline(self) -> Pipeline:
        return Pipeline(self.stages, self.source, self.name, RecipeInfo(str(self.path), self.sha256), self.models)


class _Problems:
    """Collects (location, message) pairs and renders them with YAML line numbers."""

    def __init__(self, path: Path, root: yaml.Node | None):
        self.path, self.root, self.items = path, root, []

    def add(self, loc: Loc, msg: str) -> None:
        self.items.append((loc, msg))

    def raise_if_any(self) -> None:
        if self.items:
            located = sorted(((line_of(self.root, loc), yaml_path(loc), msg) for loc, msg in self.items),
                             key=lambda x: x[0])
            raise RecipeError([f"{self.path}:{line}: {where}: {msg}" for line, where, msg in located])


def load_recipe(path: str | Path, check_inputs: bool = True) -> Recipe:
    """Parse and validate a recipe; raises ``RecipeError`` listing every problem found."""
    from pipelines import PIPELINES

    from .sources import SOURCES
    from .stages import REGISTRY

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise RecipeError(f"recipe file {path} does not exist") from None
    except OSError as e:
        raise RecipeError(f"cannot read recipe {path}: {e.strerror}") from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise RecipeError(f"{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    problems = _Problems(path, root)
    if not isinstance(data, dict):
        raise RecipeError(f"{path}: a recipe is a YAML mapping with keys {', '.join(TOP_KEYS)}")

    for key in data:
        if key not in TOP_KEYS:
            problems.add((key,), "unknown key" + _suggest(str(key), TOP_KEYS))
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name) or "/" in name:
        problems.add(("name",), "required: the dataset name (letters, digits, '_', '-', '.')")

    source = _source(data, path, problems, SOURCES, check_inputs)
    models = _models(data, path, problems)
    stages = _stages(data, problems, REGISTRY, PIPELINES, path.parent)
    _check_model_refs(data, stages, data.get("models") if isinstance(data.get("models"), dict) else {}, problems)
    train, evaluation = _training(data, path.parent, problems)
    problems.raise_if_any()
    return Recipe(path, name, source, stages, hashlib.sha256(text.encode()).hexdigest(), data.get("description") or "",
                  models, train, evaluation)


def _training(data: dict, base: Path, problems: _Problems) -> tuple[Any, Any]:
    """The ``train:`` and ``eval:`` sections: what to fine-tune on the chain's output, and
    the held-out set the trained models answer."""
    from .sources.refs import resolve_recipe_data
    from .train.config import EvalConfig, TrainConfig

    out: list[Any] = []
    for key, cls in (("train", TrainConfig), ("eval", EvalConfig)):
        section = data.get(key)
        if section is None:
            out.append(None)
            continue
        if not isinstance(section, dict):
            problems.add((key,), f"a mapping of {key} settings ({', '.join(cls.model_fields)})")
            out.append(None)
            continue
        values = dict(section)
        if key == "train" and _is_local(values.get("model"), base):
            values["model"] = _resolve_paths(values["model"], base)
        if key == "eval" and "data" in values:
            values["data"] = resolve_recipe_data(values["data"], base, PATH_KEYS)
        try:
            out.append(cls(**values))
        except ValidationError as e:
            for loc, msg in validation_problems(e, cls):
                problems.add((key, *loc), msg)
            out.append(None)
    train, evaluation = out
    if evaluation is not None and train is None:
        problems.add(("eval",), "eval: grades the models train: makes; add a train: section")
    if train is not None:
        models = data.get("models") if isinstance(data.get("models"), dict) else {}
        if train.model in models and (models[train.model] or {}).get("backend", "transformers") != "transformers":
            problems.add(("train", "model"), f"'{train.model}' is a {models[train.model].get('backend')} model; "
                         "fine-tuning needs a transformers entry, a local folder or a cached hub id")
    return train, evaluation


def _models(data: dict, path: Path, problems: _Problems) -> dict[str, Any]:
    """The ``models:`` section: name -> backend spec. Local model folders and training data
    files are resolved relative to the recipe; hub ids are left alone."""
    from .models.config import BACKENDS, parse_spec

    section = data.get("models") or {}
    if not isinstance(section, dict):
        problems.add(("models",), "a mapping NAME: {backend: ..., model: ...}")
        return {}
    out = {}
    for name, cfg in section.items():
        if not isinstance(cfg, dict):
            problems.add(("models", name), f"a mapping with a backend ({', '.join(BACKENDS)}) and its settings")
            continue
        if cfg.get("backend", "transformers") not in BACKENDS:
            problems.add(("models", name, "backend"), f"unknown backend {cfg['backend']!r}"
                         + _suggest(str(cfg["backend"]), BACKENDS))
            continue
        cfg = dict(cfg)
        if isinstance(cfg.get("model"), str) and cfg["model"].startswith((".", "~")) or _is_local(cfg.get("model"), path.parent):
            cfg["model"] = _resolve_paths(cfg["model"], path.parent)
        tiny = cfg.get("train_tiny")
        if isinstance(tiny, dict) and "data" in tiny:
            data_cfg = tiny["data"]
            if isinstance(data_cfg, dict):
                data_cfg = {k: _resolve_paths(v, path.parent) if k in PATH_KEYS else v for k, v in data_cfg.items()}
            elif isinstance(data_cfg, str) and _is_local(data_cfg, path.parent):
                data_cfg = _resolve_paths(data_cfg, path.parent)
            cfg["train_tiny"] = {**tiny, "data": data_cfg}
        try:
            out[name] = parse_spec(cfg)
        except ValidationError as e:
            for loc, msg in validation_problems(e):
                # pydantic puts the backend's tag first in the location; the recipe has no such level
                loc = loc[1:] if loc and loc[0] in BACKENDS else loc
                problems.add(("models", name, *loc), msg)
    return out


def _is_local(value: Any, base: Path) -> bool:
    return isinstance(value, str) and not Path(value).is_absolute() and (base / value).exists()


def _check_model_refs(data: dict, stages: list[Stage], models: dict, problems: _Problems) -> None:
    """Every model a step names is defined (entries with problems of their own count as defined)."""
    for step, stage in zip(step_names(stages), stages):
        for ref in stage.models_used():
            if ref not in models:
                where = ("overrides", step) if "pipeline" in data else ("stages",)
                problems.add(where, f"step '{step}' uses model '{ref}', which the recipe does not define under models:"
                             + (_suggest(ref, models) if models else " (add a models: section)"))


def _source(data: dict, path: Path, problems: _Problems, sources: dict, check_inputs: bool) -> Any:
    if ("source" in data) == ("input" in data):
        problems.add(("source",), "give exactly one of 'source:' (files to read) or 'input:' (a dataset reference)")
        return None
    if "input" in data:
        if not isinstance(data["input"], str):
            problems.add(("input",), "a dataset reference such as 'math_sft@2'")
        return data["input"]
    cfg = data["source"]
    if not isinstance(cfg, dict) or "type" not in cfg:
        problems.add(("source",), f"a mapping with a 'type:' ({', '.join(sources)})")
        return None
    kind = cfg["type"]
    if kind not in sources:
        problems.add(("source", "type"), f"unknown source type {kind!r}" + _suggest(str(kind), sources))
        return None
    cls = sources[kind]
    values = {k: _resolve_paths(v, path.parent) if k in PATH_KEYS else v for k, v in cfg.items() if k != "type"}
    try:
        config = cls.Config(**values)
    except ValidationError as e:
        for loc, msg in validation_problems(e, cls.Config):
            problems.add(("source", *loc), msg)
        return None
    src = cls(config)
    if check_inputs:
        for problem in src.check():
            field, _, msg = problem.partition(": ")
            problems.add(("source", field) if msg else ("source",), msg or problem)
    return src


def _resolve_paths(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_resolve_paths(v, base) for v in value]
    if isinstance(value, str) and not Path(value).is_absolute():
        return str(base / value)
    return value


def _stages(data: dict, problems: _Problems, registry: dict, pipelines: dict, base: Path) -> list[Stage]:
    if "pipeline" in data:
        if "stages" in data:
            problems.add(("stages",), "give either 'pipeline:' (a named chain) or 'stages:', not both")
            return []
        return _named_pipeline(data, problems, pipelines, base)
    if "overrides" in data:
        problems.add(("overrides",), "'overrides:' adjusts the steps of a named 'pipeline:'; with 'stages:' edit them directly")
    items = data.get("stages") or []
    if not isinstance(items, list):
        problems.add(("stages",), "a list of single-key mappings, e.g. '- exact_dedup: {field: response}'")
        return []
    stages = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            item = {item: None}
        if not isinstance(item, dict) or len(item) != 1:
            problems.add(("stages", i), "each stage is one mapping 'STAGE_NAME: {config}'")
            continue
        (stage_name, cfg), = item.items()
        if stage_name not in registry:
            problems.add(("stages", i, stage_name), f"unknown stage {stage_name!r}" + _suggest(str(stage_name), registry)
                         + " (`curate stages` lists them)")
            continue
        stage = _build_stage(registry[stage_name], cfg or {}, ("stages", i, stage_name), problems, base=base)
        if stage is not None:
            stages.append(stage)
    return stages


def _named_pipeline(data: dict, problems: _Problems, pipelines: dict, base: Path) -> list[Stage]:
    ref = data["pipeline"]
    if ref not in pipelines:
        problems.add(("pipeline",), f"unknown pipeline {ref!r}" + _suggest(str(ref), pipelines))
        return []
    stages = pipelines[ref]()
    steps = step_names(stages)
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        problems.add(("overrides",), "a mapping STEP: {key: value}")
        return stages
    for step, cfg in overrides.items():
        if step not in steps:
            problems.add(("overrides", step), f"pipeline '{ref}' has no step {step!r}" + _suggest(str(step), steps)
                         + f" (steps: {', '.join(steps)})")
            continue
        i = steps.index(step)
        given = _resolve_stage_paths(type(stages[i]), cfg or {}, base) if isinstance(cfg, dict) else cfg
        merged = {**stages[i].config.model_dump(exclude_defaults=True), **(given or {})}
        stage = _build_stage(type(stages[i]), merged, ("overrides", step), problems)
        if stage is not None:
            stages[i] = stage
    return stages


def _build_stage(cls: type[Stage], cfg: Any, loc: Loc, problems: _Problems, base: Path | None = None) -> Stage | None:
    if not isinstance(cfg, dict):
        problems.add(loc, f"the config of '{cls.name}' is a mapping of its keys (`curate stages {cls.name}`)")
        return None
    if base is not None:
        cfg = _resolve_stage_paths(cls, cfg, base)
    try:
        return cls(cls.Config(**cfg))
    except ValidationError as e:
        for eloc, msg in validation_problems(e, cls.Config):
            problems.add((*loc, *eloc), msg)
        return None


def _resolve_stage_paths(cls: type[Stage], cfg: dict, base: Path) -> dict:
    """Values of config fields marked ``RECIPE_PATHS`` (or the file paths among the data
    references of fields marked ``RECIPE_DATA``) resolved against the recipe's folder."""
    from .sources.refs import resolve_recipe_data

    fields = cls.Config.model_fields
    paths = {name for name, f in fields.items() if RECIPE_PATHS in f.metadata}
    data = {name for name, f in fields.items() if RECIPE_DATA in f.metadata}
    return {k: _resolve_paths(v, base) if k in paths else resolve_recipe_data(v, base, PATH_KEYS) if k in data else v
            for k, v in cfg.items()}


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f"; did you mean '{close[0]}'?" if close else f"; valid: {', '.join(choices)}"


def yaml_path(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(node: yaml.Node | None, loc: Loc) -> int:
    """1-based line of the deepest node of ``loc`` that exists in the composed YAML."""
    line = 1 if node is None else node.start_mark.line + 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                if k.value == str(part):
                    line, node = k.start_mark.line + 1, v
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


