"""Pipelines: an ordered chain of stages over a source, run against the versioned store.

Each step's output is a version whose fingerprint is derived from its input's
fingerprint and its own (name, config, version); a step whose fingerprint is already
in the store is *cached* and costs nothing -- not even loading its data, unless a
later step needs to compute. A run killed half-way resumes after the last version
that was written, and ends at the same final fingerprint.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel

from ._version import __version__
from .algorithms.tokens import TokenCounter, version_tokens
from .errors import CurateError, StageError, UsageError
from .executors import BlockTask, Executor, ExecutorConfig, LocalExecutor, add_stats
from .executors import executor as make_executor
from .stage import Reporter, Stage, StageContext, StageOutput, check_counts, with_stage_column
from .store import BLOCK_ROWS, Store, Version, check_name, now

if TYPE_CHECKING:
    from .models import ModelPool

SOURCE_STEP = "source"


@dataclass
class StepStat:
    step: str
    stage: str
    fingerprint: str
    rows_in: int
    kept: int
    rejected: int
    added: int
    reasons: dict[str, int]
    seconds: float
    cached: bool
    stats: dict[str, int | float] = field(default_factory=dict)  # the stage's own counters (StageOutput.stats)
    tokens: int | None = None  # tokens of the kept rows, when the pipeline counts them (``Pipeline.tokenizer``)

    @classmethod
    def from_manifest(cls, m: dict[str, Any], cached: bool) -> StepStat:
        c = m["counts"]
        return cls(
            m["stage"]["step"], m["stage"]["name"], m["fingerprint"], c["in"], c["kept"], c["rejected"],
            c.get("added", 0), m.get("rejections", {}), 0.0 if cached else m.get("wall_time_s", 0.0), cached,
            m.get("stats", {}),
        )


@dataclass
class RunResult:
    name: str
    final: Version
    steps: list[StepStat]
    model_calls: dict[str, Any] = field(default_factory=dict)  # model name -> CallStats, for models a step called
    audit: Any = None  # the recipe's audit: against its labels (curate.audit.Audit), set by Recipe.run

    def describe_model_calls(self) -> list[str]:
        """One line per model a computed step used: calls made, and answered from the cache."""
        return [stats.describe(name) for name, stats in self.model_calls.items()]

    @property
    def fingerprint(self) -> str:
        return self.final.fingerprint

    @property
    def all_cached(self) -> bool:
        return all(s.cached for s in self.steps)

    def table(self):
        return self.final.table()


@dataclass
class RecipeInfo:
    """Where a pipeline came from, recorded in every manifest it writes."""

    path: str
    sha256: str


@dataclass
class Pipeline:
    """``Pipeline([ExactDedup(), HeuristicFilter(min_words=20)], source=JsonlSource(path=...), name="demo")``.

    ``source`` is a source object (``curate.sources``) or a reference to a dataset version
    already in the store (``"math_sft@2"``). ``models`` names the models stages call
    (``{"ref_lm": TransformersSpec(model="path")}``, or a bare path / hub id)."""

    stages: Sequence[Stage]
    source: Any = None
    name: str = "dataset"
    recipe: RecipeInfo | None = None
    models: dict[str, Any] = field(default_factory=dict)
    tokenizer: str | None = None
    """Count every version's tokens with this tokenizer (a models: entry, whose folder's
    tokenizer counts; a tokenizer folder or a cached hub id; ``approx``: the tokenizer-free
    count), shown in the funnel (``StepStat.tokens``) and the dataset card. None: not counted."""
    steps: list[str] = field(init=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        self.stages = list(self.stages)
        self.steps = step_names(self.stages)
        self.models = dict(self.models or {})
        from .models.config import BUILTIN_MODELS, model_ref_hint, model_roles

        # A model a stage names is one of ours or a built-in one (``minilm``, the packaged embedder).
        missing = [f"step '{step}' uses model '{m}', which is not defined" + model_ref_hint(m, role)
                   for step, stage in zip(self.steps, self.stages) for m, role in model_roles(stage)
                   if m not in self.models and m not in BUILTIN_MODELS]
        if missing:
            known = ", ".join([*self.models, *(n for n in BUILTIN_MODELS if n not in self.models)])
            raise UsageError("; ".join(missing) + f" (models: {known}); define it under the recipe's models: "
                             "section, or pass models={...} to Pipeline")

    def then(self, *stages: Stage) -> Pipeline:
        """A new pipeline with ``stages`` appended (this one is not modified)."""
        return Pipeline([*self.stages, *stages], self.source, self.name, self.recipe, self.models, self.tokenizer)

    def run(
        self,
        store: Store | str | Path | None = None,
        *,
        force: bool = False,
        until: str | None = None,
        reporter: Reporter | None = None,
        workers: int | None = None,
        pool: ModelPool | None = None,
        executor: ExecutorConfig | Executor | str | None = None,
    ) -> RunResult:
        """Run every step not already in ``store``. ``workers`` processes share per-row work
        (default: every core; results and fingerprints do not depend on it). ``pool`` is the
        run's models when the caller goes on using them (``Recipe.run`` fine-tunes after the
        chain); by default the run builds its own from ``models`` and closes it.
        ``executor`` (``"local"``, ``"ray"``, an ``ExecutorConfig`` or an ``Executor``) is
        where row-wise steps run, block by block; it changes no fingerprint and no row."""
        from .models import ModelPool

        store = store if isinstance(store, Store) else Store(store)
        reporter = reporter or Reporter()
        workers = workers or os.cpu_count() or 1
        own = pool is None
        pool = ModelPool(self.models, reporter=reporter, store=store) if own else pool
        run_on = make_executor(executor)
        try:
            result = self._run(store, force, until, reporter, workers, pool, run_on)
        finally:
            if not isinstance(executor, Executor):
                run_on.close()
            if own:
                pool.close()
        return result

    def _run(self, store: Store, force: bool, until: str | None, reporter: Reporter, workers: int,
             pool: ModelPool, run_on: Executor) -> RunResult:
        def context(step: str) -> StageContext:
            return StageContext(reporter=reporter, store=store, step=step, workers=max(1, workers), models=pool)

        if until is not None and until not in (SOURCE_STEP, *self.steps):
            raise UsageError(f"--until {until}: no such step; steps are {', '.join([SOURCE_STEP, *self.steps])}")
        stats: list[StepStat] = []
        table = None
        lineage: list[dict[str, Any]] = []

        parent = self._run_source(store, force, context, stats, lineage, run_on.block_rows)
        table_fp = None
        if until != SOURCE_STEP:
            for step, stage in zip(self.steps, self.stages):
                fp = stage.fingerprint(parent.fingerprint, store, pool)
                if store.has(fp) and not force:
                    version = store.version(fp)
                    stats.append(StepStat.from_manifest(version.manifest, cached=True))
                    reporter.log(f"{step}: cached ({fp})")
                else:
                    if (stage.is_row_wise() or stage.decides()) and parent.num_rows:
                        version = self._compute_blocks(store, stage, step, fp, parent, lineage, context(step), pool,
                                                       run_on, force)
                    else:
                        if table is None or table_fp != parent.fingerprint:
                            table = parent.table()
                        version, table = self._compute(store, stage, step, fp, parent, table, lineage, context(step),
                                                       pool, run_on)
                        table_fp = fp
                    stats.append(StepStat.from_manifest(version.manifest, cached=False))
                lineage.append(_lineage_entry(version.manifest))
                store.tag(f"{self.name}/{step}", fp)
                parent = version
                if step == until:
                    break
        if until is None:
            store.tag(self.name, parent.fingerprint)
        if self.tokenizer is not None:
            counter = token_counter(self.tokenizer, pool)
            cache = store.area("cache", "tokens")
            for stat in reporter.track(stats, total=len(stats), description=f"counting tokens ({counter.label})"):
                stat.tokens = version_tokens(store.version(stat.fingerprint), counter, cache, workers)
        calls: dict[str, Any] = {}
        for name, model in pool.used().items():
            add_stats(calls, name, model.stats)
        for name, model_stats in run_on.model_calls.items():  # calls made in Ray workers
            add_stats(calls, name, model_stats)
        return RunResult(self.name, parent, stats, calls)

    def _stream_source(self, store: Store, fp: str, ctx: StageContext, block_rows: int) -> Version:
        """A source that reads block by block (``Source.streams``): each block of rows and
        rejects is written as it is read, so memory holds a block, not the input. A killed
        read starts over (its blocks are written in ``tmp/work/<fingerprint>/``)."""
        start = time.perf_counter()
        writer = store.writer(fp, fresh=True)
        summaries: list[dict[str, Any]] = []

        def sink(out) -> None:
            rejected = with_stage_column(out.rejected, SOURCE_STEP)
            check_counts(SOURCE_STEP, out.rows_in, out.kept, rejected, 0)
            reasons = Counter(rejected.column("reason").to_pylist()) if len(rejected) else Counter()
            summaries.append(writer.write_block(len(summaries), out.kept, rejected, {
                "rows_in": out.rows_in, "kept": len(out.kept), "rejected": len(rejected), "added": 0,
                "reasons": dict(reasons)}))

        sink(self.source.read(ctx, sink=sink, block_rows=block_rows))
        reasons: Counter[str] = Counter()
        for part in summaries:
            reasons.update(part["reasons"])
        counts = {"in": sum(p["rows_in"] for p in summaries), "kept": sum(p["kept"] for p in summaries),
                  "rejected": sum(p["rejected"] for p in summaries), "added": 0, "reasons": reasons}
        schema = _schema_of(writer.path, len(summaries))
        manifest = self._manifest(
            fp, [], {"name": f"source:{self.source.type}", "step": SOURCE_STEP, "version": self.source.version,
                     "config": self.source.config.model_dump(mode="json")},
            counts, time.perf_counter() - start, [], schema=schema,
            scores=_score_summary_of(writer.path, len(summaries), schema),
        )
        return writer.finish(manifest, len(summaries))

    def _run_source(self, store, force, context, stats, lineage, block_rows: int = BLOCK_ROWS) -> Version:
        if self.source is None:
            raise UsageError("this pipeline has no source: pass source=... (a curate.sources object or a dataset reference)")
        if isinstance(self.source, str):
            version = store.resolve(self.source)
            lineage.extend(version.manifest.get("lineage", []))
            return version
        fp = self.source.fingerprint()
        if store.has(fp) and not force:
            version = store.version(fp)
            stats.append(StepStat.from_manifest(version.manifest, cached=True))
        elif self.source.streams:
            version = self._stream_source(store, fp, context(SOURCE_STEP), block_rows)
            stats.append(StepStat.from_manifest(version.manifest, cached=False))
        else:
            start = time.perf_counter()
            out = self.source.read(context(SOURCE_STEP))
            rejected = with_stage_column(out.rejected, SOURCE_STEP)
            check_counts(SOURCE_STEP, out.rows_in, out.kept, rejected, 0)
            manifest = self._manifest(
                fp, [], {"name": f"source:{self.source.type}", "step": SOURCE_STEP, "version": self.source.version,
                         "config": self.source.config.model_dump(mode="json")},
                _counts(out.rows_in, out.kept, rejected, 0), time.perf_counter() - start, [], kept=out.kept,
            )
            version = store.write_version(out.kept, rejected, manifest)
            stats.append(StepStat.from_manifest(manifest, cached=False))
        lineage.append(_lineage_entry(version.manifest))
        store.tag(f"{self.name}/{SOURCE_STEP}", fp)
        return version

    def _compute(self, store, stage, step, fp, parent, table, lineage, ctx, pool, run_on):
        start = time.perf_counter()
        try:
            out: StageOutput = stage.process(table, ctx)
        except CurateError:  # already says what went wrong (a model error, a stage error...)
            raise
        except Exception as e:  # a stage bug or bad data: say which step, keep the cause
            raise StageError(f"step '{step}' ({stage.name}) failed: {type(e).__name__}: {e}") from e
        rejected = with_stage_column(out.rejected, step)
        check_counts(step, len(table), out.kept, rejected, out.added)
        manifest = self._manifest(
            fp, [parent.fingerprint], _stage_info(stage, step, pool), _counts(len(table), out.kept, rejected, out.added),
            time.perf_counter() - start, lineage, out.stats, kept=out.kept, executor=run_on.describe(),
        )
        return store.write_version(out.kept, rejected, manifest), out.kept

    def _compute_blocks(self, store, stage, step, fp, parent, lineage, ctx, pool, run_on, force) -> Version:
        """A row-wise step, or one that decides from a few columns (``Stage.decide``, after
        scoring block by block with ``Stage.score``), block by block (``curate.executors``):
        each block's rows are read, processed (or put past the decision) and written before
        the next, by this process or by Ray tasks; the blocks a killed run finished are kept
        and skipped."""
        start = time.perf_counter()
        specs = {m: pool.spec(m) for m in stage.models_used()}
        portable = all(isinstance(s, BaseModel) for s in specs.values())  # a model object cannot travel
        runner = run_on if portable else LocalExecutor(run_on.block_rows)

        if stage.prepares():  # 0. what the scoring needs from the whole pool (a classifier trained on it)
            try:
                stage = stage.prepare(parent, ctx)
            except CurateError:
                raise
            except Exception as e:
                raise StageError(f"step '{step}' ({stage.name}) failed: {type(e).__name__}: {e}") from e

        def task(source: Version, folder: Path, mode: str = "process") -> BlockTask:
            return BlockTask(stage, step, source, str(folder), str(store.root), specs, pool.cache_root, mode)

        source, scratch = parent, None
        if stage.scores():  # 1. the scores, block by block, into a scratch version beside the step's own
            scratch = store.writer(f"{fp}.scored", fresh=force)
            if (scratch.path / "manifest.json").is_file():
                source = Version(scratch.path, json.loads((scratch.path / "manifest.json").read_text()))
            else:
                blocks = parent.blocks(run_on.block_rows)
                summaries = self._write_blocks(scratch, task(parent, scratch.path, "score"), blocks, runner, ctx, step)
                schema = _schema_of(scratch.path, len(summaries))
                source = scratch.finish({"fingerprint": f"{fp}.scored", "columns": {f.name: str(f.type) for f in schema},
                                         "counts": {"kept": parent.num_rows}}, len(summaries), install=False)
        writer = store.writer(fp, fresh=force)
        blocks = source.blocks(run_on.block_rows)
        parts, decided = None, None
        if stage.decides():  # 2. decide from the columns it needs; 3. stream every block past the decision
            try:
                decided = stage.decide(source, dataclasses.replace(ctx, plan=runner.plan(source, ctx)))
            except CurateError:
                raise
            except Exception as e:
                raise StageError(f"step '{step}' ({stage.name}) failed: {type(e).__name__}: {e}") from e
            starts = np.cumsum([0, *(b.rows for b in blocks)])
            parts = {i: decided.slice(int(starts[i]), b.rows) for i, b in enumerate(blocks)}
        summaries = self._write_blocks(writer, task(source, writer.path), blocks, runner, ctx, step, parts)
        reasons: Counter[str] = Counter()
        for p in summaries:
            reasons.update(p["reasons"])
        counts = {"in": sum(p["rows_in"] for p in summaries), "kept": sum(p["kept"] for p in summaries),
                  "rejected": sum(p["rejected"] for p in summaries), "added": sum(p["added"] for p in summaries),
                  "reasons": reasons}
        merged = (decided.stats or {}) if decided is not None else stage.merge_stats([p["stats"] for p in summaries])
        stats = StageOutput(None, None).with_stats(merged).stats  # counts stay integers, the rest rounded
        schema = _schema_of(writer.path, len(summaries))
        scores = _score_summary_of(writer.path, len(summaries), schema)
        manifest = self._manifest(
            fp, [parent.fingerprint], _stage_info(stage, step, pool), counts, time.perf_counter() - start, lineage,
            stats, schema=schema, scores=scores, executor=runner.describe(),
        )
        version = writer.finish(manifest, len(summaries))
        if scratch is not None:
            shutil.rmtree(scratch.path, ignore_errors=True)
        return version

    @staticmethod
    def _write_blocks(writer, task, blocks, runner, ctx, step, parts=None) -> list[dict[str, Any]]:
        """Every block of ``blocks`` written by ``task`` through ``runner``, those a killed run
        finished skipped; the summaries in block order."""
        done = {i: s for i, s in writer.finished().items()
                if i < len(blocks) and s.get("block") == dataclasses.asdict(blocks[i])}
        if len(done) < len(writer.finished()):  # written with another cut of the input: start over
            writer.clear()
            done = {}
        if done:
            ctx.reporter.log(f"{step}: resuming: {len(done):,} of {len(blocks):,} blocks already written")
        todo = [(i, b) for i, b in enumerate(blocks) if i not in done]
        for index, summary in runner.run_blocks(task, todo, ctx, parts and {i: parts[i] for i, _ in todo}):
            done[index] = summary
        return [done[i] for i in range(len(blocks))]

    def _manifest(self, fp, parents, stage_info, counts, seconds, lineage, stats: dict[str, int | float] | None = None,
                  *, kept=None, schema=None, scores=None, executor: dict | None = None) -> dict[str, Any]:
        """``kept`` (a table), or its ``schema`` and score summary ``scores`` (a version
        written block by block, whose rows are not in memory)."""
        m = {
            "fingerprint": fp,
            "parents": parents,
            "name": self.name,
            "stage": stage_info,
            "recipe": None if self.recipe is None else {"path": self.recipe.path, "sha256": self.recipe.sha256},
            "curate_version": __version__,
            "created": now(),
            "counts": {k: counts[k] for k in ("in", "kept", "rejected", "added")},
            "rejections": dict(counts["reasons"].most_common()),
            "stats": dict(stats or {}),
            "wall_time_s": round(seconds, 3),
            "columns": {f.name: str(f.type) for f in (kept.schema if kept is not None else schema)},
            "scores": score_summary(kept) if kept is not None else scores,
            **({"executor": executor} if executor else {}),
        }
        m["lineage"] = [*lineage, _lineage_entry(m)]
        return m


def _counts(rows_in: int, kept, rejected, added: int) -> dict[str, Any]:
    reasons = Counter(rejected.column("reason").to_pylist()) if len(rejected) else Counter()
    return {"in": rows_in, "kept": len(kept), "rejected": len(rejected), "added": added, "reasons": reasons}


def token_counter(tokenizer: str, pool: ModelPool | None = None) -> TokenCounter:
    """The counter ``Pipeline.tokenizer`` names: ``approx`` (no tokenizer), a ``models:``
    entry of the transformers backend (its folder's tokenizer; a train-tiny model is trained
    first if it is not yet), or a tokenizer folder / cached hub id."""
    if tokenizer == "approx":
        return TokenCounter(None)
    if pool is not None and tokenizer in pool:
        from .models.config import TransformersSpec
        from .models.hf import model_dir

        spec = pool.spec(tokenizer)
        if not isinstance(spec, TransformersSpec):
            raise UsageError(f"tokenizer '{tokenizer}' is a {spec.backend} model; name a transformers entry, a tokenizer "
                             "folder, a cached hub id, or approx")
        return TokenCounter(model_dir(spec, pool.reporter, pool.store, pool.cache_root), label=tokenizer)
    return TokenCounter(tokenizer)


def _stage_info(stage: Stage, step: str, pool: ModelPool) -> dict[str, Any]:
    """What a manifest records of the step that made it."""
    return {"name": stage.name, "step": step, "version": stage.version, "config": stage.config.model_dump(mode="json"),
            **({"models": {m: pool.describe(m) for m in stage.models_used()}} if stage.models_used() else {})}


def _parts(folder: Path, blocks: int) -> list[Path]:
    return [folder / "data" / f"part-{i:05d}.parquet" for i in range(blocks)]


def _schema_of(folder: Path, blocks: int):
    """The schema of the kept rows of a version being written, unified over its blocks."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    return pa.unify_schemas([pq.read_schema(p) for p in _parts(folder, blocks)], promote_options="permissive")


