"""Symbolic equivalence of two answers that are not plain numbers ("2^n" and "2^{n}",
"\\sqrt{2}" and "sqrt(2)", "n(n+1)/2" and "\\frac{n(n+1)}{2}"), for ``curate.algorithms.answers``.

Simple LaTeX is rewritten to plain text and read with SymPy's ``parse_expr`` first
(math-verify misreads plain text: "2^floor(n/2)" becomes 2, "max(0, n-1)" becomes m*a*x,
and it is about 20x slower); math-verify (Hugging Face) parses the rest and its ``verify``
decides. Guards keep every comparison bounded: a reading that loses a variable is no
reading; expressions that take clearly different values at a test point are unequal
without SymPy's slow ``simplify``; powers and factorials of huge numbers are refused.

math-verify times its work out with ``signal.alarm``, which Python allows only in the main
thread: there (in any process) each parse and comparison gets ``TIMEOUT_S``; in another
thread it runs without a timeout, the size guards above bounding it.
"""

from __future__ import annotations

import re
import threading
from functools import lru_cache
from typing import Any

from ..errors import StageError
from .latex import BINOM, MATH_VERIFY_MISSING, PLAIN_FUNCTIONS, SHORT_WORDS, TIMEOUT_S, clean, closing_bracket

_WORD = re.compile(r"(\\?)([A-Za-z]+)(\(?)")


def too_big(s: str) -> bool:
    """A power whose exponent holds a power, a factorial or a 6-digit number, or a factorial
    of such: SymPy would compute it for minutes, so it is not compared."""
    for m in re.finditer(r"[\^!]", s):
        if m[0] == "^":
            start = m.end() + (len(s[m.end():]) - len(s[m.end():].lstrip()))
            end = closing_bracket(s, start) if s[start:start + 1] in ("{", "(") else None
            arg = s[start:end] if end is not None else re.match(r"-?\w*", s[start:])[0]
        else:
            before = s[:m.start()].rstrip()
            opening = {")": "(", "}": "{"}.get(before[-1:])
            arg = before[before.rfind(opening):] if opening else re.search(r"\w*$", before)[0]
        if re.search(r"[\^!]|\d{6}", arg):
            return True
    return False


def require_math_verify() -> Any:
    try:
        import math_verify
    except ImportError:
        raise StageError(MATH_VERIFY_MISSING) from None
    return math_verify


def expression_letters(s: str) -> set[str] | None:
    """The variables ``s`` must keep when read (single letters, "ab" being a times b, not in a
    subscript nor a function's name as in "f(x)"); None when ``s`` holds words."""
    letters = set()
    for m in _WORD.finditer(s):
        slash, word, call = m.groups()
        if slash or word in PLAIN_FUNCTIONS:
            continue
        if len(word) > 3 or word.lower() in SHORT_WORDS:
            return None
        if not (call and len(word) == 1) and not re.search(r"_\{?$", s[: m.start()]):
            letters.update(word)
    return letters


@lru_cache(maxsize=8192)
def parse_math(s: str) -> Any:
    """``s`` as a SymPy object, or None when it is not an expression or cannot be read.

    Plain text ("n(n+1)/2", "2^floor(n/2)*floor(n/2)!", "max(0, n-1)") and the LaTeX that
    ``latex_to_plain`` rewrites go through SymPy's ``parse_expr``, which reads function calls
    (math-verify reads "max(a, b)" as m*a*x and "2^floor(n/2)" as 2) at a twentieth of the
    cost; other LaTeX, lists, equations and whatever ``parse_expr`` cannot read go through
    math-verify. A reading that lost a variable of the
    text is a partial one: not an expression."""
    s = clean(s)
    parts = [p.strip() for p in s.split("=")]
    if len(parts) > 2 and "," not in s and all(re.fullmatch(r"[A-Za-z]", p) for p in parts[:-1]):
        s = ", ".join(f"{v} = {parts[-1]}" for v in parts[:-1])  # "x = y = 0" is x = 0 and y = 0
    letters = expression_letters(s)
    if not s or letters is None or too_big(s):
        return None
    mv = require_math_verify()  # and SymPy, which it depends on
    letters = {x.lower() for x in letters} - {"e", "i"}  # e and i may be constants
    plain = latex_to_plain(s) if "\\" in s else s
    if plain is not None and (value := _sympy_expr(plain)) is not None and letters <= _names(value):
        return value
    from math_verify.errors import TimeoutException
    from sympy import Basic, MatrixBase

    try:
        latex = "$" + BINOM.sub(r"\\binom{\1}{\2}", s) + "$"
        parsed = mv.parse(latex, fallback_mode="no_fallback", parsing_timeout=_timeout(), raise_on_error=True)
    except (Exception, TimeoutException):  # noqa: BLE001 -- any failure to read is "not an expression"
        return None
    value = next((v for v in parsed if isinstance(v, (Basic, MatrixBase))), None)
    return value if value is not None and letters <= _names(value) else None


def _names(value: Any) -> set[str]:
    """The letters of a SymPy value's symbols ("x_2" has x)."""
    return set("".join(str(x) for x in getattr(value, "free_symbols", ())).lower())


_TEX_TEMPLATES = {"frac": "(({})/({}))", "binom": "C({}, {})", "sqrt": "sqrt({})"}
_TEX_SYMBOLS = {"cdot": "*", "times": "*", "div": "/", "pi": "pi"}


