"""The versioned dataset store.

Layout under the store root (``--store``, else ``$CURATE_STORE``, else ``./.curate``)::

    versions/<fingerprint>/manifest.json      written last: a version exists iff this exists
    versions/<fingerprint>/data/part-NNNNN.parquet
    versions/<fingerprint>/rejected.parquet   every row the step removed, with its reason
    names/<name>.json                         history of fingerprints a name pointed at
    tmp/                                      versions being written (renamed into place)
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
# The folders beside versions/ the store hands out (``Store.area``); nothing else writes under the root.
AREAS = ("cache", "models", "reports")
MIN_PREFIX = 6
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\-]+(/[A-Za-z0-9_.\-]+)*$")


def default_root(root: str | os.PathLike | None = None) -> Path:
    return Path(root or os.environ.get("CURATE_STORE") or ".curate")


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

    def table(self):
        """The kept rows as a pyarrow Table."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        tables = [pq.read_table(p) for p in self.shards()]
        return tables[0] if len(tables) == 1 else pa.concat_tables(tables)

    def rejected(self):
        """The rejected rows (with ``reason``, ``detail``, ``stage``) as a pyarrow Table."""
        import pyarrow.parquet as pq

        return pq.read_table(self.path / "rejected.parquet")


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
            pq.write_table(kept.slice(start, shard_rows), tmp / name, compression="zstd")
            shards.append(name)
        pq.write_table(rejected, tmp / "rejected.parquet", compression="zstd")
        manifest = {**manifest, "shards": shards}
        _write_json(tmp / "manifest.json", manifest)
        final = self._vdir(fp)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # forced recompute: swap in the new one, then drop the old
            old = self.root / "tmp" / f"{fp}-old.{os.getpid()}.{uuid.uuid4().hex[:8]}"
            os.rename(final, old)
            os.rename(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, final)
        return Version(final, manifest)

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
        e.g. minhash's signatures of a reference version), ``models`` (trained models and
        trainings under way), ``reports`` (a run's comparison tables). Stages and the
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
