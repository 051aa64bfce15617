"""Sources read through Hugging Face ``datasets``, from local files only (no Hub access).

* ``hf_disk``: a folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``
  (a DatasetDict needs ``split``).
* ``hf_files``: ``datasets.load_dataset(builder, data_files=...)`` with a packaged
  builder (json, csv, parquet, text); a directory holds the files whose suffixes the formats
  table (``formats.FORMATS``) gives that builder (csv: ``.csv``, ``.csv.gz``). Each file is
  loaded on its own so every row knows its file and row number; local data files always form
  the "train" split.
  The builders read a file whole or not at all: one broken JSON line fails the file
  (``SourceError``). The ``jsonl`` source rejects such lines one by one instead.

Default ids are ``<name>:<row>`` with 1-based row numbers; ``<name>`` is the folder
name (``folder/split`` for a DatasetDict) or the data file's stem.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, ClassVar, Literal

from ..errors import CurateError, SourceError
from ..stage import StageContext
from ..store import BLOCK_ROWS
from .base import Source, SourceOutput, suggest
from .files import FileSource
from .formats import BATCH_ROWS, FORMATS, Format
from .normalise import FileSourceConfig, Normaliser, missing_columns
from .paths import shown


def _datasets():
    import datasets  # heavy import: only when a hf source is used

    return datasets


@contextmanager
def _quiet(datasets: Any):
    """No tqdm bars from datasets inside our reporter's progress."""
    was_disabled = datasets.are_progress_bars_disabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets.enable_progress_bars()


def _read_dataset(ds: Any, file: str, name: str, label: str, norm: Normaliser, ctx: StageContext, description: str) -> None:
    schema = ds.features.arrow_schema
    norm.keep_types.update({k: schema.field(k).type for k in norm.keep_get if k in schema.names})

    def records():
        for batch in ds.with_format("arrow").iter(batch_size=BATCH_ROWS):
            yield from batch.to_pylist()

    for number, record in ctx.reporter.track(enumerate(records(), 1), total=len(ds), description=description):
        norm.add(record, file, "row", number, f"{name}:{number}", label)


class HfDiskConfig(FileSourceConfig):
    path: str
    """A folder written by `save_to_disk`."""
    split: str | None = None
    """Which split of a saved DatasetDict to read (required for a DatasetDict)."""


class HfDiskSource(Source):
    """A local Hugging Face ``datasets`` folder written by ``save_to_disk``."""

    type: ClassVar[str] = "hf_disk"
    Config: ClassVar[type[HfDiskConfig]] = HfDiskConfig
    config: HfDiskConfig

    def _folder(self) -> Path:
        return Path(self.config.path).expanduser().absolute()

    def check(self) -> list[str]:
        problems = self._structure_problems()
        if problems:
            return problems
        folder = self._folder()
        return self._check_columns(folder / self.config.split if self.config.split else folder)

    def _structure_problems(self) -> list[str]:
        folder = self._folder()
        if not folder.is_dir():
            return [f"path: no folder '{folder}'" if not folder.exists() else f"path: '{folder}' is a file, not a save_to_disk folder"]
        if (folder / "dataset_dict.json").is_file():
            try:
                splits = json.loads((folder / "dataset_dict.json").read_text())["splits"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                return [f"path: '{folder}/dataset_dict.json' is unreadable ({e})"]
            if self.config.split is None:
                return [f"split: '{folder}' holds a DatasetDict; set split to one of: {', '.join(splits)}"]
            if self.config.split not in splits:
                return [f"split: '{folder}' has no split '{self.config.split}'{suggest(self.config.split, splits)} (splits: {', '.join(splits)})"]
            return []
        if not (folder / "state.json").is_file():
            return [f"path: '{folder}' is not a folder written by save_to_disk (no state.json or dataset_dict.json)"]
        if self.config.split is not None:
            return [f"split: '{folder}' holds a single Dataset with no splits; remove split"]
        return []

    def _check_columns(self, folder: Path) -> list[str]:
        try:
            features = json.loads((folder / "dataset_info.json").read_text())["features"]
        except (OSError, ValueError, KeyError, TypeError):
            return []  # no column list to check against; read() will tell
        return missing_columns(self.config, list(features), f"'{folder}'")

    def _check_or_raise(self) -> Path:
        problems = self._structure_problems()
        if problems:
            raise SourceError("; ".join(problems))
        return self._folder()

    def _name(self, folder: Path) -> str:
        return f"{folder.name}/{self.config.split}" if self.config.split else folder.name

    def input_files(self) -> list[tuple[str, Path]]:
        folder = self._check_or_raise()
        if self.config.split:  # only the split read (and the dict's index) decide the rows
            files = [folder / "dataset_dict.json", *(folder / self.config.split).rglob("*")]
        else:
            files = list(folder.rglob("*"))
        return [(str(f.relative_to(folder)), f) for f in sorted(f for f in files if f.is_file())]

    streams = True

    def read(self, ctx: StageContext | None = None, sink: Callable[[SourceOutput], None] | None = None,
             block_rows: int = BLOCK_ROWS) -> SourceOutput:
        """The normalised rows and rejects; with ``sink``, handed to it ``block_rows`` at a time
        as they are read (the folder's Arrow files are memory-mapped and read in batches: memory
        holds a block, not the dataset), and the return value is the rest."""
        ctx = ctx or StageContext()
        folder = self._check_or_raise()
        datasets = _datasets()
        try:
            ds = datasets.load_from_disk(str(folder / self.config.split if self.config.split else folder))
        except Exception as e:  # datasets raises many types here; all mean "cannot read it"
            raise SourceError(f"cannot read {shown(folder)} with datasets.load_from_disk: {e}") from None
        norm = Normaliser(self.config, ctx.reporter, sink, block_rows)
        name = self._name(folder)
        _read_dataset(ds, shown(folder), name, self.config.label or folder.name, norm, ctx, f"read {name}")
        return norm.output()


class HfFilesConfig(FileSourceConfig):
    builder: Literal["json", "csv", "parquet", "text"]
    """The packaged `datasets` builder that parses the files."""


class HfFilesSource(FileSource):
    """Local files parsed by a packaged ``datasets`` builder (``load_dataset``)."""

    type: ClassVar[str] = "hf_files"
    Config: ClassVar[type[HfFilesConfig]] = HfFilesConfig
    config: HfFilesConfig

    @property
    def formats(self) -> tuple[Format, ...]:
        return tuple(f for f in FORMATS.values() if f.builder == self.config.builder)

    def read_file(self, path: Path, name: str, norm: Normaliser, ctx: StageContext) -> None:
        datasets = _datasets()
        file = shown(path)
        try:
            with _quiet(datasets):
                ds = datasets.load_dataset(self.config.builder, data_files=[str(path)], split="train")
        except CurateError:
            raise
        except Exception as e:  # builders raise DatasetGenerationError, ArrowInvalid, ValueError...
            hint = "; the jsonl source rejects bad lines one by one" if self.config.builder == "json" else ""
            raise SourceError(f"cannot read {file} with the datasets {self.config.builder} builder: {e}{hint}") from None
        _read_dataset(ds, file, name, self.source_label(path), norm, ctx, f"read {path.name}")
