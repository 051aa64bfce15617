"""The pretraining stages on real text: language_id's accuracy on real translations, and the
docs/s of extract_text, language_id, line_filter and pii_redact against the same code in a loop.

    python benchmarks/pretrain.py [--docs 20000] [--per-language 400] [--html-pages 200] [--workers 2]

Documents: real text this machine holds -- the long description in the METADATA of every
installed Python distribution, and the files of /usr/share/doc (READMEs, changelogs,
copyright files; gzip read) and /usr/share/common-licenses, each its first 100,000
characters -- ``--docs`` documents (cycled if the machine holds fewer).

Labelled languages: the gettext catalogues under /usr/share/locale/<lang>/LC_MESSAGES/*.mo.
Each holds a program's English messages and their translations, written by that language's
translators: every message of 40+ characters (no format codes) is an English example, its
translation an example of <lang>; ``--per-language`` of each, for 20 languages, taken in
catalogue order over the sorted files. Accuracy: the share whose ``lang`` is right;
English precision/recall: of the rows language_id keeps with its defaults (languages [en],
threshold 0.65), the share that are English, and the share of English rows kept.

Speed: each stage through ``Stage.process`` with ``--workers`` processes, against its own
function called in a loop in one process over the same texts (py3langid's ``classify`` on
the first ``max_chars`` characters, as the stage reads them; ``line_filter``'s ``clean``;
``pii.redact``; trafilatura's ``extract`` with the stage's settings, over pydoc's HTML page
of every standard-library module): ``ratio`` = stage docs/s / loop docs/s. ``peak_rss_mb``:
this process.
Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gettext
import glob
import gzip
import importlib.metadata
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

LANGUAGES = {"de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt", "nl": "nl", "pl": "pl", "ru": "ru",
             "sv": "sv", "cs": "cs", "ja": "ja", "zh_CN": "zh", "fi": "fi", "da": "da", "tr": "tr", "uk": "uk",
             "hu": "hu", "ro": "ro", "ko": "ko", "vi": "vi"}  # locale folder -> ISO 639-1 code


SKIP = {"antigravity", "this", "idlelib", "turtledemo"}  # importing them opens a browser or prints
MAX_CHARS = 100_000  # a document's first 100,000 characters (a few changelogs run to 12 MB)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def documents(n: int) -> list[str]:
    """Real local text: METADATA long descriptions, /usr/share/doc files, licences."""
    found: list[str] = []
    for dist in sorted(importlib.metadata.distributions(), key=lambda d: d.metadata.get("Name") or ""):
        body = dist.metadata.get_payload() or dist.metadata.get("Description") or ""
        if len(body.split()) >= 50:
            found.append(body[:MAX_CHARS])
    paths = sorted(glob.glob("/usr/share/doc/**/*", recursive=True)) + sorted(glob.glob("/usr/share/common-licenses/*"))
    for path in paths:
        p = Path(path)
        if not p.is_file() or p.is_symlink() or p.stat().st_size > 2_000_000:
            continue
        try:
            raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError, EOFError, gzip.BadGzipFile):
            continue
        if len(text.split()) >= 50:
            found.append(text[:MAX_CHARS])
        if len(found) >= n:
            break
    if not found:
        raise SystemExit("no local documents found")
    return [found[k % len(found)] for k in range(n)]


def labelled(per_language: int) -> tuple[list[str], list[str]]:
    """(texts, true language codes): English messages and their translations."""
    texts, truth = [], []
    english_seen: set[str] = set()
    for folder, code in LANGUAGES.items():
        taken = 0
        for path in sorted(glob.glob(f"/usr/share/locale/{folder}/LC_MESSAGES/*.mo")):
            try:
                with open(path, "rb") as f:
                    catalogue = gettext.GNUTranslations(f)._catalog
            except (OSError, ValueError, UnicodeDecodeError):
                continue
            for english, translated in catalogue.items():
                if not (isinstance(english, str) and isinstance(translated, str)) or english == translated:
                    continue
                english, translated = " ".join(english.split()), " ".join(translated.split())
                if len(english) < 40 or len(translated) < 40 or "%" in english or "\\" in english:
                    continue
                texts.append(translated)
                truth.append(code)
                if english not in english_seen:
                    english_seen.add(english)
                    texts.append(english)
                    truth.append("en")
                taken += 1
                if taken >= per_language:
                    break
            if taken >= per_language:
                break
        log(f"  {folder}: {taken} messages")
    return texts, truth


def html_pages(limit: int) -> list[str]:
    """Real HTML: pydoc's pages of the first ``limit`` standard-library modules (by name) that import here."""
    import importlib
    import pkgutil
    import pydoc
    import warnings

    pages = []
    for info in sorted(pkgutil.iter_modules(), key=lambda m: m.name):
        if len(pages) >= limit:
            break
        if info.name not in sys.stdlib_module_names or info.name.startswith("_") or info.name in SKIP:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = importlib.import_module(info.name)
            pages.append(pydoc.HTMLDoc().page(info.name, pydoc.HTMLDoc().docmodule(module)))
        except Exception:  # a module that cannot import or render here: not a page
            continue
    return pages