def _score_summary_of(folder: Path, blocks: int, schema) -> dict[str, dict[str, float]]:
    """The score summary of a version being written, from its numeric columns read alone
    (the texts stay on disk)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    numeric = [f.name for f in schema if f.name != "id" and (pa.types.is_integer(f.type) or pa.types.is_floating(f.type))]
    tables = []
    for p in _parts(folder, blocks):
        names = pq.read_schema(p).names
        tables.append(pq.read_table(p, columns=[c for c in numeric if c in names]))
    table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
    return score_summary(table)


def step_names(stages: Sequence[Stage]) -> list[str]:
    """Each stage's step name: its stage name, suffixed ``_2``, ``_3``... when repeated."""
    for s in stages:
        if not isinstance(s, Stage):
            raise UsageError(f"pipeline stages must be curate stages, got {type(s).__name__}")
    return suffixed([s.name for s in stages])


def suffixed(names: Sequence[str]) -> list[str]:
    """``names`` with repeats suffixed ``_2``, ``_3``... (the rule for step names)."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        seen[name] += 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def _lineage_entry(m: dict[str, Any]) -> dict[str, Any]:
    return {"step": m["stage"]["step"], "stage": m["stage"]["name"], "fingerprint": m["fingerprint"], "counts": m["counts"]}


def score_summary(table) -> dict[str, dict[str, float]]:
    """min / mean / quantiles / max of every numeric column (the scores stages add)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    out = {}
    for f in table.schema:
        if f.name == "id" or not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type)):
            continue
        col = table.column(f.name)
        valid = len(col) - col.null_count
        entry: dict[str, float] = {"count": valid, "nulls": col.null_count}
        if valid:
            q = pc.quantile(col, q=[0.05, 0.5, 0.95]).to_pylist()
            entry.update(
                min=pc.min(col).as_py(), p05=q[0], median=q[1], mean=pc.mean(col).as_py(), p95=q[2], max=pc.max(col).as_py()
            )
        out[f.name] = entry
    return out
