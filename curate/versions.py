"""Operations on stored versions: load, list, diff, export (the ``curate datasets`` verbs)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import xxhash

from .algorithms.tokens import TokenCounter, version_tokens
from .errors import UsageError
from .store import Store, Version

As = Literal["datasets", "polars", "arrow"]
ExportFormat = Literal["jsonl", "chat", "parquet", "hf", "shards"]
EXPORT_FORMATS = ("jsonl", "chat", "parquet", "hf", "shards")
SHARD_FORMATS = ("jsonl.gz", "parquet")


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


def export(ref: str, fmt: ExportFormat, out: str | Path, store: Store | str | Path | None = None, card: bool = True,
           shard_mb: float = 256.0, shard_format: str = "jsonl.gz", tokenizer: str | None = None,
           tokenizer_label: str | None = None) -> Path:
    """Write a version for a downstream job: ``jsonl`` (every column, one row per line),
    ``chat`` (only ``messages``, one conversation per line: what TRL, axolotl and
    LLaMA-Factory load as they are), ``parquet`` (one file), ``hf`` (a ``datasets`` folder
    for ``load_from_disk``) or ``shards`` (pretraining shards of text rows: see
    ``export_shards``). With ``card`` (the default) a dataset card carrying the lineage is
    written beside it (``curate.card``)."""
    if fmt not in EXPORT_FORMATS:
        raise UsageError(f"--format {fmt}: use {', '.join(EXPORT_FORMATS)}")
    st = _store(store)
    version = st.resolve(ref)
    out = Path(out)
    if fmt == "shards":
        counter = TokenCounter(tokenizer, tokenizer_label)
        index = export_shards(version, out, shard_mb, shard_format, tokenizer, counter)
        if card:
            from .card import render_card

            (out / "README.md").write_text(render_card(st, version, ref, fmt, f"part-*.{shard_format}", index,
                                                       lineage_tokens(st, version, counter)),
                                           encoding="utf-8")  # beside the shards (index.json is the last they wrote)
        return out
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
        tokens = lineage_tokens(st, version, TokenCounter(tokenizer, tokenizer_label)) if tokenizer else None
        where.write_text(render_card(st, version, ref, fmt, "." if fmt == "hf" else out.name, tokens=tokens),
                         encoding="utf-8")
    return out


def lineage_tokens(store: Store, version: Version, counter: TokenCounter) -> dict[str, Any]:
    """The tokens of every version in ``version``'s lineage still in the store (the card's
    column), counted by ``counter`` (and cached, as a run's counts are)."""
    cache = store.area("cache", "tokens")
    counts = {e["fingerprint"]: version_tokens(store.version(e["fingerprint"]), counter, cache)
              for e in version.manifest.get("lineage", []) if store.has(e["fingerprint"])}
    return {"tokenizer": counter.label, "counts": counts}


def export_shards(version, out: Path, shard_mb: float = 256.0, shard_format: str = "jsonl.gz",
                  tokenizer: str | None = None, counter: TokenCounter | None = None) -> dict[str, Any]:
    """A text version as pretraining shards in the folder ``out``: ``part-NNNNN.jsonl.gz``
    (one JSON object a row, every column) or ``part-NNNNN.parquet``, each closed once its
    rows' text passes ``shard_mb`` MiB (UTF-8, before compression), and ``index.json``: per
    shard its rows, tokens and text bytes, and the totals. Tokens are counted with
    ``tokenizer`` (a Hugging Face tokenizer: a local folder, such as a train-tiny model's, or
    a cached hub name; read offline) or, without one, the tokenizer-free count of
    ``curate.algorithms.textstats``. The version is read a batch at a time (never whole);
    the shards are written in a folder beside ``out`` and renamed into place with the index
    last, so a failed export leaves no partial shard where a training job may find it."""
    import gzip
    import os
    import shutil

    import pyarrow.parquet as pq

    if shard_format not in SHARD_FORMATS:
        raise UsageError(f"--shard-format {shard_format}: use {', '.join(SHARD_FORMATS)}")
    if shard_mb <= 0:
        raise UsageError(f"--shard-mb {shard_mb}: a shard's size must be positive")
    if "text" not in version.column_names:
        raise UsageError(f"--format shards writes pretraining text, but this version has no 'text' column (columns: "
                         f"{', '.join(version.column_names)}); use jsonl, chat or parquet")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / "index.json").is_file())):
        raise UsageError(f"--out {out}: exists and is not an earlier shards export; give a new or empty folder")
    counter = counter or TokenCounter(tokenizer)
    limit = shard_mb * 2**20
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    shards: list[dict[str, Any]] = []
    writer: Any = None

    def close() -> None:
        nonlocal writer
        if writer is not None:
            writer.close()
            writer = None

    for batch in version.scan(version.column_names, 10_000):
        texts = batch.column("text").to_pylist()
        sizes = [len(t.encode("utf-8")) for t in texts]
        tokens = counter.count(texts)
        start = 0
        while start < len(texts):  # cut the batch where the open shard fills up
            if writer is None:
                name = f"part-{len(shards):05d}.{shard_format}"
                shards.append({"file": name, "rows": 0, "tokens": 0, "bytes": 0})
                writer = (gzip.open(tmp / name, "wt", encoding="utf-8", compresslevel=6) if shard_format == "jsonl.gz"
                          else pq.ParquetWriter(tmp / name, batch.schema, compression="zstd"))
            shard, end = shards[-1], start
            while end < len(texts) and (end == start or shard["bytes"] + sum(sizes[start:end]) < limit):
                end += 1
            part = batch.slice(start, end - start)
            if shard_format == "jsonl.gz":
                writer.writelines(json.dumps(row, ensure_ascii=False, default=str) + "\n" for row in part.to_pylist())
            else:
                writer.write_table(part)
            shard["rows"] += end - start
            shard["tokens"] += sum(tokens[start:end])
            shard["bytes"] += sum(sizes[start:end])
            if shard["bytes"] >= limit:
                close()
            start = end
    close()
    index = {"version": version.fingerprint, "format": shard_format, "shard_mb": shard_mb,
             "tokenizer": counter.label,
             "rows": sum(s["rows"] for s in shards), "tokens": sum(s["tokens"] for s in shards),
             "bytes": sum(s["bytes"] for s in shards), "shards": shards}
    (tmp / "index.json").write_text(json.dumps(index, indent=2), encoding="utf-8")
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return index


