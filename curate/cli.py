"""The ``curate`` command: a thin shell over the Python API that notebooks use.

Exit codes: 0 success, 2 bad recipe or arguments, 1 runtime failure. Errors print one
clear message, never a traceback (set ``CURATE_DEBUG=1`` to see one).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import CurateError, UsageError
from .stage import Reporter, StageContext

app = typer.Typer(help="Curate and select training data for LLM fine-tuning and pretraining.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
datasets_app = typer.Typer(help="List, inspect, compare and export dataset versions.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(help="Make and serve models: a tiny local LM, an OpenAI-compatible server.", no_args_is_help=True)
app.add_typer(models_app, name="models")

# Piped output (CI logs, tests) gets a wide console so tables are not squeezed into 80 columns.
out = Console(width=None if sys.stdout.isatty() else 160, soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

def _version(value: bool) -> None:
    if value:
        from ._version import __version__

        print(f"curate {__version__}")
        raise typer.Exit()


@app.callback()
def _options(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                   help="Print the version and exit.")] = False) -> None:
    """Curate and select training data for LLM fine-tuning and pretraining."""


StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Store root (else $CURATE_STORE, else ./.curate).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class RichReporter(Reporter):
    """Progress bars on stderr for the CLI."""

    def __init__(self, console: Console):
        self.console = console

    def track(self, items: Iterable, total: int | None = None, description: str = "") -> Iterator:
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TimeRemainingColumn()]
        with Progress(*columns, console=self.console, transient=True) as progress:
            yield from progress.track(items, total=total, description=description)

    def log(self, message: str) -> None:
        self.console.print(f"[dim]{message}[/dim]")


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute every step even if cached.")] = False,
    until: Annotated[Optional[str], typer.Option("--until", help="Stop after this step.")] = None,
    workers: Annotated[int, typer.Option("--workers", help="Processes for per-row work (default: every core).")] = 0,
    settings: Annotated[list[str], typer.Option("--set", metavar="STEP.KEY=VALUE", help=(
        "Change one setting of a step, train: or eval: without editing the recipe (repeatable; the value is YAML): "
        "--set heuristic_filter.min_words=30 --set train.max_steps=10"))] = [],  # noqa: B006 (typer reads it)
    executor: Annotated[Optional[str], typer.Option("--executor", metavar="local|ray", help=(
        "Where row-wise steps run (default: the recipe's executor:, else local); ray joins $RAY_ADDRESS or "
        "starts a cluster on this machine. Changes no fingerprint."))] = None,
) -> None:
    """Run a recipe: every step's output becomes a versioned dataset, then train: and eval:; prints the funnel."""
    from .recipe import load_recipe, parse_settings
    from .report import funnel_table

    start = time.perf_counter()
    r = load_recipe(recipe, settings=parse_settings(settings))
    reporter = RichReporter(err)

    def print_funnel(result) -> None:
        out.print(funnel_table(result))
        for line in result.describe_model_calls():
            out.print(line)
        if r.models and not result.model_calls:
            out.print("no model calls: every step that uses a model was cached")
        state = "nothing to compute: every step was cached" if result.all_cached else "done"
        out.print(f"{state}; {result.final.num_rows:,} rows in {result.name} ({time.perf_counter() - start:.1f} s)")
        if result.audit is not None:
            out.print(result.audit.markdown(), markup=False, highlight=False)

    done = r.run(store, force=force, until=until, reporter=reporter, workers=workers or None, on_chain=print_funnel,
                 executor=executor)
    if done.finished is not None:
        _print_finished(done.finished)
        out.print(f"fine-tuned and evaluated ({time.perf_counter() - start:.1f} s in all)")


def _print_finished(done) -> None:
    for label, model, cached in done.models:
        s = model.manifest["train"]
        out.print(f"finetune {label}: {'cached' if cached else 'trained'} -> model {model.fingerprint} "
                  f"({s['steps']} steps on {s['trained_rows']:,} rows, loss {s['first_loss']} -> {s['final_loss']}; "
                  f"{model.model_path})", markup=False)
    if done.table:
        out.print(done.table, markup=False, highlight=False)
        out.print(f"comparison table: {done.path}", markup=False)


