"""Sources: the first step of every pipeline. Each reads its input into canonical rows
(``messages`` for SFT, ``text`` for pretraining, a stable ``id``) and a table of the
records it could not use, each with a reason.

``SOURCES`` is the one registry (name -> class); recipes name a source by its key and
``curate`` generates docs and validation from the config classes.

    from curate.sources import SOURCES
    out = SOURCES["jsonl"](path="data/in.jsonl", fields={"response": "solution"}).read()
    out.kept, out.rejected, out.rows_in

Every file is read through ``formats``: one table of file formats (a suffix means the same
to every source, data reference and eval set) and one record reader.
"""

from __future__ import annotations

from .base import REASONS, REJECT_SCHEMA, Source, SourceOutput
from .champ import ChampConfig, ChampSource
from .files import CsvConfig, CsvSource, JsonlConfig, JsonlSource, ParquetConfig, ParquetSource
from .formats import FORMATS, Format, file_format, read_records
from .hf import HfDiskConfig, HfDiskSource, HfFilesConfig, HfFilesSource
from .local_docs import LocalDocsConfig, LocalDocsSource
from .normalise import FileSourceConfig

SOURCES: dict[str, type[Source]] = {
    cls.type: cls for cls in (JsonlSource, ParquetSource, CsvSource, HfDiskSource, HfFilesSource, ChampSource, LocalDocsSource)
}

__all__ = [
    "FORMATS",
    "REASONS",
    "REJECT_SCHEMA",
    "SOURCES",
    "ChampConfig",
    "ChampSource",
    "CsvConfig",
    "CsvSource",
    "FileSourceConfig",
    "Format",
    "HfDiskConfig",
    "LocalDocsConfig",
    "LocalDocsSource",
    "HfDiskSource",
    "HfFilesConfig",
    "HfFilesSource",
    "JsonlConfig",
    "JsonlSource",
    "ParquetConfig",
    "ParquetSource",
    "Source",
    "SourceOutput",
    "file_format",
    "read_records",
]
