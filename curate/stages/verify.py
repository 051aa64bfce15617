"""Verify: check each response's final answer against the row's reference answer.

The answer check of rejection sampling (DART-Math's ``EvaluatorMath``; LLM2LLM's GSM8K
filter) and of the answer-based verifiers CLEAR uses where a reference exists: extract the
final answer of the response, compare it with the reference, keep the verdict.

* extraction, in order: the last ``\\boxed{}`` (the MATH / Minerva convention, Lewkowycz et
  al. 2022, "Solving Quantitative Reasoning Problems with Language Models"), the clause
  after the last answer marker ("the answer is", "Answer:", GSM8K's "#### "), a yes/no or a
  denial that the final sentence starts with ("No, ...", "There are no integer solutions"),
  the value a final summary sentence states ("... is 239."), the last number of the last
  paragraph that can be an answer (not a set's, a modulus, a range bound; nothing when the
  final sentence is negated or undecided); for ``kind: text`` the final sentence. The rules are spelled out in ``curate.algorithms.answers``.
* comparison by ``kind``: ``number`` as exact rationals, ``math`` also symbolically
  (math-verify, Hugging Face; SymPy), ``text`` as normalised strings.

Columns added: ``verified`` ("true", "false" or "unknown"), ``extracted_answer`` and
``answer_rule`` (null when no answer was found). "unknown" means the check could not be
made -- no reference, no answer in the response, or a side that is not a comparable value;
what cannot be read is never "false". A scoring stage by default: with
``drop_unverified`` it rejects the rows verified false (reason ``wrong_answer``), with
``drop_unknown`` also the unknown ones (reason ``unverifiable``).

Rows whose reference is missing (null or empty) are unknown. A table without the default
``answer`` column is all unknown (and said so in the log); a table without a column named
explicitly in ``answer_column`` is an error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
from collections import Counter
from functools import partial
from typing import Any

import pyarrow as pa

from ..algorithms.answers import MATH_VERIFY_MISSING, AnswerKind, check_answer, extract_answer
from ..errors import StageError, warn
from ..records import texts
from ..stage import Stage, StageConfig, StageContext, StageOutput, split, with_columns
from ..store import Store

DEFAULT_ANSWER_COLUMN = "answer"
BATCH_ROWS = 500
SHOWN_CHARS = 80


class VerifyConfig(StageConfig):
    kind: AnswerKind = "math"
    """How answers compare: math (numbers, then symbolic with math-verify), number (exact values) or text (normalised strings)."""
    field: str = "response"
    """The text the answer is extracted from: response, text, conversation or a string column."""
    answer_column: str = DEFAULT_ANSWER_COLUMN
    """The column holding each row's reference answer."""
    drop_unverified: bool = False
    """Reject rows whose answer is verified false (reason wrong_answer)."""
    drop_unknown: bool = False
    """Also reject rows whose answer could not be checked (reason unverifiable)."""


def verify_batch(kind: AnswerKind, rows: list[tuple[str, str | None]]) -> list[tuple[str, str | None, str | None]]:
    """(verdict, extracted answer, rule) for each (response, reference)."""
    out = []
    for response, reference in rows:
        found = extract_answer(response, kind)
        verdict = check_answer(found.text if found else None, reference, kind)
        out.append(("unknown" if verdict is None else "true" if verdict else "false",
                    found.text if found else None, found.rule if found else None))
    return out


def shown(value: str) -> str:
    value = " ".join(value.split())
    return repr(value if len(value) <= SHOWN_CHARS else value[: SHOWN_CHARS - 3] + "...")


class Verify(Stage):
    """Check each row's final answer against its reference: columns ``verified``,
    ``extracted_answer``, ``answer_rule``; rejects only with the drop options."""

    name = "verify"
    version = "1"
    Config = VerifyConfig
    row_wise = True
    config: VerifyConfig

    def __init__(self, config: Any = None, /, **overrides: Any):
        super().__init__(config, **overrides)
        if self.config.kind == "math" and importlib.util.find_spec("math_verify") is None:
            raise StageError(MATH_VERIFY_MISSING)  # looked up, not imported: SymPy is slow to import

    def dependencies(self, store: Store | None) -> list[str]:
        """math-verify's version: a new one can change verdicts, so the stage reruns."""
        if self.config.kind != "math":
            return []
        return [f"math-verify=={importlib.metadata.version('math-verify')}"]

    def references(self, table: pa.Table, ctx: StageContext) -> list[str | None]:
        column = self.config.answer_column
        if column not in table.column_names:
            if column != DEFAULT_ANSWER_COLUMN:
                raise StageError(f"verify: answer_column '{column}' is not a column of the table; "
                                 f"columns are {', '.join(table.column_names)}")
            warn(f"verify: the table has no '{column}' column, so no row has a reference answer: "
                 "every row is unknown (set answer_column to the column holding them)")
            return [None] * table.num_rows
        return [None if v is None else str(v) for v in table.column(column).to_pylist()]

    def process(self, table: pa.Table, ctx: StageContext) -> StageOutput:
        c = self.config
        responses = texts(table, c.field)
        refs = self.references(table, ctx)
        no_reference = "no reference answer" + ("" if c.answer_column in table.column_names
                                                  else f" (the table has no '{c.answer_column}' column)")
        results = ctx.map_batches(partial(verify_batch, c.kind), list(zip(responses, refs)), BATCH_ROWS, "verify answers")
        verdicts = [v for v, _, _ in results]
        columns = {
            "verified": verdicts,
            "extracted_answer": [a for _, a, _ in results],
            "answer_rule": [r for _, _, r in results],
        }
        table = with_columns(table, {name: pa.array(values, pa.string()) for name, values in columns.items()})
        counts = Counter(verdicts)
        ctx.reporter.log(f"verify: {counts['true']:,} true, {counts['false']:,} false, {counts['unknown']:,} unknown "
                         f"of {len(verdicts):,} rows")

        keep, reasons, details = [], [], []
        for (verdict, answer, rule), ref in zip(results, refs):
            drop = (verdict == "false" and c.drop_unverified) or (verdict == "unknown" and c.drop_unknown)
            keep.append(not drop)
            reasons.append(None if not drop else "wrong_answer" if verdict == "false" else "unverifiable")
            details.append((describe(verdict, answer, rule, ref) if ref and ref.strip() else no_reference) if drop else None)
        stats = {"verified_true": counts["true"], "verified_false": counts["false"], "verified_unknown": counts["unknown"]}
        return split(table, keep, reasons, details).with_stats(stats)


def describe(verdict: str, answer: str | None, rule: str | None, reference: str) -> str:
    """The detail of a rejected row with a reference: what was extracted, by which rule, against what."""
    if verdict == "false":
        return f"extracted {shown(answer or '')} ({rule}) != reference {shown(reference)}"
    if answer is None:
        return f"no final answer found in the response (reference {shown(reference)})"
    return f"extracted {shown(answer)} ({rule}) cannot be compared with reference {shown(reference)}"
