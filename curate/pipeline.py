"""Pipelines: an ordered chain of stages over a source, run against the versioned store.

Each step's output is a version whose fingerprint is derived from its input's
fingerprint and its own (name, config, version); a step whose fingerprint is already
in the store is *cached* and costs nothing -- not even loading its data, unless a
later step needs to compute. A run killed half-way resumes after the last version
that was written, and ends at the same final fingerprint.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._version import __version__
from .errors import CurateError, StageError, UsageError
from .stage import Reporter, Stage, StageContext, StageOutput
from .store import Store, Version, check_name, now

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
    steps: list[str] = field(init=False)

    def __post_init__(self) -> None:
        check_name(self.name)
        self.stages = list(self.stages)
        self.steps = step_names(self.stages)
        self.models = dict(self.models or {})
        from .models.config import BUILTIN_MODELS, model_ref_hint, model_roles

        # A model a stage names is one of ours or a built-in one (``minilm``, the packaged embedder).
        missing = [f"step '{step}' uses model '{m}', which is not defined" + model_ref_hint(m, embedder)
                   for step, stage in zip(self.steps, self.stages) for m, embedder in model_roles(stage)
                   if m not in self.models and m not in BUILTIN_MODELS]
        if missing:
            known = ", ".join([*self.models, *(n for n in BUILTIN_MODELS if n not in self.models)])
            raise UsageError("; ".join(missing) + f" (models: {known}); define it under the recipe's models: "
                             "section, or pass models={...} to Pipeline")

    def then(self, *stages: Stage) -> Pipeline:
        """A new pipeline with ``stages`` appended (this one is not modified)."""
        return Pipeline([*self.stages, *stages], self.source, self.name, self.recipe, self.models)

    def run(
        self,
        store: Store | str | Path | None = None,
        *,
        force: bool = False,
        until: str | None = None,
        reporter: Reporter | None = None,
        workers: int | None = None,
        pool: ModelPool | None = None,
    ) -> RunResult:
        """Run every step not already in ``store``. ``workers`` processes share per-row work
        (default: every core; results and fingerprints do not depend on it). ``pool`` is the
        run's models when the caller goes on using them (``Recipe.run`` fine-tunes after the
        chain); by default the run builds its own from ``models`` and closes it."""
        from .models import ModelPool

        store = store if isinstance(store, Store) else Store(store)
        reporter = reporter or Reporter()
        workers = workers or os.cpu_count() or 1
        own = pool is None
        pool = ModelPool(self.models, reporter=reporter, store=store) if own else pool
        try:
            result = self._run(store, force, until, reporter, workers, pool)
        finally:
            if own:
                pool.close()
        return result

    def _run(self, store: Store, force: bool, until: str | None, reporter: Reporter, workers: int,
             pool: ModelPool) -> RunResult:
        def context(step: str) -> StageContext:
            return StageContext(reporter=reporter, store=store, step=step, workers=max(1, workers), models=pool)

        if until is not None and until not in (SOURCE_STEP, *self.steps):
            raise UsageError(f"--until {until}: no such step; steps are {', '.join([SOURCE_STEP, *self.steps])}")
        stats: list[StepStat] = []
        table = None
        lineage: list[dict[str, Any]] = []

        parent = self._run_source(store, force, context, stats, lineage)
        table_fp = None
        if until != SOURCE_STEP:
            for step, stage in zip(self.steps, self.stages):
                fp = stage.fingerprint(parent.fingerprint, store, pool)
                if store.has(fp) and not force:
                    version = store.version(fp)
                    stats.append(StepStat.from_manifest(version.manifest, cached=True))
                    reporter.log(f"{step}: cached ({fp})")
                else:
                    if table is None or table_fp != parent.fingerprint:
                        table = parent.table()
                    version, table = self._compute(store, stage, step, fp, parent, table, lineage, context(step), pool)
                    table_fp = fp
                    stats.append(StepStat.from_manifest(version.manifest, cached=False))
                lineage.append(_lineage_entry(version.manifest))
                store.tag(f"{self.name}/{step}", fp)
                parent = version
                if step == until:
                    break
        if until is None:
            store.tag(self.name, parent.fingerprint)
        return RunResult(self.name, parent, stats, {name: lm.stats for name, lm in pool.used().items()})

    def _run_source(self, store, force, context, stats, lineage) -> Version:
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
        else:
            start = time.perf_counter()
            out = self.source.read(context(SOURCE_STEP))
            rejected = _with_stage_column(out.rejected, SOURCE_STEP)
            check_counts(SOURCE_STEP, out.rows_in, out.kept, rejected, 0)
            manifest = self._manifest(
                fp, [], {"name": f"source:{self.source.type}", "step": SOURCE_STEP, "version": self.source.version,
                         "config": self.source.config.model_dump(mode="json")},
                out.rows_in, out.kept, rejected, 0, time.perf_counter() - start, [],
            )
            version = store.write_version(out.kept, rejected, manifest)
            stats.append(StepStat.from_manifest(manifest, cached=False))
        lineage.append(_lineage_entry(version.manifest))
        store.tag(f"{self.name}/{SOURCE_STEP}", fp)
        return version

    def _compute(self, store, stage, step, fp, parent, table, lineage, ctx, pool):
        start = time.perf_counter()
        try:
            out: StageOutput = stage.process(table, ctx)
        except CurateError:  # already says what went wrong (a model error, a stage error...)
            raise
        except Exception as e:  # a stage bug or bad data: say which step, keep the cause
            raise StageError(f"step '{step}' ({stage.name}) failed: {type(e).__name__}: {e}") from e
        rejected = _with_stage_column(out.rejected, step)
        check_counts(step, len(table), out.kept, rejected, out.added)
        manifest = self._manifest(
            fp, [parent.fingerprint],
            {"name": stage.name, "step": step, "version": stage.version, "config": stage.config.model_dump(mode="json"),
             **({"models": {m: pool.describe(m) for m in stage.models_used()}} if stage.models_used() else {})},
            len(table), out.kept, rejected, out.added, time.perf_counter() - start, lineage, out.stats,
        )
        return store.write_version(out.kept, rejected, manifest), out.kept

    def _manifest(self, fp, parents, stage_info, rows_in, kept, rejected, added, seconds, lineage,
                  stats: dict[str, int | float] | None = None) -> dict[str, Any]:
        reasons = Counter(rejected.column("reason").to_pylist()) if len(rejected) else Counter()
        m = {
            "fingerprint": fp,
            "parents": parents,
            "name": self.name,
            "stage": stage_info,
            "recipe": None if self.recipe is None else {"path": self.recipe.path, "sha256": self.recipe.sha256},
            "curate_version": __version__,
            "created": now(),
            "counts": {"in": rows_in, "kept": len(kept), "rejected": len(rejected), "added": added},
            "rejections": dict(reasons.most_common()),
            "stats": dict(stats or {}),
            "wall_time_s": round(seconds, 3),
            "columns": {f.name: str(f.type) for f in kept.schema},
            "scores": score_summary(kept),
        }
        m["lineage"] = [*lineage, _lineage_entry(m)]
        return m


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


def check_counts(step: str, rows_in: int, kept, rejected, added: int) -> None:
    if rows_in + added != len(kept) + len(rejected):
        raise StageError(
            f"step '{step}' broke the row invariant: rows in {rows_in} + added {added} != "
            f"kept {len(kept)} + rejected {len(rejected)}; rows were lost or duplicated"
        )
    if len(rejected) and "reason" not in rejected.column_names:
        raise StageError(f"step '{step}' rejected rows without a 'reason' column")


def _with_stage_column(rejected, step: str):
    import pyarrow as pa

    if "stage" in rejected.column_names:
        rejected = rejected.drop_columns(["stage"])
    return rejected.append_column("stage", pa.array([step] * len(rejected), type=pa.string()))


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
