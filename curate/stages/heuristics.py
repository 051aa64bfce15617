"""Rule-based quality and repetition filters from Gopher and C4.

Gopher's MassiveText filters (Rae et al. 2021, "Scaling Language Models: Methods,
Analysis & Insights from Training Gopher", section A.1.1 and Table A1) and the C4
page filters (Raffel et al. 2020, "Exploring the Limits of Transfer Learning with a
Unified Text-to-Text Transformer", section 2.2). Each rule is one config field named
for what it bounds; ``None`` turns it off. A rejected row's ``reason`` is the name of
the first rule that fired, in the order of the table below (cheap rules first, the
order Gopher applies them: quality, then repetition).

==============================================  ========================  =======
rule (config field)                              default                   from
==============================================  ========================  =======
min_chars / max_chars                            off / off                 -
min_words / max_words                            50 / 100,000              Gopher
min_mean_word_length / max_mean_word_length      3 / 10                    Gopher
max_symbol_word_ratio  ("#" and ellipses)        0.1                       Gopher
max_curly_bracket_ratio                          off                       C4
reject_lorem_ipsum                               on                        C4
min_alpha_word_fraction                          0.8                       Gopher
min_stop_words                                   2                         Gopher
max_bullet_lines_ratio                           0.9                       Gopher
max_ellipsis_lines_ratio                         0.3                       Gopher
min_lines_with_terminal_punctuation_fraction     off                       C4
max_duplicate_line_fraction                      0.30                      Gopher
max_duplicate_line_char_fraction                 0.20                      Gopher
max_duplicate_paragraph_fraction                 0.30                      Gopher
max_duplicate_paragraph_char_fraction            0.20                      Gopher
max_top_ngram_char_fraction    n = 2, 3, 4       0.20, 0.18, 0.16          Gopher
max_duplicate_ngram_char_fraction  n = 5..10     0.15, 0.14, ..., 0.10     Gopher
max_short_line_fraction  (lines <= 30 chars)     off (fineweb: 0.67)       FineWeb
max_line_duplicate_char_ratio                    off (fineweb: 0.01)       FineWeb
max_newline_word_ratio                           off (fineweb: 0.3)        FineWeb
==============================================  ========================  =======

``rule_set: fineweb`` is FineWeb's document filtering (Penedo et al. 2024, "The FineWeb
Datasets", section 3; datatrove's ``FineWebQualityFilter``): the Gopher rules above plus
lines ending in punctuation (``min_lines_with_terminal_punctuation_fraction`` 0.12; FineWeb
rejects at <= 0.12, here below it), short lines, characters in repeated lines (over all the
text's characters, newlines not counted: far stricter than Gopher's 0.2 over lines) and
newlines per word; a value given explicitly wins. FineWeb's C4 step, which edits lines, is
``line_filter`` (with ``require_terminal_punctuation: false``, as FineWeb runs it).

Definitions (one tokenisation, shared by every rule):

* **words** are whitespace-separated tokens (``str.split()``), used as they are (case
  and punctuation included) by the n-gram rules. A word's *length* counts its
  characters other than punctuation; a word is *alphabetic* if it holds a letter.
* **lines** are the stripped, non-empty pieces of ``text.split("\\n")``;
  **paragraphs** the stripped, non-empty pieces between blank lines.
* A duplicate line or paragraph is one equal to an earlier one (the first copy is
  not counted); its characters are the repeats' characters over all lines'.
* The n-gram rules count characters of words, without whitespace. The top n-gram
  fraction is the share of characters covered by the most frequent n-gram (the
  first to appear among ties), and 0 when no n-gram occurs twice. The duplicate
  n-gram fraction is the share of characters covered by n-grams that occur more
  than once; a character inside several overlapping duplicates counts once.
* ``min_stop_words`` counts *distinct* words among Gopher's eight (the, be, to, of,
  and, that, have, with) found as whole words ("the," counts, "other" does not),
  case-insensitively.
* ``max_symbol_word_ratio`` bounds ("#" count + "..." and "…" count) / words, one
  ratio for both symbols (Gopher bounds each; the sum is slightly stricter).
* C4 drops pages with any "{" and keeps only lines ending in terminal punctuation;
  here both are document-level fractions, off by default.

A ratio over words or lines is undefined for a text without any and then never
fires; an empty text is rejected by the length rules (``min_words`` by default).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any, Literal

import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from ..algorithms.textstats import Document
from ..records import default_text_field, texts
from ..stage import Stage, StageConfig, StageContext, StageOutput, split


FINEWEB = {"min_lines_with_terminal_punctuation_fraction": 0.12, "max_short_line_fraction": 0.67,
           "max_line_duplicate_char_ratio": 0.01, "max_newline_word_ratio": 0.3}


class HeuristicFilterConfig(StageConfig):
    rule_set: Literal["gopher", "fineweb"] = "gopher"
    """gopher: the rules' own defaults; fineweb: FineWeb's document rules on top (values given explicitly win)."""
    field: str | None = None
    """Text to judge: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    min_chars: int | None = None
    """Reject texts shorter than this many characters."""
    max_chars: int | None = None
    """Reject texts longer than this many characters."""
    min_words: int | None = 50
    """Reject texts with fewer whitespace-separated words (Gopher: 50)."""
    max_words: int | None = 100_000
    """Reject texts with more words (Gopher: 100,000)."""
    min_mean_word_length: float | None = 3.0
    """Reject texts whose mean word length (punctuation not counted) is below this (Gopher: 3)."""
    max_mean_word_length: float | None = 10.0
    """Reject texts whose mean word length (punctuation not counted) is above this (Gopher: 10)."""
    max_symbol_word_ratio: float | None = 0.1
    """Reject texts with more ("#" + "..." + "…") occurrences per word than this (Gopher: 0.1)."""
    max_curly_bracket_ratio: float | None = None
    """Reject texts with more "{" per character than this (C4 drops any "{": use 0)."""
    reject_lorem_ipsum: bool = True
    """Reject texts containing "lorem ipsum" (C4)."""
    min_alpha_word_fraction: float | None = 0.8
    """Reject texts where fewer words than this fraction hold a letter (Gopher: 0.8)."""
    min_stop_words: int | None = 2
    """Reject texts with fewer distinct words of: the, be, to, of, and, that, have, with (Gopher: 2)."""
    max_bullet_lines_ratio: float | None = 0.9
    """Reject texts where more lines than this fraction start with a bullet (Gopher: 0.9)."""
    max_ellipsis_lines_ratio: float | None = 0.3
    """Reject texts where more lines than this fraction end with "..." or "…" (Gopher: 0.3)."""
    min_lines_with_terminal_punctuation_fraction: float | None = None
    """Reject texts where fewer lines than this fraction end in . ! ? or a closing quote (C4, as a fraction)."""
    max_duplicate_line_fraction: float | None = 0.3
    """Reject texts where more lines than this fraction repeat an earlier line (Gopher: 0.3)."""
    max_duplicate_line_char_fraction: float | None = 0.2
    """Reject texts where repeated lines hold more than this fraction of line characters (Gopher: 0.2)."""
    max_duplicate_paragraph_fraction: float | None = 0.3
    """Reject texts where more paragraphs than this fraction repeat an earlier one (Gopher: 0.3)."""
    max_duplicate_paragraph_char_fraction: float | None = 0.2
    """Reject texts where repeated paragraphs hold more than this fraction of characters (Gopher: 0.2)."""
    max_top_ngram_char_fraction: dict[int, float] | None = {2: 0.20, 3: 0.18, 4: 0.16}
    """n -> largest share of characters the most frequent word n-gram may cover (Gopher: n = 2..4)."""
    max_duplicate_ngram_char_fraction: dict[int, float] | None = {
        5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10,
    }
    """n -> largest share of characters that repeated word n-grams may cover (Gopher: n = 5..10)."""
    max_short_line_fraction: float | None = None
    """Reject texts where at least this fraction of lines is short (<= short_line_chars; FineWeb: 0.67)."""
    short_line_chars: int = Field(30, ge=1)
    """A line this long or shorter is short (FineWeb: 30 characters)."""
    max_line_duplicate_char_ratio: float | None = None
    """Reject texts where repeated lines hold at least this share of all characters (FineWeb: 0.01)."""
    max_newline_word_ratio: float | None = None
    """Reject texts with more newlines per word than this (FineWeb: 0.3)."""

    @model_validator(mode="before")
    @classmethod
    def _rule_set(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("rule_set") == "fineweb":
            data = {**FINEWEB, **data}
        return data

    @field_validator(
        "min_alpha_word_fraction", "max_bullet_lines_ratio", "max_ellipsis_lines_ratio",
        "min_lines_with_terminal_punctuation_fraction", "max_duplicate_line_fraction",
        "max_duplicate_line_char_fraction", "max_duplicate_paragraph_fraction",
        "max_duplicate_paragraph_char_fraction", "max_short_line_fraction", "max_line_duplicate_char_ratio",
    )
    @classmethod
    def _is_fraction(cls, value: float | None) -> float | None:
        if value is not None and not 0 <= value <= 1:
            raise ValueError("must be a fraction between 0 and 1, or null to turn the rule off")
        return value

    @field_validator(
        "min_chars", "max_chars", "min_words", "max_words", "min_mean_word_length",
        "max_mean_word_length", "max_symbol_word_ratio", "max_curly_bracket_ratio", "min_stop_words",
        "max_newline_word_ratio",
    )
    @classmethod
    def _is_not_negative(cls, value: float | None) -> float | None:
        if value is not None and value < 0:
            raise ValueError("must be >= 0, or null to turn the rule off")
        return value

    @field_validator("max_top_ngram_char_fraction", "max_duplicate_ngram_char_fraction")
    @classmethod
    def _is_ngram_table(cls, value: dict[int, float] | None) -> dict[int, float] | None:
        for n, fraction in (value or {}).items():
            if n < 1:
                raise ValueError(f"n-gram size {n} must be >= 1 (map n-gram size to a fraction, e.g. {{5: 0.15}})")
            if not 0 <= fraction <= 1:
                raise ValueError(f"fraction {fraction} for {n}-grams must be between 0 and 1")
        return value

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> HeuristicFilterConfig:
        for low, high in (("min_chars", "max_chars"), ("min_words", "max_words"),
                          ("min_mean_word_length", "max_mean_word_length")):
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"{low}={lo} is above {high}={hi}; no text could pass")
        return self


