"""The stage contract: a class with a pydantic config and one method from table to
(kept, rejected).

A stage never mutates its input. Scoring stages add columns and reject nothing;
filters and selectors reject rows, each with a short machine-readable ``reason``
(the funnel counts these) and a human ``detail`` naming the value that decided it.
The runner checks ``rows_in + added == kept + rejected`` after every stage.
"""

from __future__ import annotations

import difflib
import logging
import multiprocessing
import numbers
import types
import typing
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import islice
from typing import Annotated, Any, ClassVar, NamedTuple, Protocol, Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_serializer

from .errors import RecipeError, StageError
from .fingerprint import hash_parts
from .store import BLOCK_ROWS, Store

REJECT_COLUMNS = ("reason", "detail")

# Marks a config field that holds file paths: ``Annotated[list[str], RECIPE_PATHS]``. A recipe
# resolves such paths relative to the recipe file, as it does a source's ``path``.
RECIPE_PATHS = "recipe-relative paths"
# Marks a config field that holds data references (``curate.sources.refs``: a dataset name, a
# local file or a source mapping; or a list of ``{data: ..., ...}`` items): a recipe resolves
# the file paths among them relative to the recipe file and leaves dataset names alone.
RECIPE_DATA = "recipe-relative data references"


class StageConfig(BaseModel):
    """Base of every stage config: unknown keys are errors, values are immutable.

    ``renamed`` maps a key an earlier release used to what replaced it, written as a recipe
    would write it (``{"normalize_unicode": "'unicode_nfkc'"}``), so an old recipe gets
    "renamed to 'unicode_nfkc'" instead of a bare "unknown key"."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)
    renamed: ClassVar[dict[str, str]] = {}


# -- variants: a method's own settings in its own config class (``sampling: {method: prop2diff, k_p: 12}``) --
class Variant(StageConfig):
    """One variant of a tagged sub-config, named by ``method``. The tag is always written out,
    defaults or not, so a fingerprint and a config read back see one shape; Python may leave
    it out (``Prop2Diff(k_p=12)``)."""

    method: str

    @model_serializer(mode="wrap")
    def _with_method(self, handler: Any) -> Any:
        out = handler(self)
        return {"method": self.method, **out} if isinstance(out, dict) else out

    def __repr__(self) -> str:
        """As a recipe writes it: ``{method: prop2diff, k_p: 12}`` (its non-default settings)."""
        return "{" + ", ".join(f"{k}: {v}" for k, v in self.model_dump(mode="json", exclude_defaults=True).items()) + "}"


def moved_into(key: str, example: str) -> str:
    """What an old flat key became, for a config's ``renamed``: ``'k_p' under sampling
    (sampling: {method: prop2diff, k_p: 12})`` from ``("k_p", "sampling: {...}")``."""
    return f"'{key}' under {example.split(':')[0]} ({example})"


def one_of(*variants: type[Variant], optional: bool = False) -> Any:
    """The union of ``variants`` told apart by ``method`` (with None when ``optional``). A bare
    string is the variant of that name with its defaults (``sampling: uniform`` is
    ``{method: uniform}``); a mapping without a known method is an error that lists them."""
    names = [v.model_fields["method"].default for v in variants]

    def bare(value: Any) -> Any:
        if isinstance(value, str):
            value = {"method": value}
        if isinstance(value, dict):
            if "method" not in value:
                raise ValueError(f"say which method: {{method: {' | '.join(names)}, ...}}")
            if value["method"] not in names:
                raise ValueError(f"method '{value['method']}' is not one of {', '.join(names)}")
        return value
    members = (*variants, type(None)) if optional else variants
    return Annotated[Union[members], Field(discriminator="method"), BeforeValidator(bare)]  # noqa: UP007



class _Output(NamedTuple):
    kept: pa.Table
    rejected: pa.Table
    added: int = 0  # rows a stage created (augmentation); counted so the invariant still holds


class StageOutput(_Output):
    """``kept, rejected, added = stage(table)``. ``stats`` (not part of the tuple) holds what
    the stage counted beyond kept / rejected -- verify: how many answers are wrong; rectify:
    how many responses it corrected -- stored in the manifest and shown in the run's funnel."""

    stats: dict[str, int | float] | None = None

    def with_stats(self, stats: dict[str, int | float]) -> StageOutput:
        """This output with ``stats``: counts stay integers, other numbers (a mix's achieved
        proportions) are rounded to 4 decimals."""
        out = StageOutput(*self)
        out.stats = {k: int(v) if isinstance(v, numbers.Integral) else round(float(v), 4) for k, v in stats.items()}
        return out


