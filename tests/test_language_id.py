"""language_id on real translations: the gettext catalogues of this machine's programs
(/usr/share/locale/<lang>/LC_MESSAGES/*.mo) hold each English message and its translation,
written by each language's translators."""

from __future__ import annotations

import gettext
import glob

import pyarrow as pa
import pytest

from curate.errors import RecipeError
from curate.stage import StageContext
from curate.stages import LanguageId


def translations(lang: str, limit: int, min_chars: int = 60) -> list[tuple[str, str]]:
    """(English message, its translation into ``lang``) pairs of at least ``min_chars``, from
    the catalogues installed here, in a fixed order (sorted files, catalogue order)."""
    pairs: list[tuple[str, str]] = []
    for path in sorted(glob.glob(f"/usr/share/locale/{lang}/LC_MESSAGES/*.mo")):
        with open(path, "rb") as f:
            try:
                catalogue = gettext.GNUTranslations(f)._catalog
            except (OSError, ValueError, UnicodeDecodeError):
                continue
        for english, translated in catalogue.items():
            if (isinstance(english, str) and isinstance(translated, str) and english != translated
                    and len(english) >= min_chars and len(translated) >= min_chars and "%" not in english):
                pairs.append((" ".join(english.split()), " ".join(translated.split())))
        if len(pairs) >= limit:
            break
    assert len(pairs) >= limit, f"this machine's {lang} catalogues hold {len(pairs)} messages of {min_chars}+ characters"
    return pairs[:limit]


def test_english_is_kept_and_german_and_french_are_rejected_with_their_language():
    rows, truth = [], []
    for lang in ("de", "fr"):
        for k, (english, translated) in enumerate(translations(lang, 150)):
            rows += [{"id": f"{lang}{k}/en", "text": english}, {"id": f"{lang}{k}/{lang}", "text": translated}]
            truth += ["en", lang]
    table = pa.Table.from_pylist(rows)
    out = LanguageId(threshold=0.5)(table, StageContext(workers=2))
    found = dict(zip(out.kept.column("id").to_pylist() + out.rejected.column("id").to_pylist(),
                     out.kept.column("lang").to_pylist() + out.rejected.column("lang").to_pylist()))
    accuracy = sum(found[r["id"]] == t for r, t in zip(rows, truth)) / len(rows)
    assert accuracy >= 0.95, accuracy
    kept = set(out.kept.column("id").to_pylist())
    english_kept = sum(r["id"].endswith("/en") for r in rows if r["id"] in kept) / truth.count("en")
    others_kept = sum(not r["id"].endswith("/en") for r in rows if r["id"] in kept)
    assert english_kept >= 0.93 and others_kept <= 6, (english_kept, others_kept)
    german = next(r for r in out.rejected.to_pylist() if r["id"].endswith("/de") and r["lang"] == "de")
    assert german["reason"] == "language" and "language de" in german["detail"] and "not one of en" in german["detail"]
    assert out.stats["lang_en"] + out.stats["lang_de"] + out.stats["lang_fr"] >= 0.95 * len(rows)


def test_the_threshold_rejects_uncertain_rows_and_text_without_letters_has_no_language():
    table = pa.table({"id": ["a", "b", "c"], "text": ["12345 67 -- 89", "", "The cat sat on the mat and looked at the door."]})
    out = LanguageId(threshold=0.5)(table)
    assert out.kept.column("id").to_pylist() == ["c"]
    rejected = {r["id"]: r for r in out.rejected.to_pylist()}
    assert rejected["a"]["lang"] == "und" and rejected["a"]["lang_score"] == 0.0
    assert "not one of en" in rejected["b"]["detail"]
    scored = LanguageId(languages=None)(table)  # no filter: columns only
    assert len(scored.kept) == 3 and scored.kept.column("lang").to_pylist()[2] == "en"


def test_unknown_language_codes_are_named():
    with pytest.raises(RecipeError, match="unknown language code.*xx"):
        LanguageId(languages=["en", "xx"])
