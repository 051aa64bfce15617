"""Where a run's row-wise steps do their work: here, block by block (``local``), or as tasks
on a Ray cluster (``ray``). The executor is how a version is made, never what it is: it
enters no fingerprint, a version made on Ray is the version made here (same rows in the
same order, same rejects and reasons, same stats), and a rerun on the other executor is
cached.

A row-wise stage (``Stage.row_wise``: each row's fate depends on that row alone) reads its
input one block at a time (a Parquet row group, at most ``block_rows`` rows), processes it
and writes the block's kept and rejected rows at once (``Store.writer``), so memory holds a
block, not the corpus, and a killed run resumes at the first unfinished block. Locally the
blocks run one after another, each stage spreading its per-row work over the machine's
cores as it always does; on Ray each block is one task (one CPU), on any node of the
cluster, and the tasks write their blocks into the same version folder. A stage that
decides over the whole pool from a few columns (the dedups) runs its per-block maps and
per-partition reduces through the executor's ``Plan``: ``LocalPlan`` here, ``RayPlan`` as
Ray tasks, the decision on the driver from what the reduces return. Other stages
(selection, allocation) get their input as one table in the driver.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .errors import CurateError, StageError, UsageError
from .fingerprint import hash_parts
from .stage import (RAY_DRIVER_PAIRS, Decision, LocalPlan, Plan, Reporter, Stage, StageContext, StageOutput, check_counts, reraise,
                    with_stage_column)
from .store import BLOCK_ROWS, Block, Store, Version, write_block

# What a Ray worker needs of the driver's environment (a cluster's workers start with the
# environment of ``ray start``, not of the run): where the caches are, and offline switches.
ENV_PREFIXES = ("CURATE_", "HF_", "TRANSFORMERS_", "TOKENIZERS_", "SENTENCE_TRANSFORMERS_")


class RayConfig(BaseModel):
    """How to reach the cluster (``executor: {type: ray, ray: {address: auto}}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    address: str | None = None
    """``auto`` (the cluster ``ray start`` runs on this machine), ``ray://host:10001``, or
    ``host:6379``; unset: ``$RAY_ADDRESS``, else a cluster of this machine started for the
    run and stopped after it."""
    num_cpus: int | None = Field(None, ge=1)
    """CPUs of the cluster started for the run (unset: every core); ignored when joining one."""


class ExecutorConfig(BaseModel):
    """A recipe's ``executor:`` (``executor: ray`` is ``{type: ray}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    type: Literal["local", "ray"] = "local"
    """``local``: this process and its workers; ``ray``: tasks on a Ray cluster."""
    block_rows: int = Field(BLOCK_ROWS, ge=1)
    """Rows a row-wise step reads, processes and writes at a time (one Ray task; the unit a
    killed run resumes from). It changes no result."""
    driver_pairs: int | None = Field(None, ge=0)
    """Candidate pairs minhash_dedup may cluster in the driver; above, they are verified and
    clustered by the plan's tasks (docs/scale.md). None: no bound locally, 2,000,000 on Ray.
    It changes no result."""
    ray: RayConfig = RayConfig()


@dataclass(frozen=True)
class BlockTask:
    """Everything one block of a row-wise step needs, picklable (a Ray task carries it)."""

    stage: Stage
    step: str
    parent: Version
    folder: str  # the version being written (``VersionWriter.path``)
    store_root: str
    models: dict[str, Any]  # name -> spec, of the models the stage calls
    cache_root: str | None = None
    mode: str = "process"  # "score": the stage's row-wise scores only (``Stage.score``), nothing rejected

    def run(self, index: int, block: Block, ctx: StageContext, part: Decision | None = None) -> dict[str, Any]:
        """Process ``block`` -- or, for a stage that decided over the whole input, apply
        ``part``, the slice of its decision about these rows -- and write it as block
        ``index``; its summary (counts, reasons, stats)."""
        table = self.parent.read_block(block)
        try:
            if self.mode == "score":
                out = StageOutput(self.stage.score(table, ctx), table.slice(0, 0))
            else:
                out = self.stage.process(table, ctx) if part is None else part.apply(table)
        except CurateError:
            raise
        except Exception as e:  # a stage bug or bad data: say which step and rows, keep the cause
            raise StageError(f"step '{self.step}' ({self.stage.name}) failed on rows {block.offset:,}.."
                             f"{block.offset + block.rows - 1:,} of row group {block.row_group} of {block.shard}: "
                             f"{type(e).__name__}: {e}") from e
        rejected = with_stage_column(out.rejected, self.step)
        check_counts(self.step, len(table), out.kept, rejected, out.added)
        reasons = Counter(rejected.column("reason").to_pylist()) if len(rejected) else Counter()
        summary = {"block": dataclasses.asdict(block), "rows_in": len(table), "kept": len(out.kept),
                   "rejected": len(rejected), "added": out.added, "reasons": dict(reasons), "stats": out.stats or {}}
        return write_block(self.folder, index, out.kept, rejected, summary)


class Executor:
    """Runs the blocks of a row-wise step. ``LocalExecutor`` and ``RayExecutor`` are the two;
    ``executor(config)`` builds one from a recipe's ``executor:`` or a name."""

    name = "local"

    def __init__(self, block_rows: int = BLOCK_ROWS, driver_pairs: int | None = None):
        self.block_rows, self.driver_pairs = block_rows, driver_pairs
        self.model_calls: dict[str, Any] = {}  # calls made in other processes, by model name

    def describe(self) -> dict[str, Any]:
        """What a manifest records of how its version was made (never part of a fingerprint)."""
        return {"type": self.name, "block_rows": self.block_rows}

    def run_blocks(self, task: BlockTask, todo: list[tuple[int, Block]], ctx: StageContext,
                   parts: dict[int, Decision] | None = None) -> Iterator[tuple[int, dict]]:
        """Process each ``(index, block)`` (with ``parts[index]``, its slice of a decision,
        when the stage decided over the whole input); yields ``(index, summary)`` as blocks finish."""
        parts = parts or {}
        for index, block in ctx.reporter.track(todo, total=len(todo), description=f"{task.step}: {len(todo):,} blocks"):
            yield index, task.run(index, block, ctx, parts.get(index))

    def plan(self, rows: Any, ctx: StageContext) -> Plan:
        """Where a ``Stage.decide`` over ``rows`` runs its per-block work (``StageContext.plan``)."""
        return LocalPlan(ctx, self.block_rows, self.driver_pairs)

    def close(self) -> None:
        pass

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class LocalExecutor(Executor):
    """Blocks one after another in this process; each stage uses the run's worker processes."""


class RayExecutor(Executor):
    """Each block is a Ray task of one CPU. Joins the cluster at ``address`` (or
    ``$RAY_ADDRESS``), or one already started in this process (``ray.init``), else starts one
    on this machine for the run and stops it at ``close()``."""

    name = "ray"

    def __init__(self, block_rows: int = BLOCK_ROWS, address: str | None = None, num_cpus: int | None = None,
                 driver_pairs: int | None = None):
        super().__init__(block_rows, driver_pairs)
        self.address, self.num_cpus = address, num_cpus
        self._owned = False
        self._remote: Any = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), **({"address": self.address} if self.address else {})}

    def _start(self) -> Any:
        try:
            import ray
        except ImportError:
            raise UsageError("the ray executor needs Ray: pip install 'curate[ray]'") from None
        if not ray.is_initialized():
            env = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}
            address = self.address or os.environ.get("RAY_ADDRESS")
            options: dict[str, Any] = {"runtime_env": {"env_vars": env}, "log_to_driver": False, "configure_logging": False}
            if address:
                _check_reachable(address)
            try:
                if address:
                    ray.init(address=address, **options)
                else:
                    # "local": a cluster of its own, never one another process started on this machine
                    # (ray.init() with no address would join the last `ray start` cluster)
                    ray.init(address="local", num_cpus=self.num_cpus, include_dashboard=False, **options)
                    self._owned = True
            except (ConnectionError, RuntimeError, ValueError) as e:
                where = f"the Ray cluster at {address}" if address else "a local Ray cluster"
                hint = ("; a cluster with token authentication (Ray's default) needs RAY_AUTH_MODE=token here, and its "
                        "token in ~/.ray/auth_token or RAY_AUTH_TOKEN" if address and address != "auto"
                        and os.environ.get("RAY_AUTH_MODE") is None else "")
                raise UsageError(f"cannot reach {where}: {e}{hint}") from None
        if self._remote is None:
            self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_block)
        return ray

    def run_blocks(self, task: BlockTask, todo: list[tuple[int, Block]], ctx: StageContext,
                   parts: dict[int, Decision] | None = None) -> Iterator[tuple[int, dict]]:
        ray = self._start()
        parts = parts or {}
        shared = ray.put(task)  # sent to the object store once, not with every block
        pending = {self._remote.remote(shared, index, block, parts.get(index)): (index, block) for index, block in todo}
        description = f"{task.step} on ray: {len(todo):,} blocks"
        for _ in ctx.reporter.track(range(len(todo)), total=len(todo), description=description):
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, block = pending.pop(ready[0])
            result = ray.get(ready[0])
            reraise(result["warnings"])
            for name, stats in result["calls"].items():
                add_stats(self.model_calls, name, stats)
            if "error" in result:
                for ref in pending:
                    ray.cancel(ref)
                raise StageError(result["error"])
            yield index, result["summary"]

    def plan(self, rows: Any, ctx: StageContext) -> Plan:
        if not isinstance(rows, Version):  # a table in the driver's memory: nothing to spread
            return LocalPlan(ctx, self.block_rows, self.driver_pairs)
        return RayPlan(self._start(), ctx, self.block_rows,
                       RAY_DRIVER_PAIRS if self.driver_pairs is None else self.driver_pairs)

    def close(self) -> None:
        if self._owned:
            import ray

            ray.shutdown()
            self._owned = False


