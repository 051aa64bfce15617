"""line_filter: C4's line-level cleaning, editing each text and rejecting what is left empty.

C4 (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a Unified
Text-to-Text Transformer", section 2.2) kept only lines ending in terminal punctuation and
holding at least three words, dropped lines mentioning Javascript and pages with "lorem
ipsum", a curly bracket or fewer than five sentences; datatrove's ``C4QualityFilter`` adds
citation markers, over-long words and cookie / terms-of-use lines, in this order (the first
rule that fires names a removed line):

=============================  =========================================================  =======
rule (config field)            a line is removed when                                      default
=============================  =========================================================  =======
max_word_length                it holds a word longer than this                            1000
(remove_citations)             -- "[1]", "[edit]", "[citation needed]" are cut from it     on
require_terminal_punctuation   it does not end in . ? ! " ' (or ends in "...")             on
min_words_per_line             it has fewer words                                          3
min_line_chars                 it has fewer characters (short menu and footer lines)       off
lorem_ipsum                    it holds "lorem ipsum" (``document``: the page is dropped)  document
javascript_lines               it mentions "javascript"                                    on
curly_bracket                  it holds "{" (``document``: the page is dropped)            document
policy_lines                   it holds "terms of use", "privacy policy", "cookie policy",  on
                               "uses cookies", "use of cookies" or "use cookies"
=============================  =========================================================  =======

Lines are ``str.splitlines()``, stripped; kept lines are joined by "\\n". After cleaning, a
page with fewer than ``min_sentences`` sentences (runs ending in . ! or ?) is rejected
(``too_few_sentences``); one left with no line at all is rejected with the rule that removed
most of its lines (the detail counts them all); a rejected row keeps its text as it came.
``stats``, summed over the input: ``lines_in`` = ``lines_kept`` + ``lines_removed_<rule>``
+ ``lines_in_rejected_rows``. The edit is in place: ``curate datasets diff`` shows it.
"""

from __future__ import annotations

import re
from collections import Counter
from functools import partial
from typing import Literal

import pyarrow as pa
from pydantic import Field

from ..errors import StageError
from ..records import default_text_field, shape_of, texts, with_response
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns

CITATION = re.compile(r"\[\d*\]|\[edit\]|\[citation needed\]", re.IGNORECASE)
END_PUNCTUATION = (".", "?", "!", '"', "'")
ELLIPSIS = "..."
POLICY = ("terms of use", "privacy policy", "cookie policy", "uses cookies", "use of cookies", "use cookies")
SENTENCE_END = re.compile(r"[.!?]+(?=\s|$)")
BATCH_ROWS = 500
RULES = ("too_long_word", "no_terminal_punctuation", "too_few_words", "too_short", "lorem_ipsum", "javascript",
         "curly_bracket", "policy")


class LineFilterConfig(StageConfig):
    field: str | None = None
    """The text to clean: text, a string column, or response (an SFT row's last assistant turn); None = response (SFT) or text."""
    max_word_length: int | None = Field(1000, ge=1)
    """Remove lines holding a word longer than this (datatrove); null: off."""
    remove_citations: bool = True
    """Cut Wikipedia-style citation markers ([1], [edit], [citation needed]) from lines."""
    require_terminal_punctuation: bool = True
    """Remove lines not ending in . ? ! " ' (C4), and lines ending in "..."."""
    min_words_per_line: int | None = Field(3, ge=1)
    """Remove lines with fewer words (C4: 3); null: off."""
    min_line_chars: int | None = Field(None, ge=1)
    """Remove lines with fewer characters; null: off."""
    lorem_ipsum: Literal["document", "line", "keep"] = "document"
    """Text holding "lorem ipsum": reject the page (C4), remove the line, or keep it."""
    javascript_lines: bool = True
    """Remove lines mentioning "javascript" (C4)."""
    curly_bracket: Literal["document", "line", "keep"] = "document"
    """Text holding "{": reject the page (C4), remove the line (code-heavy corpora), or keep it."""
    policy_lines: bool = True
    """Remove cookie and terms-of-use lines (datatrove's C4 filter)."""
    min_sentences: int | None = Field(5, ge=1)
    """Reject a page left with fewer sentences (C4: 5); null: off."""


