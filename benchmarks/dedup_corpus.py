"""The near-duplicate corpus and its ground truth for ``benchmarks/dedup.py``.

Corpus
------
Real text found on this machine, cut into documents of a realistic size:

* man pages (``/usr/share/man/**/*.gz``, every language), troff markup crudely removed;
  of the ~16,600 generated ``gcloud`` pages an evenly spaced 600 are kept, so that their
  boilerplate does not dominate (real corpora have generated pages too);
* Debian changelogs (``/usr/share/doc/*/changelog*.gz``) and copyright files
  (``/usr/share/doc/*/copyright``), licences (``/usr/share/common-licenses/*``);
* the standard library of the installed Python (``lib/python3.11/**/*.py``, no site-packages).

Long files are cut at paragraph (blank-line) boundaries into pieces whose target length is
drawn from a log-normal distribution (median ~1,100 characters; the pieces come out with a
median near 1,300 because paragraphs overshoot the target, like the corpus of PEERS.md);
pieces shorter than 200 characters or 30 words are dropped. The file set, the order of files
and every random choice are fixed, so the corpus is the same on every run on this machine.
Natural near-duplicates come with the text: the same licence in many copyright files, the
same page in two man sections, generated man pages, changelog entries repeated across
packages built from one source.

Near-duplicates are then injected: a seeded 20% of the base documents get 1-3 copies each
(copies are added until the corpus has the requested size; when the base pool is short, more
copies are made rather than padding with made-up text). Each copy is the base text with
word-level edits: a rate r ~ U(2%, 15%) of its words is touched, in bursts of 1-4 words, each
burst a substitution (by words of the same document), an insertion or a deletion. The copies'
true Jaccard to their base spans ~0.5-0.96 (median ~0.73; ~30% at >= 0.8, nearly all of those
with r < 6%), so the corpus holds hard negatives just below the 0.8 threshold as well as
positives. The base documents are balanced across sources by water-filling (each source
gives min(available, c) pieces); otherwise changelogs would be most of the corpus. The rows
are shuffled and get ids ``d0000000``, ``d0000001``... in that order. Columns: ``id``,
``text``, ``origin`` (the id of the base document, for injected copies; null otherwise),
``source`` and ``edit_rate`` (diagnostics only; no tool sees them). Row groups of 10,000 rows.

The 1,000,000-document corpus (``--million``) uses every piece, plus the long files cut twice
more with other target lengths (347k base documents, mostly changelogs), and fills the rest
with injected copies (653k, so base documents get several); it has no truth (only speed and
memory are measured at that size).

Normalisation and shingles (the same for the truth and for every tool measured)
-----------------------------------------------------------------------------
``normalize(text)``: lower-case; every punctuation character becomes a space (the ASCII
punctuation of ``string.punctuation``, underscore included, and the common Unicode quotes,
dashes, ellipsis and bullets ``“”‘’«»–—…·•``); runs of any whitespace collapse to one space.
Digits and other symbols are kept. Words are what lies between spaces. The shingles of a
document are the *set* of its word 5-grams; a document of fewer than 5 words has none. This
is the default normalisation of ``curate.stages.minhash`` (``lowercase``,
``strip_punctuation``, no digit folding, no NFKC), written again here so that the truth does
not depend on the code it judges.

Ground truth
------------
The truth is every pair of documents whose exact Jaccard similarity of shingle sets is at
least 0.8. All pairs (5·10^9 at 100k documents) cannot be compared, so candidates come from
**prefix filtering** (Chaudhuri et al. 2006; Bayardo et al.'s All-Pairs, 2007), which is
exact, not probabilistic:

    Order all shingles globally (rarest first). For a set x let the prefix be its first
    p(x) = |x| - ceil(t·|x|) + 1 shingles in that order. If J(x, y) >= t then
    |x ∩ y| >= t·|x ∪ y| >= t·max(|x|, |y|). Let w be the first shingle of x ∩ y in the
    global order: every shingle of x ∩ y comes at or after w in x, so w's position in x is
    at most |x| - |x ∩ y| + 1 <= |x| - ceil(t·|x|) + 1 = p(x); the same holds in y. So w is in
    both prefixes: **every pair with J >= t shares a prefix shingle.**

Candidates are the pairs that share a prefix shingle and pass the length filter
(t·|x| <= |y| <= |x|/t, implied by J >= t); each candidate's Jaccard is then computed
exactly from the full shingle sets. The truth's recall is therefore 1, up to collisions of
the 64-bit shingle ids: a shingle's id is the sum (mod 2^64) of five independent random
64-bit values, one table per position, so two different 5-grams collide with probability
2^-64, and the ~10^7 distinct shingles of the corpus collide with probability ~10^-5 in all.
Rarest-first order keeps the candidate lists short: the prefix of a document holds its
rarest shingles, so boilerplate shared by thousands of files rarely enters a prefix.
Documents with identical shingle sets (compared element by element) are collapsed before the
join, their pairs having J = 1, so that cliques of exact copies do not cost quadratic work.
At 100k documents: 21M shingles, 58k candidate pairs, 21.7k truth pairs, ~30 s.
``check_truth_exhaustively`` (``dedup.py --check-truth``) recounts the overlap of every pair
of documents by a sparse product X·Xᵀ instead; at 100k it finds exactly the same pairs.

``CorpusSpec(max_files=N)`` (``dedup.py --max-files N``) builds the corpus from an evenly
spaced N of the source files only, for smoke runs: the documents are then fewer and less
varied, so its figures are not comparable with the full corpus's.

Everything is cached under ``~/.cache/curate-bench/`` (or ``$CURATE_BENCH_CACHE``) with the
parameters in the file names; delete the files to rebuild them.
"""