class Rows(Protocol):
    """The input of a stage that decides over the whole pool (``Stage.decide``) without
    holding it: a ``pyarrow.Table`` (``TableRows``) or a stored version (``curate.store.Version``),
    read a few columns and a batch at a time."""

    num_rows: int

    @property
    def column_names(self) -> list[str]: ...

    def column(self, name: str) -> pa.ChunkedArray: ...

    def scan(self, columns: list[str], batch_rows: int) -> Iterator[pa.Table]: ...


class TableRows:
    """A table in memory as ``Rows``."""

    def __init__(self, table: pa.Table):
        self.table = table
        self.num_rows = table.num_rows

    @property
    def column_names(self) -> list[str]:
        return self.table.column_names

    def column(self, name: str) -> pa.ChunkedArray:
        return self.table.column(name)

    def scan(self, columns: list[str], batch_rows: int) -> Iterator[pa.Table]:
        part = self.table.select(columns)
        for start in range(0, self.num_rows, batch_rows):
            yield part.slice(start, batch_rows)


def values_at(rows: Rows, column: str, idx: np.ndarray, batch_rows: int = BLOCK_ROWS) -> list[Any]:
    """``column``'s values at rows ``idx`` (any order, repeats allowed), the column read a batch
    at a time: what a decision needs of a few rows (the ids its duplicates name) without
    holding the column."""
    order = np.argsort(idx, kind="stable")
    want, found, offset = idx[order], [], 0
    for batch in rows.scan([column], batch_rows):
        mine = want[(want >= offset) & (want < offset + len(batch))] - offset
        if len(mine):
            found.extend(batch.column(column).take(pa.array(mine)).to_pylist())
        offset += len(batch)
    out: list[Any] = [None] * len(idx)
    for k, value in zip(order.tolist(), found):
        out[k] = value
    return out


@dataclass
class Decision:
    """What a stage that looks at the whole pool decided for each of its rows, apart from the
    rows themselves (``Stage.decide``): which to keep, each rejected row's reason and detail,
    columns added to every row and columns only rejected rows get. ``apply`` turns a slice of
    it and the matching rows into the stage's output, so the rows can stream past a decision
    made from a few columns."""

    keep: np.ndarray  # bool, one per row
    reason: pa.Array | str
    detail: pa.Array | None = None
    columns: dict[str, pa.Array] = field(default_factory=dict)
    extra: dict[str, pa.Array] = field(default_factory=dict)
    stats: dict[str, int | float] | None = None

    def slice(self, start: int, rows: int) -> Decision:
        def cut(a: Any) -> Any:
            return a if a is None or isinstance(a, str) else a[start : start + rows]
        return Decision(self.keep[start : start + rows], cut(self.reason), cut(self.detail),
                        {k: cut(v) for k, v in self.columns.items()}, {k: cut(v) for k, v in self.extra.items()})

    def apply(self, table: pa.Table) -> StageOutput:
        """The output for ``table``, the rows this decision (or slice of one) is about."""
        if len(table) != len(self.keep):
            raise StageError(f"a decision about {len(self.keep):,} rows applied to {len(table):,}")
        out = split(with_columns(table, self.columns), self.keep.tolist(), self.reason, self.detail, self.extra)
        return out.with_stats(self.stats) if self.stats else out


