"""Sources that read records from files: JSON lines, CSV and Parquet.

Default ids are ``<file>:<line>`` (JSONL, CSV: 1-based line numbers in the file; a
CSV's header is line 1, so its first record is line 2) or ``<file>:<row>`` (Parquet:
1-based row number), where ``<file>`` is the file's stem, or more of its path when
several input files share a stem. Blank lines in JSONL and CSV are not records: they
are neither counted nor rejected.

Every file is read by ``formats.read_records`` (the one table of file formats and their reader):
a file's format follows its name (``x.csv.gz`` is gzip-compressed CSV), and a file the user
named with some other suffix is read as the source's own format. The rows a source gives are
the records that reader yields, normalised; records it cannot parse become rejects.

CSV is read with the standard library rather than ``pyarrow.csv``: it gives each
record's true line number (quoted fields may span lines), reads every value as the
text it is (no "007" -> 7 inference), and lets one ragged row be rejected instead of
failing the whole file.
"""

from __future__ import annotations

import csv
import zlib
from pathlib import Path
from collections.abc import Callable
from typing import ClassVar

import pyarrow as pa
from pydantic import Field

from ..errors import SourceError
from ..stage import StageContext
from ..store import BLOCK_ROWS
from .base import Source, SourceOutput
from .formats import FORMATS, Format, compression_problems, format_of, open_text, parquet_file, read_records, suffixes
from .normalise import FileSourceConfig, Normaliser, missing_columns
from .paths import id_names, resolve, resolve_or_raise, shown


def formats_read_by(source_type: str) -> tuple[Format, ...]:
    """The formats of the table that a source type reads, in table order."""
    return tuple(f for f in FORMATS.values() if f.source == source_type)


class FileSource(Source):
    """Shared by sources whose ``path`` names files of ``formats``; a directory holds the
    files with their ``extensions``."""

    config: FileSourceConfig

    @property
    def formats(self) -> tuple[Format, ...]:
        return formats_read_by(self.type)

    @property
    def extensions(self) -> tuple[str, ...]:
        return suffixes(self.formats)

    def format_for(self, path: Path) -> Format:
        """The format a file is read as: the one its name ends in, else the source's own."""
        return format_of(path, self.formats) or self.formats[0]

    def input_files(self) -> list[tuple[str, Path]]:
        files = resolve_or_raise(self.config.path, self.extensions)
        return list(zip(id_names(files, self.extensions), files))

    def check(self) -> list[str]:
        files, problems = resolve(self.config.path, self.extensions)
        for f in files:
            problems.extend(self.check_file(f))
        return problems

    def check_file(self, path: Path) -> list[str]:
        """Cheap per-file checks (magic bytes, header, schema)."""
        return compression_problems(path)

    streams = True

    def read(self, ctx: StageContext | None = None, sink: Callable[[SourceOutput], None] | None = None,
             block_rows: int = BLOCK_ROWS) -> SourceOutput:
        """The normalised rows and rejects. With ``sink``, each ``block_rows`` of them go to it
        as they are read (the runner writes them to disk), and the return value is the rest."""
        ctx = ctx or StageContext()
        norm = Normaliser(self.config, ctx.reporter, sink, block_rows)
        for name, path in self.input_files():
            self.read_file(path, name, norm, ctx)
        return norm.output()

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext, total: int | None = None) -> None:
        """Each record of the file normalised into a row, or rejected with the reader's reason."""
        file, label = shown(path), self.source_label(path)
        records = read_records(path, self.format_for(path), **self.read_options(), bad="yield")
        for r in ctx.reporter.track(records, total=total, description=f"read {path.name}"):
            rid = f"{name}:{r.number}"
            if r.problem:
                reason, message = r.problem
                norm.reject(rid, reason, f"{r.where(file)}: {message}", file, r.number, r.raw)
            else:
                norm.add(r.value, file, r.unit, r.number, rid, label, raw=r.raw)

    def read_options(self) -> dict:
        """Settings of ``read_records`` the config holds (a CSV delimiter)."""
        return {}

    def source_label(self, path: Path) -> str:
        return self.config.label or path.name


class JsonlConfig(FileSourceConfig):
    pass


class JsonlSource(FileSource):
    """JSON lines (``.jsonl``), or ``.json`` files holding JSON lines or one array of objects;
    gzip-compressed as ``.gz``."""

    type: ClassVar[str] = "jsonl"
    Config: ClassVar[type[FileSourceConfig]] = JsonlConfig


class CsvConfig(FileSourceConfig):
    delimiter: str = Field(",", min_length=1, max_length=1)
    """The field separator (',' for CSV, a tab for TSV)."""


class CsvSource(FileSource):
    """A CSV file with a header line (``.csv``, gzip-compressed ``.csv.gz``); every value is text."""

    type: ClassVar[str] = "csv"
    Config: ClassVar[type[FileSourceConfig]] = CsvConfig
    config: CsvConfig

    def read_options(self) -> dict:
        return {"delimiter": self.config.delimiter}

    def check_file(self, path: Path) -> list[str]:
        problems = super().check_file(path)
        if problems:
            return problems
        try:
            with open_text(path) as f:
                header = next((row for row in csv.reader(f, delimiter=self.config.delimiter) if row), None)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
            return [f"path: cannot read '{path}' as CSV ({e})"]
        if header is None:
            return []
        return missing_columns(self.config, header, f"'{path}'")


class ParquetConfig(FileSourceConfig):
    pass


class ParquetSource(FileSource):
    """Parquet files, read in record batches."""

    type: ClassVar[str] = "parquet"
    Config: ClassVar[type[FileSourceConfig]] = ParquetConfig

    def check_file(self, path: Path) -> list[str]:
        try:
            with parquet_file(path) as pf:
                schema = pf.schema_arrow
        except (pa.ArrowException, OSError) as e:
            return [f"path: '{path}' is not a readable Parquet file ({e})"]
        return missing_columns(self.config, schema.names, f"'{path}'")

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext, total: int | None = None) -> None:
        try:
            with parquet_file(path) as pf:  # the footer only: kept columns keep their Arrow types
                schema, total = pf.schema_arrow, pf.metadata.num_rows
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"cannot read {shown(path)} as Parquet: {e}") from None
        norm.keep_types.update({k: schema.field(k).type for k in norm.keep_get if k in schema.names})
        super().read_file(path, name, norm, ctx, total=total)