from __future__ import annotations

import gzip
import itertools
import os
import re
import string
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

CACHE = Path(os.environ.get("CURATE_BENCH_CACHE", Path.home() / ".cache" / "curate-bench"))
CORPUS_VERSION = 2  # bump when the construction changes, so old caches are not reused

NGRAM = 5
THRESHOLD = 0.8

# ---------------------------------------------------------------------------------------
# Normalisation and shingles
# ---------------------------------------------------------------------------------------

# ASCII punctuation (underscore included) and the common Unicode quotes, dashes and bullets
PUNCTUATION = string.punctuation + "\u201c\u201d\u2018\u2019\u00ab\u00bb\u2013\u2014\u2026\u00b7\u2022"
_TO_SPACE = str.maketrans({c: " " for c in PUNCTUATION})


def normalize(text: str) -> str:
    """Lower-case, punctuation to spaces, whitespace (any Unicode space) collapsed; digits kept."""
    return " ".join(text.lower().translate(_TO_SPACE).split())


def words(text: str) -> list[str]:
    return text.lower().translate(_TO_SPACE).split()


def shingles(text: str, n: int = NGRAM) -> set[str]:
    """The set of word n-grams of the normalised text (what every tool in the benchmark hashes)."""
    w = words(text)
    return {" ".join(w[i : i + n]) for i in range(len(w) - n + 1)}


# ---------------------------------------------------------------------------------------
# Reading the sources
# ---------------------------------------------------------------------------------------

PYTHON_LIB = Path(sys.base_prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}"

# troff: escapes that carry text we keep, then the ones we drop.
_TROFF_SUBST = [
    (re.compile(r"\\[(\[](?:em|en)\]?"), "-"),
    (re.compile(r"\\\((?:lq|rq|dq)|\\\[(?:lq|rq|dq)\]"), '"'),
    (re.compile(r"\\\((?:oq|cq|aq)|\\\[(?:oq|cq|aq)\]"), "'"),
    (re.compile(r"\\\(bu|\\\[bu\]"), "*"),
    (re.compile(r"\\\(co|\\\[co\]"), "(c)"),
    (re.compile(r"\\[-e]"), lambda m: "-" if m.group(0) == "\\-" else "\\"),
    (re.compile(r"\\ "), " "),
    (re.compile(r"\\f(?:\[[^\]]*\]|\(..|.)"), ""),  # font changes
    (re.compile(r"\\s[-+]?\d+|\\s\(..|\\s\[[^\]]*\]"), ""),  # size changes
    (re.compile(r"\\\*(?:\[[^\]]*\]|\(..|.)"), ""),  # strings
    (re.compile(r"\\[nk](?:\[[^\]]*\]|\(..|.)"), ""),  # registers, marks
    (re.compile(r"\\[hvwlLDoXxbZ]'[^']*'"), ""),  # motions, widths, ...
    (re.compile(r"\\\(..|\\\[[^\]]*\]"), ""),  # other named characters
    (re.compile(r"\\[&|^%c:/,\"!)]|\\$"), ""),
    (re.compile(r"\\(.)"), r"\1"),
]
# Macros whose arguments are text (man and mdoc); other requests are dropped.
_TEXT_MACROS = {
    "SH", "SS", "B", "I", "BR", "BI", "IB", "RB", "RI", "IR", "SM", "SB", "TH", "IP", "TQ", "UR", "MT",
    "Nm", "Nd", "Sh", "Ss", "Ar", "Fl", "Cm", "Op", "Xr", "Pa", "Em", "Sy", "Dq", "Qq", "Sq", "Li", "Ql",
    "It", "Va", "Ev", "Er", "Fn", "Fa", "Ft", "Fd", "Dv", "Ic", "Ad", "An", "Lk", "Ns", "Pq", "Aq", "Bq",
    "Tn", "Ux", "Bx", "St", "Lb", "Ot", "Vt", "Cd", "Ms", "Nx", "Fx", "Ox",
}
_PARAGRAPH_MACROS = {"PP", "LP", "P", "SH", "SS", "TP", "IP", "HP", "Pp", "Sh", "Ss", "Bl", "El", "sp", "Sp", "TQ"}
_QUOTED = re.compile(r'"([^"]*)"')


