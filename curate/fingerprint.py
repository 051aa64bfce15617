"""Deterministic fingerprints, the way Hugging Face ``datasets`` does it.

A version's fingerprint is ``hash(input fingerprint, stage name, canonical config,
stage version)``; the config part holds only the fields that differ from the
defaults, so adding a field with a default does not invalidate every cached
version -- a stage bumps its ``version`` when the *meaning* of a config changes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import xxhash

FINGERPRINT_LEN = 16  # hex chars shown and used as directory names


def canonical_json(obj: Any) -> str:
    """JSON with sorted keys and no whitespace: equal values give equal strings."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    raise TypeError(f"cannot fingerprint value of type {type(obj).__name__}")


def hash_parts(*parts: Any) -> str:
    """Fingerprint of an ordered sequence of JSON-able parts."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        data = canonical_json(part).encode()
        h.update(len(data).to_bytes(8, "little"))
        h.update(data)
    return h.hexdigest()[:FINGERPRINT_LEN]


def hash_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """Content hash of a file (xxh3-128: ~10 GB/s, so a rerun can afford to check inputs). A
    file behind a filesystem (``curate.sources.paths.RemotePath``: object storage, HDFS) is
    known by its listing instead -- size and modification time -- so a cached rerun does not
    download the corpus to learn it is unchanged."""
    if hasattr(path, "listing_key"):
        return path.listing_key()
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