@app.command()
def audit(
    ref: Annotated[str, typer.Argument(help="Dataset reference: a name, name/step or fingerprint.")],
    labels: Annotated[str, typer.Option("--labels", help=(
        "JSON-lines file of {\"id\" or \"text\", \"label\": good|bad}, or champ (CHAMP's human annotations)."))],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Also write audit.md and audit.json into this folder.")] = None,
) -> None:
    """Per step of REF's lineage, against labelled rows: removal precision and recall, and the good share of what remains."""
    from .audit import audit as run_audit
    from .audit import read_labels, write_audit

    result = run_audit(ref, read_labels(labels), store)
    if out_dir is not None:
        write_audit(result, out_dir)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))
        return
    out.print(result.markdown(), markup=False, highlight=False)


@app.command()
def validate(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML file.")],
    settings: Annotated[list[str], typer.Option("--set", metavar="STEP.KEY=VALUE",
                                                help="As curate run --set: check the recipe with these changes.")] = [],  # noqa: B006
) -> None:
    """Check a recipe without running it; reports every problem at once."""
    from .recipe import load_recipe, parse_settings

    r = load_recipe(recipe, settings=parse_settings(settings))
    p = r.pipeline()
    out.print(f"{recipe}: ok -- dataset '{r.name}', source {getattr(r.source, 'type', r.source)}, {len(p.stages)} stages")
    for name, spec in r.models.items():
        out.print(f"  model {name} ({spec.backend}): {spec.model_dump(mode='json', exclude_defaults=True)}")
    for step, stage in zip(p.steps, p.stages):
        out.print(f"  {step}: {stage!r}")
    for key, section in (("train", r.train), ("eval", r.eval)):
        if section is not None:
            out.print(f"  {key}: {section.model_dump(mode='json', exclude_defaults=True)}", markup=False)


