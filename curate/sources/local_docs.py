"""``local_docs``: real documents this machine already holds, as pretraining rows -- the
embedded pool of ``recipes/pretrain_docs.yaml``, as CHAMP is the SFT demo's.

Three kinds, each written by people (nothing generated here):

* ``metadata``: the long description in the METADATA of every installed Python
  distribution (its README on PyPI), one document per distribution;
* ``doc``: the files under ``/usr/share/doc`` and ``/usr/share/common-licenses`` (READMEs,
  changelogs, copyright notices, the HTML manuals some packages ship; ``.gz`` read), one
  document per file, HTML kept as HTML (``format: html``) for ``extract_text``;
* ``locale``: the gettext catalogues under ``/usr/share/locale/<lang>/LC_MESSAGES/*.mo``,
  one document per catalogue: its translated messages, one per line, written by that
  language's translators (``declared_lang`` holds the folder's language);
* ``pydoc``: the plain-text documentation pydoc renders for each module of ``PYDOC_MODULES``
  (a fixed list of well-documented standard-library modules): their docstrings, written by
  Python's developers -- the pretraining demo's examples of documents to keep.

Rows: ``id`` (``kind:name``), ``text``, ``source`` (the kind), ``format`` (``text`` or
``html``), ``path``, ``declared_lang`` (locale documents; null otherwise). A file that is
not UTF-8 text is a ``not_text`` reject, one over ``max_chars`` a ``text_too_long`` reject,
one under ``min_words`` a ``too_short`` reject -- each with its path; the run goes on.
What a machine holds differs between machines: the fingerprint is the files' contents, so
another machine's pool is another version.
"""

from __future__ import annotations

import gettext
import gzip
import importlib.metadata
import json
from pathlib import Path
from typing import Any, ClassVar, Literal

import pyarrow as pa
from pydantic import Field

from ..stage import StageConfig, StageContext
from .base import REJECT_SCHEMA, Source, SourceOutput

KINDS = ("metadata", "doc", "locale")  # the default; "pydoc" is asked for by name
ALL_KINDS = (*KINDS, "pydoc")
PYDOC_MODULES = (
    "argparse", "ast", "asyncio", "base64", "bisect", "calendar", "collections", "contextlib", "copy", "csv",
    "dataclasses", "datetime", "decimal", "difflib", "email", "enum", "fractions", "functools", "glob", "gzip",
    "hashlib", "heapq", "hmac", "html", "inspect", "io", "ipaddress", "itertools", "json", "logging", "lzma", "math",
    "mimetypes", "operator", "pathlib", "pickle", "pprint", "queue", "random", "re", "sched", "secrets", "shelve",
    "shlex", "shutil", "statistics", "string", "struct", "subprocess", "tarfile", "tempfile", "textwrap", "threading",
    "timeit", "tokenize", "traceback", "types", "typing", "unittest", "uuid", "warnings", "weakref", "zipfile",
)
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
NAMES = ("id", "text", "source", "format", "path", "declared_lang")


class LocalDocsConfig(StageConfig):
    kinds: list[Literal["metadata", "doc", "locale", "pydoc"]] = list(KINDS)
    """Which documents: metadata (installed distributions' descriptions), doc (/usr/share/doc), locale (.mo
    catalogues), pydoc (standard-library module documentation)."""
    doc_roots: list[str] = ["/usr/share/doc", "/usr/share/common-licenses"]
    """Folders read for ``doc`` (recursively, sorted)."""
    locale_root: str = "/usr/share/locale"
    """The folder of ``<lang>/LC_MESSAGES/*.mo`` catalogues read for ``locale``."""
    limit_per_kind: int | None = Field(None, ge=1)
    """At most this many documents of each kind (the first, in sorted order)."""
    min_words: int = Field(20, ge=0)
    """Documents with fewer words are too_short rejects."""
    max_chars: int = Field(5_000_000, ge=1)
    """Documents longer than this are text_too_long rejects."""


