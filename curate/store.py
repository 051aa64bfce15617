"""The versioned dataset store.

Layout under the store root (``--store``, else ``$CURATE_STORE``, else ``./.curate``)::

    versions/<fingerprint>/manifest.json      written last: a version exists iff this exists
    versions/<fingerprint>/data/part-NNNNN.parquet
    versions/<fingerprint>/rejected/part-NNNNN.parquet   every row the step removed, with its
                                              reason (one part per block of a streamed step;
                                              stores of earlier releases: rejected.parquet)
    names/<name>.json                         history of fingerprints a name pointed at
    tmp/                                      versions being written (renamed into place)
    tmp/work/<fingerprint>/                   a version being written block by block: the same
                                              layout, plus parts/NNNNN.json per finished block;
                                              kept across a killed run, so the step resumes
    cache/<kind>/, models/, reports/          areas the store hands out (``Store.area``): derived
                                              data a stage caches, trained models, run reports

A version is written in ``tmp/`` and renamed into ``versions/`` in one atomic step, so a
killed run never leaves a half version; stale temp directories are swept on the next
write. Plain Parquet on purpose: polars, datasets, duckdb, Spark and Ray read every
version with no reader of ours.

References: ``NAME`` / ``NAME@latest`` (latest), ``NAME@N`` (the N-th version that name
pointed at, from 1), ``NAME@<fingerprint prefix>`` (>= 6 hex chars) and a bare
fingerprint (prefix). Intermediate steps of a recipe are names too: ``NAME/STEP``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from .errors import StoreError, UsageError

SHARD_ROWS = 100_000
# Rows per Parquet row group: the unit a row-wise step reads, processes and writes at a time
# (and, on Ray, one task), so memory holds a block, not a version.
BLOCK_ROWS = 10_000
# The folders beside versions/ the store hands out (``Store.area``); nothing else writes under the root.
AREAS = ("cache", "models", "reports", "exports")
MIN_PREFIX = 6
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def default_root(root: str | os.PathLike | None = None) -> Path:
    """The store's folder: ``root``, else ``$CURATE_STORE``, else ``.curate``. A ``file://`` URI
    names a local folder; any other scheme is refused with what to do instead (the store
    renames folders into place, which object stores cannot do atomically: a cluster shares
    it on a filesystem every node mounts)."""
    root = str(root or os.environ.get("CURATE_STORE") or ".curate")
    scheme, sep, _ = root.partition("://")
    if sep and scheme.isalnum() and len(scheme) > 1:
        from urllib.parse import unquote, urlparse

        if scheme.lower() != "file":
            raise UsageError(f"store {root}: a store lives on a filesystem (a local disk, or NFS / Lustre / a FUSE mount "
                             f"of the bucket, such as gcsfuse or mountpoint-s3, that every node sees), not behind "
                             f"{scheme}://; sources may be {scheme}:// URIs")
        url = urlparse(root)
        if url.netloc not in ("", "localhost") or not url.path.startswith("/"):
            raise UsageError(f"store {root}: a file:// URI names an absolute local path (file:///data/curate)")
        return Path(unquote(url.path))
    return Path(root)


def check_name(name: str) -> str:
    if not _NAME_RE.match(name):
        raise UsageError(f"invalid dataset name {name!r}: use letters, digits, '_', '-', '.' (and '/' between parts)")
    return name


@dataclass(frozen=True)
class Version:
    """One immutable dataset version: its manifest and where its files live."""

    path: Path
    manifest: dict[str, Any]

    @property
    def fingerprint(self) -> str:
        return self.manifest["fingerprint"]

    @property
    def num_rows(self) -> int:
        return self.manifest["counts"]["kept"]

    def shards(self) -> list[Path]:
        return [self.path / s for s in self.manifest["shards"]]

    def table(self, columns: list[str] | None = None):
        """The kept rows as a pyarrow Table (only ``columns``, when given)."""
        return _concat([_read(p, columns) for p in self.shards()])

    def rejected(self):
        """The rejected rows (with ``reason``, ``detail``, ``stage``) as a pyarrow Table."""
        parts = self.manifest.get("rejected_shards")
        return _concat([_read(self.path / p) for p in parts or ["rejected.parquet"]])

    @property
    def column_names(self) -> list[str]:
        return list(self.manifest["columns"])

    def column(self, name: str):
        """One column of the kept rows, read alone."""
        return self.table(columns=[name]).column(name)

    def scan(self, columns: list[str], batch_rows: int) -> Iterator[Any]:
        """The kept rows' ``columns`` as consecutive tables of exactly ``batch_rows`` rows
        (the last may be shorter), across shard and row-group boundaries: what a stage
        deciding over the whole version reads, one batch in memory at a time
        (``curate.stage.Rows``)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        pending: list = []
        held = 0
        for shard in self.shards():
            pf = pq.ParquetFile(shard, pre_buffer=False)  # pre-buffering would keep every chunk read
            for batch in pf.iter_batches(batch_size=batch_rows, columns=columns):
                pending.append(pa.Table.from_batches([batch]))
                held += batch.num_rows
                while held >= batch_rows:
                    table = pa.concat_tables(pending) if len(pending) > 1 else pending[0]
                    yield table.slice(0, batch_rows)
                    rest = table.slice(batch_rows)
                    pending, held = ([rest] if len(rest) else []), len(rest)
        if held:
            yield pa.concat_tables(pending) if len(pending) > 1 else pending[0]

    def blocks(self, block_rows: int = BLOCK_ROWS) -> list[Block]:
        """The kept rows cut into blocks of at most ``block_rows``, in order: each Parquet
        row group of each shard, sliced. A row-wise step reads, processes and writes one at a
        time; the cut depends only on the stored files and ``block_rows``, so every executor
        cuts a version the same way (and a resumed step finds its finished blocks)."""
        import pyarrow.parquet as pq

        out = []
        for shard in self.manifest["shards"]:
            meta = pq.ParquetFile(self.path / shard).metadata
            for group in range(meta.num_row_groups):
                rows = meta.row_group(group).num_rows
                out.extend(Block(shard, group, start, min(block_rows, rows - start))
                           for start in range(0, rows, block_rows))
        return out

    def read_rows(self, start: int, rows: int, columns: list[str] | None = None):
        """Kept rows ``start .. start + rows`` (only the row groups holding them are read)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        parts, offset = [], 0
        for shard in self.manifest["shards"]:
            pf = pq.ParquetFile(self.path / shard)
            for group in range(pf.metadata.num_row_groups):
                size = pf.metadata.row_group(group).num_rows
                if offset < start + rows and start < offset + size:
                    lo = max(start - offset, 0)
                    parts.append(pf.read_row_group(group, columns=columns).slice(lo, min(start + rows - offset, size) - lo))
                offset += size
        return pa.concat_tables(parts) if len(parts) != 1 else parts[0]

    def read_block(self, block: Block, columns: list[str] | None = None):
        """The rows of ``block`` (one row group read, then sliced; only ``columns``, when given)."""
        import pyarrow.parquet as pq

        group = pq.ParquetFile(self.path / block.shard).read_row_group(block.row_group, columns=columns)
        return group.slice(block.offset, block.rows)


@dataclass(frozen=True)
class Block:
    """Rows ``offset .. offset + rows`` of row group ``row_group`` of ``shard`` (a path in a version)."""

    shard: str
    row_group: int
    offset: int
    rows: int


def _read(path: Path, columns: list[str] | None = None):
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=columns)


def _concat(tables: list):
    """One table from the parts of a version: a column one part lacks (a block with no rejects
    has no ``detail`` values) or holds only nulls is unified with the others."""
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables, promote_options="permissive")


class Store:
    def __init__(self, root: str | os.PathLike | None = None):
        self.root = default_root(root).resolve()

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ---- versions -------------------------------------------------------------------
    def _vdir(self, fingerprint: str) -> Path:
        return self.root / "versions" / fingerprint

    def has(self, fingerprint: str) -> bool:
        return (self._vdir(fingerprint) / "manifest.json").is_file()

    def version(self, fingerprint: str) -> Version:
        path = self._vdir(fingerprint)
        try:
            manifest = json.loads((path / "manifest.json").read_text())
        except FileNotFoundError:
            raise StoreError(f"no version {fingerprint} in store {self.root}") from None
        except json.JSONDecodeError as e:
            raise StoreError(f"corrupt manifest {path / 'manifest.json'}: {e}") from None
        return Version(path, manifest)

    def fingerprints(self) -> list[str]:
        vroot = self.root / "versions"
        if not vroot.is_dir():
            return []
        return sorted(p.name for p in vroot.iterdir() if (p / "manifest.json").is_file())

    def write_version(self, kept, rejected, manifest: dict[str, Any], shard_rows: int = SHARD_ROWS) -> Version:
        """Write tables + manifest atomically; replaces an existing version of the same
        fingerprint (``--force``) only once the new one is complete."""
        import pyarrow.parquet as pq

        fp = manifest["fingerprint"]
        self._sweep_tmp()
        tmp = self.root / "tmp" / f"{fp}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        (tmp / "data").mkdir(parents=True)
        shards = []
        for i, start in enumerate(range(0, max(len(kept), 1), shard_rows)):
            name = f"data/part-{i:05d}.parquet"
            pq.write_table(kept.slice(start, shard_rows), tmp / name, compression="zstd", row_group_size=BLOCK_ROWS)
            shards.append(name)
        (tmp / "rejected").mkdir()
        pq.write_table(rejected, tmp / "rejected" / "part-00000.parquet", compression="zstd")
        manifest = {**manifest, "shards": shards, "rejected_shards": ["rejected/part-00000.parquet"]}
        _write_json(tmp / "manifest.json", manifest)
        return Version(self._install(tmp, fp), manifest)

    def writer(self, fingerprint: str, fresh: bool = False) -> VersionWriter:
        """A version written block by block (a row-wise step): its blocks land in
        ``tmp/work/<fingerprint>/`` and stay there if the run dies, so the next run of the
        same step skips them. ``fresh`` (``--force``) starts over."""
        path = self.root / "tmp" / "work" / fingerprint
        if fresh and path.exists():
            shutil.rmtree(path)
        for sub in ("data", "rejected", "parts"):
            (path / sub).mkdir(parents=True, exist_ok=True)
        return VersionWriter(self, fingerprint, path)

    def _install(self, tmp: Path, fp: str) -> Path:
        """Rename a complete version folder into ``versions/`` (replacing an older one)."""
        final = self._vdir(fp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # forced recompute: swap in the new one, then drop the old
            old = self.root / "tmp" / f"{fp}-old.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return final

    def _sweep_tmp(self) -> None:
        """Remove temp dirs left by runs that died (named ``<fp>.<pid>.<rand>``; pid gone)."""
        tmp = self.root / "tmp"
        if not tmp.is_dir():
            return
        for p in tmp.iterdir():
            parts = p.name.split(".")
            pid = int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None
            if pid is not None and pid != os.getpid() and not _alive(pid):
                shutil.rmtree(p, ignore_errors=True)

    # ---- areas ----------------------------------------------------------------------
    def area(self, name: str, *parts: str) -> Path:
        """The folder ``<root>/<name>/<parts...>``, created: scratch space this store owns
        for what is not a dataset version -- ``cache`` (derived data a stage keys by content,
        e.g. minhash's signatures of a reference version, each version's token counts),
        ``models`` (trained models and trainings under way), ``reports`` (a run's comparison
        tables), ``exports`` (a recipe's ``export:`` when it names no path). Stages and the
        fine-tuning step ask for an area instead of joining paths onto the root."""
        if name not in AREAS:
            raise StoreError(f"no store area {name!r}; areas are {', '.join(AREAS)}")
        if any(not p or "/" in p or p in (".", "..") for p in parts):
            raise StoreError(f"invalid store area path {'/'.join(parts)!r} under {name}")
        path = self.root.joinpath(name, *parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # ---- names ----------------------------------------------------------------------
    def _name_file(self, name: str) -> Path:
        return self.root / "names" / f"{quote(name, safe='')}.json"

    def history(self, name: str) -> list[dict[str, Any]]:
        try:
            return json.loads(self._name_file(name).read_text())["history"]
        except FileNotFoundError:
            return []

    def names(self) -> list[str]:
        nroot = self.root / "names"
        if not nroot.is_dir():
            return []
        return sorted(unquote(p.name[: -len(".json")]) for p in nroot.glob("*.json"))

    def tag(self, name: str, fingerprint: str) -> None:
        """Point ``name`` at ``fingerprint`` (appends to its history unless already latest)."""
        check_name(name)
        with self._lock():
            hist = self.history(name)
            if hist and hist[-1]["fingerprint"] == fingerprint:
                return
            hist.append({"fingerprint": fingerprint, "created": now()})
            path = self._name_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_json(path, {"name": name, "history": hist}, atomic=True)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---- references -----------------------------------------------------------------
    def resolve(self, ref: str) -> Version:
        """``NAME``, ``NAME@latest``, ``NAME@N``, ``NAME@<prefix>`` or a fingerprint prefix."""
        name, _, at = ref.partition("@")
        hist = self.history(name)
        if not hist:
            if not at and len(name) >= MIN_PREFIX and re.fullmatch(r"[0-9a-f]+", name):
                return self.version(self._by_prefix(name, self.fingerprints(), ref))
            raise UsageError(self._unknown(name))
        if not at or at == "latest":
            return self.version(hist[-1]["fingerprint"])
        if at.isdigit() and len(at) < MIN_PREFIX:
            n = int(at)
            if not 1 <= n <= len(hist):
                raise UsageError(f"{ref}: '{name}' has versions 1..{len(hist)}")
            return self.version(hist[n - 1]["fingerprint"])
        return self.version(self._by_prefix(at, [h["fingerprint"] for h in hist], ref))

    def _by_prefix(self, prefix: str, candidates: list[str], ref: str) -> str:
        if len(prefix) < MIN_PREFIX:
            raise UsageError(f"{ref}: a fingerprint prefix needs at least {MIN_PREFIX} characters")
        hits = sorted({c for c in candidates if c.startswith(prefix)})
        if len(hits) != 1:
            what = "matches no version" if not hits else f"is ambiguous ({', '.join(hits)})"
            raise UsageError(f"{ref}: fingerprint prefix '{prefix}' {what}")
        return hits[0]

    def _unknown(self, name: str) -> str:
        import difflib

        names = self.names()
        if not names:
            return f"no dataset named '{name}': the store {self.root} is empty (run a recipe first, or pass --store)"
        close = difflib.get_close_matches(name, names, n=3)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else f"; known: {', '.join(names[:10])}"
        return f"no dataset named '{name}' in {self.root}{hint}"


class VersionWriter:
    """Writes one version block by block (``Store.writer``). Block ``i`` is three files --
    ``data/part-i.parquet`` (kept), ``rejected/part-i.parquet``, then ``parts/i.json`` (its
    counts, written last: a block is finished iff its summary exists). Any process that sees
    the folder (a Ray worker on this machine or on a shared filesystem) may write blocks;
    ``finish`` writes the manifest and renames the folder into ``versions/``."""

    def __init__(self, store: Store, fingerprint: str, path: Path):
        self.store, self.fingerprint, self.path = store, fingerprint, path

    def finished(self) -> dict[int, dict[str, Any]]:
        """Block index -> summary of every block already written."""
        out = {}
        for p in (self.path / "parts").glob("*.json"):
            with contextlib.suppress(json.JSONDecodeError, ValueError):
                out[int(p.stem)] = json.loads(p.read_text())
        return out

    def write_block(self, index: int, kept, rejected, summary: dict[str, Any]) -> dict[str, Any]:
        return write_block(self.path, index, kept, rejected, summary)

    def clear(self) -> None:
        """Drop every written block (they were cut from another input)."""
        for sub in ("data", "rejected", "parts"):
            shutil.rmtree(self.path / sub, ignore_errors=True)
            (self.path / sub).mkdir(parents=True)

    def finish(self, manifest: dict[str, Any], blocks: int, install: bool = True) -> Version:
        """The manifest over ``blocks`` written blocks; the version moves into place (or,
        ``install=False``, a scratch version a step reads back, stays where it is)."""
        names = [f"part-{i:05d}.parquet" for i in range(blocks)]
        manifest = {**manifest, "shards": [f"data/{n}" for n in names], "rejected_shards": [f"rejected/{n}" for n in names]}
        shutil.rmtree(self.path / "parts", ignore_errors=True)
        _write_json(self.path / "manifest.json", manifest)
        if not install:
            return Version(self.path, manifest)
        return Version(self.store._install(self.path, self.fingerprint), manifest)


def write_block(folder: str | os.PathLike, index: int, kept, rejected, summary: dict[str, Any]) -> dict[str, Any]:
    """One finished block of a version being written in ``folder`` (see ``VersionWriter``):
    a function of the folder alone, so a worker process writes it without a ``Store``."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    name = f"part-{index:05d}.parquet"
    for sub, table in (("data", kept), ("rejected", rejected)):
        tmp = folder / sub / f".{name}.{os.getpid()}.tmp"
        pq.write_table(table, tmp, compression="zstd", row_group_size=BLOCK_ROWS)
        os.replace(tmp, folder / sub / name)
    _write_json(folder / "parts" / f"{index:05d}.json", summary, atomic=True)
    return summary


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _write_json(path: Path, obj: Any, atomic: bool = False) -> None:
    data = json.dumps(obj, indent=2, sort_keys=False, default=str)
    if not atomic:
        path.write_text(data)
        return
    tmp = path.with_suffix(f".{os.getpid()}.{time.monotonic_ns()}.tmp")
    tmp.write_text(data)
    os.replace(tmp, path)
