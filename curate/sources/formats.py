"""The file formats curate reads, in one table, and the one reader of their records.

Every reader of data files -- the file sources, data references (``refs``), decontaminate's
and evaluate's eval sets -- names a file's format with ``file_format`` and reads it with
``read_records``, so a suffix means the same thing everywhere.

=======  ========================  ==============================================  ===========
format   suffixes                  a record is                                     numbered by
=======  ========================  ==============================================  ===========
jsonl    .jsonl .jsonl.gz          one JSON value per line                         line
json     .json .json.gz            an item of the JSON array the file holds, or,   item (line)
                                   when it does not start with ``[``, one JSON
                                   value per line (as ``datasets``' json builder)
csv      .csv .csv.gz              a row under the header line, {column: text};    line it
                                   a short row lacks its last columns              starts on
parquet  .parquet                  a row, {column: value}                          row
text     .txt .txt.gz              a non-blank line, stripped, as a string         line
=======  ========================  ==============================================  ===========

A ``.gz`` file is gzip-compressed and read as the format of the suffix before it. Blank lines
are not records. Text is UTF-8 (a leading byte-order mark is ignored).

Input that cannot be read at all (a missing file, bad gzip, a CSV or text file that is not
UTF-8, a broken JSON array, a file that is not Parquet) raises ``SourceError`` naming the file
(and the line where there is one). A record that cannot be parsed -- a JSON line that does not
parse, a CSV row with more fields than the header -- raises too, naming file and line, unless
the caller asks for such records back (``bad="yield"``): the sources reject them one by one.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import sys
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal, NamedTuple

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import SourceError
from .paths import shown

# Raise the stdlib's 128 KiB per-field limit so long CSV texts reach the sources' max_chars checks.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))

# Compression suffix -> how to open such a file as bytes, and the bytes such a file starts with.
def _gunzip(raw: IO[bytes]) -> IO[bytes]:
    """A gzip stream over ``raw`` that closes ``raw`` when it is closed."""
    stream = gzip.GzipFile(fileobj=raw, mode="rb")
    stream.myfileobj = raw  # GzipFile closes its myfileobj (what gzip.open(path) sets) on close
    return stream


COMPRESSIONS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {".gz": _gunzip}
MAGIC = {".gz": b"\x1f\x8b"}
BATCH_ROWS = 8192  # Parquet rows decoded at a time
BOM = b"\xef\xbb\xbf"


class Record(NamedTuple):
    unit: str  # what ``number`` counts: "line", "row" or "item"
    number: int  # 1-based
    value: Any  # a dict (csv, parquet), a JSON value, a string (text); None for a bad record
    raw: bytes | str | None = None  # the text the record was parsed from (JSON lines, bad CSV rows)
    problem: tuple[str, str] | None = None  # (reason, message) of a record that could not be parsed

    def where(self, file: str) -> str:
        return f"{file} {self.unit} {self.number}"


@dataclass(frozen=True)
class Format:
    name: str
    suffix: str  # the uncompressed suffix
    record: str  # what one record is, for messages and docs
    source: str | None  # the source type (``SOURCES`` key) that reads it into canonical rows
    builder: str  # the ``datasets`` builder that parses it (``hf_files``)
    read: Callable[[Path, str, str], Iterator[Record]]  # (path, file as messages show it, CSV delimiter)
    compressible: bool = True  # Parquet compresses inside the file

    @property
    def suffixes(self) -> tuple[str, ...]:
        return (self.suffix, *(self.suffix + c for c in COMPRESSIONS)) if self.compressible else (self.suffix,)


# -- how each format is read -------------------------------------------------------------


def open_raw(path: Path) -> IO[bytes]:
    """A file's bytes as stored: a local file, or one behind a filesystem (``RemotePath``)."""
    return path.open_bytes() if hasattr(path, "open_bytes") else open(path, "rb")


def open_bytes(path: Path) -> IO[bytes]:
    """A file's bytes, decompressed by its name."""
    c = compression(path)
    return COMPRESSIONS[c](open_raw(path)) if c else open_raw(path)