class LocalDocsSource(Source):
    """Real documents of this machine: distribution descriptions, /usr/share/doc, gettext catalogues."""

    type: ClassVar[str] = "local_docs"
    Config: ClassVar[type[LocalDocsConfig]] = LocalDocsConfig
    config: LocalDocsConfig

    def check(self) -> list[str]:
        return [] if self.input_files() else ["local_docs: this machine holds none of the documents asked for"]

    def input_files(self) -> list[tuple[str, Path]]:
        return [(f"{kind}:{name}", path) for kind, name, path in self._files()]

    def _files(self) -> list[tuple[str, str, Path]]:
        c = self.config
        out: list[tuple[str, str, Path]] = []
        if "metadata" in c.kinds:
            seen: set[str] = set()
            found = []
            for dist in importlib.metadata.distributions():
                name = (dist.metadata.get("Name") or "").lower().replace("_", "-")
                path = _metadata_path(dist)
                if name and path is not None and name not in seen:
                    seen.add(name)
                    found.append((name, path))
            out += [("metadata", n, p) for n, p in sorted(found)[: c.limit_per_kind]]
        if "doc" in c.kinds:
            files = []
            for root in c.doc_roots:
                base = Path(root)
                if base.is_dir():
                    files += [(str(p.relative_to(base.parent)), p) for p in sorted(base.rglob("*"))
                              if p.is_file() and not p.is_symlink()]
            out += [("doc", n, p) for n, p in files[: c.limit_per_kind]]
        if "locale" in c.kinds:
            base = Path(c.locale_root)
            files = sorted(base.glob("*/LC_MESSAGES/*.mo")) if base.is_dir() else []
            out += [("locale", str(p.relative_to(base)), p) for p in files[: c.limit_per_kind]]
        if "pydoc" in c.kinds:
            from importlib.util import find_spec

            found = []
            for name in PYDOC_MODULES:
                spec = find_spec(name)
                if spec is not None and spec.origin and Path(spec.origin).is_file():
                    found.append(("pydoc", name, Path(spec.origin)))
            out += found[: c.limit_per_kind]
        return out

    def read(self, ctx: StageContext | None = None) -> SourceOutput:
        ctx = ctx or StageContext()
        c = self.config
        cols: dict[str, list] = {n: [] for n in NAMES}
        rejects: dict[str, list] = {n: [] for n in REJECT_SCHEMA.names}
        files = self._files()
        for kind, name, path in ctx.reporter.track(files, total=len(files), description="read local documents"):
            rid = f"{kind}:{name}"
            text, lang, problem = _read(kind, name, path)
            if problem is None and len(text) > c.max_chars:
                problem = ("text_too_long", f"{len(text):,} characters, over max_chars {c.max_chars:,}")
            if problem is None and len(text.split()) < c.min_words:
                problem = ("too_short", f"{len(text.split())} words, under min_words {c.min_words}")
            if problem is not None:
                raw = json.dumps({"path": str(path), "bytes": path.stat().st_size})
                for key, value in zip(REJECT_SCHEMA.names, (rid, problem[0], f"{path}: {problem[1]}", str(path), 0, raw)):
                    rejects[key].append(value)
                continue
            fmt = "html" if path.name.lower().removesuffix(".gz").endswith(HTML_SUFFIXES) else "text"
            for key, value in zip(NAMES, (rid, text, kind, fmt, str(path), lang)):
                cols[key].append(value)
        kept = pa.table({n: pa.array(cols[n], pa.string()) for n in NAMES})
        return SourceOutput(kept, pa.table(rejects, schema=REJECT_SCHEMA), len(files))


def _metadata_path(dist: Any) -> Path | None:
    for name in ("METADATA", "PKG-INFO"):
        try:
            located = dist.locate_file(dist._path / name) if hasattr(dist, "_path") else None  # noqa: SLF001
        except Exception:  # noqa: BLE001 - a distribution of another kind: no file to hash
            located = None
        if located is not None and Path(located).is_file():
            return Path(located)
    return None


def _read(kind: str, name: str, path: Path) -> tuple[str, str | None, tuple[str, str] | None]:
    """(text, declared language, problem) of one document."""
    try:
        if kind == "locale":
            return "\n".join(mo_messages(path)), path.parent.parent.name, None
        if kind == "pydoc":
            import pydoc
            from importlib import import_module

            return pydoc.plaintext.document(import_module(name)), None, None
        raw = path.read_bytes()
        if kind == "doc" and path.suffix == ".gz":
            raw = gzip.decompress(raw)
        if kind == "metadata":
            from email.parser import BytesParser

            message = BytesParser().parsebytes(raw)
            body = message.get_payload() or message.get("Description") or ""
            return (body if isinstance(body, str) else ""), None, None
        if b"\0" in raw[:8192]:
            return "", None, ("not_text", "binary bytes (NUL)")
        return raw.decode("utf-8"), None, None
    except UnicodeDecodeError as e:
        return "", None, ("not_text", f"not UTF-8 text ({e.reason} at byte {e.start})")
    except (OSError, EOFError, gzip.BadGzipFile, ValueError, IndexError, KeyError, ImportError) as e:  # a catalogue gettext cannot parse, a module that does not import
        return "", None, ("not_text", f"unreadable ({type(e).__name__}: {e})")


def mo_messages(path: Path) -> list[str]:
    """The translated messages of a gettext catalogue, whitespace collapsed, in catalogue order."""
    with open(path, "rb") as f:
        catalogue = gettext.GNUTranslations(f)._catalog  # noqa: SLF001 - the stdlib's parsed catalogue
    out = []
    for english, translated in catalogue.items():
        if isinstance(english, str) and english and isinstance(translated, str) and translated != english:
            out.append(" ".join(translated.split()))
    return [m for m in out if m]
