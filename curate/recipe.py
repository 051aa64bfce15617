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

``Recipe.run()`` is the whole job -- the chain, then ``train:`` and ``eval:`` -- and what
``curate run`` calls; ``settings`` (``curate run --set STEP.KEY=VALUE``) change one value of
a step, ``train:`` or ``eval:`` without editing the file.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import RecipeError, UsageError
from .executors import ExecutorConfig
from .finetune import Finished
from .pipeline import Pipeline, RecipeInfo, RunResult, step_names
from .settings import apply_settings, parse_settings, suggest  # noqa: F401 (parse_settings: the CLI reads it here)
from .stage import RECIPE_DATA, RECIPE_PATHS, Reporter, Stage, merge_settings, validation_problems
from .sources.paths import is_uri
from .store import _NAME_RE, Store, Version
from .train import TrainedModel

TOP_KEYS = ("name", "description", "source", "input", "models", "pipeline", "overrides", "stages", "train", "eval",
            "executor", "tokenizer", "export", "audit")
PATH_KEYS = ("path",)  # source keys holding paths, resolved against the recipe's folder

Loc = tuple[Any, ...]


@dataclass
class RecipeRun:
    """What ``Recipe.run`` produced: the chain's run (``chain.final`` is the curated version)
    and, when the recipe has ``train:``, the trained models, their evaluations and the
    comparison table (``finished``)."""

    chain: RunResult
    finished: Finished | None = None
    exported: Path | None = None  # where the recipe's export: wrote the final version

    @property
    def final(self) -> Version:
        return self.chain.final

    @property
    def models(self) -> list[TrainedModel]:
        return [m for _, m, _ in self.finished.models] if self.finished else []


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
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)  # where row-wise steps run (no fingerprint)
    tokenizer: str | None = None  # count every version's tokens with it (Pipeline.tokenizer)
    export: ExportConfig | None = None  # write the final version for a training job after the chain
    audit: AuditConfig | None = None  # audit the chain's final version against labels after the chain

    def pipeline(self) -> Pipeline:
        """The chain alone (no ``train:`` / ``eval:``)."""
        return Pipeline(self.stages, self.source, self.name, RecipeInfo(str(self.path), self.sha256), self.models,
                        self.tokenizer)

    def run(self, store: Store | str | Path | None = None, *, force: bool = False, until: str | None = None,
            reporter: Reporter | None = None, workers: int | None = None,
            on_chain: Callable[[RunResult], None] | None = None, executor: str | None = None) -> RecipeRun:
        """The whole job: every step not already stored, then (unless ``until`` stops the
        chain early) fine-tuning on the final version and its baselines and the evaluation of
        every model, as ``curate run`` does. One ``ModelPool`` serves the chain and the
        fine-tuning. ``on_chain`` is called with the chain's result before any training (the
        CLI prints the funnel then). ``executor`` (``local`` / ``ray``) replaces the type of the
        recipe's ``executor:`` and keeps its other settings."""
        from .finetune import finetune_and_evaluate
        from .models import ModelPool

        store = store if isinstance(store, Store) else Store(store)
        pipeline = self.pipeline()
        pool = ModelPool(self.models, reporter=reporter, store=store)
        try:
            if executor is not None and executor not in ("local", "ray"):
                raise UsageError(f"unknown executor {executor!r}; executors are local, ray")
            run_on = self.executor if executor is None else self.executor.model_copy(update={"type": executor})
            chain = pipeline.run(store, force=force, until=until, reporter=reporter, workers=workers, pool=pool,
                                 executor=run_on)
            if self.audit is not None:
                chain.audit = self.audit_final(chain, store)
            if on_chain is not None:
                on_chain(chain)
            exported = self.export_final(chain, store, pool) if self.export is not None and until is None else None
            if self.train is None or until is not None:
                return RecipeRun(chain, exported=exported)
            pool.close()  # the chain's models leave memory (a GPU) before training; identities stay known
            finished = finetune_and_evaluate(self.name, chain.final, self.train, self.eval, pool, store,
                                             pipeline.steps, reporter=reporter, force=force)
            return RecipeRun(chain, finished, exported)
        finally:
            pool.close()

    def audit_final(self, chain: RunResult, store: Store):
        """The recipe's ``audit:`` of the chain's final version, written beside the run's other
        reports (``<store>/reports/<name>/audit.md`` and ``audit.json``)."""
        from .audit import audit, read_labels, write_audit

        assert self.audit is not None
        result = audit(chain.final.fingerprint, read_labels(self.audit.labels), store)
        result.ref = chain.name
        write_audit(result, store.area("reports", self.name))
        return result

    def export_final(self, chain: RunResult, store: Store, pool: Any) -> Path:
        """The recipe's ``export:`` of the chain's final version (written again on every run:
        an export is a copy, not a version)."""
        from .pipeline import token_counter
        from .versions import export

        e = self.export
        assert e is not None
        name = e.tokenizer or self.tokenizer
        tokenizer, label = None, None
        if name is not None and name != "approx":
            counter = token_counter(name, pool)
            tokenizer, label = counter.source, name
        suffix = {"jsonl": ".jsonl", "chat": ".jsonl", "parquet": ".parquet"}.get(e.format, "")
        out = Path(e.path) if e.path else store.area("exports") / f"{self.name}{suffix}"
        return export(chain.final.fingerprint, e.format, out, store, card=e.card, shard_mb=e.shard_mb,
                      shard_format=e.shard_format, tokenizer=tokenizer, tokenizer_label=label)


