"""Final answers of model-written solutions: where the answer is, and whether two agree.

Extraction (``extract_answer``): the first rule that finds something wins.

1. ``boxed`` -- the content of the last ``\\boxed{...}`` or ``\\fbox{...}``, braces matched
   (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``); an unclosed box (a cut-off response) is
   skipped. The convention of MATH (Hendrycks et al. 2021) and Minerva (Lewkowycz et al.
   2022, "Solving Quantitative Reasoning Problems with Language Models").
2. ``answer_marker`` -- the last "final answer is", "answer is", "answer:", "# Answer" or
   "#### " (GSM8K, Cobbe et al. 2021), up to the end of its sentence or line. For math and
   number, the expression that clause starts with (see *leading expression*); a clause that
   starts with a word ("the answer is not obvious") gives nothing and the next rule runs.
3. ``conclusion`` (math, number) -- in the final sentence (the last sentence of the last
   non-empty line), the leading expression after the last "is", "are", "was", "were", "be"
   or "equals" that is followed by one; "equal to", "exactly", "only", "approximately",
   "therefore" and a few such words may come between. Solutions that end with a summary
   ("The number of such strings is 239.", "There are 29 valid strings of length 6 ...")
   state their answer this way; the last number of such a sentence is often a condition
   of the problem ("... differing by at most 1").
4. ``last_number`` (math, number) -- the last number of the response.

For ``text``, rules 3 and 4 are one: ``whole``, the final sentence, stripped.

A *number* is an integer, a decimal, an integer with thousands separators ("1,000"), a
fraction "a/b" or ``\\frac{a}{b}``, with an optional minus sign and an optional "%"; it
is not part of a word ("x2", "3x"), an exponent, a subscript or a longer fraction
("1/2^n"). A *leading expression* is a ``$...$`` / ``\\(...\\)`` span the text starts
with, else the longest start made of numbers, letters that are not a word, LaTeX commands
with their braces, function names (sqrt, floor...) and operators, ending before the first
word; "and" between two values is a comma ("a = 3 and b = -4" is "a = 3, b = -4").

Equivalence (``check_answer``, ``same_answer``) gives True, False, or None (unknown): None
when a side is missing, empty, or cannot be read as something comparable -- never False
because parsing failed.

* ``number``: both sides are read as exact rationals (``fractions.Fraction``) and compared
  exactly; when a side is written as a decimal, a relative difference up to 1e-6 is equal.
  "x%" is x/100, and when only one side has "%" its bare number also counts ("50%" equals
  "0.5" and "50"). "a = 5", "f(6) = 29" and "3 + 4 = 7" read as the value after the last
  "=", and one trailing word is a unit ("98 values" is 98).
* ``math``: two numbers compare as above; otherwise each side is read as a SymPy value --
  plain text ("n(n+1)/2", "max(0, n-1)") by SymPy's ``parse_expr``, LaTeX, lists and
  equations by math-verify (Hugging Face) -- and math-verify's ``verify`` decides, the
  reference as gold. Two exact expressions that differ at a test point are unequal without
  it (its ``simplify`` is the slow part). A side with words in it (4+ letters other than a
  function name, or a short English word: "is", "or", "the", "and", ...) is not an
  expression: unknown; other runs of up to 3 letters are products ("3abc"). A reading
  that lost a variable (math-verify reads "2^floor(n/2)" as 2) is no reading. ``C(n, k)``
  is a binomial coefficient; "x = y = 0" is "x = 0, y = 0". An error or a timeout inside
  math-verify is unknown.
* ``text``: NFKC, casefold, collapsed spaces, punctuation stripped at both ends, a leading
  "the", "a" or "an" dropped; then equal or not.

References (``check_answer``'s ``reference``, math and number) are often free text around
the value, as in CHAMP. A small set of rules finds it; True when any alternative matches:

* ", or equivalently X" and ", or an equivalent form such as X" give X as an alternative;
  ", or approximately X" gives X, matched to its written precision ("35.7%" matches
  anything within 0.05%);
* a trailing prose parenthetical is dropped: "0 (i.e., no such values)" is 0;
* "X is the only possible value" is X;
* a sentence that starts with "The" and has "is [equal to] X" is X ("The limit exists and
  is equal to 2/3").

The symbolic half (SymPy, math-verify, and the guards that keep it bounded) is in
``curate.algorithms.symbolic`` (the lexical layer both share: ``latex``).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from .latex import MATH_VERIFY_MISSING, PLAIN_FUNCTIONS, SHORT_WORDS, clean, closing_bracket, plain  # noqa: F401 (MATH_VERIFY_MISSING: re-exported)
from .symbolic import symbolic_equal

AnswerKind = Literal["math", "number", "text"]


@dataclass(frozen=True)
class Extracted:
    text: str  # the extracted final answer, as written (e.g. "\\frac{1}{2}", "29", "Yes")
    rule: str  # which rule found it: "boxed", "answer_marker", "conclusion", "last_number", "whole"


# -- extraction -------------------------------------------------------------------------

_INT = r"(?:\d{1,3}(?:(?:,|\{,\})\d{3})+(?!\d)|\d+)"
_DEC = rf"{_INT}(?:\.\d+)?"
_TEX_FRAC = rf"\\[dt]?frac\s*\{{\s*-?{_DEC}\s*\}}\s*\{{\s*{_DEC}\s*\}}"
NUMBER = re.compile(
    rf"(?<![\w.^/\\)\]}}])(?<!\^\{{)(?<!_\{{)(?<!sqrt\{{)"  # not in a word, exponent, subscript, root
    rf"-?(?:{_TEX_FRAC}|{_DEC}(?:/{_DEC})?)(?:\s*\\?%)?"
    rf"(?!\s*\^|[\w/]|\.\d)"  # not the base of a power, not "3x", not the start of "1/(n+1)"
)
BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
MARKER = re.compile(r"(?:final answer is|answer is|\banswer\s*:|#\s*answer\b|####)", re.IGNORECASE)
FILLERS = (
    "equal to", "exactly", "only", "just", "approximately", "about", "precisely", "then", "thus", "therefore", "also",
    "simply", "always", "given by", "the expression", "the formula", "the binomial coefficient", "the number", "the value",
)
COPULA = re.compile(
    r"\b(?:is|are|was|were|be|equals)\b(?:\s+(?:" + "|".join(f.replace(" ", r"\s+") for f in FILLERS) + r")\b)*:?",
    re.IGNORECASE,
)
SENTENCE_END = re.compile(r"(?<=[^.][.!?])\s+(?=[A-Z])")  # not after an ellipsis
MATH_SPAN = re.compile(r"\$\$?(.+?)\$\$?|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL)
_SHORT = "|".join(sorted(SHORT_WORDS, key=len, reverse=True))
_TOKEN = re.compile(
    r"\s*(?:\d+|\\[A-Za-z]+|\\[{}%,;!]|mod\b|(?:"
    + "|".join(sorted(PLAIN_FUNCTIONS, key=len, reverse=True))
    + r")(?=\s*[({])"
    + r"|and(?=\s+(?:\d|\\|\(|[A-Za-z](?![A-Za-z])))"  # "a = 3 and b = -4" is a list
    + rf"|(?![aAI]\s+[A-Za-z]{{2}})(?!(?i:{_SHORT})(?![A-Za-z]))[A-Za-z]{{1,3}}(?![A-Za-z])"
    + r"|[-+*/^_=!<>≤≥±×÷·()\[\]|,.'%])"
)


def extract_answer(response: str, kind: AnswerKind = "math") -> Extracted | None:
    """The final answer of ``response`` by the module's rules; None when there is none."""
    text = plain(response or "")
    if not text.strip():
        return None
    if (box := last_boxed(text)) is not None:
        return Extracted(box, "boxed")
    if (clause := marker_clause(text)) is not None:
        found = clause.strip() if kind == "text" else leading_expression(clause)
        if found:
            return Extracted(found, "answer_marker")
    sentence = final_sentence(text)
    if kind == "text":
        return Extracted(sentence, "whole") if sentence else None
    for m in reversed(list(COPULA.finditer(sentence))):
        if found := leading_expression(sentence[m.end():]):
            return Extracted(found, "conclusion")
    numbers = NUMBER.findall(text)
    return Extracted(numbers[-1].strip(), "last_number") if numbers else None


