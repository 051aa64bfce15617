"""The pretraining stages on real text: language_id's accuracy on real translations, and the
docs/s of extract_text, language_id, line_filter and pii_redact against the same code in a loop.

    python benchmarks/pretrain.py [--docs 20000] [--per-language 400] [--html-pages 200] [--workers 2]
                                  [--classifier-docs 100000]

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

quality_classifier (``classifier_*``): see ``classifier_figures``: precision of each method
at picking held-out READMEs out of /usr/share/doc, and training / scoring time at
``--classifier-docs`` documents.
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
    p.add_argument("--classifier-docs", type=int, default=100_000, help="documents quality_classifier scores (timed)")
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
    figures.update(classifier_figures(args.classifier_docs, args.workers))
    figures["workers"] = args.workers
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def classifier_figures(n_docs: int, workers: int) -> dict[str, object]:
    """quality_classifier, both methods. Precision: positives are half the installed
    distributions' READMEs (METADATA descriptions); the pool is the other half among the files
    of /usr/share/doc; each method keeps as many rows as the pool has READMEs, and precision is
    the READMEs' share of them (random: their share of the pool). Speed: ``n_docs`` local
    documents scored after training (the defaults; fastText: 5 epochs at learning rate 0.1, as
    DCLM trains) on a tenth as many READMEs (cycled) against as many negatives sampled from them; the baseline scores the same texts with the library alone
    (fastText's ``predict`` a document at a time, as datatrove calls it; scikit-learn's
    vectoriser and ``predict_proba`` over the whole list)."""
    import tempfile

    import numpy as np
    import pyarrow as pa

    from curate.algorithms import quality
    from curate.sources import SOURCES
    from curate.stage import StageContext, TableRows
    from curate.stages import QualityClassifier

    readmes = SOURCES["local_docs"](kinds=["metadata"], min_words=50, max_chars=100_000).read().kept.column("text").to_pylist()
    others = SOURCES["local_docs"](kinds=["doc"], min_words=50, max_chars=100_000,
                                   limit_per_kind=3000).read().kept.column("text").to_pylist()
    order = np.random.default_rng(0).permutation(len(readmes))
    positives = [readmes[i] for i in order[: len(readmes) // 2]]
    held = [readmes[i] for i in order[len(readmes) // 2 :]]
    pool = pa.table({"id": [f"r{k}" for k in range(len(held))] + [f"o{k}" for k in range(len(others))],
                     "text": held + others})
    out: dict[str, object] = {"classifier_positives": len(positives), "classifier_pool": pool.num_rows,
                              "classifier_random_precision": len(held) / pool.num_rows}
    ctx = StageContext(workers=workers)
    with tempfile.TemporaryDirectory() as tmp:
        pos_file = Path(tmp) / "positives.jsonl"
        pos_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in positives))
        many = documents(n_docs)
        pos_many = [readmes[k % len(readmes)] for k in range(max(2, n_docs // 10))]
        many_file = Path(tmp) / "many.jsonl"
        many_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in pos_many))
        corpus = pa.table({"id": [f"d{k}" for k in range(len(many))], "text": many})
        for method in ("hashed_linear", "fasttext"):
            extra = {"epochs": 25, "learning_rate": 0.5} if method == "fasttext" else {}
            kept = QualityClassifier(positives=str(pos_file), method=method, top_fraction=len(held) / pool.num_rows,
                                     **extra)(pool, ctx).kept.column("id").to_pylist()
            precision = sum(k.startswith("r") for k in kept) / max(1, len(kept))
            stage = QualityClassifier(positives=str(many_file), method=method)  # the defaults (fastText: DCLM's 5 epochs, lr 0.1)
            t_train, prepared = timed(stage.prepare, TableRows(corpus), ctx)
            t_score, _ = timed(prepared.score, corpus, ctx)
            model = quality.Trained(prepared._trained[0], stage.config.settings())
            lines = [t[: stage.config.max_chars] for t in many]
            if method == "fasttext":
                ft = model._ft.model
                t_base, _ = timed(lambda: [ft.predict(quality.normalise(t, model.settings)) for t in lines])
            else:
                t_base, _ = timed(model.probability, lines)
            out.update({f"classifier_{method}_precision": precision, f"classifier_{method}_train_s": t_train,
                        f"classifier_{method}_train_docs": 2 * len(pos_many),
                        f"classifier_{method}_score_docs_per_s": len(many) / t_score,
                        f"classifier_{method}_baseline_score_docs_per_s": len(many) / t_base})
            log(f"quality_classifier {method}: precision {precision:.3f} (random {len(held) / pool.num_rows:.3f}); "
                f"training on {2 * len(pos_many):,} docs {t_train:.1f} s, scoring {len(many) / t_score:,.0f} docs/s "
                f"(library alone: {len(many) / t_base:,.0f})")
    out["classifier_docs"] = n_docs
    return out


if __name__ == "__main__":
    main()
