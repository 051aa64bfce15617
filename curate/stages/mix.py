"""Combine several sources into one with target proportions: a weighted mixture.

A fine-tuning set is usually a "cocktail" of sources: Brief et al., "Mixing It Up: The
Cocktail Effect of Multi-Task Fine-Tuning on LLM Performance" (arXiv:2410.01109) mix
related tasks plus general instruction and math data; Dong et al., "How Abilities in Large
Language Models are Affected by Supervised Fine-tuning Data Composition" (arXiv:2310.05492)
vary the amount and ratio of each source. The proportions are a choice the paper (or the
user) makes; this stage makes them exact, seeded and reported.

``components`` lists the sources, each a data reference (``curate.sources.refs``: a
dataset in the store, a local file, a source mapping) or ``input``, the rows flowing into
the step, with a ``weight``; weights are normalised to shares p_i. Sizes s_i are counted in
``unit``: rows, or tokens (a ``token_column``, else ``approx_tokens`` of the row's text).

Sampling rule. The mix holds ``total`` units (default: the largest mix that repeats
nothing, min_i s_i / p_i); component i gets the quota q_i = p_i * total (in rows, rounded by
largest remainder so the quotas sum to ``total`` exactly).

* q_i < s_i -- down-sampling: a seeded sample without replacement. By tokens, rows are
  taken in a seeded random order until the quota is reached, so the last row overshoots it
  by less than one row's tokens.
* q_i > s_i -- up-sampling: floor(q_i / s_i) whole passes, then the remainder as above;
  with ``upsample: false`` the component gives what it has and its achieved share is lower
  (logged as a warning; the ``share:`` stats say by how much).

Output: each component's chosen rows in component order, rows in their original order
within a pass; ``mix_component`` names the component, ``mix_copy`` is 0 for a row's first
use and N for its N-th repeat (id suffixed ``#copyN``). A row whose id an earlier component
already used gets the prefix ``<component>/``. Input rows not chosen are rejected
(``not_selected``); rows from other components and repeats are counted as ``added``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from ..algorithms.textstats import approx_tokens
from ..errors import StageError, warn
from ..records import shape_of, texts
from ..sources.refs import DataRef, names_a_file, resolve_data
from ..stage import RECIPE_DATA, Stage, StageConfig, StageContext, StageOutput, split
from ..store import Store

INPUT = "input"


def default_name(data: str | dict) -> str:
    """``input``, a file's name, a source mapping's type, or the dataset reference."""
    if isinstance(data, dict):
        return str(data.get("type"))
    return Path(data).name if names_a_file(data) else data


class MixComponent(StageConfig):
    data: str | dict[str, Any]
    """A dataset reference, a local file, a source mapping {type: ...}, or 'input' (the rows flowing into this step)."""
    weight: float = Field(gt=0)
    """Target share of the mix (weights are normalised to sum to 1)."""
    name: str | None = None
    """Label in the mix_component column and the stats; default: 'input', the file name, the source type or the dataset name."""

    @property
    def label(self) -> str:
        return self.name or default_name(self.data)

    @property
    def is_input(self) -> bool:
        return self.data == INPUT


class MixConfig(StageConfig):
    components: Annotated[list[MixComponent], RECIPE_DATA] = Field(min_length=1)
    """The sources to mix, each {data: ..., weight: ..., name: ...}; at most one may be 'input'."""
    unit: Literal["rows", "tokens"] = "rows"
    """What proportions and total count: rows, or tokens (token_column, else approximate word/punctuation pieces)."""
    token_column: str | None = None
    """Integer column holding each row's token count (unit: tokens); None = approx_tokens of the row's text."""
    total: int | None = Field(None, ge=1)
    """Size of the mix in `unit`; None = the largest mix that needs no upsampling."""
    upsample: bool = True
    """Repeat a component smaller than its quota (whole passes, then a seeded sample); false = it gives all it has."""
    seed: int = 0
    """Seed of the sampling."""

    @field_validator("components")
    @classmethod
    def _distinct(cls, components: list[MixComponent]) -> list[MixComponent]:
        inputs = [i for i, c in enumerate(components) if c.is_input]
        if len(inputs) > 1:
            raise ValueError(f"components {', '.join(map(str, inputs))} are all 'input'; the input can be one component only")
        seen: dict[str, int] = {}
        for i, c in enumerate(components):
            if c.label in seen:
                raise ValueError(f"components {seen[c.label]} and {i} are both named '{c.label}'; give them distinct `name`s")
            seen[c.label] = i
        return components

    @model_validator(mode="after")
    def _token_column_needs_tokens(self) -> MixConfig:
        if self.token_column is not None and self.unit != "tokens":
            raise ValueError(f"token_column is only used with unit: tokens (unit is '{self.unit}')")
        return self


class Mix(Stage):
    name = "mix"
    version = "1"
    Config = MixConfig
    config: MixConfig

    def _ref(self, i: int, store: Store | None) -> DataRef:
        return resolve_data(self.config.components[i].data, store, f"{self.name}.components[{i}].data")

    def dependencies(self, store: Store | None) -> list[str]:
        return [self._ref(i, store).fingerprint for i, c in enumerate(self.config.components) if not c.is_input]

    def fingerprint_config(self) -> dict[str, Any]:
        """Paths leave the fingerprint (``dependencies`` carries the content); names stay,
        since they are values of the ``mix_component`` column."""
        cfg = super().fingerprint_config()
        cfg["components"] = [{**({"data": INPUT} if c.is_input else {}), "weight": c.weight, "name": c.label}
                             for c in self.config.components]
        return cfg

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        names = [m.label for m in c.components]
        tables = [table if m.is_input else self._load(i, ctx) for i, m in enumerate(c.components)]
        tables = [t.drop_columns([k for k in ("mix_component", "mix_copy") if k in t.column_names]) for t in tables]
        _check_compatible(names, tables)
        sizes = [self._sizes(name, t) for name, t in zip(names, tables)]
        have = np.array([s.sum() for s in sizes], dtype=np.float64)
        for name, h in zip(names, have):
            if h == 0:
                raise StageError(f"mix: component '{name}' has no {c.unit} to sample")
        weights = np.array([m.weight for m in c.components])
        shares = weights / weights.sum()
        quotas = self._quotas(shares, have)

        parts, ids, comp_col, copy_col = [], [], [], []
        used = np.zeros(len(table), dtype=bool)
        got_rows, got_units, earlier = [], [], set()
        for i, (name, t, s, q) in enumerate(zip(names, tables, sizes, quotas)):
            picks = choose(s, q, np.random.default_rng([c.seed, i]), c.upsample)
            start = len(ids)
            base = t.column("id").to_pylist()
            base = [f"{name}/{x}" if x in earlier else x for x in base]
            for idx, copy in picks:
                parts.append(t.take(pa.array(idx, pa.int64())))
                ids.extend(base[k] if copy == 0 else f"{base[k]}#copy{copy}" for k in idx)
                comp_col.extend([name] * len(idx))
                copy_col.extend([copy] * len(idx))
                if c.components[i].is_input and copy == 0:
                    used[idx] = True
            earlier.update(ids[start:])
            got_rows.append(len(ids) - start)
            got_units.append(float(sum(s[p].sum() for p, _ in picks)))
            if got_units[-1] < q and not c.upsample:
                warn(f"mix: component '{name}' has {have[i]:,.0f} {c.unit}, short of its quota "
                     f"{q:,.0f} (upsample: false); its share falls below the target {shares[i]:.3f}")

        try:
            kept = pa.concat_tables(parts, promote_options="default")
        except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
            raise StageError(f"mix: the components' columns do not combine: {e}") from None
        kept = kept.set_column(kept.column_names.index("id"), "id", pa.array(ids, pa.string()))
        kept = kept.append_column("mix_component", pa.array(comp_col, pa.string()))
        kept = kept.append_column("mix_copy", pa.array(copy_col, pa.int64()))

        rejected = split(table, used.tolist(), "not_selected", self._details(names, tables, sizes, shares, used)).rejected
        achieved = np.array(got_units) / max(sum(got_units), 1e-12)
        stats: dict[str, int | float] = {}
        for i, name in enumerate(names):
            stats[f"rows:{name}"] = got_rows[i]
            if c.unit == "tokens":
                stats[f"tokens:{name}"] = int(got_units[i])
            stats[f"share:{name}"] = float(achieved[i])
            stats[f"target:{name}"] = float(shares[i])
        parts_log = ", ".join(f"{n} {a:.3f} (target {p:.3f})" for n, a, p in zip(names, achieved, shares))
        ctx.reporter.log(f"mix: {sum(got_units):,.0f} {c.unit} in {len(kept):,} rows; {parts_log}")
        return StageOutput(kept, rejected, len(kept) - int(used.sum())).with_stats(stats)

    def _load(self, i: int, ctx: StageContext) -> pa.Table:
        data = self.config.components[i].data
        if ctx.store is None and isinstance(data, str) and not names_a_file(data):
            raise StageError(f"mix.components[{i}].data: '{data}' is a dataset reference and needs a store "
                             "(run it inside a pipeline)")
        return self._ref(i, ctx.store).load()

    def _sizes(self, name: str, t: pa.Table) -> np.ndarray:
        """Each row's size in the unit: 1, its token_column value, or approx_tokens of its text."""
        if self.config.unit == "rows":
            return np.ones(len(t), dtype=np.int64)
        col = self.config.token_column
        if col is None:
            field = "conversation" if shape_of(t) == "sft" else "text"
            return np.array([approx_tokens(x) for x in texts(t, field)], dtype=np.int64)
        if col not in t.column_names:
            raise StageError(f"mix: component '{name}' has no token_column '{col}'; columns are {t.column_names}")
        values = t.column(col)
        if not pa.types.is_integer(values.type) or values.null_count:
            raise StageError(f"mix: token_column '{col}' of component '{name}' must hold integers without nulls "
                             f"(it holds {values.type}, {values.null_count} nulls)")
        return values.to_numpy().astype(np.int64)

    def _quotas(self, shares: np.ndarray, have: np.ndarray) -> np.ndarray:
        """q_i = p_i * total; in rows, whole numbers that sum to total (largest remainder).
        Without ``total`` the mix is as large as the scarcest component allows."""
        total = self.config.total
        if total is None:
            total = float(np.min(have / shares))
            if self.config.unit == "rows":
                total = int(np.floor(total + 1e-9))
        raw = shares * total
        if self.config.unit == "tokens":
            return np.minimum(raw, have) if self.config.total is None else raw
        q = np.floor(raw).astype(np.int64)
        q[np.argsort(-(raw - q), kind="stable")[: int(total - q.sum())]] += 1
        return np.minimum(q, have.astype(np.int64)) if self.config.total is None else q

    def _details(self, names, tables, sizes, shares, used) -> list[str | None]:
        where = [i for i, m in enumerate(self.config.components) if m.is_input]
        if not where:
            return ["mix: the step's input is not a component of the mix"] * len(used)
        i = where[0]
        units = ""
        if self.config.unit == "tokens":
            units = f"{int(sizes[i][used].sum()):,} of {int(sizes[i].sum()):,} tokens; "
        detail = (f"mix: component '{names[i]}' down-sampled to {int(used.sum()):,} of {len(tables[i]):,} rows "
                  f"({units}share {shares[i]:.2f})")
        return [None if u else detail for u in used]


