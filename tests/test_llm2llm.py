"""llm2llm: LLM2LLM (METHODS 4). The loop with real tiny LMs as the student
(the session's tiny LM, fine-tuned a few steps per round) and the teacher (a tiny LM trained here
to write items in LLM2LLM's format); exact accounting, retries, budgets, stopping and resuming
with a scripted student and teacher; ROUGE-L and the item parser on known values."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pytest

import curate
from curate.algorithms import llm2llm_text
from curate.algorithms.llm2llm_text import (
    Item,
    QuestionPool,
    lcs_length,
    parse_items,
    rouge_l,
    rouge_tokens,
)
from curate.errors import RecipeError, StageError
from curate.fingerprint import hash_file, hash_parts
from curate.models import ModelPool
from curate.models.config import TinyLMSpec
from curate.models.tiny import MARKER, render_chat, train_tiny
from curate.records import MESSAGES_TYPE, prompt_of
from curate.sources import SOURCES
from curate.stage import StageContext
from curate.stages import llm2llm
from curate.stages.dart import RejectionSample
from curate.stages.llm2llm import LLM2LLM
from curate.store import Store

from .scripted import ItemTeacher, numbered_items

NAMES = ["Tom", "Ann", "Lee", "Max", "Eva", "Sam"]
TEMPLATES = [  # (question, solution, answer(a, b))
    ("{n} has {a} apples and buys {b} more. How many apples does {n} have now?", "{n} has {a} + {b} = {r} apples.",
     lambda a, b: a + b),
    ("A rectangle is {a} cm long and {b} cm wide. What is its area in square centimeters?", "The area is {a} * {b} = {r}.",
     lambda a, b: a * b),
    ("{n} reads {a} pages every day for {b} days. How many pages does {n} read in total?", "{n} reads {a} * {b} = {r} pages.",
     lambda a, b: a * b),
    ("What is the remainder when {a} is divided by {b}?", "{a} = {b} * {q} + {r}, so the remainder is {r}.",
     lambda a, b: a % b),
    ("A train travels {a} km per hour for {b} hours. How far does it travel in kilometers?", "It travels {a} * {b} = {r} km.",
     lambda a, b: a * b),
    ("{n} had {a} stickers and gave away {b}. How many stickers are left?", "{n} has {a} - {b} = {r} stickers left.",
     lambda a, b: a - b),
]


def problem(i: int, v: int) -> tuple[str, str, str]:
    """(question, solution, answer) of template i: v = 0 is seed i, v > 0 other names and numbers."""
    q, s, f = TEMPLATES[i]
    name, a, b = NAMES[(i + v) % 6], 20 + 3 * i + 7 * v, 4 + i + v
    return q.format(n=name, a=a, b=b), s.format(n=name, a=a, b=b, r=f(a, b), q=a // b), str(f(a, b))


SEEDS = [problem(i, 0) for i in range(6)]
QUESTIONS = [q for q, _, _ in SEEDS]
ANSWERS = {q: a for q, _, a in SEEDS}


def seed_table(n: int = 6) -> pa.Table:
    msgs = [[{"role": "user", "content": q}, {"role": "assistant", "content": f"{s}\n#### {a}"}] for q, s, a in SEEDS[:n]]
    return pa.table({"id": [f"s{i}" for i in range(n)], "messages": pa.array(msgs, MESSAGES_TYPE),
                     "answer": [a for _, _, a in SEEDS[:n]], "category": ["Arithmetic"] * n})


def near_copy(q: str) -> tuple[str, str, str]:
    """The seed question with one word more: ROUGE-L F1 = 2n / (2n + 1) > 0.95 for n >= 10 tokens."""
    return f"{q} Explain.", "Copied.", "0"


def novel(q: str, seed: int, k: int) -> tuple[str, str, str]:
    """A new problem, different for every (seed question, sampling seed, k)."""
    i = QUESTIONS.index(q)
    rows, cols = i + 2, seed * 10 + k + 3
    return (f"Practice {i}.{seed}.{k}: {NAMES[i]} tiles a floor with {rows} rows of {cols} tiles. How many tiles?",
            f"{rows} * {cols} = {rows * cols}.", str(rows * cols))


def copy_then_new(q: str, seed: int, n: int) -> str:
    """One near-copy and one new problem per request, whatever ``n`` asks for."""
    return numbered_items([near_copy(q), novel(q, seed, 1)])


def new_rows(out) -> list[dict]:
    return [r for r in out.kept.to_pylist() if r["generated_by"] is not None]


def llm2llm_stage(**kw) -> LLM2LLM:
    args = {"model": "teacher", "student": "student", "kind": "number", "rounds": 2, "student_train": {"max_steps": 1},
            **kw}
    return LLM2LLM(**args)


def pool(tiny_lm: Path, teacher, session_cache: Path) -> ModelPool:
    return ModelPool({"teacher": teacher, "student": {"backend": "transformers", "model": str(tiny_lm)}},
                     cache_root=str(session_cache))


# -- a scripted student: what it gets right is set by the test ---------------------------------
@dataclass
class FakeStudent:
    right: object = lambda r, q: False  # (evaluation number, 1-based; seed question) -> answers it right?
    trained: list = field(default_factory=list)  # (rows, base path) per training
    asked: list = field(default_factory=list)  # the questions of each evaluation


@pytest.fixture
def student(monkeypatch) -> FakeStudent:
    fake = FakeStudent()

    def train(data, train, base, work, out, reporter):
        fake.trained.append((data.num_rows, base.path))
        (out / "model").mkdir(parents=True)
        return {"final_loss": 1.5, "steps": 1}

    def answers(model, prompts, c, ctx):
        fake.asked.append([prompt_of(p) for p in prompts])
        r = len(fake.asked)
        return [f"#### {ANSWERS[q]}" if fake.right(r, q) else "#### -1" for q in fake.asked[-1]]

    monkeypatch.setattr(llm2llm, "train_student", train)
    monkeypatch.setattr(llm2llm, "student_answers", answers)
    return fake


# -- 1: real tiny LMs as the student and the teacher -------------------------------------------
TEACHER_SYSTEM = "Write new practice problems."


def teacher_texts() -> list[str]:
    """What the tiny teacher learns: the stage's own requests for the six seed questions (for 1
    and 2 problems), each answered in LLM2LLM's item format with the seed question itself (a
    near-copy) or one with other names and numbers; the answers also on their own, so that
    most of what it learns is the format."""
    c = llm2llm_stage(system_prompt=TEACHER_SYSTEM).config
    texts, answers = [], []
    for seed in llm2llm.find_seeds(seed_table(), c):
        i = int(seed.id[1:])
        for v in range(4):
            for n in (1, 2):
                items = [Item(*problem(i, v)), Item(*problem(i, (v + 1) % 4))][:n]
                answer = "".join(item.shown(k) for k, item in enumerate(items, 1))
                chat = llm2llm_text.request(seed.question, seed.key, n, [], c.system_prompt)
                texts.append(render_chat([*chat, {"role": "assistant", "content": answer}]))
            answers.append(render_chat([{"role": "assistant", "content": Item(*problem(i, v)).shown(1)}]))
    return texts + answers * 4


@pytest.fixture(scope="session")
def tiny_teacher(session_cache) -> Path:
    """A real tiny LM that writes LLM2LLM items, trained once into the session cache (keyed on
    its settings and texts; about 25 s on two idle cores). It repeats what it saw, so its items
    parse, some copy the seed question and some vary it; sampled at temperature 0.3 (at 1.0 a
    200k-parameter model writes noise)."""
    texts = teacher_texts()
    spec = TinyLMSpec(data="tests/test_llm2llm.py:teacher_texts", hidden_size=64, layers=2, heads=4,
                      context_length=512, steps=200, batch_size=8, learning_rate=3e-3)
    target = session_cache / "models" / f"tiny-llm2llm-teacher-{hash_parts(spec.model_dump(mode='json'), texts)}"
    if not (target / MARKER).is_file():
        train_tiny(texts, target, spec)
    return target


@pytest.fixture(scope="module")
def real_run(tiny_lm, tiny_teacher, session_cache, tmp_path_factory):
    """Two rounds over six seed questions: the tiny LM fine-tuned 3 steps per round (it gets
    them all wrong), the tiny teacher writing the new problems. Every ``run_sft`` call and
    every request to the teacher (question, sampling seed, response) is recorded."""
    from curate.train import sft

    calls, requests = [], []
    real_sft = sft.run_sft

    def recording_sft(table, config, base, work, out, reporter=None):
        calls.append({"rows": table.num_rows, "ids": table.column("id").to_pylist(), "base": base.path, "work": work,
                      "out": out})
        summary = real_sft(table, config, base, work, out, reporter)
        calls[-1]["summary"] = summary
        return summary

    models = ModelPool({"teacher": {"backend": "transformers", "model": str(tiny_teacher)},
                        "student": {"backend": "transformers", "model": str(tiny_lm)}}, cache_root=str(session_cache))
    teacher = models.get("teacher")
    real_generate = teacher.generate

    def recording_generate(prompts, sampling, **kw):
        out = real_generate(prompts, sampling, **kw)
        for chat, ys in zip(prompts, out):
            q = chat[3]["content"].split("following question:\n\n", 1)[1].split("\n\nThe answer key", 1)[0]
            requests.append((q, sampling.seed, ys[0]))
        return out

    store = Store(tmp_path_factory.mktemp("llm2llm") / "store")
    stage = llm2llm_stage(system_prompt=TEACHER_SYSTEM, temperature=0.3, max_tokens=100, student_max_tokens=24,
                          student_train={"method": "full", "max_steps": 3, "batch_size": 4, "gradient_accumulation": 1,
                                         "max_length": 256, "learning_rate": 1e-3, "save_steps": 100})
    weights = hash_file(tiny_lm / "model.safetensors")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sft, "run_sft", recording_sft)
        mp.setattr(teacher, "generate", recording_generate)
        try:
            out = stage(seed_table(), StageContext(models=models, store=store))
        finally:
            models.close()
    return out, requests, calls, store, weights


def test_real_models_only_seed_questions_reach_the_teacher_and_new_rows_name_their_seed(real_run):
    out, requests, _, _, _ = real_run
    s = out.stats
    assert s["rounds"] == 2 and s["teacher_calls"] == len(requests) > 0
    assert {q for q, _, _ in requests} <= set(QUESTIONS)  # never a generated question
    for i in range(2):  # round i samples with seed i * (max_retries + 1) + attempt, once per wrong seed and attempt
        asked = [q for q, seed, _ in requests if 5 * i <= seed < 5 * (i + 1)]
        assert len(set(asked)) == s[f"wrong:r{i + 1}"] == 6 and len(asked) == s[f"teacher_calls:r{i + 1}"]
    rows = new_rows(out)
    assert rows and {r["seed_id"] for r in rows} <= {f"s{i}" for i in range(6)}
    for r in rows:
        assert r["id"].startswith(f"{r['seed_id']}#llm2llm{r['round']}.") and r["generated_by"] == "teacher"
        assert r["messages"][-1]["content"].endswith(f"#### {r['answer']}") and r["verified"] is None
    per_seed_round = [(r["seed_id"], r["round"]) for r in rows]
    assert len(per_seed_round) == len(set(per_seed_round))  # per_seed: 1
    assert s["student_accuracy:r1"] == 0.0 and s["train_loss:r1"] > 0


def test_real_models_near_copies_are_dropped_and_rows_accumulate_round_by_round(real_run):
    out, requests, calls, _, _ = real_run
    s = out.stats
    parsed = [parse_items(y) for _, _, y in requests]  # what the teacher wrote, item by item
    assert sum(len(items) for items, _ in parsed) == s["generated"] + s["near_copies"] + s["surplus"]
    assert sum(bad for _, bad in parsed) == s["unparseable"]
    assert s["near_copies"] == s["near_copies:r1"] + s["near_copies:r2"] > 0
    assert any(item.question in QUESTIONS for items, _ in parsed for item in items)  # it did copy seed questions
    assert [c["rows"] for c in calls] == [6, 6 + s["generated:r1"]]  # |D_1| = |D_0| + new_0
    assert calls[1]["ids"][:6] == [f"s{i}" for i in range(6)]  # D_1 holds D_0, then round 1's rows
    assert len(out.kept) == 6 + out.added and out.added == s["generated:r1"] + s["generated:r2"] == s["generated"]
    assert len(out.rejected) == 0 and out.kept.slice(0, 6).select(seed_table().column_names).equals(seed_table())
    kept = [r["messages"][-2]["content"] for r in new_rows(out)]
    for j, q in enumerate(kept):  # none is a near-copy of a seed or of a problem kept before it
        assert all(rouge_l(rouge_tokens(q), rouge_tokens(p)) <= 0.95 for p in QUESTIONS + kept[:j])


def test_real_models_every_round_fine_tunes_the_base_model_not_the_previous_student(real_run, tiny_lm):
    _, _, calls, store, weights = real_run
    assert len(calls) == 2 and all(c["base"] == tiny_lm.resolve() for c in calls)
    assert calls[0]["out"] != calls[1]["out"] and calls[0]["work"] != calls[1]["work"]
    assert all(c["summary"]["steps"] == 3 and c["summary"]["resumed_from"] is None for c in calls)
    assert hash_file(tiny_lm / "model.safetensors") == weights  # the base is never written to
    assert all(store.root / "models" / "tmp" in c["work"].parents for c in calls)
    assert not list((store.root / "models" / "tmp").glob("llm2llm-*"))  # round folders removed at the end


# -- 2: exact accounting with a scripted student -----------------------------------------------
def test_each_wrong_seed_gets_per_seed_rows_with_retries_near_copies_and_unreadable_items_counted(
        tiny_lm, session_cache, student):
    student.right = lambda r, q: q in QUESTIONS[4:]  # s0-s3 wrong

    def write(q, seed, n):
        if q == QUESTIONS[3]:  # s3: nothing but near-copies
            return numbered_items([near_copy(q)])
        return numbered_items([near_copy(q), novel(q, seed, 1)]) + "3. Question: where is the answer?\n"
    teacher = ItemTeacher(write)
    stage = llm2llm_stage(rounds=1, per_seed=2, max_retries=2)
    out = stage(seed_table(), StageContext(models=pool(tiny_lm, teacher, session_cache)))
    s = out.stats
    by_seed = {}
    for r in new_rows(out):
        by_seed.setdefault(r["seed_id"], []).append(r)
    assert {k: len(v) for k, v in by_seed.items()} == {"s0": 2, "s1": 2, "s2": 2}  # per_seed, after one retry
    assert [r["id"] for r in by_seed["s0"]] == ["s0#llm2llm1.1", "s0#llm2llm1.2"]
    s0 = [(q, n, shown) for q, n, _, shown in teacher.requests if q == QUESTIONS[0]]
    assert s0 == [(QUESTIONS[0], 2, False), (QUESTIONS[0], 3, True)]  # min(per_seed + attempt, 10); odd: kept shown
    assert sum(q == QUESTIONS[3] for q, *_ in teacher.requests) == 3  # 1 + max_retries, then it stays short
    assert s["teacher_calls"] == len(teacher.requests) == 3 * 2 + 3 and s["seeds_short"] == 1
    assert s["near_copies"] == 3 * 2 + 3 and s["unparseable"] == 3 * 2 and s["surplus"] == 0
    assert s["generated"] == s["generated:r1"] == out.added == 6 and s["wrong:r1"] == 4
    assert s["student_accuracy:r1"] == round(2 / 6, 4)
    row = by_seed["s1"][0]
    q, sol, a = novel(QUESTIONS[1], 0, 1)
    assert row["messages"] == [{"role": "user", "content": q}, {"role": "assistant", "content": f"{sol}\n#### {a}"}]
    assert (row["answer"], row["round"], row["category"], row["generated_by"]) == (a, 1, "Arithmetic", "teacher")
    assert student.trained == [(6, tiny_lm.resolve())]


def test_only_seed_questions_are_asked_even_when_generated_rows_are_in_the_training_data(
        tiny_lm, session_cache, student):
    teacher = ItemTeacher(copy_then_new)
    out = llm2llm_stage(rounds=3)(seed_table(3), StageContext(models=pool(tiny_lm, teacher, session_cache)))
    assert student.asked == [QUESTIONS[:3]] * 3  # the student is checked on the seeds only
    assert [rows for rows, _ in student.trained] == [3, 6, 9]  # |D_{i+1}| = |D_i| + 3
    assert {q for q, *_ in teacher.requests} == set(QUESTIONS[:3]) and out.added == 9
    assert all(base == tiny_lm.resolve() for _, base in student.trained)
    assert [s for _, _, s, _ in teacher.requests] == [0] * 3 + [5] * 3 + [10] * 3  # seed + i * (max_retries + 1)


def test_the_loop_stops_when_the_student_gets_every_seed_right(tiny_lm, session_cache, student):
    student.right = lambda r, q: r >= 2
    teacher = ItemTeacher(copy_then_new)
    out = llm2llm_stage(rounds=5)(seed_table(4), StageContext(models=pool(tiny_lm, teacher, session_cache)))
    s = out.stats
    assert s["rounds"] == 2 and s["stopped_all_right"] == 1 and s["student_accuracy:r2"] == 1.0
    assert len(teacher.requests) == 4 and out.added == 4 and "generated:r2" not in s


def test_a_round_whose_data_did_not_change_reuses_the_verdicts_instead_of_retraining(
        tiny_lm, session_cache, student, tmp_path):
    teacher = ItemTeacher(lambda q, seed, n: numbered_items([near_copy(q)]))  # nothing new is ever kept
    store = Store(tmp_path / "store")
    out = llm2llm_stage(rounds=3, max_retries=0)(seed_table(2), StageContext(models=pool(tiny_lm, teacher, session_cache),
                                                                           store=store))
    assert out.added == 0 and out.stats["rounds"] == 3 and out.stats["near_copies"] == 6
    assert len(student.trained) == 1 and len(student.asked) == 1  # rounds 2 and 3: same data, same student
    assert {s for _, _, s, _ in teacher.requests} == {0, 1, 2}  # but the teacher is asked afresh
    assert not list((store.root / "models" / "tmp").glob("llm2llm-*"))


def test_a_killed_run_resumes_from_the_round_folders(tiny_lm, session_cache, student, tmp_path):
    store = Store(tmp_path / "store")

    class Killed(Exception):
        pass

    def dies_in_round_two(q, seed, n):
        if seed == 5:
            raise Killed  # the run is killed while the teacher works on round 2
        return copy_then_new(q, seed, n)
    ctx = StageContext(models=pool(tiny_lm, ItemTeacher(dies_in_round_two), session_cache), store=store)
    with pytest.raises(Killed):
        llm2llm_stage()(seed_table(2), ctx)
    assert len(student.trained) == 2 and len(list((store.root / "models" / "tmp").glob("llm2llm-*"))) == 2
    saved = json.loads(next((store.root / "models" / "tmp").glob("llm2llm-*/verdicts-*.json")).read_text())
    assert saved["right"] == [False, False] and not list((store.root / "models" / "tmp").glob("llm2llm-*/trained"))
    teacher = ItemTeacher(copy_then_new)
    out = llm2llm_stage()(seed_table(2), StageContext(models=pool(tiny_lm, teacher, session_cache), store=store))
    assert len(student.trained) == 2 and out.added == 4  # both rounds' students reused, not retrained
    assert not list((store.root / "models" / "tmp").glob("llm2llm-*"))


# -- 3: ROUGE-L and the item parser -------------------------------------------------------------
def test_rouge_l_is_the_lcs_f1_over_lowercased_alphanumeric_tokens():
    assert rouge_tokens("The cat, sat -- on THE mat!") == ["the", "cat", "sat", "on", "the", "mat"]
    assert lcs_length(list("abcdef"), list("ace")) == 3 and lcs_length(list("abcbdab"), list("bdcaba")) == 4
    assert lcs_length([], list("abc")) == 0 and lcs_length(list("abc"), list("cba")) == 1
    a, b = rouge_tokens("the cat sat on the mat"), rouge_tokens("the cat on the mat")
    assert rouge_l(a, b) == pytest.approx(2 * 5 / 11) and rouge_l(a, a) == 1.0 and rouge_l(a, []) == 0.0
    assert rouge_l(rouge_tokens("a b c d"), rouge_tokens("d c b a")) == pytest.approx(2 * 1 / 8)
    q = rouge_tokens(QUESTIONS[3])  # 10 tokens: one more word gives 20/21 > 0.95; one word changed gives 0.9
    assert rouge_l(q, rouge_tokens(near_copy(QUESTIONS[3])[0])) == pytest.approx(20 / 21)
    assert rouge_l(q, rouge_tokens(QUESTIONS[3].replace("29", "31"))) == pytest.approx(0.9)
    pool = QuestionPool(QUESTIONS)
    assert pool.near_copy(near_copy(QUESTIONS[3])[0], 0.95) and pool.near_copy(QUESTIONS[0].upper(), 0.95)
    assert not pool.near_copy(QUESTIONS[3].replace("29", "31"), 0.95) and not pool.near_copy("", 0.95)
    pool.add("Practice one two three four five six seven eight nine ten")
    assert pool.near_copy("practice one two three four five six seven eight nine ten eleven", 0.95)


def test_items_are_parsed_and_an_item_without_its_answer_is_unparseable():
    text = ("Sure! Here are three problems:\n\n1. Question: What is 2 + 3?\nAnswer: 2 + 3 = 5.\n#### 5\n\n"
            "2. Question: What is 10 / 4?\nAnswer: 10 / 4 = 2.5.\n#### 2.5.\nI hope this helps.\n\n"
            "3. Question: What is 7 * 6?\nAnswer: 7 * 6 = 42.\n\n"  # no "####": unparseable
            "4. Question: Answer: nothing asked.\n#### 1\n"  # no question
            "5. Question: What is 9 - 9?\n#### 0\n")  # no "Answer:"
    items, bad = parse_items(text)
    assert [(i.question, i.solution, i.answer) for i in items] == [
        ("What is 2 + 3?", "2 + 3 = 5.", "5"), ("What is 10 / 4?", "10 / 4 = 2.5.", "2.5")]
    assert bad == 3 and items[0].response() == "2 + 3 = 5.\n#### 5"
    assert parse_items("I cannot help with that.") == ([], 1) and parse_items("") == ([], 1)
    assert parse_items(numbered_items([novel(QUESTIONS[0], 0, 1)]))[0][0].question == novel(QUESTIONS[0], 0, 1)[0]


# -- 5: budgets ---------------------------------------------------------------------------------
def test_a_teacher_call_budget_stops_the_loop_cleanly_and_the_result_is_a_valid_version(
        tiny_lm, student, tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"id": f"s{i}", "prompt": q, "response": f"{s}\n#### {a}", "answer": a}) + "\n"
                            for i, (q, s, a) in enumerate(SEEDS[:4])))
    teacher = ItemTeacher(copy_then_new)
    source = SOURCES["jsonl"](path=str(path), fields={"id": "id", "answer": "answer"})
    stage = llm2llm_stage(rounds=3, max_calls=6)
    models = {"teacher": teacher, "student": {"backend": "transformers", "model": str(tiny_lm)}}
    result = curate.Pipeline([stage], source=source, name="l2l", models=models).run(store=tmp_path / "store")
    m = result.final.manifest
    assert m["stats"]["budget_exhausted"] == 1 and m["stats"]["teacher_calls"] == 6 == len(teacher.requests)
    assert m["stats"]["rounds"] == 2 and m["stats"]["generated:r2"] == 2  # round 2: 2 of its 4 requests paid for
    assert m["counts"]["in"] + m["counts"]["added"] == m["counts"]["kept"] == 4 + 6 and m["counts"]["rejected"] == 0
    stored = curate.load("l2l", as_="arrow", store=tmp_path / "store")
    assert stored.column("round").to_pylist() == [None] * 4 + [1] * 4 + [2] * 2
    assert len(student.trained) == 2 and not list((tmp_path / "store" / "models" / "tmp").glob("llm2llm-*"))


def test_a_token_budget_that_cannot_pay_for_one_request_trains_nothing(tiny_lm, session_cache, student):
    teacher = ItemTeacher(copy_then_new)
    out = llm2llm_stage(max_tokens_budget=500, max_tokens=100)(seed_table(3), StageContext(
        models=pool(tiny_lm, teacher, session_cache)))
    assert out.added == 0 and out.stats["rounds"] == 0 and out.stats["budget_exhausted"] == 1
    assert student.trained == [] and teacher.requests == []


# -- config and inputs --------------------------------------------------------------------------
L2L = {"model": "teacher", "student": "student", "kind": "number"}


@pytest.mark.parametrize("config, message", [
    ({"model": "teacher", "kind": "number"}, "llm2llm.student: required key is missing"),
    ({**L2L, "student_train": {"learning_rat": 0.1}},
     r"llm2llm.student_train: learning_rat: unknown key; did you mean 'learning_rate'"),
    ({**L2L, "student_train": {"epochs": 0}}, "student_train: epochs: Input should be greater than 0"),
    ({**L2L, "student_train": {"model": "x"}}, "student_train: model is not set here"),
    ({**L2L, "max_trials": 10}, "llm2llm.max_trials: unknown key"),
    ({**L2L, "sampling": {"method": "uniform", "k_u": 4}}, "llm2llm.sampling: unknown key"),
    ({**L2L, "rouge_threshold": 1.5}, "rouge_threshold"),
    ({**L2L, "method": "llm2llm"}, "llm2llm.method: renamed to a stage of its own: llm2llm"),
])
def test_bad_llm2llm_config_is_a_recipe_error_naming_the_field(config, message):
    with pytest.raises(RecipeError, match=message):
        LLM2LLM(**config)


@pytest.mark.parametrize("key", ["rounds", "per_seed", "student"])
def test_an_llm2llm_setting_given_to_rejection_sample_is_an_error_naming_it(key):
    with pytest.raises(RecipeError, match=f"rejection_sample.{key}: unknown key"):
        RejectionSample(model="t", kind="number", **{key: 3 if key != "student" else "s"})


def test_teacher_sampling_defaults_follow_the_stage_and_the_student_enters_the_fingerprint():
    rs, l2l = RejectionSample(model="t", kind="number"), llm2llm_stage()
    assert [rs.config.teacher(k) for k in ("temperature", "top_p", "max_tokens")] == [1.6, 0.95, 2048]
    assert [l2l.config.teacher(k) for k in ("temperature", "top_p", "max_tokens")] == [1.0, 1.0, 2149]
    assert llm2llm_stage(temperature=0.7).config.teacher("temperature") == 0.7
    assert RejectionSample(model="t", kind="number", temperature=1.6).fingerprint_config() == rs.fingerprint_config()
    assert llm2llm_stage(temperature=1.0).fingerprint_config() == l2l.fingerprint_config()
    assert l2l.models_used() == ["teacher", "student"] and rs.models_used() == ["t"]

    class Ids:
        def __init__(self, student):
            self.student = student

        def identity(self, name):
            return self.student if name == "student" else "teacher-id"
    assert l2l.fingerprint("p", models=Ids("a")) != l2l.fingerprint("p", models=Ids("b"))
    assert llm2llm_stage(student_train={"max_steps": 2}).fingerprint("p", models=Ids("a")) != l2l.fingerprint(
        "p", models=Ids("a"))


def test_input_errors_say_what_llm2llm_needs(tiny_lm, session_cache, student):
    ctx = StageContext(models=pool(tiny_lm, ItemTeacher(copy_then_new), session_cache))
    with pytest.raises(StageError, match="SFT rows"):
        llm2llm_stage()(pa.table({"id": ["a"], "prompt": ["q"], "answer": ["1"]}), ctx)
    with pytest.raises(StageError, match="student 'pupil' is not one of the run's models"):
        llm2llm_stage(student="pupil")(seed_table(2), ctx)
    with pytest.raises(StageError, match="reference answer in 'answer'"):
        llm2llm_stage()(seed_table(2).drop_columns(["answer"]).append_column("answer", pa.array([None, None], pa.string())),
                        ctx)
    assert student.trained == []