def parquet_file(path: Path) -> pq.ParquetFile:
    """A Parquet file, local or behind a filesystem (``RemotePath``)."""
    if hasattr(path, "filesystem"):
        return pq.ParquetFile(path.path, filesystem=path.filesystem)  # opened (and closed) by pyarrow
    return pq.ParquetFile(path)


def open_text(path: Path) -> IO[str]:
    """A file (decompressed) as UTF-8 text, a byte-order mark dropped, newlines untranslated (as
    the csv module needs)."""
    return io.TextIOWrapper(open_bytes(path), encoding="utf-8-sig", newline="")


def _json_lines(path: Path, file: str, delimiter: str, maybe_array: bool = False) -> Iterator[Record]:
    with open_bytes(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            if maybe_array:
                maybe_array = False  # only the first non-blank line can tell
                if line.removeprefix(BOM).lstrip().startswith(b"["):
                    yield from _json_array(line + f.read(), number - 1, file)
                    return
            try:
                value = json.loads(line)
            except json.JSONDecodeError as e:
                yield Record("line", number, None, line, ("bad_json", f"not valid JSON ({e.msg} at column {e.colno})"))
            except UnicodeDecodeError:
                yield Record("line", number, None, line, ("bad_json", "not valid UTF-8 text"))
            else:
                yield Record("line", number, value, line)


def _json_array_or_lines(path: Path, file: str, delimiter: str) -> Iterator[Record]:
    return _json_lines(path, file, delimiter, maybe_array=True)


def _json_array(data: bytes, lines_before: int, file: str) -> Iterator[Record]:
    # One document: a broken array cannot be read item by item, so it always raises.
    try:
        items = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        raise SourceError(f"cannot read {file}: not valid UTF-8 text ({e.reason} at byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise SourceError(f"{file} line {lines_before + e.lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                          "a .json file holds one array of objects, or one object per line") from None
    for number, value in enumerate(items, 1):
        yield Record("item", number, value)


def _csv_rows(path: Path, file: str, delimiter: str) -> Iterator[Record]:
    with open_text(path) as f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            while header == []:  # blank lines before the header
                header = next(reader, None)
            if header is None:
                return
            end = reader.line_num
            for row in reader:
                number, end = end + 1, reader.line_num  # the line the record starts on (quoted fields span lines)
                if not row or (len(row) == 1 and not row[0].strip()):
                    continue  # a blank line
                if len(row) > len(header):
                    yield Record("line", number, None, json.dumps(row, ensure_ascii=False),
                                 ("bad_csv", f"{len(row)} fields, but the header has {len(header)}"))
                    continue
                # A short row lacks its last columns: those fields are missing, not empty.
                yield Record("line", number, dict(zip(header, row)))
        except (UnicodeDecodeError, csv.Error) as e:
            raise SourceError(f"cannot read {file} near line {reader.line_num + 1} as UTF-8 CSV: {e}") from None


def _text_lines(path: Path, file: str, delimiter: str) -> Iterator[Record]:
    with open_bytes(path) as f:
        for number, line in enumerate(f, 1):
            try:
                text = (line.removeprefix(BOM) if number == 1 else line).decode("utf-8").strip()
            except UnicodeDecodeError as e:
                raise SourceError(f"{file} line {number}: not valid UTF-8 text ({e.reason} at column {e.start + 1})") from None
            if text:
                yield Record("line", number, text)


def _parquet_rows(path: Path, file: str, delimiter: str) -> Iterator[Record]:
    try:
        with parquet_file(path) as pf:
            number = 0
            for batch in pf.iter_batches(batch_size=BATCH_ROWS):
                for value in batch.to_pylist():
                    number += 1
                    yield Record("row", number, value)
    except (pa.ArrowException, OSError) as e:
        raise SourceError(f"cannot read {file} as Parquet: {e}") from None


# -- the table ---------------------------------------------------------------------------

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("jsonl", ".jsonl", "one JSON value per line", "jsonl", "json", _json_lines),
        Format("json", ".json", "an item of one JSON array, or one JSON value per line", "jsonl", "json", _json_array_or_lines),
        Format("csv", ".csv", "a row under the header line", "csv", "csv", _csv_rows),
        Format("parquet", ".parquet", "a row", "parquet", "parquet", _parquet_rows, compressible=False),
        # No source type reads text files (hf_files with builder: text does, line by line too);
        # data references and eval sets read them here.
        Format("text", ".txt", "a non-blank line", None, "text", _text_lines),
    )
}