class RayPlan:
    """A ``Plan`` on the cluster: each block's map is a Ray task reading that block's columns
    from the store (any node), its outputs left in the object store; each ``call`` is a task
    whose object-reference arguments Ray resolves where it runs; only what ``call`` and
    ``fetch`` return comes to the driver."""

    def __init__(self, ray: Any, ctx: StageContext, block_rows: int, driver_pairs: int | None = RAY_DRIVER_PAIRS):
        self.ray, self.ctx, self.block_rows, self.driver_pairs = ray, ctx, block_rows, driver_pairs
        self.partitions = max(2, int(ray.cluster_resources().get("CPU", 1)))
        self._map = ray.remote(num_cpus=1, max_retries=0)(_ray_map)
        self._call = ray.remote(num_cpus=1, max_retries=0)(_ray_call)
        self._submit = ray.remote(num_cpus=1, max_retries=0)(_ray_submit)

    def spans(self, rows: Version) -> list[tuple[int, int]]:
        return [(offset, size) for offset, size, _ in version_blocks(rows, self.block_rows)]

    def map(self, rows, columns, fn, outputs=1, args=None, description=""):
        blocks = version_blocks(rows, self.block_rows)
        chosen = sorted(args) if args is not None else range(len(blocks))
        version, fn_ref = self.ray.put(rows), self.ray.put(fn)
        refs = []
        for i in chosen:
            offset, _, block = blocks[i]
            out = self._map.options(num_returns=outputs).remote(version, block, columns, fn_ref, offset, outputs,
                                                                  *(args or {}).get(i, ()))
            refs.append(tuple(out) if outputs > 1 else (out,))
        self._wait([r[0] for r in refs], description)
        return refs

    def call(self, fn, args, description=""):
        fn_ref = self.ray.put(fn)
        refs = [self._call.remote(fn_ref, *a) for a in args]
        self._wait(refs, description)
        return self.fetch(refs)

    def submit(self, fn, args, outputs=1, rows=None, columns=None, reads=None, description=""):
        fn_ref = self.ray.put(fn)
        version = self.ray.put(rows) if reads is not None else None
        blocks = version_blocks(rows, self.block_rows) if reads is not None else []
        refs = []
        for t, a in enumerate(args):
            chosen = {k: blocks[k][2] for k in reads[t]} if reads is not None else None
            out = self._submit.options(num_returns=outputs).remote(fn_ref, outputs, version, chosen, columns, *a)
            refs.append(tuple(out) if outputs > 1 else (out,))
        self._wait([r[0] for r in refs], description)
        return refs

    def fetch(self, handles):
        errors = self.ray.exceptions
        try:
            return self.ray.get(list(handles))
        except errors.RayTaskError as e:
            cause = e.cause if isinstance(getattr(e, "cause", None), BaseException) else e
            if isinstance(cause, CurateError):
                raise cause from None
            raise StageError(f"step '{self.ctx.step}': {type(cause).__name__}: {cause}") from None
        except errors.RayError as e:  # a worker out of memory or gone, an object lost with its node
            hint = ("; a smaller executor.block_rows (or the stage's batch_size) needs less memory per task"
                    if isinstance(e, getattr(errors, "OutOfMemoryError", ())) else "")
            raise StageError(f"step '{self.ctx.step}': the Ray cluster failed a task: {type(e).__name__}: "
                             f"{str(e).splitlines()[0] if str(e) else ''}{hint}") from None

    def _wait(self, refs: list[Any], description: str) -> None:
        """Until every task of ``refs`` finished (progress as they do); a failed task's error
        is raised where its output is fetched, or by the call that was given it."""
        pending = list(refs)
        for _ in self.ctx.reporter.track(range(len(refs)), total=len(refs), description=f"{description} on ray"):
            _, pending = self.ray.wait(pending, num_returns=1, fetch_local=False)