def troff_to_text(src: str) -> str:
    """Readable text from troff man pages: crude, but no markup left in the words."""
    out: list[str] = []
    in_def = False
    for line in src.splitlines():
        if in_def:
            in_def = not line.startswith("..")
            continue
        if line.startswith(('.\\"', "'\\\"", '\\"', ".\\#")):  # comments
            continue
        if line.startswith((".", "'")):
            parts = line[1:].strip().split(None, 1)
            if not parts:
                continue
            name, rest = parts[0], (parts[1] if len(parts) > 1 else "")
            if name in ("de", "de1", "am", "ig"):
                in_def = True
                continue
            if name in _PARAGRAPH_MACROS:
                out.append("")
            if name in _TEXT_MACROS and rest:
                if name == "TH":
                    rest = rest.split()[0] if rest.split() else ""
                elif name == "IP":  # .IP "tag" indent
                    m = _QUOTED.match(rest)
                    rest = m.group(1) if m else rest.split()[0]
                elif name in ("UR", "MT"):
                    pass
                else:
                    rest = _QUOTED.sub(lambda m: m.group(1), rest)
                    rest = rest.replace('"', "")
                out.append(rest)
            continue
        out.append(line)
    text = "\n".join(out)
    for pattern, repl in _TROFF_SUBST:
        text = pattern.sub(repl, text)
    # blank lines from dropped macros: at most one in a row
    return re.sub(r"\n\s*\n(?:\s*\n)+", "\n\n", text).strip()


def _read_gz(path: Path) -> str:
    with gzip.open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