class Reporter:
    """Progress reporting for long work. The default draws no bars and sends messages to
    the ``curate`` logger at INFO (silent unless a notebook turns logging on); the CLI
    passes one that draws rich progress bars and prints messages. Warnings do not go
    through a reporter: they are ``CurateWarning``s (``curate.errors.warn``)."""

    def track(self, items: Iterable, total: int | None = None, description: str = "") -> Iterator:
        yield from items

    def log(self, message: str) -> None:
        logging.getLogger("curate").info(message)


class Models(Protocol):
    """What stages and the runner need of a run's models: ``curate.models.ModelPool`` (core
    names the interface; the models layer, above it, implements it)."""

    def get(self, name: str) -> Any: ...

    def embedder(self, name: str) -> Any: ...

    def classifier(self, name: str) -> Any: ...

    def identity(self, name: str) -> str: ...

    def describe(self, name: str) -> dict[str, Any]: ...


@dataclass
class StageContext:
    """What the runner hands a stage besides its table.

    ``workers`` is how the work is run, not what it computes, so it is not part of any
    fingerprint; results never depend on it."""

    reporter: Reporter = field(default_factory=Reporter)
    store: Store | None = None  # when the stage runs inside a pipeline
    step: str = ""  # the step's name in its pipeline (a stage can appear twice)
    workers: int = 1
    models: Models | None = None  # the run's named models (``models:`` in a recipe)
    plan: Plan | None = None  # where a decision's per-block work runs (the executor's); None: here

    def planner(self) -> Plan:
        """The plan a ``decide`` runs its per-block work through: the executor's (Ray tasks
        on a cluster), else this process and its workers."""
        return self.plan or LocalPlan(self)

    def model(self, name: str) -> Any:
        """The run's model called ``name`` (a ``curate.models.LM``), loaded on first use."""
        if self.models is None:
            raise StageError(f"this stage needs the model '{name}', but no models were given: "
                             f"pass models={{'{name}': ...}} to the Pipeline (or a recipe's models: section)")
        return self.models.get(name)

    def map_batches(self, fn: Callable[[list], list], items: list, batch_size: int = 1000, description: str = "") -> list:
        """``fn`` over consecutive batches of ``items``, in ``workers`` processes; the flat
        results in input order. ``fn`` must be picklable (a module-level function or a
        ``functools.partial`` of one)."""
        batches = (items[i : i + batch_size] for i in range(0, len(items), batch_size))
        total = -(-len(items) // batch_size)
        results = self.map(fn, batches, total, f"{description} ({len(items):,} rows)")
        return [r for batch in results for r in batch]

    def map(self, fn: Callable[[Any], Any], batches: Iterable, total: int, description: str = "") -> list:
        """``[fn(b) for b in batches]`` in ``workers`` processes, in order (see ``imap``)."""
        return list(self.imap(fn, batches, total, description))

    def imap(self, fn: Callable[[Any], Any], batches: Iterable, total: int, description: str = "") -> Iterator:
        """``fn(b) for b in batches`` in ``workers`` processes, yielded in order. Batches are
        produced lazily and at most two per worker are in flight, so memory holds a few
        batches, not the whole input (nor, if the caller consumes them, all results)."""
        batches = iter(batches)
        if self.workers <= 1 or total <= 1:
            yield from (fn(b) for b in self.reporter.track(batches, total=total, description=description))
            return
        # fork: workers inherit the imported modules, so starting them costs milliseconds.
        call = partial(_recording_warnings, fn)
        with ProcessPoolExecutor(min(self.workers, total), mp_context=multiprocessing.get_context("fork")) as pool:
            pending = deque(pool.submit(call, b) for b in islice(batches, 2 * self.workers))
            for _ in self.reporter.track(range(total), total=total, description=description):
                result, caught = pending.popleft().result()
                reraise(caught)
                pending.extend(pool.submit(call, b) for b in islice(batches, 1))
                yield result


class Plan(Protocol):
    """How a decision over the whole pool (``Stage.decide``) runs its per-block work, so the
    same functions run in this process or as tasks on a cluster: ``map`` a function over the
    input's blocks, ``call`` functions on what the maps returned, ``fetch`` handles. Locally
    a handle is the value; on Ray it is an object reference, so what a map returns stays in
    the cluster's object store until a task needs it, and only what ``call`` and ``fetch``
    return reaches the driver. A decision never depends on the plan, its block size or its
    ``partitions`` (how many ways a shuffle splits its keys)."""

    partitions: int
    driver_pairs: int | None  # candidate pairs a decision may gather in the driver (None: any)

    def spans(self, rows: Rows) -> list[tuple[int, int]]:
        """(offset, rows) of each block of ``rows``, in order."""
        ...

    def map(self, rows: Rows, columns: list[str], fn: Callable[..., tuple], outputs: int = 1,
            args: dict[int, tuple] | None = None, description: str = "") -> list[tuple]:
        """``fn(table, offset, *args[i])`` for each block ``i`` (only those in ``args`` when
        given): ``table`` holds the block's ``columns``, ``offset`` its first row. ``fn``
        returns a tuple of ``outputs`` values; a tuple of handles per block, in block order."""
        ...

    def call(self, fn: Callable[..., Any], args: list[tuple], description: str = "") -> list[Any]:
        """``[fn(*a) for a in args]`` (handles among ``a`` are resolved), fetched, in order."""
        ...

    def submit(self, fn: Callable[..., tuple], args: list[tuple], outputs: int = 1, rows: Rows | None = None,
               columns: list[str] | None = None, reads: list[list[int]] | None = None,
               description: str = "") -> list[tuple]:
        """``fn(*a)`` for each ``a`` in ``args`` (handles among ``a`` resolved), each returning a
        tuple of ``outputs`` values, left where they are (a tuple of handles per task): the
        steps of a shuffle, whose data never reaches the driver. With ``reads`` (block indices
        of ``rows`` per task), ``fn(read, *a)``: ``read(k)`` is block ``k``'s ``columns``, read
        where the task runs (only blocks in its list)."""
        ...

    def fetch(self, handles: list[Any]) -> list[Any]:
        """The values of ``handles``."""
        ...


# Candidate pairs a Ray driver clusters itself (minhash_dedup); above, the plan clusters them.
RAY_DRIVER_PAIRS = 2_000_000


class LocalPlan:
    """A ``Plan`` in this process: blocks of ``block_rows`` through the context's workers.
    ``driver_pairs`` (None: no bound) is how many candidate pairs a decision may gather in
    the driver (``minhash_dedup``); here every handle is in this process anyway, so the
    bound only serves to run the distributed path on one machine."""

    def __init__(self, ctx: StageContext, block_rows: int = BLOCK_ROWS, driver_pairs: int | None = None):
        self.ctx, self.block_rows = ctx, block_rows
        self.partitions = max(1, ctx.workers)
        self.driver_pairs = driver_pairs

    def spans(self, rows: Rows) -> list[tuple[int, int]]:
        n, b = rows.num_rows, self.block_rows
        return [(s, min(b, n - s)) for s in range(0, n, b)]

    def map(self, rows, columns, fn, outputs=1, args=None, description=""):
        """The blocks are read in one pass (``Rows.scan``: a stored version is streamed across
        its row groups, however large they are), each handed to a worker."""
        spans = self.spans(rows)
        chosen = set(args) if args is not None else None
        total = len(spans) if chosen is None else len(chosen)

        def items():
            for i, table in enumerate(rows.scan(columns, self.block_rows)):
                if chosen is None or i in chosen:
                    yield table, spans[i][0], (args or {}).get(i, ())

        return self.ctx.map(partial(_local_block, fn), items(), total, description)

    def call(self, fn, args, description=""):
        return self.ctx.map(partial(_star, fn), args, len(args), description)

    def submit(self, fn, args, outputs=1, rows=None, columns=None, reads=None, description=""):
        spans = self.spans(rows) if reads is not None else []

        def items():
            for t, a in enumerate(args):
                yield (_SpanReader(rows, {k: spans[k] for k in reads[t]}, columns),) + tuple(a) if reads is not None else a

        return [tuple(out) for out in self.ctx.map(partial(_star, fn), items(), len(args), description)]

    def fetch(self, handles):
        return list(handles)


class _SpanReader:
    """``read(k)``: block ``k`` (of ``spans``) of ``rows``, its ``columns`` (a task's reads)."""

    def __init__(self, rows: Rows, spans: dict[int, tuple[int, int]], columns: list[str] | None):
        self.rows, self.spans, self.columns = rows, spans, columns

    def __call__(self, k: int) -> pa.Table:
        start, size = self.spans[k]
        if isinstance(self.rows, TableRows):
            return self.rows.table.select(self.columns or self.rows.column_names).slice(start, size)
        return self.rows.read_rows(start, size, self.columns)


def _local_block(fn: Callable[..., tuple], item: tuple) -> tuple:
    table, offset, extra = item
    return fn(table, offset, *extra)


def _star(fn: Callable[..., Any], args: tuple) -> Any:
    return fn(*args)


def release_memory() -> None:
    """Hand the heap's freed pages back to the OS (glibc's ``malloc_trim``; elsewhere nothing).
    After a stage drops hundreds of MB of arrays, glibc keeps them mapped -- its mmap threshold
    grows with every large block freed, so later arrays come from a heap that never shrinks;
    measured at 1M rows of minhash_dedup: 3.3 GB peak without this call, 2.4 GB with it."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


# Which worker warnings were shown: Python's "default" action shows each (text, category, line) once.
_WORKER_WARNINGS: dict = {}


def reraise(caught: list[warnings.WarningMessage]) -> None:
    """A worker's warnings are the caller's: raised here, where filters and tests see them."""
    for w in caught:
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno, registry=_WORKER_WARNINGS)


def _recording_warnings(fn: Callable[[Any], Any], batch: Any) -> tuple[Any, list[warnings.WarningMessage]]:
    """``fn(batch)`` in a worker process, with the warnings it raised (sent back to the parent)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn(batch)
    return result, [warnings.WarningMessage(str(w.message), w.category, w.filename, w.lineno) for w in caught]


class Stage:
    """Subclass with ``name``, ``Config`` and ``process``; register it in ``curate.stages``."""

    name: ClassVar[str]
    version: ClassVar[str] = "1"  # bump when the same config starts meaning something else
    Config: ClassVar[type[StageConfig]]
    model_refs: ClassVar[tuple[str, ...]] = ()  # config fields that name one of the run's models (`models:`)
    # Each row's fate (and its new columns) depends on that row alone: the runner may process
    # the input block by block, in any number of processes or machines, and get the same rows.
    row_wise: ClassVar[bool] = False

    def __init__(self, config: StageConfig | dict | None = None, /, **overrides: Any):
        if isinstance(config, StageConfig) and not overrides:
            self.config = config
            return
        values = config.model_dump(exclude_defaults=True) if isinstance(config, StageConfig) else dict(config or {})
        values = merge_settings(values, overrides)
        try:
            self.config = self.Config(**values)
        except ValidationError as e:
            raise RecipeError(config_problems(e, self.name, self.Config)) from None

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        stage = self.prepare(TableRows(table), ctx) if self.prepares() else self
        if stage.scores():
            table = stage.score(table, ctx)
        if stage.decides():
            return stage.decide(TableRows(table), ctx).apply(table)
        raise NotImplementedError(f"stage {self.name} does not implement process()")

    def __call__(self, table: pa.Table, ctx: StageContext | None = None) -> StageOutput:
        return self.process(table, ctx or StageContext())

    def decide(self, rows: Rows, ctx: StageContext) -> Decision:
        """A stage that decides over the whole pool from a few columns (dedup's hashes and
        signatures) implements this instead of ``process``: it reads ``rows`` (a table, or a
        stored version read column by column) and says what happens to each row; the
        runner then streams the rows past the decision block by block, so the texts are
        never all in memory. ``process`` is then ``decide`` applied to the table."""
        raise NotImplementedError

    def score(self, table: pa.Table, ctx: StageContext) -> pa.Table:
        """A stage whose scores are row-wise but whose decision needs the whole pool's
        scores (percentiles, buckets) implements this and ``decide``: ``score`` adds its
        columns to a block of rows, ``decide`` reads the scored rows (a few columns) and
        decides. The runner scores block by block (on Ray: a task per block), decides, then
        streams the scored rows past the decision; ``process`` is the three on one table."""
        raise NotImplementedError

    def prepare(self, rows: Rows, ctx: StageContext) -> Stage:
        """A stage whose row-wise scoring needs something learned from the whole pool first
        (quality_classifier's classifier, trained against a sample of the pool) implements
        this: it reads ``rows`` (a table, or the stored input version read column by column)
        and returns the stage ready to ``score``, what it learned inside it, so that it
        travels with the stage to each block's task. The runner calls it once, in the
        driver, before scoring; ``process`` calls it on its table."""
        raise NotImplementedError

    def prepares(self) -> bool:
        """Whether this stage implements ``prepare``."""
        return type(self).prepare is not Stage.prepare

    def scores(self) -> bool:
        """Whether this stage implements ``score`` (its scoring may run block by block)."""
        return type(self).score is not Stage.score

    def decides(self) -> bool:
        """Whether this stage implements ``decide`` (and the runner may stream its rows)."""
        return type(self).decide is not Stage.decide

    def is_row_wise(self) -> bool:
        """Whether this stage, so configured, decides each row from that row alone (``row_wise``;
        a stage whose config can add a pool-wide decision overrides this)."""
        return self.row_wise

    def merge_stats(self, parts: list[dict[str, int | float]]) -> dict[str, int | float]:
        """A row-wise stage's ``stats`` over the whole input from those of its blocks: the
        sum of each counter (a row-wise stage's stats are counts)."""
        total: dict[str, int | float] = {}
        for part in parts:
            for key, value in part.items():
                total[key] = total.get(key, 0) + value
        return total

    def dependencies(self, store: Store | None) -> list[str]:
        """Fingerprints of other dataset versions this stage reads (e.g. ``against:``
        references), resolved now; they are part of the fingerprint, so the stage reruns
        when what it reads changes."""
        return []

    def models_used(self) -> list[str]:
        """The names of the run's models this stage calls (the values of ``model_refs``)."""
        return [v for f in self.model_refs if (v := getattr(self.config, f, None))]

    def fingerprint_config(self) -> dict[str, Any]:
        """The config as it enters the fingerprint: the non-default fields. A stage whose
        config names files overrides this to put their content hashes in place of paths."""
        return self.config.model_dump(mode="json", exclude_defaults=True)

    def fingerprint(self, parent: str, store: Store | None = None, models: Models | None = None) -> str:
        """hash(parent, name, non-default config, version[, versions read][, model identities])."""
        deps = self.dependencies(store)
        used = self.models_used()
        if used and models is None:
            raise StageError(f"stage {self.name} uses the model(s) {', '.join(used)}, but no models were given")
        ids = {n: models.identity(n) for n in used}
        extra = [*([deps] if deps else []), *([{"models": ids}] if ids else [])]
        return hash_parts(parent, self.name, self.fingerprint_config(), self.version, *extra)

    def with_overrides(self, overrides: dict) -> Stage:
        return type(self)(self.config, **overrides)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump(exclude_defaults=True).items())
        return f"{type(self).__name__}({args})"