def version_blocks(version: Version, block_rows: int) -> list[tuple[int, int, Block]]:
    """(offset, rows, block) of each of a stored version's blocks (``Version.blocks``)."""
    blocks = version.blocks(block_rows)
    return [(start, b.rows, b) for start, b in zip(accumulate((b.rows for b in blocks), initial=0), blocks)]


def _ray_map(version: Version, block: Block, columns: list[str], fn: Any, offset: int, outputs: int, *args: Any) -> Any:
    """One block of a plan's map in a Ray worker: the block's columns, read here, through
    ``fn``; its outputs (one object each)."""
    out = fn(version.read_block(block, columns), offset, *args)
    return out[0] if outputs == 1 else out


def _ray_call(fn: Any, *args: Any) -> Any:
    return fn(*args)


def _ray_submit(fn: Any, outputs: int, version: Version | None, blocks: dict[int, Block] | None,
                columns: list[str] | None, *args: Any) -> Any:
    """One task of ``RayPlan.submit``: with ``blocks``, ``fn`` is handed a reader of them."""
    out = fn(*args) if blocks is None else fn(lambda k: version.read_block(blocks[k], columns), *args)
    return out[0] if outputs == 1 else out


def _check_reachable(address: str, seconds: float = 5.0) -> None:
    """Fail at once, naming the address, when nothing listens at ``host:port`` (Ray itself
    retries a wrong address for minutes)."""
    if address in ("auto", "local"):
        return
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        raise UsageError(f"Ray address {address!r}: write host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=seconds).close()
    except OSError as e:
        raise UsageError(f"cannot reach the Ray cluster at {address}: nothing answers there ({e.strerror or e}); "
                         "start one with `ray start --head`, or check RAY_ADDRESS / executor.ray.address") from None


def executor(config: ExecutorConfig | Executor | str | None) -> Executor:
    """The executor a run asked for: an ``Executor``, a recipe's ``executor:`` config, or a name."""
    if isinstance(config, Executor):
        return config
    if config is None or isinstance(config, str):
        if config not in (None, "local", "ray"):
            raise UsageError(f"unknown executor {config!r}; executors are local, ray")
        config = ExecutorConfig(type=config or "local")
    if config.type == "ray":
        return RayExecutor(config.block_rows, config.ray.address, config.ray.num_cpus, config.driver_pairs)
    return LocalExecutor(config.block_rows, config.driver_pairs)


def add_stats(into: dict[str, Any], name: str, stats: Any) -> None:
    """Add a model's call counters (``CallStats``, ``EmbedStats``) into ``into[name]``."""
    if name not in into:
        into[name] = dataclasses.replace(stats)
        return
    for f in dataclasses.fields(stats):
        setattr(into[name], f.name, getattr(into[name], f.name) + getattr(stats, f.name))


# -- in a Ray worker ---------------------------------------------------------------------
_WORKER_POOL: tuple[str, Any] | None = None  # (specs key, ModelPool): kept across the tasks of a step


def _worker_pool(task: BlockTask) -> Any:
    """This worker's pool of the task's models, reused by the next task naming the same ones
    (a model loads once per worker, not once per block)."""
    global _WORKER_POOL
    from .models import ModelPool

    key = hash_parts({n: s.model_dump(mode="json") for n, s in sorted(task.models.items())}, task.cache_root)
    if _WORKER_POOL is None or _WORKER_POOL[0] != key:
        if _WORKER_POOL is not None:
            _WORKER_POOL[1].close()
        _WORKER_POOL = (key, ModelPool(task.models, store=Store(task.store_root), cache_root=task.cache_root))
    return _WORKER_POOL[1]


def _ray_block(task: BlockTask, index: int, block: Block, part: Decision | None = None) -> dict[str, Any]:
    """One block in a Ray worker: its summary, the warnings it raised and the model calls it made."""
    pool = _worker_pool(task) if task.models else None
    for model in (pool.used().values() if pool else ()):
        model.stats = type(model.stats)()  # count this task's calls alone
    ctx = StageContext(reporter=Reporter(), store=Store(task.store_root), step=task.step, workers=1, models=pool)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out["summary"] = task.run(index, block, ctx, part)
        except Exception as e:  # sent back as text: the driver raises it with the step's name
            out["error"] = str(e) if isinstance(e, CurateError) else f"step '{task.step}': {type(e).__name__}: {e}"
    out["seconds"] = time.perf_counter() - start
    out["warnings"] = [warnings.WarningMessage(str(w.message), w.category, w.filename, w.lineno) for w in caught]
    out["calls"] = {name: model.stats for name, model in (pool.used().items() if pool else ())}
    return out
