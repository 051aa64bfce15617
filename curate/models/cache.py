"""The on-disk cache of model calls: one SQLite file per model identity.

Keys are hashes of (model identity, operation, settings that change outputs, request), so
a different model, a different revision of its weights or a different sampling setting
never hits another's entries. One file per identity makes "forget this model" a file
deletion. SQLite in WAL mode lets several processes (a run and a notebook) share it.

Where: ``$CURATE_CACHE/calls/`` (default ``~/.cache/curate``), outside the store, so a
fresh store (another recipe, a test) still reuses what a model already answered.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from ..errors import StoreError

SQL_VARS = 500  # keys per SELECT ... IN (...), under SQLite's variable limit


def cache_root(root: str | os.PathLike | None = None) -> Path:
    """Where curate keeps model-call caches and the models it trains (``train-tiny``)."""
    return Path(root or os.environ.get("CURATE_CACHE") or Path.home() / ".cache" / "curate").expanduser()


def _wal(conn: sqlite3.Connection, seconds: float = 60.0) -> None:
    """Switch to WAL mode. Processes opening a new cache at once (Ray tasks of one step) can
    find it locked: SQLite's busy timeout does not cover this pragma, so it is retried here."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class CallCache:
    """key -> bytes, for one model identity."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._local = threading.local()  # sqlite connections are per thread
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn().execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, value BLOB NOT NULL)")
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the model-call cache {self.path}: {e}") from None

    @classmethod
    def for_model(cls, identity: str, root: str | os.PathLike | None = None) -> CallCache:
        return cls(cache_root(root) / "calls" / f"{identity}.sqlite")

    @classmethod
    def for_embedder(cls, identity: str, root: str | os.PathLike | None = None) -> CallCache:
        """An embedder's vectors (text hash -> float32 bytes)."""
        return cls(cache_root(root) / "embeddings" / f"{identity}.sqlite")

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60)
            _wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def get_many(self, keys: Iterable[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))
        out: dict[str, bytes] = {}
        conn = self._conn()
        for i in range(0, len(keys), SQL_VARS):
            part = keys[i : i + SQL_VARS]
            rows = conn.execute(f"SELECT key, value FROM calls WHERE key IN ({','.join('?' * len(part))})", part)
            out.update(rows)
        return out

    def put_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        conn = self._conn()
        with conn:
            conn.executemany("INSERT OR REPLACE INTO calls (key, value) VALUES (?, ?)", items)

    def __len__(self) -> int:
        return self._conn().execute("SELECT COUNT(*) FROM calls").fetchone()[0]
