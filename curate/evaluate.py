"""Evaluation: what a model trained on a curated version scores on held-out questions.

Two numbers per model, from one eval set (``load_eval_set``):

* **accuracy** -- one greedy answer (temperature 0) per question, the question sent as chat
  messages (an optional system turn, then the user turn: the question, and an optional
  ``instruction`` such as ``BOXED_INSTRUCTION``). Each answer is graded as ``verify`` grades
  rows (``curate.algorithms.answers``: extract the final answer, compare it with the reference):
  true, false, or unknown when the check cannot be made (no final answer found, a side
  that is not a comparable value). Unknown counts as wrong for accuracy and is reported
  on its own. The 95% interval is Wilson's score interval (Wilson 1927): eval sets are
  small (tens to hundreds of questions), and at that size the normal approximation
  p +- z*sqrt(p(1-p)/n) has poor coverage, collapses to a zero-width interval at 0 or n
  correct and can leave [0, 1]; Wilson's keeps close to nominal coverage for small n and
  p near 0 or 1 (Brown, Cai & DasGupta 2001, "Interval Estimation for a Binomial
  Proportion"), with no simulation.
* **held-out loss** -- the mean negative log-likelihood per token of the items' reference
  solutions, each given its question as the model sees it (``lm.chat_prompt`` of the
  system turn and the bare question, without the answer-format instruction: the context an
  SFT row of that question gives). Token-weighted over all solution tokens, as a training
  loss is, so it reads on the same scale as the final train loss. None when no item has a
  solution.

``EvalResult.write(dir)`` leaves ``eval_items.jsonl`` (one record per question: response,
extracted answer, verdict, loss) and then ``eval.json`` (the summary, written last).
``comparison_table`` / ``write_comparison`` put several results side by side, one line per
model and the data it was trained on.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .algorithms.answers import (
    MATH_VERIFY_MISSING,
    AnswerKind,
    check_answer,
    extract_answer,
)
from .algorithms.intervals import Z95, wilson_interval  # noqa: F401 (re-exported: the eval API's interval)
from .errors import SourceError, UsageError
from .models.base import LM, Sampling
from .sources.formats import FORMATS, file_format, read_records, suffixes
from .sources.normalise import ROLES
from .sources.refs import DataSpec, resolve_data
from .stage import Reporter
from .store import Store

QUESTION_FIELDS = ("prompt", "problem", "question")
SOLUTION_FIELDS = ("solution", "response")
BOXED_INSTRUCTION = "Put the final answer in \\boxed{}."
# Questions per generate call: how often the progress bar moves. Large enough that a
# backend still fills its batches (transformers decodes 64 sequences at a time).
PROGRESS_CHUNK = 64
SHOWN_PROBLEMS = 10


# -- the eval set ------------------------------------------------------------------------

@dataclass(frozen=True)
class EvalItem:
    id: str
    question: str
    answer: str  # the reference final answer
    solution: str | None = None  # a reference solution, scored for the held-out loss


def load_eval_set(data: DataSpec | os.PathLike, store: Store | None = None) -> list[EvalItem]:
    """The questions of an eval set, with reference answers and (optionally) solutions.

    ``data`` is a local file of records (``.jsonl``, ``.json``, ``.csv``, ``.parquet``, and their
    ``.gz`` forms: the sources' formats table, ``curate.sources.formats``), a dataset reference
    in the store (``NAME``, ``NAME@N``) or a source mapping (``{type: champ,
    include_model_solutions: false, include_reference: true}``).
    A row's question is its ``prompt``, ``problem`` or ``question`` field, else the first
    user turn of ``messages``; its reference is ``answer`` (a number becomes text); its
    solution is ``solution`` or ``response``, else the assistant turn after the question.
    Ids are the rows' ``id`` (in a file without one, ``<file name>:<line>``).

    A local file is read record by record by the sources' reader, not their normalisation: that
    keeps only conversations or texts, and an eval file is usually neither (``problem`` +
    ``answer``, no response). Every row without a question or an answer is reported, with
    its file and line, in one ``SourceError``."""
    if isinstance(data, os.PathLike):
        data = os.fspath(data)
    if isinstance(data, str) and Path(data).expanduser().is_file():
        path = Path(data).expanduser()
        rows = _file_records(path)
        label = str(path)
    else:
        ref = resolve_data(data, store, what="eval set")
        table = ref.load()
        label = ref.label
        rows = [(f"row {i} (id {rec.get('id')!r})", rec.get("id"), rec)
                for i, rec in enumerate(table.to_pylist(), 1)]
    items, problems, seen = [], [], {}
    for where, default_id, rec in rows:
        try:
            item = _item(rec, default_id)
        except _BadRow as bad:
            problems.append(f"{where}: {bad}")
            continue
        if item.id in seen:
            problems.append(f"{where}: id {item.id!r} was already used by {seen[item.id]}")
            continue
        seen[item.id] = where
        items.append(item)
    if problems:
        shown = "\n".join(f"  - {p}" for p in problems[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        raise SourceError(f"eval set {label}: {len(problems)} of {len(rows)} rows cannot be evaluated "
                          f"(each needs a question -- {', '.join(QUESTION_FIELDS)} or a user turn of messages -- "
                          f"and a reference 'answer'):\n{shown}{more}")
    if not items:
        raise SourceError(f"eval set {label} holds no items")
    return items


class _BadRow(Exception):
    pass


def _file_records(path: Path) -> list[tuple[str, str, Any]]:
    """(where, default id, record) for each record of a local eval file."""
    try:
        fmt = file_format(path)
        if fmt.name == "text":  # its records are bare strings: no answer to grade against
            objects = [f for f in FORMATS.values() if f.name != "text"]
            raise SourceError(f"{path}: a text file holds no answers; an eval set is a file of records with a question "
                              f"and an answer ({', '.join(suffixes(objects))})")
        records = list(read_records(path, fmt))
    except SourceError as e:  # names the file, and the line where there is one
        raise SourceError(f"eval set: {e}") from None
    return [(r.where(str(path)), f"{path.name}:{r.number}", r.value) for r in records]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _item(rec: Any, default_id: Any) -> EvalItem:
    if not isinstance(rec, dict):
        raise _BadRow(f"a record is an object with a question and an answer, not {type(rec).__name__}")
    turns = _turns(rec.get("messages"))
    asked = next((i for i, t in enumerate(turns) if t["role"] == "user"), None)
    key = next((k for k in QUESTION_FIELDS if rec.get(k) is not None), None)
    if key is not None:
        question = _text(rec[key])
        if question is None:
            raise _BadRow(f"'{key}' is {'empty' if isinstance(rec[key], str) else type(rec[key]).__name__}, not a question")
    elif asked is not None:
        question = turns[asked]["content"]
    else:
        raise _BadRow(f"no question (the record has {', '.join(rec) or 'no fields'})")
    answer = rec.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if _text(answer) is None:
        got = "is missing" if "answer" not in rec else "is empty" if isinstance(answer, str) else f"is {answer!r}"
        raise _BadRow(f"no reference answer: 'answer' {got}")
    solution = next((_text(rec.get(k)) for k in SOLUTION_FIELDS if _text(rec.get(k))), None)
    if solution is None and asked is not None:
        solution = next((t["content"] for t in turns[asked + 1:] if t["role"] == "assistant"), None)
    rid = rec.get("id")
    rid = default_id if rid is None or (isinstance(rid, str) and not rid.strip()) else rid
    return EvalItem(str(rid), question, str(answer), solution)


def _turns(messages: Any) -> list[dict]:
    """``messages`` as {role, content} turns with known roles and text (others skipped)."""
    if not isinstance(messages, list):
        return []
    out = []
    for t in messages:
        role = t.get("role") if isinstance(t, dict) else None
        if isinstance(role, str) and role.strip().lower() in ROLES and _text(t.get("content")):
            out.append({"role": ROLES[role.strip().lower()], "content": t["content"]})
    return out


# -- scoring -----------------------------------------------------------------------------

@dataclass
class EvalRecord:
    id: str
    question: str
    response: str
    extracted: str | None  # the final answer found in the response
    rule: str | None  # the extraction rule that found it (boxed, answer_marker, ...)
    reference: str
    verdict: str  # "true", "false" or "unknown"
    loss: float | None = None  # mean NLL per token of the item's reference solution
    loss_tokens: int = 0


@dataclass
class EvalResult:
    n: int
    correct: int
    wrong: int  # verified false
    unknown: int  # could not be checked; wrong for accuracy
    accuracy: float
    ci_low: float
    ci_high: float
    loss: float | None
    loss_tokens: int
    seconds: float
    items: list[EvalRecord] = field(default_factory=list, repr=False)
    model: str = ""
    model_identity: str = ""
    settings: dict[str, Any] = field(default_factory=dict)  # kind, max_tokens, system_prompt, instruction

    def to_json(self) -> dict[str, Any]:
        """The summary (no per-item records), JSON-ready; ``comparison_table`` reads it."""
        out = {k: v for k, v in asdict(self).items() if k != "items"}
        out["confidence"] = 0.95
        out["loss_items"] = sum(r.loss is not None for r in self.items)
        return out

    def write(self, directory: str | os.PathLike) -> Path:
        """``eval_items.jsonl``, then ``eval.json`` (last: it exists iff the evaluation was
        written whole) into ``directory``; returns the path of ``eval.json``."""
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "eval_items.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(asdict(r), ensure_ascii=False) + "\n" for r in self.items)
        summary = out / "eval.json"
        tmp = out / "eval.json.tmp"
        tmp.write_text(json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        tmp.replace(summary)
        return summary


def evaluate(lm: LM, items: Sequence[EvalItem], *, kind: AnswerKind = "math", max_tokens: int = 512,
             system_prompt: str | None = None, instruction: str | None = None, reporter: Reporter | None = None,
             label: str | None = None) -> EvalResult:
    """Accuracy (greedy answers graded against the references, with Wilson's 95% interval)
    and held-out loss (on the items' reference solutions) of ``lm`` on ``items``; ``label``
    names the model in the result (default: its name in the pool)."""
    label = label or lm.name
    if kind not in ("math", "number", "text"):
        raise UsageError(f"evaluate: kind must be math, number or text, not {kind!r}")
    if kind == "math" and importlib.util.find_spec("math_verify") is None:
        raise UsageError(MATH_VERIFY_MISSING)
    if not items:
        raise UsageError("evaluate: the eval set holds no items")
    reporter = reporter or Reporter()
    start = time.perf_counter()
    head = [{"role": "system", "content": system_prompt}] if system_prompt else []

    def asked(question: str) -> list[dict]:
        content = f"{question}\n\n{instruction}" if instruction else question
        return [*head, {"role": "user", "content": content}]

    sampling = Sampling(n=1, temperature=0.0, max_tokens=max_tokens)
    prompts = [asked(it.question) for it in items]
    chunks = [prompts[i : i + PROGRESS_CHUNK] for i in range(0, len(prompts), PROGRESS_CHUNK)]
    responses: list[str] = []
    for chunk in reporter.track(chunks, total=len(chunks), description=f"{label}: answering {len(prompts):,} questions"):
        responses.extend(r[0] for r in lm.generate(chunk, sampling))

    records = []
    for it, response in zip(items, responses):
        found = extract_answer(response, kind)
        verdict = check_answer(found.text if found else None, it.answer, kind)
        records.append(EvalRecord(it.id, it.question, response, found.text if found else None,
                                  found.rule if found else None, it.answer,
                                  "unknown" if verdict is None else "true" if verdict else "false"))

    # Held-out loss: the solution given the question as an SFT row presents it (no instruction).
    scored = [i for i, it in enumerate(items) if it.solution]
    total_nll, tokens = 0.0, 0
    if scored:
        pairs = [(lm.chat_prompt([*head, {"role": "user", "content": items[i].question}]), items[i].solution) for i in scored]
        for i, lp in zip(scored, lm.logprobs(pairs, track=reporter.track, description="held-out loss")):
            lp = np.asarray(lp, dtype=np.float64)
            if lp.size:
                records[i].loss, records[i].loss_tokens = float(-lp.mean()), int(lp.size)
                total_nll, tokens = total_nll - float(lp.sum()), tokens + int(lp.size)

    n = len(records)
    correct = sum(r.verdict == "true" for r in records)
    wrong = sum(r.verdict == "false" for r in records)
    low, high = wilson_interval(correct, n)
    result = EvalResult(
        n=n, correct=correct, wrong=wrong, unknown=n - correct - wrong, accuracy=correct / n, ci_low=low, ci_high=high,
        loss=total_nll / tokens if tokens else None, loss_tokens=tokens, seconds=round(time.perf_counter() - start, 3),
        items=records, model=label, model_identity=lm.identity(),
        settings={"kind": kind, "max_tokens": max_tokens, "system_prompt": system_prompt, "instruction": instruction},
    )
    loss = f", held-out loss {result.loss:.4f} over {tokens:,} tokens" if result.loss is not None else ""
    reporter.log(f"{label}: accuracy {format_accuracy(result.to_json())} ({correct}/{n}, "
                 f"{result.unknown} unknown){loss}")
    return result


# -- comparing runs ----------------------------------------------------------------------

COLUMNS = ("model", "training data", "rows", "accuracy [95% CI]", "correct / n", "held-out loss", "train loss")
CSV_COLUMNS = ("label", "dataset", "dataset_fingerprint", "rows", "accuracy", "ci_low", "ci_high", "correct", "n",
               "unknown", "loss", "loss_tokens", "train_loss")
FINGERPRINT_CHARS = 12


def format_accuracy(ev: Mapping[str, Any]) -> str:
    """``30.0% [12.1, 54.3]``: accuracy and its interval, in percent."""
    acc, low, high = ev.get("accuracy"), ev.get("ci_low"), ev.get("ci_high")
    if acc is None:
        return "—"
    ci = f" [{100 * low:.1f}, {100 * high:.1f}]" if low is not None and high is not None else ""
    return f"{100 * acc:.1f}%{ci}"


def _run(row: tuple[str, Mapping[str, Any]] | Mapping[str, Any]) -> tuple[str, Mapping[str, Any], Mapping[str, Any]]:
    """(label, run, eval summary) of one comparison row."""
    if isinstance(row, Mapping):
        label, run = str(row.get("label") or ""), row
    else:
        label, run = row
    ev = run.get("eval") or {}
    if isinstance(ev, EvalResult):
        ev = ev.to_json()
    return str(label), run, ev


def _number(value: Any, fmt: str) -> str:
    return "—" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def comparison_table(rows: Sequence[tuple[str, Mapping[str, Any]] | Mapping[str, Any]]) -> str:
    """A Markdown table, one line per trained model.

    Each row is ``(label, run)`` or a ``run`` mapping with a ``label`` key. ``run`` keys,
    each optional (a missing value shows as "—"; a base model has no dataset):

    * ``dataset`` -- the training data's name (``math_sft``, ``math_sft@2``);
    * ``dataset_fingerprint`` -- its version fingerprint (the first 12 characters shown);
    * ``rows`` -- training rows;
    * ``train_loss`` -- the final training loss;
    * ``eval`` -- ``EvalResult.to_json()`` (or the ``EvalResult``): accuracy, ci_low,
      ci_high, correct, n, loss.
    """
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    for row in rows:
        label, run, ev = _run(row)
        data = run.get("dataset") or "—"
        if run.get("dataset_fingerprint"):
            data = f"{data} @ {str(run['dataset_fingerprint'])[:FINGERPRINT_CHARS]}"
        n = ev.get("n")
        cells = [
            label or "—", data, _number(run.get("rows"), ","), format_accuracy(ev),
            f"{ev.get('correct')} / {n}" if n is not None else "—",
            _number(ev.get("loss"), ".4f"), _number(run.get("train_loss"), ".4f"),
        ]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def write_comparison(rows: Sequence[tuple[str, Mapping[str, Any]] | Mapping[str, Any]],
                     path_md: str | os.PathLike) -> tuple[Path, Path]:
    """``comparison_table(rows)`` into ``path_md``, and the same numbers, unformatted, into a
    ``.csv`` beside it (columns ``CSV_COLUMNS``); returns both paths."""
    md = Path(path_md)
    md.parent.mkdir(parents=True, exist_ok=True)
    md.write_text(comparison_table(rows), encoding="utf-8")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row in rows:
        label, run, ev = _run(row)
        writer.writerow([label, run.get("dataset"), run.get("dataset_fingerprint"), run.get("rows"),
                         *(ev.get(k) for k in ("accuracy", "ci_low", "ci_high", "correct", "n", "unknown", "loss",
                                               "loss_tokens")), run.get("train_loss")])
    out = md.with_suffix(".csv")
    out.write_text(buf.getvalue(), encoding="utf-8")
    return md, out
