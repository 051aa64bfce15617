"""CLEAR's detect -> correct -> verify loop (Chen & Mueller, "Automated Data Curation for
Robust Language Model Fine-Tuning", 2024), gated by a reference-answer check where one
exists.

1. **Auto-filter.** Every row's response gets the confidence C = beta*O + (1-beta)*S of
   ``confidence`` (BSDetector: k sampled responses for consistency O, multiple-choice
   self-reflection S). Rows with C < ``threshold`` (gamma), or the lowest
   ``filter_fraction`` of C, are flagged. With ``trust_verified`` (default), rows that
   ``verify`` already checked against a reference answer are not asked about: ``true`` rows
   are kept as they are (no model calls), ``false`` rows are flagged whatever their C.
2. **Auto-correct.** For each flagged row the k responses sampled in step 1 are the
   candidates (no second round of sampling). A candidate is considered only if it passes
   ``verify`` against the row's reference answer, when the row has one. Its confidence C'
   is computed the same way (consistency with the *other* samples, its own reflection);
   the best candidate replaces the response only if C' >= ``min_confidence`` (eta) and
   C' - C >= ``margin``: the model must be confident the candidate is good *and* more
   confident in it than in the original. CLEAR asks an LLM judge which of the two is
   better and scores the verdict's confidence; comparing the two confidences directly is
   the same gate without a third prompt.
3. Corrected rows keep their old response in ``original_response`` and carry
   ``rectified = true`` (and, where ``verify`` ran, an updated ``verified``); rows flagged
   and not corrected go to the rejects with their scores (reason ``low_confidence``, or
   ``wrong_answer`` for rows ``verify`` found wrong).

CLEAR corrects with the model fine-tuned on the filtered data (M'); here the correcting
model is whichever the recipe names (a fine-tuned one once the training step has run).
gamma and eta are not given by the paper or any code, so they are required settings; the
run reports how many rows were flagged, corrected and filtered (``curate datasets show``).
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from ..algorithms.answers import check_answer
from ..records import prompt_messages, prompt_of, response_of, with_response
from ..stage import StageContext, StageOutput, split, with_columns
from .confidence import (
    ConfidenceConfig,
    ConfidenceScorer,
    ConfidenceStage,
    nullable,
    sft_rows,
)


class RectifyConfig(ConfidenceConfig):
    threshold: float | None = Field(None, ge=0, le=1)
    """gamma: flag rows whose confidence is below this (give this or ``filter_fraction``)."""
    filter_fraction: float | None = Field(None, gt=0, lt=1)
    """Flag this fraction of the scored rows, lowest confidence first (instead of ``threshold``)."""
    correct: bool = True
    """Try to correct flagged rows with the model's own sampled responses (off: filter only)."""
    min_confidence: float | None = Field(None, ge=0, le=1)
    """eta: a correction is accepted only if its confidence is at least this (required when correcting)."""
    margin: float = Field(0.1, ge=0, le=1)
    """A correction's confidence must beat the original's by at least this much."""
    trust_verified: bool = True
    """Rows ``verify`` marked true are kept without model calls; rows it marked false are flagged."""
    answer_column: str = "answer"
    """The reference answer a correction must match (rows without one are not gated)."""

    @model_validator(mode="after")
    def _policy(self) -> RectifyConfig:
        if (self.threshold is None) == (self.filter_fraction is None):
            raise ValueError("give exactly one of threshold (gamma, a confidence in [0, 1]) or filter_fraction")
        if self.correct and self.min_confidence is None:
            raise ValueError("correct: true needs min_confidence (eta: how confident a correction must be); "
                             "the paper gives no value, so it is yours to set, or set correct: false")
        return self


