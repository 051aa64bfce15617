"""The source contract: read input, yield canonical rows and the records that could not
become rows.

A source is the first step of every pipeline. It never crashes on one bad record and
never skips one silently: a malformed record becomes a row of the ``rejected`` table
with a ``reason`` (counted by the funnel), a ``detail`` naming file, line and field,
and the ``raw`` record, so nothing is lost. Only input that cannot be read at all (a
missing file, a file that is not Parquet) raises :class:`curate.errors.SourceError`.

The runner checks ``rows_in == len(kept) + len(rejected)`` as it does for stages.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import pyarrow as pa
from pydantic import ValidationError

from ..errors import RecipeError
from ..fingerprint import hash_file, hash_parts
from ..stage import StageConfig, StageContext, config_problems

REJECT_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("source_file", pa.string()),
        ("line", pa.int64()),
        ("raw", pa.string()),
    ]
)

# Every reason a source can give; the funnel counts rejects by these.
REASONS = (
    "bad_json",  # a JSONL line that does not parse
    "bad_csv",  # a CSV row with more fields than the header
    "not_an_object",  # a JSON value that is not an object
    "missing_field",  # a mapped field is absent or null
    "not_a_string",  # a mapped text field holds a number, list, ...
    "empty_text",  # a text is empty or whitespace only
    "text_too_long",  # a text is longer than max_chars
    "bad_messages",  # a messages list that is not a list of {role, content} turns
    "duplicate_id",  # an id already used by an earlier record
    "not_text",  # a file that is not UTF-8 text (binary bytes, another encoding)
    "too_short",  # a document with fewer words than the source's min_words
)


class SourceOutput(NamedTuple):
    kept: pa.Table  # canonical rows
    rejected: pa.Table  # malformed input records (REJECT_SCHEMA)
    rows_in: int  # records seen: len(kept) + len(rejected)


class Source:
    """Subclass with ``type``, ``Config``, ``check``, ``read`` and ``input_files``;
    register it in ``curate.sources.SOURCES``."""

    type: ClassVar[str]
    Config: ClassVar[type[StageConfig]]
    version: ClassVar[str] = "1"  # bump when the same config starts giving other rows
    # ``read(ctx, sink=..., block_rows=...)`` hands its rows to ``sink`` a block at a time (the
    # runner writes each to disk as it comes); else ``read(ctx)`` returns every row at once.
    streams: ClassVar[bool] = False

    def __init__(self, config: StageConfig | dict | None = None, /, **overrides: Any):
        if isinstance(config, StageConfig) and not overrides:
            self.config = config
        else:
            values = config.model_dump(exclude_defaults=True) if isinstance(config, StageConfig) else dict(config or {})
            values.update(overrides)
            try:
                self.config = self.Config(**values)
            except ValidationError as e:
                raise RecipeError(config_problems(e, "source")) from None

    def check(self) -> list[str]:
        """Problems that make the source unreadable, found without reading it all."""
        raise NotImplementedError(f"source {self.type} does not implement check()")

    def read(self, ctx: StageContext | None = None) -> SourceOutput:
        raise NotImplementedError(f"source {self.type} does not implement read()")

    def input_files(self) -> list[tuple[str, Path]]:
        """Every input file as (the name rows know it by, path), in sorted path order."""
        raise NotImplementedError(f"source {self.type} does not implement input_files()")

    def fingerprint(self) -> str:
        # The names go in with the hashes: renaming a file changes default ids and `source`.
        files = [(name, hash_file(path)) for name, path in self.input_files()]
        return hash_parts("source", self.type, self.config.model_dump(mode="json", exclude_defaults=True), self.version, files)

    def with_overrides(self, overrides: dict) -> Source:
        return type(self)(self.config, **overrides)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.model_dump(exclude_defaults=True).items())
        return f"{type(self).__name__}({args})"


def suggest(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name (case-insensitive), or ''."""
    lowered = {k.lower(): k for k in known}
    close = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=0.6)
    if not close:  # a shortened name ('PaLM' for 'PaLM 2 Medium')
        close = [k for k in lowered if k.startswith(name.lower())][:1] if name.strip() else []
    return f"; did you mean '{lowered[close[0]]}'?" if close else ""


def empty_rejects() -> pa.Table:
    return REJECT_SCHEMA.empty_table()