@app.command("dedup-calibrate")
def dedup_calibrate(
    ref: Annotated[str, typer.Argument(help="Dataset reference to sample from.")],
    settings: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help=(
        "A minhash_dedup setting to calibrate (repeatable; the value is YAML; `curate stages minhash_dedup` lists "
        "them): --set threshold=0.7 --set bands=16 --set rows=8"))] = [],  # noqa: B006
    sample: Annotated[int, typer.Option(help="Rows to sample.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Precision and recall of MinHash settings on a sample of your data, against true Jaccard."""
    from .calibrate import calibrate
    from .recipe import parse_settings
    from .stages import MinhashDedup
    from .store import Store

    config = MinhashDedup(parse_settings(settings)).config
    table = Store(store).resolve(ref).table()
    report = calibrate(table, config, sample=sample, seed=seed, ctx=StageContext(reporter=RichReporter(err),
                                                                                  workers=os.cpu_count() or 1))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    s, b, tr = report["settings"], report["banding"], report["truth"]
    out.print(f"{report['rows']:,} rows sampled; true pairs (J >= {s['threshold']}): {tr['pairs']:,}")
    out.print(f"banding {s['bands']} x {s['rows']}: acts like J ~ {b['implied_threshold']}, "
              f"P(candidate | J = {s['threshold']}) = {b['p_candidate_at_threshold']}")
    t = Table("pairs", "count", "precision", "recall")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for label, key in (("LSH candidates", "candidates"), (f"merged (verify={s['verify']})", "merged"),
                       ("classic unverified optimum", "classic_unverified")):
        r = report[key]
        name = label if key != "classic_unverified" else f"{label} ({r['bands']} x {r['rows']})"
        t.add_row(name, f"{r['pairs']:,}", fmt(r["precision"]), fmt(r["recall"]))
    out.print(t)
    out.print("candidate Jaccard histogram: " + ", ".join(f"{k}: {v}" for k, v in report["candidate_jaccard_histogram"].items() if v))
    for kind, rows_ in report["examples"].items():
        if isinstance(rows_, list):
            for e in rows_:
                out.print(f"[bold]{kind}[/bold] J={e['jaccard']}: {e['a']} ~ {e['b']}")
                out.print(f"   A: {e['a_text']!r}", markup=False)
                out.print(f"   B: {e['b_text']!r}", markup=False)


@app.command()
def stages(name: Annotated[Optional[str], typer.Argument(help="A stage name to describe.")] = None) -> None:
    """List the stages, or print one stage's config fields with types, defaults and docs."""
    from .stages import REGISTRY

    if name is None:
        t = Table("stage", "version", "what it does")
        for n, cls in sorted(REGISTRY.items()):
            t.add_row(n, cls.version, escape(_first_line(sys.modules[cls.__module__].__doc__)))
        out.print(t)
        return
    if name not in REGISTRY:
        import difflib

        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        raise UsageError(f"unknown stage {name!r}" + (f"; did you mean '{close[0]}'?" if close else ""))
    cls = REGISTRY[name]
    out.print(f"[bold]{name}[/bold] (version {cls.version}): {escape(_first_line(sys.modules[cls.__module__].__doc__))}")
    _print_config_fields("", cls.Config)


def _config_from_settings(config_cls, values: dict):
    """``config_cls(**values)``; its problems reported as the ``--set`` items that caused them."""
    from pydantic import ValidationError

    from .errors import RecipeError
    from .stage import validation_problems

    try:
        return config_cls(**values)
    except ValidationError as e:
        raise RecipeError([f"--set {'.'.join(map(str, loc))}: {msg}" for loc, msg in validation_problems(e, config_cls)]) from None


def _print_config_fields(title: str, config_cls) -> None:
    from .stage import describe_config

    t = Table("field", "type", "default", "doc", title=title, title_justify="left")
    for f in describe_config(config_cls):
        t.add_row(*(escape(str(f[k])) for k in ("name", "type", "default", "doc")))  # docs hold [brackets], not markup
    out.print(t)


def _first_line(doc: str | None) -> str:
    return (doc or "").strip().split("\n")[0]


@datasets_app.command("list")
def datasets_list(
    store: StoreOpt = None,
    as_json: JsonOpt = False,
    all_steps: Annotated[bool, typer.Option("--all", help="Include each recipe step's intermediate dataset.")] = False,
) -> None:
    """List named datasets with their latest version and row count."""
    from .versions import list_datasets

    rows = list_datasets(store, include_steps=all_steps)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = Table("name", "versions", "latest", "rows", "rejected", "created")
    for r in rows:
        t.add_row(r["name"], str(r["versions"]), r["latest"], f"{r['rows']:,}", f"{r['rejected']:,}", r["created"])
    out.print(t if rows else "no datasets yet: run a recipe (curate run RECIPE)")


@datasets_app.command("show")
def datasets_show(ref: Annotated[str, typer.Argument(help="NAME, NAME@N, NAME@<fingerprint>, NAME/STEP.")],
                  store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Print a version's manifest."""
    from .report import manifest_table
    from .store import Store

    m = Store(store).resolve(ref).manifest
    if as_json:
        print(json.dumps(m, indent=2))
    else:
        out.print(manifest_table(m))


@datasets_app.command("rejects")
def datasets_rejects(
    ref: Annotated[str, typer.Argument(help="A step's version, e.g. math_sft/heuristic_filter.")],
    reason: Annotated[Optional[str], typer.Option("--reason", help="Only rows rejected for this reason.")] = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows to print.")] = 20,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The rows a step removed, with reason and detail (every removed row is kept)."""
    from .versions import load

    table = load(ref, as_="arrow", store=store, rejected=True)
    rows = [r for r in table.select(["id", "reason", "detail"]).to_pylist() if reason in (None, r["reason"])]
    if as_json:
        print(json.dumps(rows[:limit], indent=2))
        return
    t = Table("id", "reason", "detail", title=f"{len(rows):,} rejected rows in {ref}", title_justify="left")
    for r in rows[:limit]:
        t.add_row(r["id"], r["reason"], r["detail"] or "")
    out.print(t)


@datasets_app.command("diff")
def datasets_diff(a: Annotated[str, typer.Argument(help="First reference.")],
                  b: Annotated[str, typer.Argument(help="Second reference.")],
                  store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Rows only in each version (by id) and rows whose content changed."""
    from .versions import diff

    d = diff(a, b, store)
    if as_json:
        print(json.dumps(d, indent=2))
        return
    out.print(f"A = {a} ({d['a']['fingerprint']}, {d['a']['rows']:,} rows)")
    out.print(f"B = {b} ({d['b']['fingerprint']}, {d['b']['rows']:,} rows)")
    out.print(f"only in A: {d['only_in_a']:,}  only in B: {d['only_in_b']:,}  changed: {d['changed']:,}  same: {d['same']:,}")
    for key in ("columns_added", "columns_removed"):
        if d[key]:
            out.print(f"{key.replace('_', ' ')}: {', '.join(d[key])}")
    for k, ids in d["examples"].items():
        if ids:
            out.print(f"  {k}: {', '.join(ids)}{' ...' if len(ids) < d[k] else ''}")
    if d["changed_columns"]:
        out.print("changed columns: " + ", ".join(f"{c} {n:,}" for c, n in d["changed_columns"].items()))
    for e in d["edits"]:
        out.print(f"  {e['id']} {e['column']}:", markup=False)
        out.print(f"    - {e['before']}", markup=False, highlight=False)
        out.print(f"    + {e['after']}", markup=False, highlight=False)


@datasets_app.command("export")
def datasets_export(
    ref: Annotated[str, typer.Argument(help="Dataset reference.")],
    fmt: Annotated[str, typer.Option("--format", help="jsonl (every column) | chat (messages only: TRL, axolotl, "
                                                       "LLaMA-Factory) | parquet | hf (a datasets folder) | shards "
                                                       "(pretraining shards of text rows, with token counts)")],
    dest: Annotated[Path, typer.Option("--out", help="Output file (jsonl, chat, parquet) or folder (hf, shards).")],
    store: StoreOpt = None,
    card: Annotated[bool, typer.Option("--card/--no-card", help="Write a dataset card (README) with the lineage beside it.")] = True,
    shard_mb: Annotated[float, typer.Option("--shard-mb", help="shards: text MiB a shard holds before the next starts.")] = 256.0,
    shard_format: Annotated[str, typer.Option("--shard-format", help="shards: jsonl.gz | parquet.")] = "jsonl.gz",
    tokenizer: Annotated[Optional[str], typer.Option("--tokenizer", help=(
        "shards: count tokens with this Hugging Face tokenizer (a folder or a cached hub name; offline); "
        "default: a tokenizer-free count."))] = None,
) -> None:
    """Export a version for a downstream training job, with a dataset card."""
    from .versions import EXPORT_FORMATS, export

    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt}: use {', '.join(EXPORT_FORMATS)}")
    path = export(ref, fmt, dest, store, card=card, shard_mb=shard_mb, shard_format=shard_format,  # type: ignore[arg-type]
                  tokenizer=tokenizer)
    out.print(f"wrote {path}")
    if fmt == "shards":
        index = json.loads((path / "index.json").read_text())
        out.print(f"{len(index['shards']):,} shards, {index['rows']:,} documents, {index['tokens']:,} tokens "
                  f"({index['tokenizer']})", markup=False)
    if card:
        from .card import card_path

        out.print(f"wrote {card_path(path, fmt)} (dataset card: lineage, counts, how to load)")


@models_app.command("train-tiny")
def models_train_tiny(
    data: Annotated[str, typer.Option("--data", help="A dataset reference, or a .txt/.jsonl/.parquet/.csv file.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder to write the model to (new or empty).")],
    steps: Annotated[int, typer.Option(help="Training steps.")] = 300,
    hidden_size: Annotated[int, typer.Option(help="Model width.")] = 128,
    layers: Annotated[int, typer.Option(help="Decoder layers.")] = 2,
    context_length: Annotated[int, typer.Option(help="Tokens per sequence (and the model's window).")] = 512,
    vocab_size: Annotated[int, typer.Option(help="BPE vocabulary size.")] = 2048,
    batch_size: Annotated[int, typer.Option(help="Sequences per step.")] = 16,
    seed: Annotated[int, typer.Option(help="Seed.")] = 0,
    store: StoreOpt = None,
) -> None:
    """Train a tiny Llama-style causal LM (and its BPE tokenizer) on local text, in Hugging Face format."""
    from .models.config import TinyLMSpec
    from .models.tiny import MARKER, ensure_tiny
    from .store import Store

    spec = TinyLMSpec(data=data, steps=steps, hidden_size=hidden_size, layers=layers, context_length=context_length,
                      vocab_size=vocab_size, batch_size=batch_size, seed=seed)
    start = time.perf_counter()
    path = ensure_tiny(spec, out_dir, reporter=RichReporter(err), store=Store(store))
    info = json.loads((path / MARKER).read_text())
    out.print(f"{path}: {info['parameters']:,} parameters, final loss {info['final_loss']} "
              f"({time.perf_counter() - start:.1f} s); load it with backend: transformers, model: {path}")


@models_app.command("serve")
def models_serve(
    model: Annotated[str, typer.Argument(help="A local model folder or a cached hub id (transformers backend).")],
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    name: Annotated[Optional[str], typer.Option(help="The model name clients ask for (default: the folder name).")] = None,
) -> None:
    """Serve a local causal LM over OpenAI-compatible routes (/v1/completions, /v1/chat/completions)."""
    from .models import ModelPool
    from .models.serve import serve_forever

    lm = ModelPool({"served": {"backend": "transformers", "model": model}}, cache=False).get("served")
    served = name or Path(model).name
    serve_forever(lm, host=host, port=port, model_name=served,
                  on_ready=lambda url: out.print(f"serving '{served}' at {url} (Ctrl-C stops)"))

@app.command()
def train(
    target: Annotated[Optional[str], typer.Argument(help="A dataset reference (NAME, NAME@N, NAME/STEP), or a recipe "
                                                         "YAML whose train: section and final version to use.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Base model: a local folder or a cached hub id "
                                                 "(with a recipe: default its train.model).")] = None,
    settings: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help=(
        "A training setting (repeatable; the value is YAML; `curate train --help-settings` lists them): "
        "--set method=lora --set max_steps=200 --set learning_rate=1e-4"))] = [],  # noqa: B006
    help_settings: Annotated[bool, typer.Option("--help-settings", help="List the settings --set takes.")] = False,
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Train again even if this exact model exists.")] = False,
) -> None:
    """Fine-tune a model on a dataset version (TRL SFT, LoRA or full); an interrupted run resumes from its last checkpoint."""
    from .finetune import train_model
    from .recipe import parse_settings
    from .store import Store
    from .train import TrainConfig

    if help_settings:
        _print_config_fields("curate train --set", TrainConfig)
        return
    if target is None:
        raise UsageError("curate train needs a dataset reference or a recipe (curate train math_sft --model M)")
    given = {**parse_settings(settings), **({"model": model} if model is not None else {})}
    models: dict = {}
    if target.endswith((".yaml", ".yml")):
        from .recipe import load_recipe

        r = load_recipe(target)
        if r.train is None:
            raise UsageError(f"{target} has no train: section; give --model and a dataset reference instead")
        base_cfg, ref, models = r.train.model_dump(exclude_defaults=True), r.name, r.models
    else:
        base_cfg, ref = {}, target
    config = _config_from_settings(TrainConfig, {**base_cfg, **given})
    trained, cached = train_model(ref, config, store=Store(store), models=models, reporter=RichReporter(err), force=force)
    s = trained.manifest["train"]
    resumed = f", resumed from {s['resumed_from']}" if s.get("resumed_from") else ""
    out.print(f"{'cached' if cached else 'trained'}: model {trained.fingerprint} on {ref} "
              f"({trained.manifest['dataset']['fingerprint']}): "
              f"{s['steps']} steps, loss {s['first_loss']} -> {s['final_loss']}{resumed}\n  weights: {trained.model_path}",
              markup=False)


@app.command("eval")
def eval_(
    models: Annotated[list[str], typer.Argument(help="Trained models (a fingerprint, or the dataset they were trained on) "
                                                     "or local model folders.")],
    data: Annotated[str, typer.Option("--data", help="Held-out set: a file with question + answer (+ solution), or a "
                                                     "dataset reference.")],
    settings: Annotated[list[str], typer.Option("--set", metavar="KEY=VALUE", help=(
        "An eval setting (repeatable; the value is YAML): --set kind=number --set max_tokens=256 "
        "--set instruction='Put the final answer in \\boxed{}.'"))] = [],  # noqa: B006
    table_out: Annotated[Optional[Path], typer.Option("--out", help="Write the comparison table here (.md, and .csv beside).")] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Answer a held-out set with each model, check the answers, and compare accuracy (95% CI) and held-out loss."""
    from .evaluate import comparison_table, write_comparison
    from .finetune import evaluate_models
    from .recipe import parse_settings
    from .store import Store
    from .train.config import EvalConfig

    evaluation = _config_from_settings(EvalConfig, {**parse_settings(settings), "data": data})
    rows = evaluate_models(models, evaluation, Store(store), RichReporter(err))
    if as_json:
        out.print_json(json.dumps(rows))
        return
    out.print(comparison_table(rows), markup=False, highlight=False)
    if table_out is not None:
        write_comparison(rows, table_out)
        out.print(f"wrote {table_out}", markup=False)


@models_app.command("list")
def models_list(store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Trained models, newest first: what they were trained on, how, and their evaluations."""
    from .store import Store
    from .train import ModelStore

    found = ModelStore(Store(store)).list()
    if as_json:
        out.print_json(json.dumps([m.manifest for m in found]))
        return
    if not found:
        out.print("no trained models yet (curate train, or a recipe's train: section)")
        return
    table = Table("model", "trained on", "dataset version", "rows", "base", "method", "steps", "loss", "evals", "created")
    for m in found:
        t, d = m.manifest["train"], m.manifest["dataset"]
        evals = len(list((m.path / "evals").glob("*/eval.json")))
        table.add_row(m.fingerprint, m.name, d["fingerprint"], f"{d['rows']:,}", m.manifest["base"]["label"],
                      m.manifest["method"], str(t["steps"]), f"{t['first_loss']} -> {t['final_loss']}", str(evals),
                      m.manifest["created"])
    out.print(table)


def _render_warnings() -> None:
    """Show every ``CurateWarning`` (not just the first per line of code) as one yellow line
    on stderr; other packages' warnings keep Python's own format."""
    import warnings

    from .errors import CurateWarning

    python_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, CurateWarning):
            err.print("[bold yellow]warning:[/bold yellow]", end=" ")
            err.print(str(message), markup=False, highlight=False)
        else:
            python_show(message, category, filename, lineno, file, line)

    warnings.simplefilter("always", CurateWarning)
    warnings.showwarning = show


def main() -> None:
    _render_warnings()
    try:
        app()  # standalone: typer itself prints usage errors and exits 2
    except CurateError as e:
        err.print("[bold red]error:[/bold red]", end=" ")
        err.print(str(e), markup=False, highlight=False)
        _debug()
        sys.exit(e.exit_code)
    except Exception as e:  # a bug of ours: say so plainly, traceback on request
        err.print("[bold red]internal error:[/bold red]", end=" ")
        err.print(f"{type(e).__name__}: {e}\nThis is a bug in curate; rerun with CURATE_DEBUG=1 for the "
                  "traceback and report it.", markup=False, highlight=False)
        _debug()
        sys.exit(1)


def _debug() -> None:
    if os.environ.get("CURATE_DEBUG"):
        import traceback

        traceback.print_exc()
