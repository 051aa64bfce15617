"""From a source record (a dict) to a canonical row, or to a reject with its reason.

``fields`` maps canonical names to the record's keys; a key may be a dotted path into
nested objects (``meta.question``), tried after the literal key. Shapes:

* ``sft`` from ``prompt`` + ``response`` (+ optional ``system``), or from ``messages``
  (a list of turns, keys ``role_key``/``content_key``, roles normalised: human/gpt/model
  -> user/assistant); defaults ``prompt: prompt, response: response``.
* ``text`` from ``text``; default ``text: text``.
* both: optional ``id``, ``answer``, ``category``.

Text must be a string: numbers are not turned into text (a number where a response
should be is a broken record). ``id``, ``answer`` and ``category`` may be numbers and
become strings. Texts are kept exactly as read (no stripping); a text that is empty
or whitespace only is rejected.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, ValidationInfo, field_validator

from ..errors import SourceError, warn
from ..records import MESSAGES_TYPE
from ..stage import Reporter, StageConfig
from ..store import BLOCK_ROWS
from .base import REJECT_SCHEMA, SourceOutput, suggest

SFT_FIELDS = ("prompt", "response", "system", "messages", "role_key", "content_key")
TEXT_FIELDS = ("text",)
COMMON_FIELDS = ("id", "answer", "category")
OUTPUT_COLUMNS = ("id", "messages", "text", "source", "answer", "category")

ROLES = {
    "system": "system",
    "user": "user",
    "human": "user",
    "prompter": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "chatgpt": "assistant",
    "ai": "assistant",
}

MISSING = object()


class FileSourceConfig(StageConfig):
    """Fields shared by every source that reads records from files."""

    path: str | list[str] = Field(min_length=1)
    """A file, a directory (every file with the reader's extension inside), a glob, or a list of those."""
    shape: Literal["sft", "text"] = "sft"
    """'sft' gives rows with `messages`, 'text' gives pretraining rows with `text`."""
    fields: dict[str, str] = {}
    """Canonical name -> record key (dotted paths reach into nested objects)."""
    keep_fields: list[str] = []
    """Record keys carried through unchanged as extra columns."""
    max_chars: int = Field(1_000_000, ge=1)
    """Longest text accepted (per prompt, response, turn or text); longer records are rejected."""
    label: str | None = None
    """Value of the `source` column; by default the input file's name."""

    @field_validator("path", mode="before")
    @classmethod
    def _paths_as_strings(cls, v: Any) -> Any:
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        if isinstance(v, (list, tuple)):
            return [os.fspath(p) if isinstance(p, os.PathLike) else p for p in v]
        return v

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, str], info: ValidationInfo) -> dict[str, str]:
        shape = info.data.get("shape", "sft")
        allowed = (SFT_FIELDS if shape == "sft" else TEXT_FIELDS) + COMMON_FIELDS
        problems = []
        for name, key in fields.items():
            if name not in allowed:
                other = "text" if shape == "sft" else "sft"
                hint = f" (it belongs to shape: {other})" if name in (TEXT_FIELDS if shape == "sft" else SFT_FIELDS) else suggest(name, allowed)
                problems.append(f"unknown field '{name}' for shape {shape}{hint}; fields are {', '.join(allowed)}")
            elif not key.strip():
                problems.append(f"field '{name}' maps to an empty key")
        if shape == "sft" and "messages" in fields and {"prompt", "response"} & set(fields):
            problems.append("map either 'messages' or 'prompt'/'response', not both")
        if {"role_key", "content_key"} & set(fields) and "messages" not in fields:
            problems.append("'role_key'/'content_key' only apply with 'messages'")
        if problems:
            raise ValueError("; ".join(problems))
        return fields

    @field_validator("keep_fields")
    @classmethod
    def _no_clash(cls, keep: list[str]) -> list[str]:
        clash = [k for k in keep if k in OUTPUT_COLUMNS]
        if clash:
            raise ValueError(f"keep_fields may not repeat output columns ({', '.join(clash)}); map them with `fields` instead")
        return keep

    def field_map(self) -> dict[str, str]:
        """``fields`` with the shape's defaults filled in."""
        if self.shape == "text":
            return {"text": "text", **self.fields}
        if "messages" in self.fields:
            return {"role_key": "role", "content_key": "content", **self.fields}
        return {"prompt": "prompt", "response": "response", **self.fields}


