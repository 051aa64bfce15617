"""The lexical layer of answer checking, shared by ``answers`` (extraction, numeric and
textual comparison) and ``symbolic`` (SymPy / math-verify equivalence): LaTeX delimiters and
wrappers removed, unicode math spelled out, bracket matching, and the word lists both use.
Its own module so that neither of the two imports the other's internals.
"""

from __future__ import annotations

import re

TIMEOUT_S = 5
MATH_VERIFY_MISSING = "verify with kind: math needs math-verify: pip install math-verify"
PLAIN_FUNCTIONS = frozenset({
    "sqrt", "cbrt", "floor", "ceil", "log", "ln", "exp", "sin", "cos", "tan", "cot", "sec", "csc", "arcsin", "arccos",
    "arctan", "mod", "gcd", "lcm", "max", "min", "pi", "binom",
})
# Short English words: a run of 1-3 letters is a product of variables ("3abc") unless it is one of these.
SHORT_WORDS = frozenset({
    "is", "or", "of", "to", "in", "at", "be", "an", "as", "if", "it", "by", "on", "no", "so", "we", "do", "he", "me",
    "my", "up", "us", "am", "go", "the", "and", "for", "all", "are", "not", "any", "has", "can", "yes", "its", "was",
    "but", "may", "one", "two", "six", "ten", "see", "set", "get", "use", "way", "per", "how", "why", "who", "off",
    "out", "our", "you", "she", "him", "her", "his", "had", "did", "let", "put", "say", "now", "new", "few", "own",
    "too", "via", "odd", "sum",
})
_UNICODE = str.maketrans({"\u2212": "-", "\u00a0": " ", "\u2009": " ", "²": "^2", "³": "^3", "π": "pi", "·": "*"})


def plain(text: str) -> str:
    return re.sub(r"√\s*(\d+|[A-Za-z](?![A-Za-z]))", r"sqrt(\1)", text.translate(_UNICODE)).replace("√", "sqrt")


def closing_bracket(text: str, start: int) -> int | None:
    """The index of the bracket closing the one at ``start``; None when it is not closed."""
    opening = text[start]
    closing = ")]}"["([{".index(opening)]
    depth = 0
    for i in range(start, len(text)):
        if text[i] in (opening, closing) and (i == start or text[i - 1] != "\\"):
            depth += 1 if text[i] == opening else -1
            if depth == 0:
                return i
    return None


_UNWRAP = re.compile(r"\\(?:text|textbf|textit|mathrm|mathbf|mbox|operatorname)\s*\{([^{}]*)\}")
_DELIMITERS = re.compile(r"\\?\$|\\[()\[\]]|\\left\b|\\right\b|\\[!,;: ]|\\displaystyle\b")
BINOM = re.compile(r"\bC\(\s*([^(),]+?)\s*,\s*([^(),]+?)\s*\)")


def clean(s: str) -> str:
    """LaTeX delimiters, spacing and text wrappers removed; what a value is read from."""
    s = _DELIMITERS.sub(" ", plain(s))
    s = _UNWRAP.sub(r"\1", s).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("\\%", "%").strip("*").replace("**", "^")  # markdown bold; Python's power
    return re.sub(r"\s+", " ", s).strip().rstrip(".,;: ").strip()
