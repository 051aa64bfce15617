"""Operations on stored versions: load, list, diff, export (the ``curate datasets`` verbs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import xxhash

from .errors import UsageError
from .store import Store

As = Literal["datasets", "polars", "arrow"]
ExportFormat = Literal["jsonl", "chat", "parquet", "hf"]
EXPORT_FORMATS = ("jsonl", "chat", "parquet", "hf")


def _store(store: Store | str | Path | None) -> Store:
    return store if isinstance(store, Store) else Store(store)


def load(ref: str, as_: As = "datasets", store: Store | str | Path | None = None, rejected: bool = False):
    """A dataset version as a ``datasets.Dataset`` (default), ``polars.DataFrame`` or pyarrow Table.
    ``rejected=True`` returns the rows that step removed, with their reasons."""
    version = _store(store).resolve(ref)
    table = version.rejected() if rejected else version.table()
    if as_ == "arrow":
        return table
    if as_ == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if as_ == "datasets":
        import datasets

        return datasets.Dataset(table)
    raise UsageError(f"as_={as_!r}: use 'datasets', 'polars' or 'arrow'")


def list_datasets(store: Store | str | Path | None = None, include_steps: bool = False) -> list[dict[str, Any]]:
    store = _store(store)
    out = []
    for name in store.names():
        if "/" in name and not include_steps:
            continue
        hist = store.history(name)
        latest = hist[-1]["fingerprint"]
        m = store.version(latest).manifest if store.has(latest) else None
        out.append({
            "name": name,
            "versions": len(hist),
            "latest": latest,
            "rows": m["counts"]["kept"] if m else None,
            "rejected": m["counts"]["rejected"] if m else None,
            "step": m["stage"]["step"] if m else None,
            "created": hist[-1]["created"],
        })
    return out


def diff(ref_a: str, ref_b: str, store: Store | str | Path | None = None, examples: int = 5) -> dict[str, Any]:
    """Rows only in A, only in B (by id), and rows whose content changed in the columns both
    versions have (a stage that adds a score column changes no row; the new column is
    reported under ``columns_added``)."""
    store = _store(store)
    a, b = store.resolve(ref_a), store.resolve(ref_b)
    ta, tb = a.table(), b.table()
    common = [c for c in ta.column_names if c in tb.column_names and c != "id"]
    ha, hb = _row_hashes(ta, common), _row_hashes(tb, common)
    only_a = sorted(set(ha) - set(hb))
    only_b = sorted(set(hb) - set(ha))
    changed = sorted(k for k in set(ha) & set(hb) if ha[k] != hb[k])
    changed_columns, edits = _edits(ta, tb, common, changed, examples)
    return {
        "a": {"ref": ref_a, "fingerprint": a.fingerprint, "rows": len(ha)},
        "b": {"ref": ref_b, "fingerprint": b.fingerprint, "rows": len(hb)},
        "only_in_a": len(only_a),
        "only_in_b": len(only_b),
        "changed": len(changed),
        "same": len(ha) - len(only_a) - len(changed),
        "columns_added": [c for c in tb.column_names if c not in ta.column_names],
        "columns_removed": [c for c in ta.column_names if c not in tb.column_names],
        "changed_columns": changed_columns,
        "examples": {"only_in_a": only_a[:examples], "only_in_b": only_b[:examples], "changed": changed[:examples]},
        "edits": edits,
    }


def _edits(ta, tb, columns: list[str], changed: list[str], examples: int, width: int = 300) -> tuple[dict[str, int], list]:
    """How many changed rows differ in each column, and the first ``examples`` edits as
    ``{id, column, before, after}`` (texts cut to ``width`` characters; for ``messages``,
    the turns that differ)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if not changed:
        return {}, []
    wanted = pa.array(changed)
    rows_a = {r["id"]: r for r in ta.filter(pc.is_in(ta.column("id"), wanted)).to_pylist()}
    rows_b = {r["id"]: r for r in tb.filter(pc.is_in(tb.column("id"), wanted)).to_pylist()}
    counts: dict[str, int] = {}
    edits = []
    for rid in changed:
        for col in columns:
            before, after = rows_a[rid][col], rows_b[rid][col]
            if before == after:
                continue
            counts[col] = counts.get(col, 0) + 1
            if len(edits) < examples:
                if col == "messages" and isinstance(before, list) and isinstance(after, list) and len(before) == len(after):
                    turns = [i for i, (x, y) in enumerate(zip(before, after)) if x != y]
                    before = [before[i]["content"] for i in turns]
                    after = [after[i]["content"] for i in turns]
                    before, after = (before[0], after[0]) if len(turns) == 1 else (before, after)
                edits.append({"id": rid, "column": col, "before": _cut(before, width), "after": _cut(after, width)})
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])), edits


def _cut(value: Any, width: int) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


def _row_hashes(table, columns: list[str]) -> dict[str, bytes]:
    ids = table.column("id").to_pylist()
    rest = table.select(columns).to_pylist()
    return {i: xxhash.xxh3_128_digest(json.dumps(r, sort_keys=True, default=str).encode()) for i, r in zip(ids, rest)}


def export(ref: str, fmt: ExportFormat, out: str | Path, store: Store | str | Path | None = None, card: bool = True) -> Path:
    """Write a version for a downstream job: ``jsonl`` (every column, one row per line),
    ``chat`` (only ``messages``, one conversation per line: what TRL, axolotl and
    LLaMA-Factory load as they are), ``parquet`` (one file) or ``hf`` (a ``datasets`` folder
    for ``load_from_disk``). With ``card`` (the default) a dataset card carrying the lineage is
    written beside it (``curate.card``)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt}: use {', '.join(EXPORT_FORMATS)}")
    st = _store(store)
    version = st.resolve(ref)
    out = Path(out)
    table = version.table()
    if fmt == "chat":
        if "messages" not in table.column_names:
            raise UsageError(f"--format chat writes conversations, but {ref} has text rows (columns: "
                             f"{', '.join(table.column_names)}); use jsonl or parquet")
        table = table.select(["messages"])
    if fmt in ("jsonl", "chat"):
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "w") as f:
            for batch in table.to_batches(max_chunksize=10_000):
                f.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in batch.to_pylist())
    elif fmt == "parquet":
        import pyarrow.parquet as pq

        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, out, compression="zstd")
    else:
        import datasets

        datasets.Dataset(table).save_to_disk(str(out))
    if card:
        from .card import card_path, render_card

        where = card_path(out, fmt)
        where.write_text(render_card(st, version, ref, fmt, "." if fmt == "hf" else out.name), encoding="utf-8")
    return out