class _Problems:
    """Collects (location, message) pairs and renders them with YAML line numbers."""

    def __init__(self, path: Path, root: yaml.Node | None):
        self.path, self.root, self.items = path, root, []
        self.settings: dict[Loc, str] = {}  # where a --set value went -> the --set key that put it there

    def add(self, loc: Loc, msg: str) -> None:
        self.items.append((loc, msg))

    def raise_if_any(self) -> None:
        if self.items:
            located = sorted((self._where(loc, msg) for loc, msg in self.items), key=lambda x: x[0])
            raise RecipeError([where for _, where in located])

    def _where(self, loc: Loc, msg: str) -> tuple[int, str]:
        if loc[:1] == ("--set",):  # the message names the --set item
            return 0, msg
        for at, key in self.settings.items():
            if loc[: len(at)] == at or (len(loc) > 1 and at[: len(loc)] == loc):  # a value the command line set
                return 0, f"--set {key}{yaml_path(loc[len(at):], '.')}: {msg}"
        line = line_of(self.root, loc)
        return line, f"{self.path}:{line}: {yaml_path(loc)}: {msg}"


def load_recipe(path: str | Path, check_inputs: bool = True, settings: Mapping[str, Any] | None = None) -> Recipe:
    """Parse and validate a recipe; raises ``RecipeError`` listing every problem found.

    ``settings`` (``{"heuristic_filter.min_words": 30, "train.max_steps": 10}``; the CLI's
    ``--set``) replace single values: ``STEP.KEY`` of a step of the chain (for a named
    ``pipeline:``, as an ``overrides:`` entry), ``train.KEY`` or ``eval.KEY``."""
    from pipelines import PIPELINES

    from .sources import SOURCES
    from .stages import REGISTRY, RENAMED

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

    apply_settings(data, dict(settings or {}), problems)
    for key in data:
        if key not in TOP_KEYS:
            problems.add((key,), "unknown key" + suggest(str(key), TOP_KEYS))
    name = data.get("name")
    if not isinstance(name, str) or not _NAME_RE.match(name) or "/" in name:
        problems.add(("name",), "required: the dataset name (letters, digits, '_', '-', '.')")

    source = _source(data, path, problems, SOURCES, check_inputs)
    models = _models(data, path, problems)
    stages = _stages(data, problems, REGISTRY, PIPELINES, path.parent, RENAMED)
    _check_model_refs(data, stages, data.get("models") if isinstance(data.get("models"), dict) else {}, problems)
    train, evaluation = _training(data, path.parent, problems)
    run_on = _executor(data, problems)
    tokenizer = _tokenizer(data, path.parent, problems)
    export = _export(data, path.parent, problems)
    audit = _audit(data, path.parent, problems)
    problems.raise_if_any()
    return Recipe(path, name, source, stages, hashlib.sha256(text.encode()).hexdigest(), data.get("description") or "",
                  models, train, evaluation, run_on, tokenizer, export, audit)