def timed(fn, *args) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - t0, out


def main() -> None:
    import pyarrow as pa

    from curate.algorithms import language, pii
    from curate.stage import StageContext
    import trafilatura

    from curate.stages import ExtractText, LanguageId, LineFilter, PiiRedact
    from curate.stages.lines import clean

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", type=int, default=20_000)
    p.add_argument("--per-language", type=int, default=400)
    p.add_argument("--html-pages", type=int, default=200)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    log("labelled messages from /usr/share/locale:")
    texts, truth = labelled(args.per_language)
    table = pa.table({"id": [f"m{k}" for k in range(len(texts))], "text": texts})
    out = LanguageId(languages=None)(table, StageContext(workers=args.workers))
    found = out.kept.column("lang").to_pylist()
    accuracy = sum(f == t for f, t in zip(found, truth)) / len(truth)
    per_language = {code: round(sum(f == t for f, t in zip(found, truth) if t == code) / max(1, truth.count(code)), 4)
                    for code in ["en", *LANGUAGES.values()]}
    kept = LanguageId()(table, StageContext(workers=args.workers)).kept.column("id").to_pylist()
    kept_ids = set(kept)
    english = {f"m{k}" for k, t in enumerate(truth) if t == "en"}
    precision = len(kept_ids & english) / max(1, len(kept_ids))
    recall = len(kept_ids & english) / max(1, len(english))
    log(f"language_id: accuracy {accuracy:.4f} on {len(truth):,} messages; English kept: precision {precision:.4f}, "
        f"recall {recall:.4f}")

    log(f"{args.docs:,} local documents")
    docs = documents(args.docs)
    ids = [f"d{k}" for k in range(len(docs))]
    corpus = pa.table({"id": ids, "text": docs})
    ctx = StageContext(workers=args.workers)
    ident = language.identifier()
    cut = LanguageId().config.max_chars  # the loop reads what the stage reads
    figures: dict[str, object] = {"docs": len(docs), "labelled_messages": len(truth), "languages": len(LANGUAGES) + 1,
                                  "language_id_accuracy": accuracy, "language_id_english_precision": precision,
                                  "language_id_english_recall": recall, "language_id_per_language": per_language}
    runs = {
        "language_id": (lambda: LanguageId()(corpus, ctx), lambda: [ident.classify(t[:cut]) for t in docs]),
        "line_filter": (lambda: LineFilter()(corpus, ctx), lambda: [clean(LineFilter().config, t) for t in docs]),
        "pii_redact": (lambda: PiiRedact()(corpus, ctx), lambda: [pii.redact(t, {"email": "<EMAIL>", "ip": "<IP_ADDRESS>",
                                                                                 "phone": "<PHONE_NUMBER>"}) for t in docs]),
    }
    pages = html_pages(args.html_pages)
    pages_table = pa.table({"id": [f"h{k}" for k in range(len(pages))], "text": pages})
    runs["extract_text"] = (lambda: ExtractText()(pages_table, ctx), lambda: [trafilatura.extract(
        h, favor_precision=True, include_comments=False, deduplicate=True) for h in pages])
    figures["html_pages"] = len(pages)
    for name, (stage, loop) in runs.items():
        seconds, _ = timed(stage)
        base, _ = timed(loop)
        n = len(pages) if name == "extract_text" else len(docs)
        figures[f"{name}_docs_per_s"] = n / seconds
        figures[f"{name}_baseline_docs_per_s"] = n / base
        figures[f"{name}_ratio"] = base / seconds
        log(f"{name}: {n / seconds:,.0f} docs/s (a loop in one process: {n / base:,.0f})")
    figures["workers"] = args.workers
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