def choose(sizes: np.ndarray, quota: float, rng: np.random.Generator, upsample: bool) -> list[tuple[np.ndarray, int]]:
    """(row indices, copy number) for each pass over a component whose rows weigh ``sizes``:
    whole passes while the quota holds one, then rows in a seeded random order until the
    rest of the quota is reached (a seeded sample without replacement when sizes are 1)."""
    n, have = len(sizes), int(sizes.sum())
    whole = int(quota // have)
    if whole and not upsample:
        return [(np.arange(n), 0)]
    picks = [(np.arange(n), copy) for copy in range(whole)]
    rest = quota - whole * have
    if rest > 1e-9:
        order = rng.permutation(n)
        k = min(n, int(np.searchsorted(np.cumsum(sizes[order]), rest - 1e-9)) + 1)
        picks.append((np.sort(order[:k]), whole))
    return picks


def _check_compatible(names: list[str], tables: list[pa.Table]) -> None:
    """One row shape, and one type per column (a column missing or all-null in a component is fine)."""
    shapes = [shape_of(t) if ("messages" in t.column_names or "text" in t.column_names) else None for t in tables]
    for name, t, shape in zip(names, tables, shapes):
        if shape is None:
            raise StageError(f"mix: component '{name}' has neither 'messages' nor 'text'; columns are {t.column_names}")
        if shape != shapes[0]:
            what = {"sft": "messages (SFT)", "text": "text (pretraining)"}
            raise StageError(f"mix: component '{name}' holds {what[shape]} rows but '{names[0]}' holds "
                             f"{what[shapes[0]]} rows; mix rows of one shape (column '{'messages' if shape == 'sft' else 'text'}')")
    first: dict[str, tuple[str, pa.DataType]] = {}
    for name, t in zip(names, tables):
        for f in t.schema:
            if pa.types.is_null(f.type):
                continue
            seen = first.setdefault(f.name, (name, f.type))
            if seen[1] != f.type:
                raise StageError(f"mix: column '{f.name}' is {f.type} in component '{name}' but {seen[1]} in "
                                 f"'{seen[0]}'; cast or drop it in one of them before mixing")