class ExportConfig(BaseModel):
    """A recipe's ``export:``: the final version written for a training job after the chain,
    as ``curate datasets export`` writes it (a dataset card beside it)."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    format: Literal["jsonl", "chat", "parquet", "hf", "shards"] = "shards"
    """shards (pretraining shards with token counts), jsonl, chat, parquet or hf."""
    path: str | None = None
    """Where (relative to the recipe's folder); default: the store's exports/<name> (a file for jsonl/chat/parquet)."""
    shard_mb: float = Field(256.0, gt=0)
    """shards: MiB of text per shard."""
    shard_format: Literal["jsonl.gz", "parquet"] = "jsonl.gz"
    """shards: the files' format."""
    tokenizer: str | None = None
    """Count tokens with this (a models: entry, a tokenizer folder, a cached hub id); default: the recipe's tokenizer:."""
    card: bool = True
    """Write the dataset card (README.md) beside the data."""


def _export(data: dict, base: Path, problems: _Problems) -> ExportConfig | None:
    section = data.get("export")
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.add(("export",), f"a mapping of export settings ({', '.join(ExportConfig.model_fields)})")
        return None
    values = dict(section)
    if isinstance(values.get("path"), str) and not Path(values["path"]).expanduser().is_absolute():
        values["path"] = str(base / values["path"])
    try:
        return ExportConfig(**values)
    except ValidationError as e:
        for loc, msg in validation_problems(e, ExportConfig):
            problems.add(("export", *loc), msg)
        return None


class AuditConfig(BaseModel):
    """A recipe's ``audit:``: after the chain, its final version audited against labels
    (``curate.audit``): per step, the removal precision and recall and the good share of
    what remains; printed after the funnel and written to ``<store>/reports/<name>/audit.md``."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True)

    labels: str
    """A JSON-lines file of {"id" or "text", "label": good|bad} (relative to the recipe's folder), or champ (CHAMP's human annotations)."""


def _audit(data: dict, base: Path, problems: _Problems) -> AuditConfig | None:
    section = data.get("audit")
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.add(("audit",), "a mapping: audit: {labels: FILE or champ}")
        return None
    values = dict(section)
    try:
        config = AuditConfig(**values)
    except ValidationError as e:
        for loc, msg in validation_problems(e, AuditConfig):
            problems.add(("audit", *loc), msg)
        return None
    from .audit import BUILTIN

    if config.labels not in BUILTIN:
        path = Path(config.labels).expanduser()
        path = path if path.is_absolute() else base / path
        if not path.is_file():
            problems.add(("audit", "labels"), f"no such file: {path} (a JSON-lines label file, or one of: {', '.join(BUILTIN)})")
            return None
        config.labels = str(path)
    return config


def _tokenizer(data: dict, base: Path, problems: _Problems) -> str | None:
    """``tokenizer:``: a models: entry (of the transformers backend), ``approx``, a tokenizer
    folder (relative to the recipe's folder) or a cached hub id."""
    value = data.get("tokenizer")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        problems.add(("tokenizer",), "a models: entry, a tokenizer folder, a cached hub id, or approx")
        return None
    models = data.get("models") if isinstance(data.get("models"), dict) else {}
    if value in models:
        backend = (models[value] or {}).get("backend", "transformers") if isinstance(models[value], dict) else None
        if backend not in (None, "transformers"):
            problems.add(("tokenizer",), f"'{value}' is a {backend} model; a tokenizer comes from a transformers entry")
        return value
    return _resolve_paths(value, base) if _is_local(value, base) else value


def _executor(data: dict, problems: _Problems) -> ExecutorConfig:
    """The ``executor:`` section: ``local`` / ``ray``, or ``{type: ray, block_rows: ..., ray: {address: auto}}``."""
    section = data.get("executor")
    if section is None:
        return ExecutorConfig()
    if isinstance(section, str):
        section = {"type": section}
    if not isinstance(section, dict):
        problems.add(("executor",), "local, ray, or a mapping {type: ray, block_rows: ..., ray: {address: ..., num_cpus: ...}}")
        return ExecutorConfig()
    try:
        return ExecutorConfig(**section)
    except ValidationError as e:
        for loc, msg in validation_problems(e, ExecutorConfig):
            problems.add(("executor", *loc), msg)
        return ExecutorConfig()


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
    if evaluation is not None and "train" not in data:
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
                         + suggest(str(cfg["backend"]), BACKENDS))
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
    """Every model a step names is defined under models: or built in (``minilm``), and is of
    the kind its field wants: an embedder (backend sentence_transformers) for ``embedder``, a
    text classifier for ``classifier``, a language model for the others. Entries with
    problems of their own count as defined."""
    from .models.config import BUILTIN_MODELS, ROLE_BACKENDS, ROLE_WANTED, model_ref_hint, model_roles

    for step, stage in zip(step_names(stages), stages):
        where = ("overrides", step) if "pipeline" in data else ("stages",)
        for ref, role in model_roles(stage):
            if ref in models:
                backend = models[ref].get("backend", "transformers") if isinstance(models[ref], dict) else None
            elif ref in BUILTIN_MODELS:
                backend = BUILTIN_MODELS[ref].backend
            else:
                problems.add(where, f"step '{step}' uses model '{ref}', which the recipe does not define under models:"
                             + (model_ref_hint(ref, role)
                                or (suggest(ref, models) if models else " (add a models: section)")))
                continue
            if backend is not None and backend not in ROLE_BACKENDS[role]:
                problems.add(where, f"step '{step}' uses '{ref}', a {backend} model, where it needs {ROLE_WANTED[role]}")


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
        problems.add(("source", "type"), f"unknown source type {kind!r}" + suggest(str(kind), sources))
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
    if isinstance(value, str) and not Path(value).is_absolute() and not is_uri(value):
        return str(base / value)
    return value


def _stages(data: dict, problems: _Problems, registry: dict, pipelines: dict, base: Path,
            renamed: dict[str, str]) -> list[Stage]:
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
        if stage_name in renamed:
            problems.add(("stages", i, stage_name), f"stage '{stage_name}' was renamed to {renamed[stage_name]}")
            continue
        if stage_name not in registry:
            problems.add(("stages", i, stage_name), f"unknown stage {stage_name!r}" + suggest(str(stage_name), registry)
                         + " (`curate stages` lists them)")
            continue
        stage = _build_stage(registry[stage_name], cfg or {}, ("stages", i, stage_name), problems, base=base)
        if stage is not None:
            stages.append(stage)
    return stages


def _named_pipeline(data: dict, problems: _Problems, pipelines: dict, base: Path) -> list[Stage]:
    ref = data["pipeline"]
    if ref not in pipelines:
        problems.add(("pipeline",), f"unknown pipeline {ref!r}" + suggest(str(ref), pipelines))
        return []
    stages = pipelines[ref]()
    steps = step_names(stages)
    overrides = data.get("overrides") or {}
    if not isinstance(overrides, dict):
        problems.add(("overrides",), "a mapping STEP: {key: value}")
        return stages
    for step, cfg in overrides.items():
        if step not in steps:
            problems.add(("overrides", step), f"pipeline '{ref}' has no step {step!r}" + suggest(str(step), steps))
            continue
        i = steps.index(step)
        given = _resolve_stage_paths(type(stages[i]), cfg or {}, base) if isinstance(cfg, dict) else cfg
        merged = merge_settings(stages[i].config.model_dump(exclude_defaults=True), given or {})
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


def yaml_path(loc: Loc, lead: str = "") -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out or lead else str(part))
    return out or ("" if lead else "(top level)")


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


