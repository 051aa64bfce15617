"""Text statistics for quality rules: one ``Document`` per text, split once, each
statistic computed on first use and shared by the rules that need it.

Definitions (Gopher, Rae et al. 2021, Appendix A): words = whitespace-separated tokens;
lines = non-empty stripped lines; paragraphs = blocks separated by blank lines; the
duplicate n-gram character fraction counts the characters covered by n-grams that occur
more than once, without double-counting overlaps.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from itertools import accumulate, chain, compress
from operator import sub

STOP_WORDS = frozenset({"the", "be", "to", "of", "and", "that", "have", "with"})
# Dash and star bullets need a space after them, so "**bold**" and "-5" are not bullets.
BULLETS = ("•", "‣", "▪", "▫", "◦", "●", "○", "■", "□", "◆", "◇", "⁃", "➢", "➤", "►",
           "- ", "* ", "– ", "— ")
ELLIPSES = ("...", "…")
TERMINAL_PUNCTUATION = (".", "!", "?", '"', "'", "”", "’", "»", "。", "！", "？")
_ASCII_PUNCTUATION = string.punctuation.encode()
_OTHER_PUNCTUATION = "“”‘’«»–—…·"
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.split() splits ASCII on
_ASCII_LETTERS = string.ascii_letters.encode()
_ALPHA_TABLE = bytes(
    ord("a") if b in _ASCII_LETTERS else ord(" ") if b in _ASCII_WHITESPACE else b for b in range(256)
)
_ALPHA_DELETE = bytes(b for b in range(128) if b not in _ASCII_LETTERS and b not in _ASCII_WHITESPACE)
_LETTER = re.compile(r"[^\W\d_]").search
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


class Document:
    """One text, split once; each statistic is computed on first use and shared by the
    rules that need it, so a text rejected early costs only the statistics before it."""

    __slots__ = ("text", "_words", "_lines", "_paragraphs", "_lower", "_line_dups", "_paragraph_dups",
                 "_ngram_sizes", "_ngrams", "_ngram_steps", "_last_duplicate")

    def __init__(self, text: str, ngram_sizes: Iterable[int] = ()):
        self.text = text
        self._words = self._lines = self._paragraphs = self._lower = None
        self._line_dups = self._paragraph_dups = None
        # The n-gram statistics come from one pass over n = 2, 3, ... up to the largest
        # size the rules will ask for, computed as far as the first rule that needs them.
        self._ngram_sizes = frozenset(ngram_sizes)
        self._ngrams: dict[int, tuple[float, float]] = {}
        self._ngram_steps: Iterator[tuple[int, float, float]] | None = None
        self._last_duplicate = 1.0

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.text.split()
        return self._words

    @property
    def lines(self) -> list[str]:
        if self._lines is None:
            self._lines = [s for s in map(str.strip, self.text.split("\n")) if s]
        return self._lines

    @property
    def paragraphs(self) -> list[str]:
        if self._paragraphs is None:
            self._paragraphs = [s for s in map(str.strip, _PARAGRAPH_BREAK.split(self.text)) if s]
        return self._paragraphs

    def char_count(self) -> int:
        return len(self.text)

    def word_count(self) -> int:
        return len(self.words)

    def mean_word_length(self) -> float | None:
        """Mean count of non-punctuation characters per word."""
        if not self.words:
            return None
        text = self.text
        # Bytes translate counts ASCII punctuation in one C pass (it never occurs inside
        # a multi-byte UTF-8 sequence); the few non-ASCII marks are counted one by one.
        encoded = text.encode("utf-8", "surrogatepass")
        punctuation = len(encoded) - len(encoded.translate(None, _ASCII_PUNCTUATION))
        if not text.isascii():
            punctuation += sum(map(text.count, _OTHER_PUNCTUATION))
        return (sum(map(len, self.words)) - punctuation) / len(self.words)

    def symbol_word_ratio(self) -> float | None:
        if not self.words:
            return None
        text = self.text
        return (text.count("#") + text.count("...") + text.count("…")) / len(self.words)

    def curly_bracket_ratio(self) -> float | None:
        return self.text.count("{") / len(self.text) if self.text else None

    def has_lorem_ipsum(self) -> bool:
        return "lorem ipsum" in self._lowercase()

    def alpha_word_fraction(self) -> float | None:
        words = self.words
        if not words:
            return None
        if self.text.isascii():
            # Letters -> "a", whitespace -> " ", everything else deleted: each word with a
            # letter becomes one run of "a"s, so counting " a" counts those words.
            letters = (b" " + self.text.encode("ascii").translate(_ALPHA_TABLE, _ALPHA_DELETE)).count(b" a")
        else:
            letters = sum(map(bool, map(_LETTER, words)))
        return letters / len(words)

    def stop_word_count(self) -> int:
        """Distinct stop words that occur as whole words (not inside "other" or "theory")."""
        lower = self._lowercase()
        found = 0
        for word in STOP_WORDS:
            start = lower.find(word)
            while start >= 0:
                end = start + len(word)
                if (start == 0 or not lower[start - 1].isalnum()) and (end == len(lower) or not lower[end].isalnum()):
                    found += 1
                    break
                start = lower.find(word, start + 1)
        return found

    def bullet_line_fraction(self) -> float | None:
        lines = self.lines
        return sum(1 for s in lines if s.startswith(BULLETS)) / len(lines) if lines else None

    def ellipsis_line_fraction(self) -> float | None:
        lines = self.lines
        return sum(1 for s in lines if s.endswith(ELLIPSES)) / len(lines) if lines else None

    def terminal_punctuation_line_fraction(self) -> float | None:
        lines = self.lines
        return sum(1 for s in lines if s.endswith(TERMINAL_PUNCTUATION)) / len(lines) if lines else None

    def short_line_fraction(self, chars: int = 30) -> float | None:
        """Fraction of lines of at most ``chars`` characters (FineWeb: 30)."""
        lines = self.lines
        return sum(1 for s in lines if len(s) <= chars) / len(lines) if lines else None

    def line_duplicate_char_ratio(self) -> float | None:
        """FineWeb's: characters of lines equal to an earlier line, over all the text's
        characters but newlines (Gopher's duplicate_line_char_fraction counts over lines)."""
        chars = len(self.text) - self.text.count("\n")
        if not chars:
            return None
        seen: set[str] = set()
        repeated = 0
        for line in self.lines:
            if line in seen:
                repeated += len(line)
            else:
                seen.add(line)
        return repeated / chars

    def newline_word_ratio(self) -> float | None:
        """Newlines per word (FineWeb's list ratio)."""
        return self.text.count("\n") / len(self.words) if self.words else None

    @property
    def _line_stats(self) -> tuple[float | None, float | None]:
        if self._line_dups is None:
            self._line_dups = duplicate_fractions(self.lines)
        return self._line_dups

    @property
    def _paragraph_stats(self) -> tuple[float | None, float | None]:
        if self._paragraph_dups is None:
            self._paragraph_dups = duplicate_fractions(self.paragraphs)
        return self._paragraph_dups

    def duplicate_line_fraction(self) -> float | None:
        return self._line_stats[0]

    def duplicate_line_char_fraction(self) -> float | None:
        return self._line_stats[1]

    def duplicate_paragraph_fraction(self) -> float | None:
        return self._paragraph_stats[0]

    def duplicate_paragraph_char_fraction(self) -> float | None:
        return self._paragraph_stats[1]

    def top_ngram_char_fraction(self, n: int, skip_at_most: float = -1.0) -> float | None:
        """See ``ngram_char_fractions``; None when no words, or when a shorter n-gram's
        duplicate fraction already shows the value is at most ``skip_at_most``."""
        stats = self._ngram_stats(n, skip_at_most)
        return stats and stats[0]

    def duplicate_ngram_char_fraction(self, n: int, skip_at_most: float = -1.0) -> float | None:
        """See ``ngram_char_fractions`` and ``top_ngram_char_fraction``."""
        stats = self._ngram_stats(n, skip_at_most)
        return stats and stats[1]

    def _ngram_stats(self, n: int, skip_at_most: float) -> tuple[float, float] | None:
        if not self.words:
            return None
        if n not in self._ngram_sizes:  # not planned: a pass of its own
            return next(s for s in ngram_char_fractions(self.words, {n}) if s[0] == n)[1:]
        if self._ngram_steps is None:
            self._ngram_steps = ngram_char_fractions(self.words, self._ngram_sizes)
        while n not in self._ngrams:
            # Repeats of longer n-grams are made of repeats of shorter ones, so both
            # fractions at n are at most the duplicate fraction of any shorter n-gram:
            # once that is small enough, the longer n-grams need not be counted at all.
            if self._last_duplicate <= skip_at_most:
                return None
            size, top, duplicate = next(self._ngram_steps)
            self._ngrams[size] = (top, duplicate)
            self._last_duplicate = duplicate
        return self._ngrams[n]

    def _lowercase(self) -> str:
        if self._lower is None:
            self._lower = self.text.lower()
        return self._lower


def duplicate_fractions(units: list[str]) -> tuple[float | None, float | None]:
    """(fraction of units equal to an earlier unit, fraction of characters in those repeats)."""
    if not units:
        return None, None
    distinct = set(units)
    if len(distinct) == len(units):
        return 0.0, 0.0
    total = sum(map(len, units))
    # Each distinct unit's first copy is original; everything else is a repeat.
    return (len(units) - len(distinct)) / len(units), (total - sum(map(len, distinct))) / total


def ngram_char_fractions(words: list[str], sizes: Iterable[int]) -> Iterator[tuple[int, float, float]]:
    """Lazily yield ``(n, top, duplicate)`` for n = 2 (1 if asked), 3, ... up to the largest
    of ``sizes``: the share of word characters covered by the most frequent n-gram (0 if
    none occurs twice) and by all n-grams that occur more than once. A character inside
    several overlapping occurrences counts once.

    An n-gram can only repeat where the two (n-1)-grams it is made of both repeat, so each
    n looks only at those positions, and the (n-1)-grams' hashes stand for their words.
    Comparing 64-bit hashes could merge two different n-grams; the odds are ~1e-15 a text.
    """
    sizes = set(sizes)
    if not sizes or not words:
        return
    last = max(sizes)
    prefix = list(accumulate(map(len, words), initial=0))  # characters of words[i:j] = prefix[j] - prefix[i]
    total = prefix[-1]
    first = 1 if 1 in sizes else 2
    positions: Sequence[int] = range(len(words) - first + 1)  # where the n-grams in play start
    grams: list = words if first == 1 else list(zip(words, words[1:]))
    for n in range(first, last + 1):
        counts = Counter(grams)
        if len(counts) == len(grams):  # nothing repeats at n, so nothing repeats beyond n
            for m in range(n, last + 1):
                yield m, 0.0, 0.0
            return
        repeated = list(map((1).__lt__, map(counts.__getitem__, grams)))
        top = _top_chars(words, prefix, positions, grams, counts, n)
        positions = list(compress(positions, repeated))
        yield n, top / total, _covered_chars(prefix, positions, n) / total
        if n == last:
            return
        # The (n+1)-gram at i is the pair (n-gram at i, n-gram at i + 1), both repeated.
        keys = list(map(hash, compress(grams, repeated)))
        adjacent = list(map((1).__eq__, map(sub, positions[1:], positions)))
        grams = list(compress(zip(keys, keys[1:]), adjacent))
        positions = list(compress(positions, adjacent))


def _top_chars(words, prefix, positions, grams, counts, n) -> int:
    """Characters covered by the most frequent n-gram (the first to appear among ties)."""
    most = max(counts.values())  # >= 2: the caller stops before an n where nothing repeats
    gram = next(compress(counts, map(most.__eq__, counts.values())))  # counts keep first-seen order
    start = positions[grams.index(gram)]
    ngram = words[start:start + n]
    if any(ngram[k:] == ngram[:-k] for k in range(1, n)):
        # It overlaps itself ("a a a" holds "a a" twice): count each character once.
        return _covered_chars(prefix, list(compress(positions, map(gram.__eq__, grams))), n)
    return most * (prefix[start + n] - prefix[start])


def _covered_chars(prefix: list[int], starts: list[int], n: int) -> int:
    """Characters in the union of the word spans [start, start + n), ``starts`` ascending:
    each span adds what lies between the previous span's end (or its own start) and its end."""
    ends = list(map(n.__add__, starts))
    return sum(map(prefix.__getitem__, ends)) - sum(map(prefix.__getitem__, map(max, starts, chain((0,), ends))))


# The rules in the order they are checked: (config field, statistic shown in the detail,
# Document method, "<" for a lower bound or ">" for an upper bound). The dict-valued


TOKEN_PIECES = re.compile(r"\w+|[^\w\s]")


def approx_tokens(text: str) -> int:
    """A tokenizer-free token count: runs of word characters and single punctuation marks
    (``\\w+|[^\\w\\s]``); close enough to balance budgets and mixes whose rows differ in length."""
    return len(TOKEN_PIECES.findall(text))


def approx_token_counts(batch: list[str]) -> list[int]:
    return [approx_tokens(t) for t in batch]
