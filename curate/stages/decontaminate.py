"""Decontamination: drop training rows that overlap evaluation sets, by word n-grams.

The n-gram test is open-instruct's (``decontamination/search.py: ngram_match``, used for
Tulu 3, Lambert et al. 2024), with an in-memory index in place of Elasticsearch:

1. every eval item (a MATH or GSM8K test question in a local file...) is normalised (NFKC,
   lower case) and split into words, the runs of ``\\w`` (so case, punctuation and spacing
   edits do not hide an overlap), and its word n-grams are indexed;
2. for each pool row and each of ``fields``, the n-grams it shares with an eval item mark
   that item's word positions as covered; coverage = |covered positions| / |item words|, a
   union, so overlapping n-grams are never counted twice (1.0 = the row holds the whole item);
3. a row is contaminated when its best coverage, over eval items and fields, is above
   ``threshold``; it is rejected with the item, the file, the field and the coverage.

======================  ===========  ==================================================
knob                    default      from
======================  ===========  ==================================================
ngram                   8            Tulu 3 report (open-instruct has no default)
threshold               0.5          Tulu 3 report; a row is dropped when coverage > 0.5
mode: any               off          datatrove ``decont/n_grams.py``: any shared n-gram
                                     contaminates (datatrove uses n = 12: set ngram: 12)
min_k                   0.2          Min-K% Prob, Shi et al. 2024 (the paper's best K)
======================  ===========  ==================================================

Eval items shorter than ``ngram`` words have no n-gram; they match only as a whole, as
one contiguous word sequence (open-instruct's exact phrase match), and then cover 1.0.
Items with no word at all are skipped. With several pool fields, the best one counts
(open-instruct averages over several *eval* fields; we take one text per eval item).

Speed: word ids come from the eval vocabulary (a pool word outside it cannot match), the
n-grams of a whole batch of rows are hashed at once with numpy (a 64-bit polynomial hash),
looked up in a sorted key array, and every hit is checked word for word, so a hash
collision can cost time but never a false match.

Min-K% Prob (optional, ``min_k_model``) adds a ``min_k_prob`` score column: the mean
log-probability of the K% least likely tokens of ``min_k_field`` under a model; higher
means the model more likely saw the text (the paper advises comparing texts of similar
length). It rejects nothing.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import partial
from itertools import chain, repeat
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator

from ..errors import SourceError, StageError
from ..fingerprint import hash_file
from ..models.base import Scores
from ..records import texts
from ..sources.formats import format_of, read_records, unknown_format
from ..stage import RECIPE_PATHS, Stage, StageConfig, StageContext, StageOutput, split

WORD = re.compile(r"\w+")
# Fixed odd multipliers of the n-gram hash: the same words hash alike in every process.
MULT = np.random.default_rng(0).integers(1, 2**62, size=64, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
BATCH_ROWS = 2000


class DecontaminateConfig(StageConfig):
    eval_sets: Annotated[list[str], RECIPE_PATHS] = Field(min_length=1)
    """Local eval files in the sources' formats: .jsonl, .json, .csv, .parquet, .txt (an item a line), and .gz forms."""
    eval_fields: list[str] = Field(["question", "problem", "prompt", "text", "input"], min_length=1)
    """An eval record's text is the first of these keys it has."""
    eval_id_field: str | None = "id"
    """Key of an eval record's id; without it the id is <file name>:<line>."""
    fields: list[str] = Field(["prompt", "response"], min_length=1)
    """Pool text matched: prompt, response, text, conversation or a string column; the best one counts."""
    ngram: int = Field(8, ge=1, le=64)
    """Words per n-gram (Tulu 3: 8; datatrove: 12)."""
    threshold: float = Field(0.5, ge=0, lt=1)
    """mode coverage: reject a row covering more than this fraction of an eval item's words (Tulu 3: 0.5)."""
    mode: Literal["coverage", "any"] = "coverage"
    """coverage (open-instruct) or any: one shared n-gram contaminates (datatrove)."""
    min_k_model: str | None = None
    """The run's model that scores Min-K% Prob into a min_k_prob column; None = no score."""
    min_k: float = Field(0.2, gt=0, le=1)
    """K, the fraction of least likely tokens averaged (Min-K% Prob paper: 0.2)."""
    min_k_field: str = "response"
    """Text scored by Min-K% Prob."""

    @field_validator("eval_sets")
    @classmethod
    def _known_types(cls, paths: list[str]) -> list[str]:
        bad = [p for p in paths if format_of(p) is None]
        if bad:
            raise ValueError("; ".join(unknown_format(p) for p in bad))
        return paths


