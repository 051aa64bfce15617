"""Sources: the first step of every pipeline. Each reads its input into canonical rows
(``messages`` for SFT, ``text`` for pretraining, a stable ``id``) and a table of the
records it could not use, each with a reason.

``SOURCES`` is the one registry (name -> class); recipes name a source by its key and
``curate`` generates docs and validation from the config classes.

    from curate.sources import SOURCES
    out = SOURCES["jsonl"](path="data/in.jsonl", fields={"response": "solution"}).read()
    out.kept, out.rejected, out.rows_in
"""

from __future__ import annotations

from .base import REASONS, REJECT_SCHEMA, Source, SourceOutput
from .champ import ChampConfig, ChampSource
from .files import CsvConfig, CsvSource, JsonlConfig, JsonlSource, ParquetConfig, ParquetSource
from .hf import HfDiskConfig, HfDiskSource, HfFilesConfig, HfFilesSource
from .normalise import FileSourceConfig

SOURCES: dict[str, type[Source]] = {
    cls.type: cls for cls in (JsonlSource, ParquetSource, CsvSource, HfDiskSource, HfFilesSource, ChampSource)
}

__all__ = [
    "REASONS",
    "REJECT_SCHEMA",
    "SOURCES",
    "ChampConfig",
    "ChampSource",
    "CsvConfig",
    "CsvSource",
    "FileSourceConfig",
    "HfDiskConfig",
    "HfDiskSource",
    "HfFilesConfig",
    "HfFilesSource",
    "JsonlConfig",
    "JsonlSource",
    "ParquetConfig",
    "ParquetSource",
    "Source",
    "SourceOutput",
]
