"""Sources that read records from files: JSON lines, CSV and Parquet.

Default ids are ``<file>:<line>`` (JSONL, CSV: 1-based line numbers in the file; a
CSV's header is line 1, so its first record is line 2) or ``<file>:<row>`` (Parquet:
1-based row number), where ``<file>`` is the file's stem, or more of its path when
several input files share a stem. Blank lines in JSONL and CSV are not records: they
are neither counted nor rejected.

CSV is read with the standard library rather than ``pyarrow.csv``: it gives each
record's true line number (quoted fields may span lines), reads every value as the
text it is (no "007" -> 7 inference), and lets one ragged row be rejected instead of
failing the whole file.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field

from ..errors import SourceError
from ..stage import StageContext
from .base import Source, SourceOutput
from .normalise import FileSourceConfig, Normaliser, missing_columns
from .paths import id_names, resolve, resolve_or_raise, shown

# Raise the stdlib's 128 KiB per-field limit so long CSV texts reach max_chars checks.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

BATCH_ROWS = 8192


class FileSource(Source):
    """Shared by sources whose ``path`` names files with ``extensions``."""

    extensions: ClassVar[tuple[str, ...]]
    config: FileSourceConfig

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
        return []

    def read(self, ctx: StageContext | None = None) -> SourceOutput:
        ctx = ctx or StageContext()
        norm = Normaliser(self.config, ctx.reporter)
        for name, path in self.input_files():
            self.read_file(path, name, norm, ctx)
        return norm.output()

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext) -> None:
        raise NotImplementedError

    def source_label(self, path: Path) -> str:
        return self.config.label or path.name


class JsonlConfig(FileSourceConfig):
    pass


class JsonlSource(FileSource):
    """One JSON object per line (``.jsonl``, ``.json``, gzip-compressed ``.gz``)."""

    type: ClassVar[str] = "jsonl"
    Config: ClassVar[type[FileSourceConfig]] = JsonlConfig
    extensions = (".jsonl", ".json", ".jsonl.gz", ".json.gz")

    def check_file(self, path: Path) -> list[str]:
        if path.name.lower().endswith(".gz"):
            with open(path, "rb") as f:
                if f.read(2) != b"\x1f\x8b":
                    return [f"path: '{path}' ends in .gz but is not gzip-compressed"]
        return []

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext) -> None:
        file, label = shown(path), self.source_label(path)
        is_gz = path.name.lower().endswith(".gz")
        array_file = path.name.lower().endswith((".json", ".json.gz"))
        try:
            with (gzip.open(path, "rb") if is_gz else open(path, "rb")) as f:
                for number, line in ctx.reporter.track(enumerate(f, 1), description=f"read {path.name}"):
                    if not line.strip():
                        continue
                    if array_file:
                        array_file = False  # only the first record can tell
                        if line.lstrip().startswith(b"["):
                            raise SourceError(
                                f"{file} holds a JSON array, not JSON lines: convert it to one object per line, "
                                "or read it with type: hf_files, builder: json"
                            )
                    try:
                        record = json.loads(line)
                    except json.JSONDecodeError as e:
                        norm.reject(f"{name}:{number}", "bad_json", f"{file} line {number}: not valid JSON ({e.msg} at column {e.colno})", file, number, line)
                        continue
                    except UnicodeDecodeError:
                        norm.reject(f"{name}:{number}", "bad_json", f"{file} line {number}: not valid UTF-8 text", file, number, line)
                        continue
                    norm.add(record, file, "line", number, f"{name}:{number}", label, raw=line)
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"cannot read {file}: {e}") from None


class CsvConfig(FileSourceConfig):
    delimiter: str = Field(",", min_length=1, max_length=1)
    """The field separator (',' for CSV, a tab for TSV)."""


class CsvSource(FileSource):
    """A CSV file with a header line; every value is text."""

    type: ClassVar[str] = "csv"
    Config: ClassVar[type[FileSourceConfig]] = CsvConfig
    extensions = (".csv", ".csv.gz")
    config: CsvConfig

    def _open(self, path: Path) -> io.TextIOBase:
        if path.name.lower().endswith(".gz"):
            return gzip.open(path, "rt", encoding="utf-8-sig", newline="")
        return open(path, encoding="utf-8-sig", newline="")

    def check_file(self, path: Path) -> list[str]:
        try:
            with self._open(path) as f:
                header = next(csv.reader(f, delimiter=self.config.delimiter), None)
        except (OSError, EOFError, zlib.error, UnicodeDecodeError, csv.Error) as e:
            return [f"path: cannot read '{path}' as CSV ({e})"]
        if header is None:
            return []
        return missing_columns(self.config, header, f"'{path}'")

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext) -> None:
        file, label = shown(path), self.source_label(path)
        reader = None
        try:
            with self._open(path) as f:
                reader = csv.reader(f, delimiter=self.config.delimiter)
                header = next(reader, None)
                while header == []:  # blank lines before the header
                    header = next(reader, None)
                if header is None:
                    return
                end = reader.line_num
                for row in ctx.reporter.track(reader, description=f"read {path.name}"):
                    number, end = end + 1, reader.line_num  # the line the record starts on
                    if not row or (len(row) == 1 and not row[0].strip()):
                        continue  # a blank line
                    if len(row) > len(header):
                        raw = json.dumps(row, ensure_ascii=False)
                        detail = f"{file} line {number}: {len(row)} fields, but the header has {len(header)}"
                        norm.reject(f"{name}:{number}", "bad_csv", detail, file, number, raw)
                        continue
                    # A short row lacks its last columns: those fields are missing, not empty.
                    norm.add(dict(zip(header, row)), file, "line", number, f"{name}:{number}", label)
        except (UnicodeDecodeError, csv.Error) as e:
            at = f" near line {reader.line_num + 1}" if reader is not None else ""
            raise SourceError(f"cannot read {file}{at} as UTF-8 CSV: {e}") from None
        except (OSError, EOFError, zlib.error) as e:
            raise SourceError(f"cannot read {file}: {e}") from None


class ParquetConfig(FileSourceConfig):
    pass


class ParquetSource(FileSource):
    """Parquet files, read in record batches."""

    type: ClassVar[str] = "parquet"
    Config: ClassVar[type[FileSourceConfig]] = ParquetConfig
    extensions = (".parquet",)

    def check_file(self, path: Path) -> list[str]:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowException, OSError) as e:
            return [f"path: '{path}' is not a readable Parquet file ({e})"]
        return missing_columns(self.config, schema.names, f"'{path}'")

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext) -> None:
        file, label = shown(path), self.source_label(path)
        try:
            pf = pq.ParquetFile(path)
            schema = pf.schema_arrow
            norm.keep_types.update({k: schema.field(k).type for k in norm.keep_get if k in schema.names})

            def records():
                for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                    yield from batch.to_pylist()

            rows = ctx.reporter.track(enumerate(records(), 1), total=pf.metadata.num_rows, description=f"read {path.name}")
            for number, record in rows:
                norm.add(record, file, "row", number, f"{name}:{number}", label)
        except (pa.ArrowException, OSError) as e:
            raise SourceError(f"cannot read {file} as Parquet: {e}") from None
