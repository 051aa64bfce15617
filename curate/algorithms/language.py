"""Language identification with py3langid (Lui & Baldwin 2012, "langid.py: An
Off-the-shelf Language Identification Tool"; the maintained fork by Barbaresi): a naive
Bayes classifier over byte n-gram features, trained on five domains (government documents,
software documentation, news, encyclopedia, web pages), 97 languages, shipped inside the
PyPI package -- nothing to download. Probabilities are normalised (``norm_probs``: a
softmax with temperature sqrt(bytes), which keeps them comparable across lengths).

FineWeb and datatrove use fastText's lid.176 (0.65 for English); that model is not on a
package registry. ``benchmarks/pretrain.py`` measures this one's accuracy on real
translations (the gettext catalogues under /usr/share/locale: each English message and its
translation by the language's translators).
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

_IDENTIFIERS: dict[tuple[str, ...] | None, Any] = {}


def model_version() -> str:
    """What a fingerprint records of the model: the package and its version."""
    return f"py3langid {importlib.metadata.version('py3langid')}"


def identifier(languages: tuple[str, ...] | None = None) -> Any:
    """py3langid's classifier with normalised probabilities, restricted to ``languages``
    (None: all 97), loaded once per process."""
    if languages not in _IDENTIFIERS:
        try:
            from py3langid.langid import MODEL_FILE, LanguageIdentifier
        except ImportError:
            raise ImportError("language identification needs py3langid: pip install 'curate[pretrain]'") from None
        ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        if languages is not None:
            ident.set_languages(list(languages))
        _IDENTIFIERS[languages] = ident
    return _IDENTIFIERS[languages]


def known_languages() -> list[str]:
    return identifier().labels


def detect(texts: list[str], max_chars: int | None = None, languages: tuple[str, ...] | None = None
           ) -> list[tuple[str, float]]:
    """(language, probability) of each text, from its first ``max_chars`` characters (None:
    all). A text without a letter has no language: ("und", 0.0)."""
    ident = identifier(languages)
    out = []
    for text in texts:
        text = text if max_chars is None else text[:max_chars]
        if not any(c.isalpha() for c in text):
            out.append(("und", 0.0))
            continue
        lang, prob = ident.classify(text)
        out.append((lang, float(prob)))
    return out
