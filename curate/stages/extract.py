"""extract_text: HTML -> its main text, with trafilatura (Barbaresi 2021, "Trafilatura: A
Web Scraping Library and Command-Line Tool for Text Discovery and Extraction"), as FineWeb
and datatrove extract Common Crawl pages: ``favor_precision``, no comments, repeated
paragraphs dropped (datatrove's ``Trafilatura`` extractor settings).

The field holding the HTML is replaced by the extracted text (``html_column`` keeps the page
beside it). A row is rejected, its page kept as it came in the rejects, when:

* ``binary``: the field holds NUL or mostly control characters;
* ``not_html``: no HTML tag in its first 10,000 characters (plain text needs no extraction;
  ``non_html: keep`` passes such a row on as it is, for a pool of pages and plain documents);
* ``too_large``: the page is over ``max_chars`` (trafilatura's time and memory grow with it);
* ``extraction_timeout``: trafilatura took longer than ``timeout_s`` (a pathological page);
* ``no_text_extracted``: trafilatura found no main text (a page of navigation and scripts).
"""

from __future__ import annotations

import re
import signal
import threading
from contextlib import contextmanager
from functools import partial
from typing import Literal

import pyarrow as pa
from pydantic import Field

from ..errors import StageError
from ..records import default_text_field
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns

BATCH_ROWS = 100
TAG = re.compile(r"<\s*(?:!doctype|html|head|body|div|p|span|a|article|section|table|main|h[1-6]|ul|li|br)\b", re.I)


class ExtractTextConfig(StageConfig):
    field: str | None = None
    """The column holding the HTML (None: text)."""
    html_column: str | None = None
    """Keep each page's HTML in this column (null: only the extracted text is kept)."""
    include_tables: bool = True
    """Keep the text of HTML tables."""
    include_links: bool = False
    """Keep link targets in the text."""
    max_chars: int = Field(5_000_000, ge=1)
    """Reject pages longer than this (too_large)."""
    non_html: Literal["reject", "keep"] = "reject"
    """A row with no HTML tag: a not_html reject, or kept as it is (a pool of pages and plain documents)."""
    timeout_s: float | None = Field(10.0, gt=0)
    """Reject a page whose extraction takes longer (extraction_timeout); null: no limit."""


class ExtractText(Stage):
    name = "extract_text"
    version = "1"
    Config = ExtractTextConfig
    config: ExtractTextConfig
    row_wise = True

    def fingerprint_config(self) -> dict:
        """The config and trafilatura's version: another version extracts other text."""
        return {**super().fingerprint_config(), "trafilatura": _version()}

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        field = c.field or default_text_field(table)
        if field not in table.column_names or not pa.types.is_string(table.schema.field(field).type):
            raise StageError(f"extract_text: '{field}' is not a text column holding HTML "
                             f"(columns: {', '.join(table.column_names)})")
        try:
            import trafilatura  # noqa: F401  (here: a missing package is one clear error, not one per worker)
        except ImportError as e:
            raise StageError(f"extract_text needs trafilatura and its HTML cleaner: pip install 'curate[pretrain]' ({e})"
                             ) from None
        pages = [v or "" for v in table.column(field).to_pylist()]
        results = ctx.map_batches(partial(extract_pages, c), pages, BATCH_ROWS, self.name)
        keep = [reason is None for _, reason, _ in results]
        columns = {field: pa.array([text if reason is None else page for (text, reason, _), page in zip(results, pages)],
                                   pa.string())}
        if c.html_column:
            columns[c.html_column] = pa.array(pages, pa.string())
        out = with_columns(table, columns)
        plain = sum(1 for _, reason, detail in results if reason is None and detail == "plain")
        stats = {"extracted": sum(keep) - plain, **({"kept_plain": plain} if c.non_html == "keep" else {})}
        for _, reason, _ in results:
            if reason is not None:
                stats[reason] = stats.get(reason, 0) + 1
        return split(out, keep, [r for _, r, _ in results],
                     [None if r is None else d for _, r, d in results]).with_stats(stats)


def extract_pages(c: ExtractTextConfig, pages: list[str]) -> list[tuple[str | None, str | None, str | None]]:
    return [extract_page(c, page) for page in pages]


def extract_page(c: ExtractTextConfig, page: str) -> tuple[str | None, str | None, str | None]:
    """(main text, None, None), or (None, reason, detail)."""
    head = page[:10_000]
    controls = sum(1 for ch in head if ch < " " and ch not in "\t\n\r\f")
    if "\x00" in head or (head and controls > 0.3 * len(head)):
        return None, "binary", f"{controls:,} control characters in the first {len(head):,}"
    if not TAG.search(head):
        if c.non_html == "keep":
            return page, None, "plain"
        return None, "not_html", "no HTML tag in the first 10,000 characters"
    if len(page) > c.max_chars:
        return None, "too_large", f"{len(page):,} characters > max_chars {c.max_chars:,}"
    import trafilatura

    try:
        with _time_limit(c.timeout_s):
            text = trafilatura.extract(page, favor_precision=True, include_comments=False, deduplicate=True,
                                       include_tables=c.include_tables, include_links=c.include_links)
    except _Timeout:
        return None, "extraction_timeout", f"trafilatura ran over {c.timeout_s:g} s"
    if not text or not text.strip():
        return None, "no_text_extracted", "trafilatura found no main text"
    return text.strip(), None, None


class _Timeout(BaseException):
    """Not an ``Exception``: trafilatura catches those inside (and would go on extracting)."""


@contextmanager
def _time_limit(seconds: float | None):
    """Raise ``_Timeout`` after ``seconds`` (SIGALRM: only in a process's main thread; elsewhere, no limit)."""
    if seconds is None or threading.current_thread() is not threading.main_thread():
        yield
        return

    def expire(signum, frame):
        raise _Timeout

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("trafilatura")
    except importlib.metadata.PackageNotFoundError:
        raise StageError("extract_text needs trafilatura: pip install 'curate[pretrain]'") from None