@dataclass
class EvalIndex:
    """Every eval item's word ids, end to end, and per window length the sorted n-gram keys
    with their postings (the start of each occurrence in ``ids``)."""

    vocab: dict[str, int]
    ids: np.ndarray  # uint64 word ids of all items, concatenated (0 = a word no item has)
    base: np.ndarray  # where each item starts in ids
    length: np.ndarray  # words per item
    item_of: np.ndarray  # item of each position of ids
    tables: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]  # w -> keys, first, count, starts


def words(text: str) -> list[str]:
    return WORD.findall(unicodedata.normalize("NFKC", text).lower())


def window_hashes(ids: np.ndarray, w: int) -> np.ndarray:
    m = len(ids) - w + 1
    h = np.zeros(max(m, 0), np.uint64)
    for j in range(w if m > 0 else 0):
        h += ids[j : j + m] * MULT[j]  # uint64 arithmetic wraps: a polynomial hash mod 2^64
    return h


def build_index(items: list[list[str]], n: int) -> EvalIndex:
    vocab: dict[str, int] = {}
    ids = np.array([vocab.setdefault(t, len(vocab) + 1) for ws in items for t in ws], np.uint64)
    length = np.array([len(ws) for ws in items], np.int64)
    base = np.concatenate([[0], np.cumsum(length)[:-1]]).astype(np.int64)
    item_of = np.repeat(np.arange(len(items)), length)
    tables = {}
    for w in sorted({n, *(int(x) for x in length[length < n])}):
        q = np.arange(max(len(ids) - w + 1, 0))
        it = item_of[q]
        keep = (q + w <= base[it] + length[it]) & ((length[it] >= n) if w == n else (length[it] == w))
        keys, starts = window_hashes(ids, w)[keep], q[keep]
        order = np.argsort(keys, kind="stable")
        keys, starts = keys[order], starts[order]
        ukeys, first, count = np.unique(keys, return_index=True, return_counts=True)
        if len(ukeys):
            tables[w] = (ukeys, first, count, starts)
    return EvalIndex(vocab, ids, base, length, item_of, tables)


def match_batch(index: EvalIndex, batch: list[str]) -> list[tuple[int, float]]:
    """(best eval item, its coverage) for each text of ``batch``; (-1, 0.0) for no overlap."""
    toks = [words(t) for t in batch]
    lens = np.array([len(ws) for ws in toks], np.int64)
    pool = np.fromiter(map(index.vocab.get, chain.from_iterable(toks), repeat(0)), np.uint64, int(lens.sum()))
    row_of = np.repeat(np.arange(len(batch)), lens)
    row_end = np.cumsum(lens)
    unknown = np.concatenate([[0], np.cumsum(pool == 0)])
    rows, covered = [np.empty(0, np.int64)], [np.empty(0, np.int64)]
    for w, (ukeys, first, count, starts) in index.tables.items():
        q = np.arange(max(len(pool) - w + 1, 0))
        # Windows inside one row, holding only words some eval item has.
        q = q[(q + w <= row_end[row_of[q]]) & (unknown[q + w] == unknown[q])]
        h = window_hashes(pool, w)[q]
        pos = np.minimum(np.searchsorted(ukeys, h), len(ukeys) - 1)
        hit = ukeys[pos] == h
        q, k = q[hit], pos[hit]
        cnt = count[k]
        cand_q = np.repeat(q, cnt)
        cand_e = starts[np.repeat(first[k] - (np.cumsum(cnt) - cnt), cnt) + np.arange(cnt.sum())]
        span = np.arange(w)
        same = (pool[cand_q[:, None] + span] == index.ids[cand_e[:, None] + span]).all(axis=1)
        rows.append(np.repeat(row_of[cand_q[same]], w))
        covered.append((cand_e[same][:, None] + span).ravel())
    best = [(-1, 0.0)] * len(batch)
    total = max(len(index.ids), 1)
    r, e = np.divmod(np.unique(np.concatenate(rows) * total + np.concatenate(covered)), total)
    if len(r):  # union of covered positions per (row, item), then the best item of each row
        items = index.item_of[e]
        pairs, hits = np.unique(r * len(index.length) + items, return_counts=True)
        pr, pi = np.divmod(pairs, len(index.length))
        cov = hits / index.length[pi]
        order = np.lexsort((pi, -cov, pr))  # by row, then highest coverage, then first item
        _, top = np.unique(pr[order], return_index=True)
        for j in order[top]:
            best[pr[j]] = (int(pi[j]), float(cov[j]))
    return best