class LineFilter(Stage):
    name = "line_filter"
    version = "1"
    Config = LineFilterConfig
    config: LineFilterConfig
    row_wise = True

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        field = self.config.field or default_text_field(table)
        sft = field == "response" and shape_of(table) == "sft"
        if not sft and (field not in table.column_names or not (pa.types.is_string(table.schema.field(field).type)
                                                              or pa.types.is_large_string(table.schema.field(field).type))):
            raise StageError(f"line_filter edits a text column or an SFT row's response; '{field}' is neither "
                             f"(pretraining rows have 'text'; columns: {', '.join(table.column_names)})")
        values = texts(table, field) if sft else [v or "" for v in table.column(field).to_pylist()]
        results = ctx.map_batches(partial(clean_texts, self.config), values, BATCH_ROWS, self.name)
        keep = [reason is None for _, reason, _, _ in results]
        cleaned = [text for text, _, _, _ in results]
        if sft:  # the last assistant turn edited, the rest of each conversation as it was
            rows = table.column("messages").to_pylist()
            edited = [with_response(m, t) if t != old else m for m, t, old in zip(rows, cleaned, values)]
            out = with_columns(table, {"messages": pa.array(edited, table.schema.field("messages").type)})
        else:
            out = with_columns(table, {field: pa.array(cleaned, table.schema.field(field).type)})
        stats: Counter = Counter()
        for _, _, _, counts in results:
            stats.update(counts)
        ordered = {"lines_in": stats["lines_in"], "lines_kept": stats["lines_kept"],
                   **{f"lines_removed_{r}": stats[f"lines_removed_{r}"] for r in RULES if stats[f"lines_removed_{r}"]},
                   "lines_in_rejected_rows": stats["lines_in_rejected_rows"]}
        return split(out, keep, [r for _, r, _, _ in results], [d for _, _, d, _ in results]).with_stats(ordered)


def clean_texts(c: LineFilterConfig, batch: list[str]) -> list[tuple[str, str | None, str | None, Counter]]:
    return [clean(c, text) for text in batch]


def clean(c: LineFilterConfig, text: str) -> tuple[str, str | None, str | None, Counter]:
    """(cleaned text, reason or None, detail, line counts) for one text. The counts balance:
    ``lines_in`` = ``lines_kept`` (in kept rows) + each ``lines_removed_<rule>`` +
    ``lines_in_rejected_rows`` (lines no rule removed, dropped with their row)."""
    removed: Counter = Counter()
    kept: list[str] = []
    lines = [s for s in map(str.strip, text.splitlines()) if s]
    verdict: tuple[str, str] | None = None
    for line in lines:
        rule = _line_rule(c, line)
        if rule == "citation-stripped":
            line = CITATION.sub("", line).strip()
            rule = _line_rule(c, line, cited=True) if line else "too_few_words"
        if rule in ("lorem_ipsum", "curly_bracket") and getattr(c, rule) == "document":
            what = '"lorem ipsum"' if rule == "lorem_ipsum" else '"{"'
            verdict = rule, f"a line holds {what} (C4 drops the page)"
            break
        if rule is not None:
            removed[rule] += 1
        else:
            kept.append(line)
    cleaned = "\n".join(kept)
    if verdict is None and not kept:
        if removed:
            rule, _ = max(removed.items(), key=lambda kv: (kv[1], -RULES.index(kv[0])))
            every = ", ".join(f"{r} {n}" for r, n in sorted(removed.items(), key=lambda kv: RULES.index(kv[0])))
            verdict = rule, f"every line removed: {every}"
        else:
            verdict = "empty", "no text"
    if verdict is None and c.min_sentences is not None:
        sentences = sum(len(SENTENCE_END.findall(line)) or 1 for line in kept)
        if sentences < c.min_sentences:
            verdict = "too_few_sentences", f"{sentences} sentences < {c.min_sentences} after cleaning"
    counts = Counter({f"lines_removed_{r}": n for r, n in removed.items()})
    counts["lines_in"] = len(lines)
    counts["lines_kept" if verdict is None else "lines_in_rejected_rows"] = len(lines) - sum(removed.values())
    if verdict is not None:
        return text, verdict[0], verdict[1], counts
    return cleaned, None, None, counts


def _line_rule(c: LineFilterConfig, line: str, cited: bool = False) -> str | None:
    """The first rule removing ``line`` ("citation-stripped": strip citations, then ask again)."""
    words = line.split()
    if c.max_word_length is not None and any(len(w) > c.max_word_length for w in words):
        return "too_long_word"
    if c.remove_citations and not cited and CITATION.search(line):
        return "citation-stripped"
    if c.require_terminal_punctuation and (not line.endswith(END_PUNCTUATION) or line.endswith(ELLIPSIS)):
        return "no_terminal_punctuation"
    if c.min_words_per_line is not None and len(words) < c.min_words_per_line:
        return "too_few_words"
    if c.min_line_chars is not None and len(line) < c.min_line_chars:
        return "too_short"
    lower = line.lower()
    if c.lorem_ipsum != "keep" and "lorem ipsum" in lower:
        return "lorem_ipsum"
    if c.javascript_lines and "javascript" in lower:
        return "javascript"
    if c.curly_bracket != "keep" and "{" in line:
        return "curly_bracket"
    if c.policy_lines and any(p in lower for p in POLICY):
        return "policy"
    return None