def latex_to_plain(s: str) -> str | None:
    """Simple LaTeX -- fractions, square roots, binomials, braces, \\cdot, \\pi -- as plain
    text for ``parse_expr`` ("\\frac{n(n+1)}{2}" is "((n(n+1))/(2))"); None for any other
    command (math-verify reads those)."""
    out, i = [], 0
    while i < len(s):
        if s[i] == "\\":
            m = re.match(r"\\([A-Za-z]+)\s*", s[i:])
            if m is None:
                return None
            name, i = m[1], i + m.end()
            if name in _TEX_SYMBOLS:
                out.append(f" {_TEX_SYMBOLS[name]} ")
                continue
            if name not in _TEX_TEMPLATES:
                return None
            args = []
            for _ in range(1 if name == "sqrt" else 2):
                end = closing_bracket(s, i) if s[i:i + 1] == "{" else None
                inner = latex_to_plain(s[i + 1:end]) if end is not None else None
                if inner is None:  # "\\frac12", "\\sqrt[3]{x}": left to math-verify
                    return None
                args.append(inner)
                i = end + 1
                while s[i:i + 1] == " ":
                    i += 1
            out.append(_TEX_TEMPLATES[name].format(*args))
        else:
            out.append({"{": "(", "}": ")"}.get(s[i], s[i]))
            i += 1
    return "".join(out)


_SAFE_PLAIN = re.compile(r"[0-9A-Za-z+\-*/^()!., ]+")


def _sympy_expr(s: str) -> Any:
    """A plain-text expression through SymPy's ``parse_expr`` (it evaluates Python, so only
    digits, operators and the letter runs ``expression_letters`` let through reach it), its
    symbols made math-verify's (lower case, real) so that the two compare. None for what
    is not a single expression (a list, an equation), left to math-verify."""
    if not _SAFE_PLAIN.fullmatch(s) or re.search(r"\.(?!\d)|\*\*", s):
        return None
    from sympy import E, Expr, Symbol, binomial, ceiling, floor
    from sympy.parsing.sympy_parser import (
        convert_xor,
        implicit_multiplication_application,
        parse_expr,
        standard_transformations,
    )

    try:
        value = parse_expr(s, local_dict={"C": binomial, "ceil": ceiling, "floor": floor, "e": E},
                           transformations=(*standard_transformations, implicit_multiplication_application, convert_xor))
    except Exception:  # noqa: BLE001 -- parse_expr raises many kinds; all mean "not an expression"
        return None
    if not isinstance(value, Expr):
        return None
    return value.subs({x: Symbol(x.name.lower(), real=True) for x in value.free_symbols})


@lru_cache(maxsize=65536)
def symbolic_equal(predicted: str, reference: str) -> bool | None:
    r = parse_math(reference)
    p = parse_math(predicted) if r is not None else None
    if r is None or p is None:
        return None
    if differ_numerically(r, p):
        return False
    mv = require_math_verify()
    from math_verify.errors import TimeoutException

    try:
        return bool(mv.verify(r, p, timeout_seconds=_timeout(), raise_on_error=True))
    except (Exception, TimeoutException):  # noqa: BLE001 -- any failure to read or compare is "unknown"
        return None


def differ_numerically(a: Any, b: Any) -> bool:
    """Whether two exact, elementary expressions take clearly different values at a point (each
    symbol set to the same positive non-integer on both sides). Such expressions cannot be
    equal, so math-verify's ``simplify(a - b)``, the slow part of a comparison, is skipped;
    anything else (equal values, floats, equations, sets, a value that does not evaluate) is
    left to math-verify."""
    from sympy import Expr, Float, preorder_traversal

    if not all(isinstance(x, Expr) and all(_evaluable(n) for n in preorder_traversal(x)) for x in (a, b)):
        return False
    symbols = sorted(a.free_symbols | b.free_symbols, key=str)
    for base in ("1.3719", "2.2360"):  # a second point when the first does not evaluate (0/0, a pole)
        point = {x: Float(base, 30) + Float(k, 30) / 7 for k, x in enumerate(symbols)}
        try:  # SymPy floats: 4^1959 is beyond a Python float
            va, vb = a.evalf(30, subs=point), b.evalf(30, subs=point)
            gap, scale = abs(va - vb).evalf(30), (1 + abs(va) + abs(vb)).evalf(30)
            if gap.is_comparable and scale.is_comparable:
                return bool(gap > scale * Float("1e-9"))
        except (TypeError, ValueError, ArithmeticError, RecursionError):
            continue
    return False


@lru_cache(maxsize=1)
def _elementary() -> tuple[type, ...]:
    """What ``differ_numerically`` evaluates: arithmetic and the functions of school math,
    exactly written (no floats; a sum or a limit can take SymPy minutes to evaluate)."""
    import sympy as sp

    return (sp.Add, sp.Mul, sp.Pow, sp.Symbol, sp.Rational, sp.NumberSymbol, sp.factorial, sp.factorial2, sp.binomial,
            sp.floor, sp.ceiling, sp.exp, sp.log, sp.sin, sp.cos, sp.tan, sp.Abs, sp.Max, sp.Min, sp.gamma)


def _evaluable(node: Any) -> bool:
    """An elementary node, and no number of over 30,000 digits (slow to turn into a float)."""
    from sympy import Rational

    if isinstance(node, Rational):
        return max(abs(node.p), node.q).bit_length() <= 100_000
    return isinstance(node, _elementary())


def _timeout() -> int | None:
    """math-verify's timeouts use signal.alarm: only the main thread may set one."""
    return TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