class Decontaminate(Stage):
    name = "decontaminate"
    version = "1"
    Config = DecontaminateConfig
    row_wise = True
    config: DecontaminateConfig
    model_refs = ("min_k_model",)

    def fingerprint_config(self) -> dict[str, Any]:
        # The files' names and contents, not where they are: a moved checkout stays cached.
        cfg = super().fingerprint_config()
        cfg["eval_sets"] = []
        for p in self.config.eval_sets:
            try:
                cfg["eval_sets"].append([Path(p).name, hash_file(p)])
            except OSError as e:
                raise SourceError(f"decontaminate.eval_sets: cannot read {p}: {e.strerror or e}") from None
        return cfg

    def load_eval_sets(self) -> tuple[list[tuple[str, str]], list[list[str]]]:
        """(file name, item id) and the words of each eval item, in file order. The files are
        read by the sources' one reader (``curate.sources.formats``): a text file's items are its
        lines, any other record is an object holding one of ``eval_fields``."""
        c, labels, items = self.config, [], []
        for p in c.eval_sets:
            path = Path(p)
            try:
                records = list(read_records(path))
            except SourceError as e:  # names the file, and the line where there is one
                raise SourceError(f"decontaminate.eval_sets: {e}") from None
            if not records:
                raise StageError(f"decontaminate: eval set {p} holds no items")
            for r in records:
                rec, at = r.value, r.where(p)
                if isinstance(rec, str):
                    text, item_id = rec, None
                elif isinstance(rec, dict):
                    key = next((k for k in c.eval_fields if rec.get(k) is not None), None)
                    if key is None:
                        raise StageError(f"{at}: none of the eval_fields ({', '.join(c.eval_fields)}) is "
                                         f"present; the record has {', '.join(rec) or 'no keys'}: set eval_fields")
                    text, item_id = rec[key], rec.get(c.eval_id_field) if c.eval_id_field else None
                    if not isinstance(text, str):
                        raise StageError(f"{at}: '{key}' holds {type(text).__name__}, not text")
                else:
                    raise StageError(f"{at}: an eval record is an object, not {type(rec).__name__}")
                if ws := words(text):  # an item without words can overlap nothing
                    labels.append((path.name, str(item_id) if item_id is not None else f"{path.name}:{r.number}"))
                    items.append(ws)
        if not items:
            raise StageError(f"decontaminate: the eval sets {', '.join(c.eval_sets)} hold no item with any words")
        return labels, items

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        labels, items = self.load_eval_sets()
        index = build_index(items, c.ngram)
        n_rows = table.num_rows
        best: list[tuple[float, int, str | None]] = [(0.0, -1, None)] * n_rows  # coverage, item, field
        for field in c.fields:
            found = ctx.map_batches(partial(match_batch, index), texts(table, field), BATCH_ROWS, f"decontaminate {field}")
            best = [b if b[0] >= cov else (cov, item, field) for b, (item, cov) in zip(best, found)]
        limit = 0.0 if c.mode == "any" else c.threshold
        keep = [cov <= limit or item < 0 for cov, item, _ in best]
        detail, extra = [], {"eval_item": [], "eval_file": [], "overlap": [], "matched_field": []}
        for ok, (cov, item, field) in zip(keep, best):
            if ok:
                detail.append(None)
                for values in extra.values():
                    values.append(None)
                continue
            file, item_id = labels[item]
            shown = item_id if item_id.startswith(f"{file}:") else f"{file}:{item_id}"
            how = f"{c.ngram}-grams" if len(items[item]) >= c.ngram else f"the whole item: under {c.ngram} words"
            detail.append(f"{field} covers {cov:.2f} of eval item {shown} ({how})")
            for values, v in zip(extra.values(), (item_id, file, round(cov, 4), field)):
                values.append(v)
        typed = {k: pa.array(v, pa.float64() if k == "overlap" else pa.string()) for k, v in extra.items()}
        ctx.reporter.log(f"decontaminate: {len(items):,} eval items, {keep.count(False):,} of {n_rows:,} rows contaminated")
        if c.min_k_model:
            table = table.append_column("min_k_prob", pa.array(self.min_k_scores(table, ctx), pa.float64()))
        return split(table, keep, "contaminated", detail, typed)

    def min_k_scores(self, table: pa.Table, ctx: StageContext) -> list[float]:
        lm = ctx.model(self.config.min_k_model)
        values = texts(table, self.config.min_k_field)
        todo = [i for i, t in enumerate(values) if t.strip()]  # an empty text has no tokens to score
        arrays = lm.logprobs([("", values[i]) for i in todo], track=ctx.reporter.track, description="min-k% prob")
        out = [float("nan")] * len(values)
        for i, a in zip(todo, arrays):
            out[i] = Scores(np.asarray(a)).min_k(self.config.min_k)
        return out
