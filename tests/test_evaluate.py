"""Evaluation: Wilson intervals, exact accuracy counts, held-out loss, eval-set reading,
the comparison table; and a real tiny LM evaluated on the held-out CHAMP problems."""

from __future__ import annotations

import csv
import itertools
import json
import math
import random

import pytest

from curate.errors import SourceError, UsageError
from curate.evaluate import (
    BOXED_INSTRUCTION,
    EvalItem,
    EvalResult,
    comparison_table,
    evaluate,
    load_eval_set,
    wilson_interval,
    write_comparison,
)
from curate.models.pool import ModelPool

from .conftest import ROOT
from .scripted import ScriptedLM, ScriptedScorer

HELDOUT = ROOT / "recipes" / "data" / "champ_heldout.jsonl"


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# -- Wilson interval -----------------------------------------------------------------------

def test_wilson_interval_matches_known_values():
    assert wilson_interval(0, 10) == (0.0, pytest.approx(0.27754, abs=1e-4))
    assert wilson_interval(10, 10) == (pytest.approx(0.72246, abs=1e-4), 1.0)
    low, high = wilson_interval(5, 10)
    assert (low, high) == (pytest.approx(0.2366, abs=1e-4), pytest.approx(0.7634, abs=1e-4))
    low, high = wilson_interval(3, 10)  # 30.0% [10.8, 60.3]
    assert (round(100 * low, 1), round(100 * high, 1)) == (10.8, 60.3)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(11, 10)


def test_wilson_interval_is_monotonic_within_unit_interval_and_narrows_with_n():
    for n in (1, 2, 7, 30, 500):
        bounds = [wilson_interval(k, n) for k in range(n + 1)]
        for k, (low, high) in enumerate(bounds):
            assert 0.0 <= low <= k / n <= high <= 1.0
        assert all(a[0] <= b[0] and a[1] <= b[1] for a, b in itertools.pairwise(bounds))
    widths = [h - lo for lo, h in (wilson_interval(n // 2, n) for n in (10, 40, 160, 640))]
    assert widths == sorted(widths, reverse=True)


# -- accuracy and loss arithmetic (scripted model) -----------------------------------------

def items_and_model():
    items = [EvalItem(f"q{i}", f"What is {i} + {i}?", str(2 * i)) for i in range(10)]
    answers = {}
    for i, it in enumerate(items):
        if i < 3:
            answers[it.question] = [f"So the answer is \\boxed{{{2 * i}}}."]  # right
        elif i < 7:
            answers[it.question] = [f"The answer is \\boxed{{{2 * i + 1}}}."]  # wrong
        else:
            answers[it.question] = ["I cannot say."]  # no final answer: unknown
    return items, ScriptedLM(answers)


def test_accuracy_counts_exactly_the_answers_verified_true_and_unknown_counts_as_wrong():
    items, lm = items_and_model()
    result = evaluate(lm, items, kind="number")
    assert (result.n, result.correct, result.wrong, result.unknown) == (10, 3, 4, 3)
    assert result.accuracy == 0.3
    assert (result.ci_low, result.ci_high) == wilson_interval(3, 10)
    assert [r.verdict for r in result.items] == ["true"] * 3 + ["false"] * 4 + ["unknown"] * 3
    assert [r.id for r in result.items] == [it.id for it in items]
    assert result.items[0].extracted == "0" and result.items[0].rule == "boxed" and result.items[0].reference == "0"
    assert result.items[9].extracted is None
    assert result.loss is None and result.loss_tokens == 0  # no item has a solution
    assert lm.calls == [(it.question, 1) for it in items]  # one greedy answer per question


def test_questions_are_sent_as_chat_with_system_prompt_and_instruction():
    item = EvalItem("a", "What is 2 + 2?", "4")
    sent = []

    class Recording(ScriptedLM):
        def _generate(self, prompts, sampling):
            sent.extend(prompts)
            assert sampling.temperature == 0 and sampling.n == 1 and sampling.max_tokens == 7
            return [["\\boxed{4}"] for _ in prompts]

    result = evaluate(Recording({}), [item], kind="number", max_tokens=7, system_prompt="Be brief.",
                      instruction=BOXED_INSTRUCTION)
    assert sent == [[{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "What is 2 + 2?\n\nPut the final answer in \\boxed{}."}]]
    assert result.correct == 1
    assert result.settings["instruction"] == BOXED_INSTRUCTION


def test_held_out_loss_is_token_weighted_over_the_items_with_a_solution():
    items = [
        EvalItem("a", "Q1", "1", solution="one two"),  # 2 tokens, NLL 1 each
        EvalItem("b", "Q2", "2", solution="three four five six"),  # 4 tokens, NLL 4 each
        EvalItem("c", "Q3", "3"),  # no solution: not scored
    ]
    lm = ScriptedScorer({f"{q}\n\n{BOXED_INSTRUCTION}": ["\\boxed{1}"] for q in ("Q1", "Q2", "Q3")}, nll={"three four five six": 4.0})
    result = evaluate(lm, items, kind="number", instruction=BOXED_INSTRUCTION)
    assert result.loss == pytest.approx((2 * 1.0 + 4 * 4.0) / 6)  # not the mean of means (2.5)
    assert result.loss_tokens == 6
    assert [r.loss for r in result.items] == [pytest.approx(1.0), pytest.approx(4.0), None]
    # the context is the chat-rendered bare question, without the answer-format instruction
    assert lm.scored == [("<user>Q1<assistant>", "one two"), ("<user>Q2<assistant>", "three four five six")]
    assert result.to_json()["loss_items"] == 2


def test_evaluate_rejects_an_unknown_kind_and_an_empty_eval_set():
    items, lm = items_and_model()
    with pytest.raises(UsageError, match="kind"):
        evaluate(lm, items, kind="latex")
    with pytest.raises(UsageError, match="no items"):
        evaluate(lm, [], kind="number")


# -- eval sets -----------------------------------------------------------------------------

def test_load_eval_set_reads_the_heldout_file_with_ids_answers_and_solutions():
    items = load_eval_set(HELDOUT)
    rows = [json.loads(line) for line in HELDOUT.read_text(encoding="utf-8").splitlines()]
    assert [it.id for it in items] == [r["id"] for r in rows]
    assert [(it.question, it.answer) for it in items] == [(r["problem"], r["answer"]) for r in rows]
    assert all(it.solution and it.solution.endswith(f"Answer: {it.answer}") for it in items)


def test_load_eval_set_reads_messages_numbers_default_ids_and_source_mappings(tmp_path):
    path = write_jsonl(tmp_path / "chat.jsonl", [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "human", "content": "1 + 1?"},
                      {"role": "gpt", "content": "It is 2."}], "answer": 2},
        {"id": 7, "question": "2 + 2?", "answer": "4", "response": "2 + 2 = 4"},
    ])
    a, b = load_eval_set(str(path))
    assert a == EvalItem("chat.jsonl:1", "1 + 1?", "2", "It is 2.")
    assert b == EvalItem("7", "2 + 2?", "4", "2 + 2 = 4")
    champ = load_eval_set({"type": "champ", "include_model_solutions": False, "include_reference": True,
                           "limit_problems": 2})
    assert len(champ) == 2 and all(it.id.endswith("/reference") for it in champ)
    assert all(it.solution and it.solution.endswith(f"Answer: {it.answer}") for it in champ)