def file_name(path: str | Path) -> str:
    """The last part of a path, a URI's too."""
    return path.name if hasattr(path, "name") else Path(path).name


def suffixes(formats: Iterable[Format] | None = None) -> tuple[str, ...]:
    """Every suffix of ``formats`` (default: all), compressed ones included."""
    return tuple(s for f in (FORMATS.values() if formats is None else formats) for s in f.suffixes)


def format_of(path: str | Path, formats: Iterable[Format] | None = None) -> Format | None:
    """The format a file's name ends in (case-insensitive; the longest suffix wins), or None."""
    name = file_name(path).lower()
    found = [(s, f) for f in (FORMATS.values() if formats is None else formats) for s in f.suffixes if name.endswith(s)]
    return max(found, key=lambda sf: len(sf[0]))[1] if found else None


def unknown_format(path: str | Path, formats: Iterable[Format] | None = None) -> str:
    """The message for a file whose format is unknown: the file and the suffixes known."""
    return f"{path}: unknown file format (known suffixes: {', '.join(suffixes(formats))})"


def file_format(path: str | Path, formats: Iterable[Format] | None = None) -> Format:
    """The format of ``path``, from its name; ``SourceError`` naming the file and the known
    suffixes when it ends in none of them."""
    fmt = format_of(path, formats)
    if fmt is None:
        raise SourceError(unknown_format(path, formats))
    return fmt


def compression(path: str | Path) -> str | None:
    """The compression suffix a file's name ends in (``.gz``), or None."""
    name = file_name(path).lower()
    return next((c for c in COMPRESSIONS if name.endswith(c)), None)


def compression_problems(path: Path) -> list[str]:
    """A file compressed by its name that is not, found without reading the file."""
    c = compression(path)
    if c is None:
        return []
    try:
        with open_raw(path) as f:
            if f.read(len(MAGIC[c])) == MAGIC[c]:
                return []
    except OSError as e:
        return [f"path: cannot read '{path}' ({e.strerror or e})"]
    return [f"path: '{path}' ends in {c} but is not {c.lstrip('.')}-compressed"]


# -- the one reader ----------------------------------------------------------------------


def read_records(path: str | Path, fmt: Format | None = None, *, delimiter: str = ",",
                 bad: Literal["raise", "yield"] = "raise") -> Iterator[Record]:
    """The records of one file, lazily, in file order (see the table above).

    ``fmt`` defaults to the format the name ends in (``file_format``, which raises at once for
    an unknown one); a source reading a file the user named with another suffix passes its own.
    Compression always follows the name. ``delimiter`` is the CSV field separator.
    ``bad="yield"`` yields records that cannot be parsed, with ``problem`` set, instead of
    raising."""
    path = path if hasattr(path, "open_bytes") else Path(path)
    return _records(path, fmt or file_format(path), delimiter, bad)


def _records(path: Path, fmt: Format, delimiter: str, bad: str) -> Iterator[Record]:
    file = shown(path)
    try:
        for rec in fmt.read(path, file, delimiter):
            if rec.problem and bad == "raise":
                raise SourceError(f"{rec.where(file)}: {rec.problem[1]}")
            yield rec
    except (OSError, EOFError, zlib.error) as e:
        raise SourceError(f"cannot read {file}: {getattr(e, 'strerror', None) or e}") from None
