"""Data references: the one way a stage (or a model's ``train_tiny:``) names data other than
its input.

A reference is one of

* a **source mapping** ``{type: champ, include_reference: true, ...}`` -- any source of
  ``SOURCES`` with its settings;
* a **local file** of any format of ``formats.FORMATS`` (``.jsonl``, ``.json``, ``.csv``,
  ``.parquet``, ``.txt``, and their ``.gz`` forms), read by the source type the table names for
  it (conversations if its records are, else texts); a text file's non-blank lines become
  ``text`` rows;
* a **dataset reference** in the store (``math_sft``, ``math_sft@2``, ``NAME@<fingerprint>``).

``resolve_data`` returns the reference's content fingerprint without reading the rows (a
source's fingerprint hashes its input files; a version's fingerprint is stored), and a
loader for the canonical rows. Stages put the fingerprint in their own (so a changed
target reruns the selection, a moved checkout does not) and load the rows in ``process``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from ..errors import SourceError, StoreError, UsageError
from ..fingerprint import hash_file, hash_parts
from ..stage import StageContext
from ..store import Store
from .formats import COMPRESSIONS, file_format, format_of, read_records, suffixes
from .paths import is_uri, resolve, stem

DataSpec = str | dict[str, Any]


@dataclass(frozen=True)
class DataRef:
    label: str  # what the user wrote, for messages
    fingerprint: str  # content fingerprint: changes iff the rows would
    load: Callable[[], pa.Table]  # the canonical rows (id, messages | text, ...)


def describe(spec: DataSpec) -> str:
    if isinstance(spec, dict):
        args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "type")
        return f"{spec.get('type')}({args})"
    return str(spec)


def names_a_file(spec: str) -> bool:
    """Whether a string reference means a file (an existing one, one ending like a data file,
    or one written as a path) rather than a dataset name."""
    path = Path(spec).expanduser()
    ends_like_data = format_of(path) is not None or path.name.lower().endswith(tuple(COMPRESSIONS))
    return path.is_file() or ends_like_data or spec.startswith((".", "/", "~"))


def resolve_data(spec: DataSpec, store: Store | None = None, what: str = "data") -> DataRef:
    """``spec`` (a source mapping, a local file or a dataset reference) as a ``DataRef``.
    ``what`` names the field in error messages (``select_target.target``)."""
    if isinstance(spec, dict):
        return _source_ref(spec, what)
    if not isinstance(spec, str) or not spec.strip():
        raise UsageError(f"{what}: give a dataset reference, a file path or a source mapping {{type: ...}}, not {spec!r}")
    if is_uri(spec):  # one file behind a pyarrow filesystem (s3://, gs://, file://, ...)
        files, problems = resolve(spec, suffixes(), what)
        if problems or len(files) != 1:
            raise SourceError("; ".join(problems) or f"{what}: '{spec}' names {len(files)} files; a data reference is one "
                              "file (a source mapping {type: ..., path: ...} reads several)")
        return DataRef(spec, file_fingerprint(files[0]), lambda: read_file(files[0], what))
    path = Path(spec).expanduser()
    if path.is_file():
        return DataRef(spec, file_fingerprint(path), lambda: read_file(path, what))
    if names_a_file(spec):
        raise SourceError(f"{what}: file {path} does not exist")
    from ..store import Store

    try:
        version = (store if store is not None else Store()).resolve(spec)
    except (StoreError, UsageError) as e:
        raise type(e)(f"{what}: {e} (a data reference is a dataset name, a file path or a source mapping)") from None
    return DataRef(spec, version.fingerprint, version.table)


def _source_ref(spec: dict[str, Any], what: str) -> DataRef:
    from . import SOURCES

    kind = spec.get("type")
    if kind not in SOURCES:
        raise UsageError(f"{what}: unknown source type {kind!r} (known: {', '.join(SOURCES)})")
    src = SOURCES[kind]({k: v for k, v in spec.items() if k != "type"})
    problems = src.check()
    if problems:
        raise SourceError(f"{what}: {'; '.join(problems)}")
    return DataRef(describe(spec), src.fingerprint(), lambda: src.read(StageContext()).kept)


def file_fingerprint(path: Path) -> str:
    parts = ["file", path.name, hash_file(path)]
    fmt = format_of(path)
    if fmt is not None and fmt.source is None:
        # Text files were read by blank-line separated paragraphs before the formats table read
        # them by lines: the mark keeps a step computed from paragraphs from being reused.
        parts.append("lines")
    return hash_parts(*parts)


def read_file(path: Path, what: str = "data") -> pa.Table:
    """A local file's canonical rows, read as the formats table says (``.csv.gz`` is CSV)."""
    try:
        fmt = file_format(path)
        if fmt.source is None:  # text: one row per non-blank line, ids <stem>:<line> as a source's
            records = list(read_records(path, fmt))
            name = stem(path.name, fmt.suffixes)
            if records:
                return pa.table({"id": pa.array([f"{name}:{r.number}" for r in records], pa.string()),
                                 "text": pa.array([r.value for r in records], pa.string())})
    except SourceError as e:
        raise SourceError(f"{what}: {e}") from None
    if fmt.source is None:
        raise SourceError(f"{what}: no usable row in {path} (the file holds no text)")
    from . import SOURCES

    # SFT rows when the records are conversations, else text rows (a file of {"text": ...}).
    for shape in ("sft", "text"):
        out = SOURCES[fmt.source](path=str(path), shape=shape).read(StageContext())
        if out.kept.num_rows:
            return out.kept
    first = out.rejected.column("detail")[0].as_py() if out.rejected.num_rows else "the file holds no records"
    raise SourceError(f"{what}: no usable row in {path}, as conversations or as text ({first})")


def resolve_recipe_data(value: Any, base: Path, path_keys: tuple[str, ...] = ("path",)) -> Any:
    """Paths inside data references resolved against a recipe's folder: a string that names
    something there, starts with ``.`` or ends like a data file, a source mapping's ``path``, and,
    recursively, the ``data`` of each item of a list of ``{data: ..., ...}`` mappings."""
    if isinstance(value, list):
        return [resolve_recipe_data(v, base, path_keys) for v in value]
    if isinstance(value, dict):
        if "type" in value:
            return {k: _rebase(v, base) if k in path_keys else v for k, v in value.items()}
        return {k: resolve_recipe_data(v, base, path_keys) if k == "data" else v for k, v in value.items()}
    if isinstance(value, str) and value != "input" and not is_uri(value) and not Path(value).expanduser().is_absolute() and (
            names_a_file(value) or (base / value).exists()):
        return str(base / value)  # "input" is mix's word for the rows flowing in, never a path
    return value


def _rebase(value: Any, base: Path) -> Any:
    if isinstance(value, list):
        return [_rebase(v, base) for v in value]
    if isinstance(value, str) and not is_uri(value) and not Path(value).expanduser().is_absolute():
        return str(base / value)
    return value