# fields expand to one check per n, ascending.
RULES: tuple[tuple[str, str, Callable, str], ...] = (
    ("min_chars", "chars", Document.char_count, "<"),
    ("max_chars", "chars", Document.char_count, ">"),
    ("min_words", "words", Document.word_count, "<"),
    ("max_words", "words", Document.word_count, ">"),
    ("min_mean_word_length", "mean word length", Document.mean_word_length, "<"),
    ("max_mean_word_length", "mean word length", Document.mean_word_length, ">"),
    ("max_symbol_word_ratio", "symbol/word ratio", Document.symbol_word_ratio, ">"),
    ("max_curly_bracket_ratio", "curly bracket ratio", Document.curly_bracket_ratio, ">"),
    ("reject_lorem_ipsum", "", Document.has_lorem_ipsum, "is"),
    ("min_alpha_word_fraction", "alphabetic word fraction", Document.alpha_word_fraction, "<"),
    ("min_stop_words", "distinct stop words", Document.stop_word_count, "<"),
    ("max_bullet_lines_ratio", "bullet line fraction", Document.bullet_line_fraction, ">"),
    ("max_ellipsis_lines_ratio", "ellipsis line fraction", Document.ellipsis_line_fraction, ">"),
    ("min_lines_with_terminal_punctuation_fraction", "terminal punctuation line fraction",
     Document.terminal_punctuation_line_fraction, "<"),
    ("max_duplicate_line_fraction", "duplicate line fraction", Document.duplicate_line_fraction, ">"),
    ("max_duplicate_line_char_fraction", "duplicate line char fraction", Document.duplicate_line_char_fraction, ">"),
    ("max_duplicate_paragraph_fraction", "duplicate paragraph fraction", Document.duplicate_paragraph_fraction, ">"),
    ("max_duplicate_paragraph_char_fraction", "duplicate paragraph char fraction",
     Document.duplicate_paragraph_char_fraction, ">"),
    ("max_top_ngram_char_fraction", "top {n}-gram char fraction", Document.top_ngram_char_fraction, ">"),
    ("max_duplicate_ngram_char_fraction", "duplicate {n}-gram char fraction",
     Document.duplicate_ngram_char_fraction, ">"),
    ("max_short_line_fraction", "short line fraction", Document.short_line_fraction, ">="),
    ("max_line_duplicate_char_ratio", "repeated line char ratio", Document.line_duplicate_char_ratio, ">="),
    ("max_newline_word_ratio", "newline/word ratio", Document.newline_word_ratio, ">"),
)