def merge_settings(base: dict[str, Any], given: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``given`` laid over it, mappings merged key by key: an override of
    ``sampling: {k_p: 40}`` keeps the rest of ``sampling: {method: prop2diff, ...}``. A mapping
    naming another ``method`` (a different variant) replaces the old one whole."""
    out = dict(base)
    for key, value in given.items():
        old = out.get(key)
        if isinstance(old, str) and isinstance(value, dict) and value.get("method", old) == old:
            old = {"method": old}  # a bare variant name (``sampling: uniform``) with settings added
        if isinstance(old, dict) and isinstance(value, dict) and value.get("method", old.get("method")) == old.get("method"):
            out[key] = merge_settings(old, value)
        else:
            out[key] = value
    return out


def check_keep_policy(keep: str, score_column: str | None) -> None:
    """The rule shared by every stage that keeps one row of a group: ``keep: score`` needs a
    ``score_column``, and a ``score_column`` means nothing without it."""
    if keep == "score" and score_column is None:
        raise ValueError("keep: score needs score_column (the numeric column whose highest value is kept)")
    if keep != "score" and score_column is not None:
        raise ValueError(f"score_column is only used with keep: score (keep is '{keep}')")


def config_problems(err: ValidationError, prefix: str, model: type[BaseModel] | None = None) -> list[str]:
    """pydantic errors as one line each, with the dotted path of the field."""
    return [f"{'.'.join(str(p) for p in (prefix, *loc))}: {msg}" for loc, msg in validation_problems(err, model)]


def validation_problems(err: ValidationError, model: type[BaseModel] | None = None) -> list[tuple[tuple, str]]:
    """(location, message) for each pydantic error; unknown keys get the closest valid key."""
    out = []
    for e in err.errors():
        loc = tuple(e["loc"])
        renamed = getattr(model, "renamed", {}) if model is not None and len(loc) == 1 else {}
        if e["type"] == "extra_forbidden" and str(loc[0]) in renamed:
            msg = f"renamed to {renamed[str(loc[0])]}"
        elif e["type"] == "extra_forbidden":
            msg = "unknown key"
            owner = _model_at(model, loc[:-1]) if model is not None else None
            if owner is not None:
                keys = [k for k in owner.model_fields if k != "method" or len(loc) == 1]
                close = difflib.get_close_matches(str(loc[-1]), keys, n=1, cutoff=0.5)
                msg += f"; did you mean '{close[0]}'?" if close else f"; valid keys: {', '.join(keys)}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        elif e["type"] == "value_error":  # our own validators: the message says it all
            msg = e["msg"].removeprefix("Value error, ")
        else:
            msg = f"{e['msg']} (got {e.get('input')!r})"
        out.append((loc, msg))
    return out


def _model_at(model: type[BaseModel], path: tuple) -> type[BaseModel] | None:
    """The config class an error location points into: ``("sampling", "uniform")`` of
    difficulty's config is ``Uniform`` (pydantic puts a variant's tag in the location)."""
    current: Any = model
    for part in path:
        if isinstance(current, list):  # a union of variants: this part is the tag
            current = next((c for c in current if "method" in c.model_fields
                            and c.model_fields["method"].default == part), None)
        elif isinstance(current, type) and str(part) in current.model_fields:
            classes = config_classes(current.model_fields[str(part)].annotation)
            current = classes[0] if len(classes) == 1 else classes or None
        else:
            return None
    return current if isinstance(current, type) else None


def with_columns(table: pa.Table, columns: dict[str, pa.Array | pa.ChunkedArray]) -> pa.Table:
    """``table`` with ``columns`` set: a column of that name is replaced in place (a stage
    that runs twice replaces its own output), any other is appended."""
    for name, values in columns.items():
        if name in table.column_names:
            table = table.set_column(table.column_names.index(name), name, values)
        else:
            table = table.append_column(name, values)
    return table


def split(
    table: pa.Table,
    keep: list[bool] | pa.Array,
    reason: list[str | None] | str,
    detail: list[str | None] | None = None,
    extra: dict[str, list] | None = None,
) -> StageOutput:
    """Split ``table`` by a keep mask; the rejected rows get ``reason``/``detail`` and any
    ``extra`` columns (values for every input row; only the rejected rows' values are kept)."""
    mask = pa.array(keep, type=pa.bool_())
    kept = table.filter(mask)
    drop = pc.invert(mask)
    rejected = table.filter(drop)
    n = len(table)
    reasons = [reason] * n if isinstance(reason, str) else reason
    cols = {"reason": reasons, "detail": detail if detail is not None else [None] * n, **(extra or {})}
    for name, values in cols.items():
        # reason and detail are text even where a block has no value: every part of a version has one schema
        typed = pa.array(values, pa.string()) if name in REJECT_COLUMNS and not isinstance(values, pa.Array) else pa.array(values)
        rejected = rejected.append_column(name, typed.filter(drop))
    return StageOutput(kept, rejected)


def check_counts(step: str, rows_in: int, kept: pa.Table, rejected: pa.Table, added: int) -> None:
    """The runner's invariant after every step: no row lost or duplicated, every reject has a reason."""
    if rows_in + added != len(kept) + len(rejected):
        raise StageError(
            f"step '{step}' broke the row invariant: rows in {rows_in} + added {added} != "
            f"kept {len(kept)} + rejected {len(rejected)}; rows were lost or duplicated"
        )
    if len(rejected) and "reason" not in rejected.column_names:
        raise StageError(f"step '{step}' rejected rows without a 'reason' column")


def with_stage_column(rejected: pa.Table, step: str) -> pa.Table:
    """``rejected`` with the step that removed each row (``stage``), as every version keeps it."""
    if "stage" in rejected.column_names:
        rejected = rejected.drop_columns(["stage"])
    return rejected.append_column("stage", pa.array([step] * len(rejected), type=pa.string()))


def describe_config(config_cls: type[BaseModel], prefix: str = "") -> list[dict[str, str]]:
    """Each config field's name, type, default and doc (for ``curate stages NAME``); a field
    holding variants (``sampling: {method: prop2diff, k_p: 12}``) is followed by each
    variant's own settings, named ``sampling.k_p``, with the method they belong to."""
    rows = []
    for name, f in config_cls.model_fields.items():
        if name == "method" and prefix:
            continue  # a variant's tag: its row is the field's own
        default = "required" if f.is_required() else repr(f.get_default(call_default_factory=True))
        rows.append({"name": prefix + name, "type": type_name(f.annotation), "default": default,
                     "doc": " ".join((f.description or "").split())})
        for variant in config_classes(f.annotation):
            tag = variant.model_fields["method"].default if "method" in variant.model_fields else None
            for row in describe_config(variant, f"{prefix}{name}."):
                rows.append({**row, "type": f"{row['type']} (method: {tag})" if tag else row["type"]})
    return rows


def config_classes(tp: Any) -> list[type[BaseModel]]:
    """The pydantic models inside an annotation (through Optional, unions and Annotated)."""
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [tp]
    return [m for a in typing.get_args(tp) for m in config_classes(a)]


def type_name(tp: Any) -> str:
    if tp is type(None):
        return "None"
    if typing.get_origin(tp) is Annotated:  # a tagged member of a union: its type says it
        return type_name(typing.get_args(tp)[0])
    origin = typing.get_origin(tp)
    if origin is None:
        return getattr(tp, "__name__", str(tp))
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
