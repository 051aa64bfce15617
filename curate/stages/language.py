"""language_id: each row's language and its probability, and a filter on them.

The model is py3langid's (``curate.algorithms.language``: naive Bayes over byte n-grams, 97
languages, shipped in the package). Columns ``lang`` (an ISO 639-1 code, ``und`` for a text
with no letter) and ``lang_score`` (the probability of that language). Rows whose language
is not in ``languages``, or whose probability is below ``threshold``, are rejected with
reason ``language`` and a detail naming both. FineWeb keeps English at fastText's 0.65; the
same number on this model is measured in ``benchmarks/pretrain.py`` (see docs/pretraining.md).

Only the first ``max_chars`` characters are read: the classifier's cost grows with the
text, its answer stops changing long before (a 50 MB document costs what 20,000 characters do).
"""

from __future__ import annotations

from collections import Counter
from functools import partial

import pyarrow as pa
from pydantic import Field, field_validator

from ..algorithms import language
from ..errors import StageError
from ..records import default_text_field, texts
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns

BATCH_ROWS = 500


class LanguageIdConfig(StageConfig):
    field: str | None = None
    """Text to identify: text, prompt, response, conversation or a string column; None = response (SFT) or text."""
    languages: list[str] | None = ["en"]
    """Keep rows in these languages (ISO 639-1 codes); null: keep every language (columns only)."""
    threshold: float = Field(0.65, ge=0, le=1)
    """Keep rows whose language's probability is at least this (FineWeb: 0.65 with fastText)."""
    max_chars: int | None = Field(20_000, ge=1)
    """Identify from the first this many characters (null: the whole text)."""
    candidates: list[str] | None = None
    """Choose only among these languages (null: all 97 the model knows); narrows a known mix."""

    @field_validator("languages", "candidates")
    @classmethod
    def _known(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return value
        try:
            known = set(language.known_languages())
        except ImportError as e:
            raise ValueError(str(e)) from None
        unknown = [v for v in value if v not in known]
        if unknown:
            raise ValueError(f"unknown language code(s) {', '.join(unknown)}; the model knows: {', '.join(sorted(known))}")
        return value


class LanguageId(Stage):
    name = "language_id"
    version = "1"
    Config = LanguageIdConfig
    config: LanguageIdConfig
    row_wise = True

    def fingerprint_config(self) -> dict:
        """The config and the model's package version: another model gives other languages."""
        return {**super().fingerprint_config(), "model": language.model_version()}

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        if c.candidates is not None and c.languages is not None and not set(c.languages) <= set(c.candidates):
            raise StageError(f"language_id: languages {c.languages} are not all among candidates {c.candidates}")
        try:
            language.identifier()  # here, so a missing package is one clear error, not one per worker
        except ImportError as e:
            raise StageError(f"language_id: {e}") from None
        values = texts(table, c.field or default_text_field(table))
        found = ctx.map_batches(partial(_detect, c.max_chars, tuple(c.candidates) if c.candidates else None), values,
                                BATCH_ROWS, self.name)
        langs = [lang for lang, _ in found]
        scores = [score for _, score in found]
        wanted = set(c.languages) if c.languages is not None else None
        keep, details = [], []
        for lang, score in found:
            if wanted is not None and lang not in wanted:
                keep.append(False)
                details.append(f"language {lang} ({score:.2f}), not one of {', '.join(c.languages)}")
            elif wanted is not None and score < c.threshold:
                keep.append(False)
                details.append(f"language {lang} with probability {score:.2f} < {c.threshold:g}")
            else:
                keep.append(True)
                details.append(None)
        out = with_columns(table, {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float32())})
        stats = {f"lang_{lang}": n for lang, n in Counter(langs).most_common()}
        return split(out, keep, "language", details).with_stats(stats)


def _detect(max_chars: int | None, candidates: tuple[str, ...] | None, batch: list[str]) -> list[tuple[str, float]]:
    return language.detect(batch, max_chars, candidates)