class Rectify(ConfidenceStage):
    """Filters rows whose response the model is not confident in, and replaces a response
    with one of the model's own when the model is clearly more confident in it (and it
    passes the reference check). Columns: ``confidence``, ``consistency``, ``reflection``,
    ``candidate_confidence``, ``rectified``, ``original_response``."""

    name = "rectify"
    Config = RectifyConfig
    config: RectifyConfig

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        rows = sft_rows(table, self.name)
        n = len(rows)
        verified = _column(table, "verified", n)
        refs = [r if isinstance(r, str) and r.strip() else None for r in _column(table, c.answer_column, n)]
        trusted = np.array([c.trust_verified and v == "true" for v in verified], dtype=bool)
        known_wrong = np.array([c.trust_verified and v == "false" for v in verified], dtype=bool)
        todo = np.flatnonzero(~trusted)

        scorer = self.scorer(ctx)
        responses = [response_of(m) for m in rows]
        questions = [prompt_of(m) for m in rows]
        conf, cons, refl = (np.full(n, np.nan) for _ in range(3))
        samples: dict[int, list[str]] = {}
        if len(todo):
            drawn = scorer.samples([prompt_messages(rows[i]) for i in todo])
            samples = dict(zip(todo.tolist(), drawn))
            cons[todo] = scorer.consistency([responses[i] for i in todo], drawn)
            refl[todo] = scorer.reflection([questions[i] for i in todo], [responses[i] for i in todo])
            conf[todo] = scorer.combine(cons[todo], refl[todo])

        flagged = self._flag(conf, todo) | known_wrong
        cand_conf = np.full(n, np.nan)
        replacement: dict[int, str] = {}
        if c.correct:
            cand_conf, replacement = self._correct(scorer, np.flatnonzero(flagged), samples, questions, refs, conf)

        keep = ~flagged
        messages, original, rectified = list(rows), [None] * n, [False] * n
        for i, text in replacement.items():
            keep[i] = True
            original[i], rectified[i] = responses[i], True
            messages[i] = with_response(rows[i], text)
        out = table
        if replacement:
            out = with_columns(out, {"messages": pa.array(messages, table.schema.field("messages").type)})
            if "verified" in out.column_names:  # the correction passed verify (or had no reference)
                out = with_columns(out, {"verified": pa.array(
                    ["true" if i in replacement and refs[i] else v for i, v in enumerate(verified)], pa.string())})
        out = with_columns(out, {
            "confidence": nullable(conf), "consistency": nullable(cons), "reflection": nullable(refl),
            "candidate_confidence": nullable(cand_conf), "rectified": pa.array(rectified, pa.bool_()),
            "original_response": pa.array(original, pa.string()),
        })
        reason = ["wrong_answer" if known_wrong[i] else "low_confidence" for i in range(n)]
        detail = [self._detail(i, conf, cons, refl, cand_conf, known_wrong[i]) if not keep[i] else None for i in range(n)]
        result = split(out, keep.tolist(), reason, detail)
        stats = {"scored": len(todo), "trusted": int(trusted.sum()), "flagged": int(flagged.sum()),
                 "corrected": len(replacement), "filtered": int((~keep).sum()), "kept": int(keep.sum())}
        return result.with_stats(stats)

    def _flag(self, conf: np.ndarray, todo: np.ndarray) -> np.ndarray:
        """Rows to filter or correct by confidence: below gamma, or the lowest fraction
        (a row with no confidence at all counts as the lowest)."""
        c = self.config
        flagged = np.zeros(len(conf), dtype=bool)
        scored = np.where(np.isnan(conf[todo]), -np.inf, conf[todo])
        if c.threshold is not None:
            flagged[todo] = scored < c.threshold
        else:
            m = math.ceil(c.filter_fraction * len(todo))
            flagged[todo[np.argsort(scored, kind="stable")[:m]]] = True
        return flagged

    def _correct(self, scorer: ConfidenceScorer, rows: np.ndarray, samples: dict[int, list[str]], questions: list[str],
                 refs: list[str | None], conf: np.ndarray) -> tuple[np.ndarray, dict[int, str]]:
        """The best acceptable candidate of each flagged row (see the module docstring)."""
        c = self.config
        # (row, candidate index) of every candidate that passes the reference check: the
        # cheap gate first, so reflection is asked only about candidates that could be accepted.
        cands = []
        for i in rows.tolist():
            for j, y in enumerate(samples.get(i, [])):
                if not y.strip():
                    continue
                if refs[i] is not None:
                    got = scorer.answer(y)
                    if got is None or check_answer(got.text, refs[i], c.answer_kind) is not True:
                        continue
                cands.append((i, j))
        best = np.full(len(conf), np.nan)
        if not cands:
            return best, {}
        texts = [samples[i][j] for i, j in cands]
        others = [[y for jj, y in enumerate(samples[i]) if jj != j] for i, j in cands]
        cc = scorer.combine(scorer.consistency(texts, others), scorer.reflection([questions[i] for i, _ in cands], texts))
        choice: dict[int, tuple[float, str]] = {}
        for (i, _), y, v in zip(cands, texts, cc):
            if not math.isnan(v) and (i not in choice or v > choice[i][0]):
                choice[i] = (v, y)
        accepted = {}
        for i, (v, y) in choice.items():
            best[i] = v
            before = 0.0 if math.isnan(conf[i]) else conf[i]
            if v >= c.min_confidence and v - before >= c.margin:
                accepted[i] = y
        return best, accepted

    def _detail(self, i: int, conf, cons, refl, cand, wrong: bool) -> str:
        c = self.config
        why = "verify found the answer wrong" if wrong else (
            f"confidence {_f(conf[i])} < {c.threshold:g}" if c.threshold is not None
            else f"confidence {_f(conf[i])} in the lowest {c.filter_fraction:g}")
        parts = [why, f"consistency {_f(cons[i])}, reflection {_f(refl[i])}"]
        if c.correct:
            parts.append("no candidate passed the reference check" if math.isnan(cand[i]) else
                         f"best candidate {_f(cand[i])} (needs >= {c.min_confidence:g} and +{c.margin:g})")
        return "; ".join(parts)


def _f(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.3f}"


def _column(table: pa.Table, name: str, n: int) -> list:
    return table.column(name).to_pylist() if name in table.column_names else [None] * n