def test_a_row_without_answer_or_question_is_an_error_naming_the_file_and_row(tmp_path):
    path = write_jsonl(tmp_path / "bad.jsonl", [
        {"id": "ok", "problem": "1 + 1?", "answer": "2"},
        {"id": "no_answer", "problem": "2 + 2?"},
        {"id": "no_question", "answer": "3"},
    ])
    with pytest.raises(SourceError) as err:
        load_eval_set(str(path))
    msg = str(err.value)
    assert f"{path} line 2: no reference answer: 'answer' is missing" in msg
    assert f"{path} line 3: no question" in msg
    assert "2 of 3 rows" in msg
    with pytest.raises(SourceError, match="does not exist"):
        load_eval_set(str(tmp_path / "missing.jsonl"))
    (tmp_path / "broken.jsonl").write_text('{"problem": "x", "answer": "1"}\n{not json\n')
    with pytest.raises(SourceError, match="broken.jsonl line 2"):
        load_eval_set(str(tmp_path / "broken.jsonl"))


def test_eval_files_of_every_record_format_read_alike_and_a_text_file_is_refused(tmp_path):
    import gzip

    rows = [{"id": "q1", "problem": "1 + 1?", "answer": "2"}, {"id": "q2", "problem": "2 + 2?", "answer": "4"}]
    plain = write_jsonl(tmp_path / "e.jsonl", rows)
    with open(tmp_path / "e.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "e.csv.gz").write_bytes(gzip.compress((tmp_path / "e.csv").read_bytes()))
    (tmp_path / "e.json").write_text(json.dumps(rows, indent=1))
    expected = load_eval_set(str(plain))
    assert [it.id for it in expected] == ["q1", "q2"]
    for name in ("e.csv", "e.csv.gz", "e.json"):
        assert load_eval_set(str(tmp_path / name)) == expected, name
    (tmp_path / "e.txt").write_text("1 + 1?\n")
    with pytest.raises(SourceError, match=r"eval set: .*e\.txt: a text file holds no answers.*\.jsonl"):
        load_eval_set(str(tmp_path / "e.txt"))
    (tmp_path / "e.xlsx").write_text("x")
    with pytest.raises(SourceError, match=r"e\.xlsx: unknown file format \(known suffixes: .*\.parquet"):
        load_eval_set(str(tmp_path / "e.xlsx"))


# -- a real model --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_lm(tiny_lm, session_cache):
    # Module scope runs before the autouse fixture sets $CURATE_CACHE: name the cache here.
    pool = ModelPool({"tiny": {"backend": "transformers", "model": str(tiny_lm)}}, cache_root=str(session_cache))
    yield pool.get("tiny")
    pool.close()


def test_tiny_lm_on_the_heldout_file_gives_verdicts_a_finite_loss_and_writes_eval_json(real_lm, tmp_path):
    items = load_eval_set(HELDOUT)
    result = evaluate(real_lm, items, kind="math", max_tokens=32, instruction=BOXED_INSTRUCTION)
    assert result.n == 10 and result.correct + result.wrong + result.unknown == 10
    assert {r.verdict for r in result.items} <= {"true", "false", "unknown"}
    assert all(isinstance(r.response, str) for r in result.items)
    assert math.isfinite(result.loss) and result.loss > 0 and result.loss_tokens > 0
    assert all(r.loss_tokens > 0 for r in result.items)
    assert result.ci_low <= result.accuracy <= result.ci_high

    summary = result.write(tmp_path / "run")
    written = json.loads(summary.read_text())
    assert summary.name == "eval.json" and written == json.loads(json.dumps(result.to_json()))
    assert written["n"] == 10 and written["loss_tokens"] == result.loss_tokens and "items" not in written
    lines = (tmp_path / "run" / "eval_items.jsonl").read_text(encoding="utf-8").splitlines()
    assert [json.loads(x)["id"] for x in lines] == [it.id for it in items]


def test_held_out_loss_is_lower_for_the_solution_than_for_its_characters_shuffled(real_lm):
    items = load_eval_set(HELDOUT)
    rng = random.Random(0)
    shuffled = [EvalItem(it.id, it.question, it.answer, "".join(rng.sample(it.solution, len(it.solution))))
                for it in items]
    real = evaluate(real_lm, items, kind="math", max_tokens=1)
    scrambled = evaluate(real_lm, shuffled, kind="math", max_tokens=1)
    assert real.loss < scrambled.loss - 0.5


# -- comparison ----------------------------------------------------------------------------

def run_row(label, dataset, correct, n, loss, train_loss):
    low, high = wilson_interval(correct, n)
    ev = EvalResult(n, correct, n - correct, 0, correct / n, low, high, loss, 100, 1.0).to_json()
    return label, {"dataset": dataset, "dataset_fingerprint": "0123456789abcdef0123", "rows": 1234,
                   "train_loss": train_loss, "eval": ev}


def test_comparison_table_shows_accuracy_with_its_interval_and_writes_a_csv(tmp_path):
    base = {"eval": run_row("x", None, 0, 10, None, None)[1]["eval"]}  # no training data, no solutions
    rows = [run_row("curated", "math_sft", 3, 10, 1.23456, 0.9), ("base | raw", base)]
    table = comparison_table(rows)
    lines = table.splitlines()
    assert lines[0].startswith("| model | training data | rows | accuracy [95% CI]")
    assert lines[2] == "| curated | math_sft @ 0123456789ab | 1,234 | 30.0% [10.8, 60.3] | 3 / 10 | 1.2346 | 0.9000 |"
    assert lines[3] == "| base \\| raw | — | — | 0.0% [0.0, 27.8] | 0 / 10 | — | — |"
    md, csv_path = write_comparison([{"label": "curated", **rows[0][1]}], tmp_path / "cmp" / "compare.md")
    assert md.read_text() == comparison_table(rows[:1])
    (row,) = csv.DictReader(csv_path.open())
    assert csv_path.name == "compare.csv"
    assert (row["label"], row["correct"], row["n"], float(row["accuracy"]), row["rows"]) == ("curated", "3", "10", 0.3, "1234")
