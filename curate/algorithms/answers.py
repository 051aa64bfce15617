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
3. ``yes_no`` / ``negation`` (math, number) -- a final sentence (the last sentence of the
   last non-empty line) or answer clause that starts with "Yes" or "No" and a comma or full
   stop gives "Yes" / "No"; one that starts by denying ("There are no integer solutions to
   ...", "It is not possible to ...", "No such ...") gives "No" (``negation``). Only a
   yes/no reference ("No", "No integer solutions", "The sequence is not periodic") is
   compared with them, and "No" against a non-zero number is false.
4. ``conclusion`` (math, number) -- in the final sentence, the leading expression after the
   last "is", "are", "was", "were", "be" or "equals" that is followed by one; "equal to",
   "exactly", "only", "approximately", "therefore" and a few such words may come between.
   Solutions that end with a summary ("The number of such strings is 239.", "There are 29
   valid strings of length 6 ...") state their answer this way; the last number of such a
   sentence is often a condition of the problem ("... differing by at most 1").
5. ``last_number`` (math, number) -- the last number of the last paragraph that can be an
   answer: not one in a set ("{1, 2, ..., 99}"), a modulus ("(mod 13)"), a range bound
   ("from 1 to 99", "n <= 99", "less than 100") or a hyphenated word ("180-degree"); "at
   least 50" stays (a minimum is often stated so). Nothing
   when the final sentence is negated ("there is no smallest value" -- then the answer is
   "No", rule 3's) or says it could not decide ("cannot be determined", "I am not able").

For ``text``, rules 3 to 5 are one: ``whole``, the final sentence, stripped.

A *number* is an integer, a decimal, an integer with thousands separators ("1,000"), a
fraction "a/b" or ``\\frac{a}{b}``, with an optional minus sign and an optional "%"; it
is not part of a word ("x2", "3x", "180-degree"), an exponent, a subscript or a longer
fraction ("1/2^n"). A *leading expression* is a ``$...$`` / ``\\(...\\)`` span the text starts
with, else the longest start made of numbers, letters that are not a word, LaTeX commands
with their braces, function names (sqrt, floor...) and operators, ending before the first
word (a hyphenated word is one: "non-negative" gives nothing, never "non"); "and" between two values is a comma ("a = 3 and b = -4" is "a = 3, b = -4").

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
    rf"(?!\s*\^|[\w/]|\.\d|-[A-Za-z]{{2}})"  # not a power's base, not "3x", "1/(n+1)" or "180-degree"
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
    r"\s*(?:\d+(?!\d|-[A-Za-z]{2})|\\[A-Za-z]+|\\[{}%,;!]|mod\b|(?:"
    + "|".join(sorted(PLAIN_FUNCTIONS, key=len, reverse=True))
    + r")(?=\s*[({])"
    + r"|and(?=\s+(?:\d|\\|\(|[A-Za-z](?![A-Za-z])))"  # "a = 3 and b = -4" is a list
    + rf"|(?![aAI]\s+(?:[A-Za-z]{{2}}|\d+-[A-Za-z]{{2}}))(?!(?i:{_SHORT})(?![A-Za-z]))[A-Za-z]{{1,3}}(?![A-Za-z]|-[A-Za-z]{{2}})"
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
        if kind != "text" and (yes_no := YES_NO.match(clause.strip())):
            return Extracted(yes_no[1].capitalize(), "yes_no")
    sentence = final_sentence(text)
    if kind == "text":
        return Extracted(sentence, "whole") if sentence else None
    if yes_no := YES_NO.match(sentence):
        return Extracted(yes_no[1].capitalize(), "yes_no")
    if DENIAL.match(sentence) and not REFUSAL.search(sentence):  # "There are no integer solutions to ... = z^2."
        return Extracted("No", "negation")
    for m in reversed(list(COPULA.finditer(sentence))):
        if found := leading_expression(sentence[m.end():]):
            return Extracted(found, "conclusion")
    return last_number([line for line in text.splitlines() if line.strip()][-1], sentence)


def last_number(text: str, sentence: str) -> Extracted | None:
    """The fallback: the last number of ``text`` (the response's last paragraph: a number
    further up is a step, not the conclusion) that can be an answer, or None. Conservative:
    a negated final ``sentence`` states no value: its answer is "No" ("The number ... is not a
    prime number."), which only a yes/no reference is compared with ("there is no smallest
    value" never gives the 7 before it) -- unless it says the solver could not decide ("I am
    not able to solve this", "cannot be determined"): nothing; a number in a set ("{1, 2, ..., 99}"), a modulus ("(mod 13)"), a
    range bound ("from 1 to 99", "n <= 99", "less than 100") or a hyphenated word ("180-degree")
    is not an answer."""
    if NEGATION.search(sentence):
        return None if REFUSAL.search(sentence) else Extracted("No", "negation")
    for rule in NOT_ANSWERS:
        text = rule.sub(" ", text)
    numbers = NUMBER.findall(text)
    return Extracted(numbers[-1].strip(), "last_number") if numbers else None


YES_NO = re.compile(r"(?:(?:so|thus|therefore|hence|then)\s*,?\s+)?(yes|no)(?=\s*(?:[,.;:!]|\s[-–—]|$))", re.IGNORECASE)
DENIAL = re.compile(r"(?:(?:so|thus|therefore|hence|in conclusion)\s*,?\s+)?(?:it is (?:not possible|impossible)|"
                    r"there (?:is|are|exists?) no\b|no such\b)", re.IGNORECASE)
REFUSAL = re.compile(
    r"\b(?:I|we)\b[^.]*?(?:\bnot\b|n't\b|\bcannot\b|\bunable\b)|"
    r"\b(?:cannot|can't|unable to|not possible to|impossible to|not be)\s+(?:be\s+)?(?:determined?|solved?|found|find|"
    r"computed?|calculated?|conclude[d]?|say|decided?|answered|known)\b|"
    r"\b(?:more|further|additional)\s+(?:information|analysis|work|steps|calculation)|\bnot enough\b|\binsufficient\b",
    re.IGNORECASE)
NEGATION = re.compile(
    r"\b(?:no|not|none|never|neither|nor|cannot|impossible|unable|undefined|unbounded)\b|n't\b", re.IGNORECASE)
_SET = r"\\?\{[^{}]*(?:,|\.\.\.|…|\\[lc]?dots)[^{}]*\\?\}"
_VALUE = r"-?\d[\d,./]*"
NOT_ANSWERS = (
    re.compile(_SET),                                                                    # {1, 2, ..., 99}
    re.compile(rf"\(?\s*\\?p?mod(?:ulo)?\b\s*\{{?\s*{_VALUE}\s*\}}?\s*\)?", re.IGNORECASE),   # (mod 13), modulo 9
    re.compile(rf"\bfrom\s+{_VALUE}\s+(?:to|through|until)\s+{_VALUE}", re.IGNORECASE),         # from 1 to 99
    re.compile(rf"\bbetween\s+{_VALUE}\s+and\s+{_VALUE}", re.IGNORECASE),                        # between 1 and 99
    re.compile(rf"\b(?:less|more|greater|fewer|smaller|larger)\s+than(?:\s+or\s+equal\s+to)?\s+{_VALUE}",
               re.IGNORECASE),                                                           # less than 100
    re.compile(rf"(?:<=?|>=?|≤|≥|\\[lg]eq?\b|\\[lg]t\b)\s*{_VALUE}|{_VALUE}\s*(?:<=?|>=?|≤|≥|\\[lg]eq?\b|\\[lg]t\b)"),  # n <= 99
)


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
_AND_LIST = re.compile(r"(?<=[\w)\]}])\s*,?\s+and\s+(?=[-\d(\\])")  # "1, 4 and 9" is "1, 4, 9"
_ONLY_VALUE = re.compile(r"(.+?)\s+(?:is|are) the only possible values?", re.IGNORECASE)
_THE_IS = re.compile(r"the\b.*\b(?:is|are)\s+(?:equal\s+to\s+)?(.+)", re.IGNORECASE)


def reference_alternatives(reference: str) -> list[tuple[str, bool]]:
    """(value, approximate) for each way the reference states its answer."""
    parts = _SPLIT.split(_AND_LIST.sub(", ", reference.strip()))
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


def yes_or_no(reference: str) -> str | None:
    """"Yes" or "No" when a reference answers a yes/no question ("No", "Yes, and the sequence
    is ...", "No integer solutions", "It is not possible", "The sequence is not periodic"),
    else None."""
    text = reference.strip()
    if m := YES_NO.match(text):
        return m[1].capitalize()
    return "No" if NEGATIVE_REFERENCE.match(text) and not re.search(r"\d", text) else None


NEGATIVE_REFERENCE = re.compile(
    r"(?:no\b|it is not possible|it is impossible|impossible|there (?:is|are|exists?) no\b|"
    r"(?:the|such an?) [\w ]{1,40}? (?:does not exist|do not exist|is not\b|are not\b|cannot\b))", re.IGNORECASE)


def check_answer(predicted: str | None, reference: str | None, kind: AnswerKind = "math") -> bool | None:
    """True/False when both can be parsed and compared; None (unknown) when the reference is missing/
    empty or either side cannot be parsed into something comparable. Never False just because parsing failed.
    A yes/no answer ("Yes", "No") is compared with a yes/no reference (``yes_or_no``); "No" (a
    denial: "there is no smallest value") against a non-zero number is False, else unknown."""
    if not predicted or not predicted.strip() or not reference or not reference.strip():
        return None
    if kind == "text":
        return compare(predicted, reference, kind)
    if predicted in ("Yes", "No"):
        if (expected := yes_or_no(reference)) is not None:
            return predicted == expected
        # "there is no such value" against a value: wrong, unless the value is a count of 0
        values = [parse_number(text) for text, _ in reference_alternatives(reference)]
        return False if predicted == "No" and values and all(v is not None and v.value != 0 for v in values) else None
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