Check = Callable[[Document], "str | None"]


def compile_rules(config: HeuristicFilterConfig) -> list[tuple[str, Check]]:
    """(reason, check) for each rule that is on, in ``RULES`` order; a check returns the
    rejection detail, or None when the document passes."""
    checks = []
    for name, stat, method, op in RULES:
        threshold = getattr(config, name)
        if threshold is None or threshold is False:
            continue
        if isinstance(threshold, dict):
            for n in sorted(threshold):
                checks.append((name, _bound(stat.format(n=n), method, op, threshold[n], n)))
        elif op == "is":
            checks.append((name, lambda doc, method=method: 'contains "lorem ipsum"' if method(doc) else None))
        else:
            if name == "max_short_line_fraction":
                method = partial(method, chars=config.short_line_chars)
            checks.append((name, _bound(stat, method, op, threshold)))
    return checks


def _bound(stat: str, method: Callable, op: str, threshold: float, n: int | None = None) -> Check:
    fires = {"<": float.__lt__, ">": float.__gt__, ">=": float.__ge__}[op]

    def check(doc: Document) -> str | None:
        # An n-gram statistic may be skipped (None) once it provably cannot exceed the threshold.
        value = method(doc) if n is None else method(doc, n, threshold)
        if value is None or not fires(float(value), float(threshold)):
            return None
        return f"{stat} {_show(value)} {op} {threshold}"

    return check