def source_files(gcloud_cap: int = 600) -> list[tuple[str, Path]]:
    """(source, path) for every file used, in a fixed order."""
    files: list[tuple[str, Path]] = []
    man = sorted(p for p in Path("/usr/share/man").rglob("*.gz") if p.is_file() and not p.is_symlink())
    gcloud = [p for p in man if p.name.startswith("gcloud")]
    keep_gcloud = set(gcloud[:: max(1, len(gcloud) // gcloud_cap)][:gcloud_cap]) if gcloud else set()
    files += [("man", p) for p in man if not p.name.startswith("gcloud") or p in keep_gcloud]
    doc = Path("/usr/share/doc")
    files += [("changelog", p) for p in sorted(doc.glob("*/changelog*.gz")) if p.is_file()]
    files += [("copyright", p) for p in sorted(doc.glob("*/copyright")) if p.is_file()]
    files += [("license", p) for p in sorted(Path("/usr/share/common-licenses").glob("*")) if p.is_file()]
    if PYTHON_LIB.is_dir():
        files += [
            ("python", p) for p in sorted(PYTHON_LIB.rglob("*.py")) if "site-packages" not in p.parts and p.is_file()
        ]
    return files


def read_source(source: str, path: Path) -> str:
    try:
        if source == "man":
            return troff_to_text(_read_gz(path))
        if path.suffix == ".gz":
            return _read_gz(path)
        return path.read_text("utf-8", "replace")
    except (OSError, EOFError, gzip.BadGzipFile):
        return ""


# ---------------------------------------------------------------------------------------
# Cutting files into documents
# ---------------------------------------------------------------------------------------

MIN_CHARS, MIN_WORDS = 200, 30
_PARAS = re.compile(r"\n[ \t]*\n")


def chunk(text: str, rng: np.random.Generator, median: float = 1100.0, sigma: float = 0.7) -> list[str]:
    """Cut at paragraph boundaries into pieces of a log-normal target length (lines when a
    paragraph alone is far too long)."""
    paras = [p.strip("\n") for p in _PARAS.split(text) if p.strip()]
    pieces: list[str] = []
    cur: list[str] = []
    size = 0
    target = rng.lognormal(np.log(median), sigma)
    for para in paras:
        if len(para) > 3 * target:  # split a huge paragraph by lines
            lines = para.split("\n")
            para_parts, buf, n = [], [], 0
            for ln in lines:
                buf.append(ln)
                n += len(ln) + 1
                if n >= target:
                    para_parts.append("\n".join(buf))
                    buf, n = [], 0
            if buf:
                para_parts.append("\n".join(buf))
        else:
            para_parts = [para]
        for part in para_parts:
            cur.append(part)
            size += len(part) + 2
            if size >= target:
                pieces.append("\n\n".join(cur))
                cur, size = [], 0
                target = rng.lognormal(np.log(median), sigma)
    if cur:
        if pieces and size < MIN_CHARS:  # a short tail joins the piece before it
            pieces[-1] += "\n\n" + "\n\n".join(cur)
        else:
            pieces.append("\n\n".join(cur))
    return [p for p in pieces if len(p) >= MIN_CHARS and len(p.split()) >= MIN_WORDS]


def base_documents(seed: int, rounds: int = 1, max_files: int | None = None) -> tuple[list[str], list[str]]:
    """(texts, sources) of every piece of every source file (of an evenly spaced
    ``max_files`` of them when given). Round r > 0 cuts the files that give at least three
    pieces again with other boundaries (for the million-document corpus)."""
    texts: list[str] = []
    sources: list[str] = []
    files = source_files()
    if max_files and max_files < len(files):
        files = files[:: len(files) // max_files][:max_files]
    contents: list[tuple[str, str]] = []
    for source, path in files:
        text = read_source(source, path)
        if text:
            contents.append((source, text))
    for r in range(rounds):
        rng = np.random.default_rng([seed, r])
        for source, text in contents:
            if r > 0 and len(text) < 3 * 1300:
                continue
            for piece in chunk(text, rng, median=1100.0 * (1 + 0.15 * r)):
                texts.append(piece)
                sources.append(source)
    return texts, sources


# ---------------------------------------------------------------------------------------
# Injected near-duplicates
# ---------------------------------------------------------------------------------------

_TOKENS = re.compile(r"(\s+)")


def edit_words(text: str, rate: float, rng: np.random.Generator) -> str:
    """``rate`` of the words touched, in bursts of 1-4 words; each burst a substitution (by
    words of the same text), an insertion or a deletion. Whitespace between words is kept."""
    parts = _TOKENS.split(text)  # words at even positions, separators at odd ones
    wds = parts[0::2]
    seps = parts[1::2] + [""]
    n = len(wds)
    if n < 2:
        return text
    pool = [w for w in wds if w]
    out_w: list[str] = []
    out_s: list[str] = []
    target = max(1, round(rate * n))
    touched = 0
    # burst starts: positions chosen so that the touched words add up to ~rate·n
    starts: dict[int, tuple[int, int]] = {}
    while touched < target:
        length = int(rng.integers(1, 5))
        pos = int(rng.integers(0, n))
        if pos in starts:
            continue
        starts[pos] = (length, int(rng.integers(0, 3)))
        touched += length
    i = 0
    while i < n:
        if i in starts:
            length, op = starts[i]
            length = min(length, n - i)
            if op == 0:  # substitute
                for k in range(length):
                    out_w.append(pool[int(rng.integers(0, len(pool)))])
                    out_s.append(seps[i + k])
                i += length
                continue
            if op == 1:  # insert before position i
                for _ in range(length):
                    out_w.append(pool[int(rng.integers(0, len(pool)))])
                    out_s.append(" ")
                out_w.append(wds[i])
                out_s.append(seps[i])
                i += 1
                continue
            i += length  # delete: the separator before the burst stays
            continue
        out_w.append(wds[i])
        out_s.append(seps[i])
        i += 1
    return "".join(w + s for w, s in zip(out_w, out_s))


@dataclass(frozen=True)
class CorpusSpec:
    docs: int = 100_000
    seed: int = 1
    dup_fraction: float = 0.2
    min_rate: float = 0.02
    max_rate: float = 0.15
    # Read only an evenly spaced this many of the source files (smoke runs: reading all of
    # them takes ~20 s here whatever the size); None reads every file.
    max_files: int | None = None

    @property
    def rounds(self) -> int:  # re-cut the files for the million-document corpus
        return 1 if self.docs <= 200_000 else 3

    def stem(self) -> str:
        return (
            f"dedup-v{CORPUS_VERSION}-docs{self.docs}-seed{self.seed}-dup{self.dup_fraction:g}"
            f"-rate{self.min_rate:g}-{self.max_rate:g}" + (f"-files{self.max_files}" if self.max_files else "")
        )

    @property
    def path(self) -> Path:
        return CACHE / f"{self.stem()}.parquet"

    @property
    def truth_path(self) -> Path:
        return CACHE / f"{self.stem()}-truth-t{THRESHOLD:g}-n{NGRAM}.npz"


def _balanced_sample(sources: list[str], n: int, rng: np.random.Generator) -> np.ndarray:
    """Rows of n pieces, as even across sources as their sizes allow (water-filling: every
    source gives min(available, c) with c as large as n allows). Without it the changelogs
    (83k pieces, gcc's and git's alone are thousands) would be most of the corpus."""
    src = np.asarray(sources)
    names, avail = np.unique(src, return_counts=True)
    if n >= len(src):
        return np.arange(len(src))
    lo, hi = 0, int(avail.max())
    while lo < hi:  # largest cap c with sum(min(avail, c)) <= n
        c = (lo + hi + 1) // 2
        lo, hi = (c, hi) if np.minimum(avail, c).sum() <= n else (lo, c - 1)
    take = np.minimum(avail, lo)
    short = n - int(take.sum())
    for k in np.flatnonzero(avail > lo)[:short]:  # the remainder, one more from the first sources
        take[k] += 1
    rows = [np.sort(rng.choice(np.flatnonzero(src == name), size=int(t), replace=False)) for name, t in zip(names, take)]
    return np.sort(np.concatenate(rows))


def build_corpus(spec: CorpusSpec, log=print) -> pa.Table:
    t0 = time.perf_counter()
    texts, sources = base_documents(spec.seed, spec.rounds, spec.max_files)
    log(f"  {len(texts):,} base pieces from this machine's files ({time.perf_counter() - t0:.1f} s)")
    rng = np.random.default_rng(spec.seed)
    mean_copies = 2.0
    n_base = min(len(texts), round(spec.docs / (1 + spec.dup_fraction * mean_copies)))
    chosen = _balanced_sample(sources, n_base, rng)
    base_text = [texts[i] for i in chosen]
    base_source = [sources[i] for i in chosen]
    n_copies = spec.docs - n_base
    # copy sources: a seeded fraction of the base, 1-3 copies each, drawn again (more copies
    # per base document) when the base pool is short
    copy_of: list[int] = []
    while len(copy_of) < n_copies:
        for b in rng.permutation(n_base)[: max(1, round(spec.dup_fraction * n_base))]:
            copy_of.extend([int(b)] * int(rng.integers(1, 4)))
            if len(copy_of) >= n_copies:
                break
    copy_of = copy_of[:n_copies]
    rates = rng.uniform(spec.min_rate, spec.max_rate, size=n_copies)
    copy_text = [edit_words(base_text[b], float(r), rng) for b, r in zip(copy_of, rates)]
    all_text = base_text + copy_text
    all_source = base_source + [base_source[b] for b in copy_of]
    base_row = list(range(n_base)) + copy_of  # row of the base document, in the unshuffled order
    rate_col = [None] * n_base + [float(r) for r in rates]
    order = rng.permutation(len(all_text))
    new_pos = np.empty(len(order), dtype=np.int64)
    new_pos[order] = np.arange(len(order))
    ids = [f"d{i:07d}" for i in range(len(order))]
    table = pa.table(
        {
            "id": ids,
            "text": [all_text[o] for o in order],
            "origin": [ids[new_pos[base_row[o]]] if o >= n_base else None for o in order],
            "source": [all_source[o] for o in order],
            "edit_rate": pa.array([rate_col[o] for o in order], pa.float64()),
        }
    )
    log(f"  {n_base:,} base documents + {n_copies:,} injected copies ({time.perf_counter() - t0:.1f} s)")
    return table


def load_corpus(spec: CorpusSpec, log=print) -> pa.Table:
    if spec.path.exists():
        return pq.read_table(spec.path)
    log(f"building corpus {spec.path.name}")
    table = build_corpus(spec, log)
    spec.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = spec.path.with_suffix(".tmp")
    pq.write_table(table, tmp, row_group_size=10_000)  # readers can go a row group at a time
    tmp.rename(spec.path)
    return table


# ---------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------


def shingle_ids(texts: list[str], n: int = NGRAM, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """CSR of each document's sorted, unique 64-bit shingle ids: (offsets, ids).

    A word gets a dense id; a shingle's id is sum_k R_k[word_k] mod 2^64 with five
    independent random tables R_k (so distinct 5-grams collide with probability 2^-64)."""
    vocab: dict[str, int] = {}
    setdefault = vocab.setdefault
    flat: list[int] = []
    lengths = np.zeros(len(texts), dtype=np.int64)
    for i, text in enumerate(texts):
        w = words(text)
        lengths[i] = len(w)
        flat.extend([setdefault(x, len(vocab)) for x in w])
    wid = np.asarray(flat, dtype=np.int64)
    rng = np.random.default_rng(seed)
    tables = rng.integers(0, 2**63, size=(n, len(vocab)), dtype=np.int64).astype(np.uint64) * np.uint64(2) + (
        rng.integers(0, 2, size=(n, len(vocab))).astype(np.uint64)
    )
    total = len(wid)
    if total < n:
        return np.zeros(len(texts) + 1, dtype=np.int64), np.zeros(0, dtype=np.uint64)
    h = np.zeros(total - n + 1, dtype=np.uint64)
    for k in range(n):
        h += tables[k][wid[k : total - n + 1 + k]]
    # a shingle starting at global word position p is valid iff p + n <= end of its document
    word_off = np.concatenate([[0], np.cumsum(lengths)])
    doc_of_pos = np.repeat(np.arange(len(texts)), lengths)[: total - n + 1]
    valid = np.arange(total - n + 1) + n <= word_off[doc_of_pos + 1]
    h, d = h[valid], doc_of_pos[valid]
    # unique per document: sort by (doc, id)
    order = np.lexsort((h, d))
    h, d = h[order], d[order]
    keep = np.ones(len(h), dtype=bool)
    keep[1:] = (h[1:] != h[:-1]) | (d[1:] != d[:-1])
    h, d = h[keep], d[keep]
    counts = np.bincount(d, minlength=len(texts))
    offsets = np.concatenate([[0], np.cumsum(counts)])
    return offsets, h


def _overlaps(a: np.ndarray, b: np.ndarray, offsets: np.ndarray, tok: np.ndarray, batch: int = 2_000_000) -> np.ndarray:
    """|x_a ∩ x_b| for candidate pairs (a, b), from per-document sorted unique dense token ids."""
    sizes = np.diff(offsets)
    out = np.zeros(len(a), dtype=np.int64)
    ntok = np.int64(tok.max()) + 1 if len(tok) else np.int64(1)
    # batches of pairs bounded by the number of tokens they gather
    cost = np.cumsum(sizes[a] + sizes[b])
    start = 0
    while start < len(a):
        stop = int(np.searchsorted(cost, (cost[start - 1] if start else 0) + batch, side="right"))
        stop = max(stop, start + 1)
        idx = np.arange(start, stop)
        keys = []
        for side in (a[idx], b[idx]):
            ln = sizes[side]
            pair = np.repeat(np.arange(len(idx), dtype=np.int64), ln)
            pos = np.repeat(offsets[side] - np.concatenate([[0], np.cumsum(ln)[:-1]]), ln) + np.arange(ln.sum())
            keys.append(pair * ntok + tok[pos])
        k = np.sort(np.concatenate(keys))
        dup = k[1:] == k[:-1]
        out[start:stop] = np.bincount(k[1:][dup] // ntok, minlength=len(idx))
        start = stop
    return out


def compute_truth(texts: list[str], threshold: float = THRESHOLD, n: int = NGRAM, log=print) -> dict[str, np.ndarray]:
    """Every pair (i < j) of rows with exact shingle Jaccard >= threshold, and its Jaccard."""
    t0 = time.perf_counter()
    offsets, h = shingle_ids(texts, n)
    ndocs = len(texts)
    sizes = np.diff(offsets)
    doc = np.repeat(np.arange(ndocs), sizes)
    log(f"  shingles: {len(h):,} in {ndocs:,} docs ({time.perf_counter() - t0:.1f} s)")

    # collapse identical shingle sets: one representative (the first row) per set
    rep = _identical_set_representatives(offsets, h)
    reps = np.flatnonzero((rep == np.arange(ndocs)) & (sizes > 0))

    # dense token ids ranked rarest first (ties by id), counting representatives only
    is_rep_entry = np.isin(doc, reps)
    rh, rd = h[is_rep_entry], doc[is_rep_entry]
    uniq, inv, df = np.unique(rh, return_inverse=True, return_counts=True)
    rank_of_uniq = np.empty(len(uniq), dtype=np.int64)
    rank_of_uniq[np.lexsort((uniq, df))] = np.arange(len(uniq))
    rtok = rank_of_uniq[inv]
    order = np.lexsort((rtok, rd))  # by doc, then rank
    rtok, rd = rtok[order], rd[order]
    rsizes = np.bincount(rd, minlength=ndocs)
    roff = np.concatenate([[0], np.cumsum(rsizes)])
    # prefix of each representative: first |x| - ceil(t|x|) + 1 tokens (integer arithmetic for t)
    num, den = _as_fraction(threshold)
    plen = rsizes - (num * rsizes + den - 1) // den + 1
    pos_in_doc = np.arange(len(rd)) - roff[rd]
    in_prefix = pos_in_doc < plen[rd]
    pt, pd = rtok[in_prefix], rd[in_prefix]
    # pairs of documents sharing a prefix token
    o = np.lexsort((pd, pt))
    pt, pd = pt[o], pd[o]
    a, b = _pairs_within_groups(pt, pd, rsizes, num, den)
    log(f"  candidates from prefix filtering: {len(a):,} pairs ({time.perf_counter() - t0:.1f} s)")
    inter = _overlaps(a, b, roff, rtok)
    union = rsizes[a] + rsizes[b] - inter
    jac = inter / np.maximum(union, 1)
    keep = den * inter >= num * union  # J >= t exactly, in integers
    a, b, jac = a[keep], b[keep], jac[keep]

    # expand representatives back to their groups: two members of one group are a pair with
    # J = 1, and every member of group X pairs with every member of group Y when (X, Y) is
    order = np.argsort(rep, kind="stable")
    bounds = np.flatnonzero(np.concatenate([[True], rep[order][1:] != rep[order][:-1], [True]]))
    groups = {int(rep[order[s]]): order[s:e] for s, e in itertools.pairwise(bounds)
              if e - s > 1 and sizes[order[s]] > 0}
    out_i, out_j, out_s = [a], [b], [jac]
    for m in groups.values():
        i, j = np.triu_indices(len(m), 1)
        out_i.append(m[i])
        out_j.append(m[j])
        out_s.append(np.ones(len(i)))
    for x, y, sim in zip(a.tolist(), b.tolist(), jac.tolist()):
        if x in groups or y in groups:
            gx, gy = np.meshgrid(groups.get(x, [x]), groups.get(y, [y]), indexing="ij")
            out_i.append(gx.ravel())
            out_j.append(gy.ravel())
            out_s.append(np.full(gx.size, sim))
    i = np.concatenate(out_i)
    j = np.concatenate(out_j)
    s = np.concatenate(out_s)
    lo, hi = np.minimum(i, j), np.maximum(i, j)
    key, first = np.unique(lo * ndocs + hi, return_index=True)
    log(f"  truth: {len(key):,} pairs with J >= {threshold:g} ({time.perf_counter() - t0:.1f} s)")
    return {"i": (key // ndocs).astype(np.int64), "j": (key % ndocs).astype(np.int64), "jaccard": s[first]}


def _identical_set_representatives(offsets: np.ndarray, h: np.ndarray) -> np.ndarray:
    """For each document, the first row whose shingle set is identical to its own (itself
    when none). Sets are grouped by (size, hash of the set), then compared element by element,
    so a hash collision cannot merge two different sets."""
    ndocs = len(offsets) - 1
    sizes = np.diff(offsets)
    mixed = (h * np.uint64(0x9E3779B97F4A7C15)) ^ (h >> np.uint64(29))
    set_hash = np.zeros(ndocs, dtype=np.uint64)
    np.add.at(set_hash, np.repeat(np.arange(ndocs), sizes), mixed)
    order = np.lexsort((np.arange(ndocs), sizes, set_hash))
    new = np.concatenate([[True], (set_hash[order][1:] != set_hash[order][:-1]) | (sizes[order][1:] != sizes[order][:-1])])
    rep = np.arange(ndocs)
    starts = np.flatnonzero(new)
    for s, e in zip(starts, np.concatenate([starts[1:], [ndocs]])):
        if e - s < 2:
            continue
        members = order[s:e].tolist()
        while members:  # split a group by actual equality
            first, rest = members[0], []
            ref = h[offsets[first] : offsets[first + 1]]
            for m in members[1:]:
                if np.array_equal(h[offsets[m] : offsets[m + 1]], ref):
                    rep[m] = first
                else:
                    rest.append(m)
            members = rest
    return rep


def _pairs_within_groups(key: np.ndarray, doc: np.ndarray, sizes: np.ndarray, num: int, den: int,
                         chunk: int = 20_000_000) -> tuple[np.ndarray, np.ndarray]:
    """Unique (a < b) pairs of docs that share a key (``key`` sorted, docs sorted within a key)
    and pass the length filter den·min(|a|,|b|) >= num·max(|a|,|b|)."""
    n = len(key)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    new_group = np.concatenate([[True], key[1:] != key[:-1]])
    starts = np.flatnonzero(new_group)
    ends = np.concatenate([starts[1:], [n]])
    end_of = np.repeat(ends, ends - starts)
    later = end_of - np.arange(n) - 1  # partners of each element after it in its group
    found: list[np.ndarray] = []
    ndocs = np.int64(len(sizes))
    cum = np.cumsum(later)
    lo = 0
    while lo < n:  # bounded memory: elements whose pairs fit in one chunk
        hi = int(np.searchsorted(cum, (cum[lo - 1] if lo else 0) + chunk, side="right"))
        hi = max(hi, lo + 1)
        cnt = later[lo:hi]
        tot = int(cnt.sum())
        if tot:
            src = np.repeat(np.arange(lo, hi), cnt)
            first = np.cumsum(cnt) - cnt
            dst = src + 1 + (np.arange(tot) - np.repeat(first, cnt))
            a, b = doc[src], doc[dst]
            sa, sb = sizes[a], sizes[b]
            ok = (den * np.minimum(sa, sb) >= num * np.maximum(sa, sb)) & (a != b)
            a, b = a[ok], b[ok]
            found.append(np.unique(np.minimum(a, b) * ndocs + np.maximum(a, b)))
        lo = hi
    if not found:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(np.concatenate(found))
    return pairs // ndocs, pairs % ndocs


def _as_fraction(t: float) -> tuple[int, int]:
    from fractions import Fraction

    f = Fraction(t).limit_denominator(1000)
    return f.numerator, f.denominator


def load_truth(spec: CorpusSpec, table: pa.Table, log=print) -> dict[str, np.ndarray]:
    if spec.truth_path.exists():
        with np.load(spec.truth_path) as z:
            return {k: z[k] for k in z.files}
    log(f"computing ground truth {spec.truth_path.name}")
    truth = compute_truth(table.column("text").to_pylist(), log=log)
    tmp = spec.truth_path.with_suffix(".tmp.npz")
    np.savez(tmp, **truth)
    tmp.rename(spec.truth_path)
    return truth


def check_truth_exhaustively(texts: list[str], truth: dict[str, np.ndarray], threshold: float = THRESHOLD,
                             block: int = 10_000) -> tuple[int, int]:
    """Cross-check the truth by counting the overlap of *every* pair of documents (sparse
    X·Xᵀ over shingle ids, a block of rows at a time). Returns (pairs missing from the truth,
    pairs in the truth that should not be). Cost grows with the sum of squared shingle
    frequencies: fine at 100k documents here (~25 s), not a method for any corpus."""
    import scipy.sparse as sp

    offsets, h = shingle_ids(texts)
    sizes = np.diff(offsets)
    _, col = np.unique(h, return_inverse=True)
    x = sp.csr_matrix((np.ones(len(h), np.int32), (np.repeat(np.arange(len(texts)), sizes), col)),
                      shape=(len(texts), int(col.max()) + 1 if len(col) else 1))
    num, den = _as_fraction(threshold)
    found = []
    for s in range(0, len(texts), block):
        c = (x[s : s + block] @ x.T).tocoo()
        r, k, v = c.row.astype(np.int64) + s, c.col.astype(np.int64), c.data.astype(np.int64)
        ok = (r < k) & (den * v >= num * (sizes[r] + sizes[k] - v))
        found.append(r[ok] * len(texts) + k[ok])
    exhaustive = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    ours = np.unique(truth["i"] * len(texts) + truth["j"])
    return len(np.setdiff1d(exhaustive, ours)), len(np.setdiff1d(ours, exhaustive))