def last_boxed(text: str) -> str | None:
    """The content of the last closed, non-empty ``\\boxed{...}`` / ``\\fbox{...}``."""
    for m in reversed(list(BOX.finditer(text))):
        end = closing_bracket(text, m.end() - 1)
        if end is not None and text[m.end():end].strip():
            return text[m.end():end].strip()
    return None


def marker_clause(text: str) -> str | None:
    """The rest of the sentence (or line) after the last answer marker."""
    markers = list(MARKER.finditer(text))
    if not markers:
        return None
    rest = text[markers[-1].end():].lstrip(" \t:*\n")
    line = rest.split("\n", 1)[0]
    return SENTENCE_END.split(line, 1)[0]


def final_sentence(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return ""
    return SENTENCE_END.split(lines[-1])[-1].strip()


def leading_expression(text: str) -> str:
    """The math a text starts with: a ``$...$`` span, or numbers, letters and operators up
    to the first word; "" when it starts with a word."""
    text = text.lstrip(" \t:*")
    if m := MATH_SPAN.match(text):
        return next(g for g in m.groups() if g is not None).strip()
    pos = 0
    while m := _TOKEN.match(text, pos):
        pos = m.end()
        while pos < len(text) and text[pos] == "{":  # a command's (or a group's) braces, whole
            end = closing_bracket(text, pos)
            if end is None:
                break
            pos = end + 1
    expr = re.sub(r",?\s+and\s+", ", ", text[:pos].strip().rstrip(" .,;:([{*+-/=^_").strip())
    return expr if re.search(r"[\w\\]", expr) and _balanced(expr) else ""


def _balanced(s: str) -> bool:
    return all(s.count(a) == s.count(b) for a, b in ("()", "[]", "{}"))


# -- comparison -------------------------------------------------------------------------

@dataclass(frozen=True)
class Number:
    value: Fraction
    decimal: bool  # written with a decimal point: compared with a tolerance
    percent: bool  # written with "%": value is x/100, bare is x
    bare: Fraction


_NUMBER_FULL = re.compile(
    rf"(?P<sign>-)?\s*(?:\\frac\{{\s*(?P<fn>-?{_DEC})\s*\}}\{{\s*(?P<fd>{_DEC})\s*\}}|(?P<n>{_DEC})(?:\s*/\s*(?P<d>{_DEC}))?)"
    r"\s*(?P<pct>%)?(?:\s+[A-Za-z]{2,})?"
)
_LIST = re.compile(r",(?!\d{3}(?!\d))")  # a comma that is not a thousands separator


def parse_number(s: str) -> Number | None:
    s = clean(s)
    head, eq, tail = s.rpartition("=")
    if eq and head and head[-1] not in "<>!" and not _LIST.search(s):  # "f(6) = 29", not "x = 6, y = 5"
        s = tail.strip()
    m = _NUMBER_FULL.fullmatch(s)
    if not m:
        return None
    num, den = (m["fn"], m["fd"]) if m["fn"] is not None else (m["n"], m["d"] or "1")
    num, den = num.replace(",", ""), den.replace(",", "")
    # Through Decimal: int("...") refuses more than 4,300 digits, and answers can have more.
    num, den = Fraction(Decimal(num)), Fraction(Decimal(den))
    if den == 0:
        return None
    bare = num / den * (-1 if m["sign"] else 1)
    pct = m["pct"] is not None
    return Number(bare / 100 if pct else bare, "." in m[0], pct, bare)


def numbers_equal(p: Number, r: Number, tolerance: Fraction | None = None) -> bool:
    pairs = [(p.value, r.value)]
    if p.percent != r.percent:  # "50%" vs "50": the reference may have dropped the sign
        pairs.append((p.bare, r.bare))
    for a, b in pairs:
        if a == b:
            return True
        if tolerance is not None and abs(a - b) <= tolerance:
            return True
        if (p.decimal or r.decimal) and abs(a - b) <= Fraction(1, 10**6) * max(abs(a), abs(b)):
            return True
    return False


def precision(written: str, n: Number) -> Fraction:
    """Half a unit of the last written digit of an approximate value ("35.7%": 0.0005)."""
    digits = re.search(r"\.(\d+)", written)
    half = Fraction(1, 2 * 10 ** (len(digits[1]) if digits else 0))
    return half / 100 if n.percent else half


_SPLIT = re.compile(r",?\s+or\s+(equivalently|approximately|an equivalent form such as)\s+", re.IGNORECASE)
_PROSE_PAREN = re.compile(r"\s+\((?:i\.e\.|e\.g\.|that is|[A-Za-z]{2,}\s)")
_ONLY_VALUE = re.compile(r"(.+?)\s+(?:is|are) the only possible values?", re.IGNORECASE)
_THE_IS = re.compile(r"the\b.*\b(?:is|are)\s+(?:equal\s+to\s+)?(.+)", re.IGNORECASE)


def reference_alternatives(reference: str) -> list[tuple[str, bool]]:
    """(value, approximate) for each way the reference states its answer."""
    parts = _SPLIT.split(reference.strip())
    out = [(parts[0], False)] + [(parts[i + 1], parts[i].lower() == "approximately") for i in range(1, len(parts), 2)]
    alternatives = []
    for text, approx in out:
        text = text.strip().rstrip(".").strip()
        if (m := _PROSE_PAREN.search(text)) and m.start() > 0:
            text = text[: m.start()].strip()
        if (m := _ONLY_VALUE.fullmatch(text)) or (m := _THE_IS.fullmatch(text)):
            text = m[1]
        alternatives.append((text.strip(), approx))
    return alternatives


def check_answer(predicted: str | None, reference: str | None, kind: AnswerKind = "math") -> bool | None:
    """True/False when both can be parsed and compared; None (unknown) when the reference is missing/
    empty or either side cannot be parsed into something comparable. Never False just because parsing failed."""
    if not predicted or not predicted.strip() or not reference or not reference.strip():
        return None
    if kind == "text":
        return compare(predicted, reference, kind)
    verdicts = []
    for text, approx in reference_alternatives(reference):
        tolerance = None
        if approx and (r := parse_number(text)) is not None:
            tolerance = precision(text, r)
        verdicts.append(compare(predicted, text, kind, tolerance))
    return True if True in verdicts else False if False in verdicts else None


def same_answer(a: Extracted | None, b: Extracted | None, kind: AnswerKind = "math") -> bool | None:
    """Whether two model answers agree (used for self-consistency between a response and sampled responses);
    None when either is missing/unparseable."""
    if a is None or b is None:
        return None
    return compare(b.text, a.text, kind)


def compare(predicted: str, reference: str, kind: AnswerKind, tolerance: Fraction | None = None) -> bool | None:
    """One predicted value against one reference value (no reference rules)."""
    if kind == "text":
        p, r = normalize_text(predicted), normalize_text(reference)
        return p == r if p and r else None
    p, r = parse_number(predicted), parse_number(reference)
    if p is not None and r is not None:
        return numbers_equal(p, r, tolerance)
    if kind == "number":
        return None
    return symbolic_equal(predicted, reference)


def normalize_text(s: str) -> str:
    s = unicodedata.normalize("NFKC", clean(s)).casefold()
    s = re.sub(r"\s+", " ", s)
    s = re.sub(r"^[\W_]+|[\W_]+$", "", s)
    return re.sub(r"^(?:the|a|an)\s+", "", s).strip()


