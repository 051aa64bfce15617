"""extract_text on real HTML: pydoc's pages of standard-library modules (the modules'
docstrings, written by Python's developers, inside pydoc's navigation tables)."""

from __future__ import annotations

import importlib
import pydoc

import pyarrow as pa

from curate.stage import StageContext
from curate.stages import ExtractText

MODULES = ["json", "csv", "textwrap", "difflib", "heapq", "bisect"]


def page(name: str) -> str:
    module = importlib.import_module(name)
    return pydoc.HTMLDoc().page(f"Python: {name}", pydoc.HTMLDoc().docmodule(module))


def test_a_pages_main_text_is_extracted_without_its_markup():
    table = pa.table({"id": MODULES, "text": [page(m) for m in MODULES]})
    out = ExtractText(html_column="html")(table, StageContext(workers=2))
    assert out.kept.column("id").to_pylist() == MODULES and len(out.rejected) == 0
    for name, text, html in zip(MODULES, out.kept.column("text").to_pylist(), out.kept.column("html").to_pylist()):
        # the page's words, not its markup: nearly every extracted word is in pydoc's plain-text rendering
        plain = set(pydoc.plaintext.document(importlib.import_module(name)).split())
        words = [w for w in text.replace("\xa0", " ").split() if any(c.isalpha() for c in w)]  # not table rules "|"
        assert len(words) > 100 and sum(w in plain for w in words) / len(words) > 0.9, name
        assert "<td" not in text and "</" not in text and "&nbsp;" not in text
        assert html.startswith("<!DOCTYPE html>") and len(text) < len(html)
    json_text = " ".join(out.kept.column("text").to_pylist()[0].split())
    assert "JSON (JavaScript Object Notation) <https://json.org> is a subset of JavaScript syntax" in json_text
    assert out.stats == {"extracted": len(MODULES)}


def test_what_is_not_a_page_is_rejected_with_its_reason_and_kept_as_it_came():
    empty_page = "<html><head><script>var x = 1;</script><style>p {color: red}</style></head><body></body></html>"
    rows = {"plain": "Just a sentence of plain text, no markup at all.", "binary": "\x00\x01\x02binary\x03" * 50,
            "empty": empty_page, "huge": "<html><body><p>" + "word " * 1_100_000 + "</p></body></html>",
            "good": page("json")}
    table = pa.table({"id": list(rows), "text": list(rows.values())})
    out = ExtractText()(table)
    assert out.kept.column("id").to_pylist() == ["good"]
    rejected = {r["id"]: r for r in out.rejected.to_pylist()}
    assert {k: r["reason"] for k, r in rejected.items()} == {
        "plain": "not_html", "binary": "binary", "empty": "no_text_extracted", "huge": "too_large"}
    assert all(rejected[k]["text"] == rows[k] for k in rejected)  # the original, as it came
    assert out.stats == {"extracted": 1, "not_html": 1, "binary": 1, "no_text_extracted": 1, "too_large": 1}


def test_plain_documents_pass_unchanged_with_non_html_keep():
    plain = "Just a sentence of plain text, no markup at all; <alice@example.org> wrote it."
    table = pa.table({"id": ["plain", "page", "binary"], "text": [plain, page("json"), "\x00\x01binary" * 50]})
    out = ExtractText(non_html="keep")(table)
    assert out.kept.column("id").to_pylist() == ["plain", "page"]
    assert out.kept.column("text").to_pylist()[0] == plain
    assert "<td" not in out.kept.column("text").to_pylist()[1]
    assert out.rejected.column("reason").to_pylist() == ["binary"]
    assert out.stats == {"extracted": 1, "kept_plain": 1, "binary": 1}


def test_a_page_over_the_time_limit_is_a_reject_and_the_run_goes_on():
    table = pa.table({"id": ["slow", "also"], "text": [page("difflib"), page("json")]})
    out = ExtractText(timeout_s=0.0005)(table)  # both pages take tens of milliseconds
    assert set(out.rejected.column("reason").to_pylist()) == {"extraction_timeout"}
    assert len(ExtractText()(table).kept) == 2