def missing_columns(config: FileSourceConfig, columns: list[str], where: str) -> list[str]:
    """Problems for mapped keys whose top-level column ``where`` lacks (checked before reading)."""
    return [
        f"fields.{field}: key '{key}' is not a column of {where} (columns: {', '.join(columns)})"
        for field, key in config.field_map().items()
        if field not in ("role_key", "content_key") and key not in columns and key.split(".")[0] not in columns
    ]


class _Reject(Exception):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        self.message = message


def getter(key: str) -> Callable[[dict], Any]:
    """Look ``key`` up literally, then as a dotted path; MISSING when absent."""
    path = key.split(".")

    def get(record: dict) -> Any:
        if key in record:
            return record[key]
        if len(path) == 1:
            return MISSING
        value: Any = record
        for part in path:
            if not isinstance(value, dict) or part not in value:
                return MISSING
            value = value[part]
        return value

    return get


def kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


class Normaliser:
    """Collects canonical rows and rejects, column by column, for one source read."""

    def __init__(self, config: FileSourceConfig, reporter: Reporter | None = None,
                 sink: Callable[[SourceOutput], None] | None = None, block_rows: int = BLOCK_ROWS):
        """``sink``: called with each ``block_rows`` rows (or rejects) as soon as they are
        normalised, so a source is read with a block in memory; ``output()`` is the rest."""
        self.config = config
        self.reporter = reporter or Reporter()
        self.sink, self.block_rows = sink, block_rows
        self.flushed_in = 0  # records already handed to the sink
        self.blocks = 0
        self.kept_total = 0
        self.block_types: dict[str, pa.DataType] = {}  # each keep field's type over the blocks so far
        self.present: Counter[str] = Counter()  # non-null answer / category values, over every block
        self.map = config.field_map()
        self.get = {name: getter(key) for name, key in self.map.items() if name not in ("role_key", "content_key")}
        self.keep_get = {k: getter(k) for k in config.keep_fields}
        self.keep_types: dict[str, pa.DataType] = {}
        self.rows_in = 0
        self.seen: dict[str, tuple[str, str, int]] = {}  # id -> (file, unit, number) first seen at
        self.sft = config.shape == "sft"
        self.max_chars = config.max_chars
        self.labels = [name for name in ("answer", "category") if name in config.fields]
        self.cols: dict[str, list] = {name: [] for name in ("id", "messages" if self.sft else "text", "source", *self.labels, *config.keep_fields)}
        self.rejects: dict[str, list] = {name: [] for name in REJECT_SCHEMA.names}

    # -- one record ------------------------------------------------------------------
    def add(self, record: Any, file: str, unit: str, number: int, default_id: str, source: str, raw: str | bytes | None = None) -> None:
        """Normalise one record read from ``file`` at ``unit`` (line/row) ``number``."""
        self.rows_in += 1
        rid = default_id
        try:
            if not isinstance(record, dict):
                raise _Reject("not_an_object", f"the record is {kind(record)}, not an object")
            if "id" in self.get:
                rid = self._label(record, "id", required=True)
            body = self._messages(record) if self.sft else self._text(record, "text")
            labels = [self._label(record, name) for name in self.labels]
        except _Reject as r:
            self._reject(rid, r.reason, f"{file} {unit} {number}: {r.message}", file, number, record, raw)
            return
        if rid in self.seen:
            first = "{} {} {}".format(*self.seen[rid])
            self._reject(rid, "duplicate_id", f"{file} {unit} {number}: id '{rid}' was already used by {first}", file, number, record, raw)
            return
        self.seen[rid] = (file, unit, number)
        cols = self.cols
        cols["id"].append(rid)
        cols["messages" if self.sft else "text"].append(body)
        cols["source"].append(source)
        for name, value in zip(self.labels, labels):
            cols[name].append(value)
        for k, get in self.keep_get.items():
            value = get(record)
            cols[k].append(None if value is MISSING else value)
        if self.sink is not None and len(cols["id"]) >= self.block_rows:
            self.sink(self._take())

    def reject(self, rid: str, reason: str, detail: str, file: str, number: int, raw: str | bytes) -> None:
        """A record that never became a dict (a line that is not JSON, a ragged CSV row)."""
        self.rows_in += 1
        self._reject(rid, reason, detail, file, number, None, raw)

    def _reject(self, rid: str, reason: str, detail: str, file: str, number: int, record: Any, raw: str | bytes | None) -> None:
        if raw is None:
            raw = json.dumps(record, ensure_ascii=False, default=str)
        elif isinstance(raw, bytes):
            raw = raw.decode("utf-8", "replace").rstrip("\r\n")
        for name, value in zip(REJECT_SCHEMA.names, (rid, reason, detail, file, number, raw)):
            self.rejects[name].append(value)
        if self.sink is not None and len(self.rejects["id"]) >= self.block_rows:
            self.sink(self._take())

    # -- fields ----------------------------------------------------------------------
    def _described(self, name: str) -> str:
        return f"mapped field '{name}' (key '{self.map[name]}')"

    def _text(self, record: dict, name: str, required: bool = True) -> str | None:
        value = self.get[name](record)
        if type(value) is str and value and len(value) <= self.max_chars and not value.isspace():
            return value  # the common case, without the checks below
        if value is MISSING or value is None:
            if not required:
                return None
            raise _Reject("missing_field", f"{self._described(name)} is {'missing' if value is MISSING else 'null'}")
        if not isinstance(value, str):
            raise _Reject("not_a_string", f"{self._described(name)} is {kind(value)}, not a string")
        if not value.strip():
            if not required:
                return None
            raise _Reject("empty_text", f"{self._described(name)} is empty")
        if len(value) > self.config.max_chars:
            raise _Reject("text_too_long", f"{self._described(name)} has {len(value):,} characters, more than max_chars={self.config.max_chars:,}")
        return value

    def _label(self, record: dict, name: str, required: bool = False) -> str | None:
        """id / answer / category: a string, or a number turned into one."""
        value = self.get[name](record)
        if type(value) is str and value and not value.isspace():
            return value
        if value is MISSING or value is None:
            if required:
                raise _Reject("missing_field", f"{self._described(name)} is {'missing' if value is MISSING else 'null'}")
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise _Reject("not_a_string", f"{self._described(name)} is {kind(value)}, not a string or number")
        if not value.strip():
            if required:
                raise _Reject("empty_text", f"{self._described(name)} is empty")
            return None
        return value

    def _messages(self, record: dict) -> list[dict]:
        system = self._text(record, "system", required=False) if "system" in self.get else None
        head = [{"role": "system", "content": system}] if system is not None else []
        if "messages" not in self.get:
            prompt = self._text(record, "prompt")
            response = self._text(record, "response")
            return [*head, {"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
        turns = self.get["messages"](record)
        if turns is MISSING or turns is None:
            raise _Reject("missing_field", f"{self._described('messages')} is {'missing' if turns is MISSING else 'null'}")
        if not isinstance(turns, list) or not turns:
            raise _Reject("bad_messages", f"{self._described('messages')} is {kind(turns) if turns != [] else 'an empty list'}, not a list of turns")
        role_key, content_key = self.map["role_key"], self.map["content_key"]
        out = list(head)
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise _Reject("bad_messages", f"turn {i} of {self._described('messages')} is {kind(turn)}, not an object")
            role = turn.get(role_key)
            if not isinstance(role, str) or role.strip().lower() not in ROLES:
                got = "missing" if role_key not in turn else repr(role)
                raise _Reject("bad_messages", f"turn {i} of {self._described('messages')} has role {got} (key '{role_key}'); known roles: {', '.join(ROLES)}")
            content = turn.get(content_key, MISSING)
            where = f"turn {i} of {self._described('messages')}"
            if content is MISSING or content is None:
                raise _Reject("bad_messages", f"{where} has no content (key '{content_key}')")
            if not isinstance(content, str):
                raise _Reject("not_a_string", f"{where} has content {kind(content)}, not a string")
            if not content.strip():
                raise _Reject("empty_text", f"{where} has empty content")
            if len(content) > self.config.max_chars:
                raise _Reject("text_too_long", f"{where} has {len(content):,} characters, more than max_chars={self.config.max_chars:,}")
            out.append({"role": ROLES[role.strip().lower()], "content": content})
        if head and sum(t["role"] == "system" for t in out) > 1:
            out = out[1:]  # the record carries its own system turn; it wins over the mapped one
        if not any(t["role"] == "assistant" for t in out):
            raise _Reject("bad_messages", f"{self._described('messages')} has no assistant turn")
        return out

    # -- the tables ------------------------------------------------------------------
    def output(self) -> SourceOutput:
        """The rows and rejects not yet handed to the sink (without one: all of them)."""
        out = self._take()
        for name in ("answer", "category"):
            if name in self.cols and self.kept_total and self.present[name] == 0:
                # Likely a misspelt key: an optional field that no record has.
                warn(f"{self._described(name)} is absent in every record; check `fields`")
        return out

    def _take(self) -> SourceOutput:
        """The buffered rows and rejects as tables; the buffers start over."""
        types = {"id": pa.string(), "messages": MESSAGES_TYPE, "text": pa.string(), "source": pa.string(), "answer": pa.string(), "category": pa.string()}
        arrays = {}
        for name, values in self.cols.items():
            arrays[name] = pa.array(values, type=types[name]) if name in types else self._extra_column(name, values)
            if name not in types:
                self._agree(name, arrays[name].type)
        kept = pa.table(arrays)
        rejected = pa.table(self.rejects, schema=REJECT_SCHEMA)
        for name in ("answer", "category"):
            if name in arrays:
                self.present[name] += len(kept) - arrays[name].null_count
        self.kept_total += len(kept)
        out = SourceOutput(kept, rejected, self.rows_in - self.flushed_in)
        self.flushed_in, self.blocks = self.rows_in, self.blocks + 1
        self.cols = {name: [] for name in self.cols}
        self.rejects = {name: [] for name in REJECT_SCHEMA.names}
        return out

    def _agree(self, name: str, kind: pa.DataType) -> None:
        """A keep field's type in this block must unify with the earlier blocks' (the version's
        parts are read back with permissive promotion: int64 then double is double); blocks
        that cannot (numbers, then text) are an error naming the field."""
        before = self.block_types.get(name)
        if before is None or pa.types.is_null(before):
            self.block_types[name] = kind
            return
        try:
            self.block_types[name] = pa.unify_schemas([pa.schema([(name, before)]), pa.schema([(name, kind)])],
                                                      promote_options="permissive").field(name).type
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            raise SourceError(f"keep_fields '{name}': the rows read before row {self.flushed_in + 1:,} held {before} "
                              f"values, later ones {kind}; a source read block by block ({self.block_rows:,} rows) keeps "
                              f"one type per column: make the field one type in every record") from None

    def _extra_column(self, name: str, values: list) -> pa.Array:
        try:
            return pa.array(values, type=self.keep_types.get(name))
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            # Mixed types across records (a number here, a string there): keep every value,
            # as JSON text, rather than fail the read or drop the column.
            warn(f"keep_fields '{name}' holds values of mixed types; kept as JSON text")
            return pa.array([v if v is None or isinstance(v, str) else json.dumps(v, ensure_ascii=False, default=str) for v in values], type=pa.string())