def _show(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:.4g}"


def judge(doc: Document, checks: list[tuple[str, Check]]) -> tuple[str, str] | None:
    """(reason, detail) of the first check that fires, or None if the document passes."""
    for reason, check in checks:
        detail = check(doc)
        if detail is not None:
            return reason, detail
    return None


class HeuristicFilter(Stage):
    name = "heuristic_filter"
    version = "1"
    Config = HeuristicFilterConfig
    row_wise = True
    config: HeuristicFilterConfig

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        values = texts(table, self.config.field or default_text_field(table))
        verdicts = ctx.map_batches(partial(judge_texts, self.config), values, description=self.name)
        keep = [v is None for v in verdicts]
        # Typed arrays, so the reason/detail columns are strings even when nothing is rejected.
        reasons = pa.array([v and v[0] for v in verdicts], pa.string())
        details = pa.array([v and v[1] for v in verdicts], pa.string())
        return split(table, keep, reasons, details)


def judge_texts(config: HeuristicFilterConfig, values: list[str]) -> list[tuple[str, str] | None]:
    """The verdict of every text in a batch (a module-level function so workers can run it)."""
    checks = compile_rules(config)
    ngram_sizes = {*(config.max_top_ngram_char_fraction or ()), *(config.max_duplicate_ngram_char_fraction or ())}
    return [judge(Document(text, ngram_sizes), checks) for text in values]
