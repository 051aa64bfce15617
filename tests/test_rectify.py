"""CLEAR confidence and rectification: the confidence math on a scripted stand-in model
(METHODS 1(e): mock LLM callables), and the stages end to end on the real tiny LM."""

from __future__ import annotations

import json
import re

import numpy as np
import pyarrow as pa
import pytest

from curate import Pipeline
from curate.errors import RecipeError
from curate.models import ModelPool
from curate.models.base import LM
from curate.records import MESSAGES_TYPE, response_of
from curate.sources import SOURCES
from curate.stage import StageContext
from curate.stages import Confidence, Rectify, Verify
from curate.stages.confidence import (
    OPTIONS,
    REFLECTION_PREFIX,
    reflection_certainty,
    weighted_mean,
)
from curate.versions import diff

from .scripted import ScriptedLM


def sft(rows: list[tuple[str, str]], answers: list[str | None] | None = None) -> pa.Table:
    msgs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in rows]
    cols = {"id": [f"r{i}" for i in range(len(rows))], "messages": pa.array(msgs, MESSAGES_TYPE)}
    if answers is not None:
        cols["answer"] = answers
    return pa.table(cols)


BUILTIN = ModelPool()  # the built-in embedder for similarity: embedding, loaded once (on first use) for the module


@pytest.fixture(scope="module", autouse=True)
def close_builtin():
    yield
    BUILTIN.close()


def run(stage, table, lm):
    """``stage`` with the scripted model as "m" and the module's embedder (given, so shared)."""
    return stage(table, StageContext(models=ModelPool({"m": lm, "minilm": BUILTIN.embedder("minilm")})))


# -- the confidence math --------------------------------------------------------------------
def test_all_samples_agree_and_reflection_says_correct_gives_confidence_near_one():
    lm = ScriptedLM({"What is 6*7?": ["6*7 = 42, so the answer is 42."]}, verdict=lambda q, y: "A")
    out = run(Confidence(model="m", similarity="none"), sft([("What is 6*7?", "Six sevens: \\boxed{42}")]), lm).kept
    assert out.column("consistency")[0].as_py() == pytest.approx(1.0)
    assert out.column("reflection")[0].as_py() == pytest.approx(1.0, abs=1e-6)
    assert out.column("confidence")[0].as_py() == pytest.approx(1.0, abs=1e-6)


def test_all_samples_disagree_and_reflection_says_incorrect_gives_confidence_near_zero():
    lm = ScriptedLM({"What is 6*7?": ["The answer is 41.", "The answer is 43.", "It is 48."]}, verdict=lambda q, y: "B")
    out = run(Confidence(model="m"), sft([("What is 6*7?", "The answer is 42.")]), lm).kept
    assert out.column("consistency")[0].as_py() == pytest.approx(0.0)
    assert out.column("confidence")[0].as_py() == pytest.approx(0.0, abs=1e-6)


def test_confidence_is_beta_weighted_and_unsure_reflection_counts_half():
    lm = ScriptedLM({"q?": ["answer 1", "answer 2", "answer 1", "answer 3"]}, verdict=lambda q, y: "C")
    out = run(Confidence(model="m", k=4, beta=0.7, similarity="none"), sft([("q?", "so it is 1")]), lm).kept
    o, s = out.column("consistency")[0].as_py(), out.column("reflection")[0].as_py()
    assert o == pytest.approx(0.5) and s == pytest.approx(0.5, abs=1e-6)
    assert out.column("confidence")[0].as_py() == pytest.approx(0.7 * 0.5 + 0.3 * 0.5, abs=1e-6)


def test_reflection_reads_renormalised_option_probabilities():
    assert reflection_certainty(np.log([0.5, 0.25, 0.25])) == pytest.approx(0.5 + 0.125)
    assert reflection_certainty(np.log([0.1, 0.1, 0.1]) - 5) == pytest.approx((1 + 0 + 0.5) / 3)


def test_weighted_mean_drops_a_missing_component_and_renormalises():
    w = [0.32, 0.01, 0.47, 0.20]  # Cleanlab TLM's default weights
    v = [0.9, 1.0, 0.4, 0.7]
    assert weighted_mean(v, w) == pytest.approx(np.average(v, weights=w))
    for k in range(4):
        dropped = [x if i != k else float("nan") for i, x in enumerate(v)]
        rest = [i for i in range(4) if i != k]
        assert weighted_mean(dropped, w) == pytest.approx(np.average([v[i] for i in rest], weights=[w[i] for i in rest]))
    assert np.isnan(weighted_mean([float("nan")] * 2, [0.5, 0.5]))


def test_without_reflection_confidence_is_consistency():
    lm = ScriptedLM({"q?": ["x is 3", "x is 4"]})
    out = run(Confidence(model="m", k=2, reflections=0), sft([("q?", "x is 3")]), lm).kept
    assert out.column("reflection")[0].as_py() is None
    assert out.column("confidence")[0].as_py() == pytest.approx(0.5)


def test_embedding_similarity_scores_free_text_agreement():
    """No extractable answers: s_i is embedding similarity, so a paraphrase agrees more than an unrelated text."""
    question = "Why is the sky blue?"
    lm = ScriptedLM({question: ["Sunlight scatters off air molecules, and blue light scatters most."]})
    table = sft([(question, "Air molecules scatter blue light more strongly than red light."),
                 (question, "Bananas are rich in potassium and grow in tropical climates.")])
    out = run(Confidence(model="m", k=1, reflections=0), table, lm).kept
    para, unrelated = out.column("consistency").to_pylist()
    assert para > unrelated + 0.2 and 0 <= unrelated < para <= 0.8 + 1e-9  # r_i = 0: at most alpha


# -- rectify ---------------------------------------------------------------------------------
QUESTIONS = [f"What is {a} + {b}?" for a, b in [(2, 2), (3, 5), (10, 7), (6, 6), (9, 1), (4, 8)]]


def pool_table() -> tuple[pa.Table, ScriptedLM]:
    """Half the responses are wrong; the model samples the right answer for every question,
    and its reflection believes responses with the right sum."""
    rows, refs, answers = [], [], {}
    for i, q in enumerate(QUESTIONS):
        a, b = map(int, re.findall(r"\d+", q))
        given = a + b if i % 2 == 0 else a + b + 1
        rows.append((q, f"Adding them gives {given}."))
        refs.append(str(a + b))
        answers[q] = [f"{a} plus {b} is {a + b}.", f"The sum is {a + b}.", f"So {a} + {b} = {a + b}"]

    def verdict(q, y):
        a, b = map(int, re.findall(r"\d+", q))
        return "A" if re.findall(r"-?\d+", y)[-1] == str(a + b) else "B"

    return sft(rows, refs), ScriptedLM(answers, verdict)


def test_raising_the_threshold_never_keeps_more_rows():
    table, lm = pool_table()
    for correct in (False, True):
        kept_before = None
        for gamma in (0.0, 0.2, 0.5, 0.8, 0.95, 1.0):
            cfg = dict(model="m", k=3, threshold=gamma, correct=correct, min_confidence=0.5 if correct else None)
            kept = set(run(Rectify(**cfg), table, lm).kept.column("id").to_pylist())
            if kept_before is not None:
                assert len(kept) <= len(kept_before), (gamma, correct)
                if not correct:
                    assert kept <= kept_before
            kept_before = kept
    # and a threshold at the top flags the wrong half without correcting: it is exactly what is kept
    out = run(Rectify(model="m", k=3, threshold=0.5, correct=False), table, lm)
    assert out.kept.column("id").to_pylist() == ["r0", "r2", "r4"]
    assert set(out.rejected.column("reason").to_pylist()) == {"low_confidence"}


def test_a_judge_that_never_prefers_the_candidate_leaves_the_data_byte_identical():
    table, lm = pool_table()
    filter_only = run(Rectify(model="m", k=3, threshold=0.5, correct=False), table, lm)
    # a judge that says every candidate is incorrect, and one that is never sure enough
    disbelieving = ScriptedLM(lm.answers, verdict=lambda q, y: "A" if y.startswith("Adding") else "B")
    unsure = ScriptedLM(lm.answers, verdict=lambda q, y: "C")
    for stage, model in ((Rectify(model="m", k=3, threshold=0.5, min_confidence=0.8), disbelieving),
                         (Rectify(model="m", k=3, threshold=0.5, min_confidence=0.9), unsure)):
        out = run(stage, table, model)
        assert out.kept.column("id").to_pylist() == filter_only.kept.column("id").to_pylist()
        original = table.select(table.column_names)
        kept_ids = out.kept.column("id").to_pylist()
        expect = original.filter(pa.array([i in kept_ids for i in original.column("id").to_pylist()]))
        assert out.kept.select(table.column_names).equals(expect)
        assert not any(out.kept.column("rectified").to_pylist())
        assert out.kept.column("original_response").null_count == len(out.kept)


def test_a_confident_correction_that_passes_verify_replaces_the_response(tmp_path):
    table, lm = pool_table()
    verified = Verify()(table).kept
    assert verified.column("verified").to_pylist() == ["true", "false"] * 3
    out = run(Rectify(model="m", k=3, threshold=0.5, min_confidence=0.8), verified, lm)
    assert len(out.kept) == 6 and len(out.rejected) == 0
    assert out.stats["trusted"] == 3 and out.stats["corrected"] == 3 and out.stats["scored"] == 3
    kept = out.kept.to_pylist()
    for row in kept:
        if row["rectified"]:
            assert row["original_response"].startswith("Adding them gives")
            assert response_of(row["messages"]) in lm.answers[row["messages"][0]["content"]]
            assert row["verified"] == "true" and row["candidate_confidence"] >= 0.8
        else:
            assert row["original_response"] is None and row["confidence"] is None  # trusted: never asked
    # verified-true rows cost no model call
    assert set(lm.asked) == {QUESTIONS[i] for i in (1, 3, 5)}


def test_corrections_are_versioned_and_diff_shows_each_edit(tmp_path):
    table, lm = pool_table()
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": r["id"], "prompt": r["messages"][0]["content"], "response": response_of(r["messages"]),
                                        "answer": r["answer"]}) + "\n" for r in table.to_pylist()))
    store = tmp_path / "store"
    chain = [Verify(), Rectify(model="m", k=3, threshold=0.5, min_confidence=0.8)]
    result = Pipeline(chain, source=SOURCES["jsonl"](path=str(path), fields={"id": "id", "answer": "answer"}), name="adds", models={"m": lm}).run(store=store)
    step = {s.step: s for s in result.steps}["rectify"]
    assert step.stats == {"scored": 3, "trusted": 3, "flagged": 3, "corrected": 3, "filtered": 0, "kept": 6}
    d = diff("adds/verify", "adds/rectify", store=store)
    assert d["changed"] == 3 and d["changed_columns"]["messages"] == 3
    edits = [e for e in d["edits"] if e["column"] == "messages"]
    assert {e["id"] for e in edits} == {"r1", "r3", "r5"}
    assert all(e["before"].startswith("Adding them gives") and e["after"] in [y for ys in lm.answers.values() for y in ys] for e in edits)


def test_a_confident_candidate_with_the_wrong_answer_is_never_accepted():
    table, _ = pool_table()
    wrong = {q: [f"It is {int(re.findall(r'[0-9]+', q)[0]) * 100}."] for q in QUESTIONS}
    out = run(Rectify(model="m", k=2, threshold=0.5, min_confidence=0.0, margin=0.0),
              table, ScriptedLM(wrong, verdict=lambda q, y: "A"))
    assert not any(out.kept.column("rectified").to_pylist())


def test_rectify_settings_are_checked():
    with pytest.raises(RecipeError, match="exactly one of threshold"):
        Rectify(model="m", min_confidence=0.5)
    with pytest.raises(RecipeError, match="min_confidence"):
        Rectify(model="m", threshold=0.5)
    with pytest.raises(RecipeError, match="threshold"):
        Rectify(model="m", threshold=1.5, correct=False)
    Rectify(model="m", filter_fraction=0.1, correct=False)


def test_filter_fraction_flags_the_lowest_confidence_rows():
    table, lm = pool_table()
    out = run(Rectify(model="m", k=3, filter_fraction=0.34, correct=False), table, lm)
    assert len(out.rejected) == 3 and set(out.rejected.column("id").to_pylist()) == {"r1", "r3", "r5"}


# -- on the real tiny LM ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_pool(tiny_lm):
    return ModelPool({"ref": {"backend": "transformers", "model": str(tiny_lm)}})


def test_confidence_on_the_tiny_lm_is_a_probability_and_cached(tiny_pool):
    table = SOURCES["champ"](include_model_solutions=True, models=["GPT-4"], prompt_settings=["0-Shot"],
                             limit_problems=4).read(StageContext()).kept
    stage = Confidence(model="ref", k=2, max_tokens=32)
    out = stage(table, StageContext(models=tiny_pool)).kept
    for col in ("confidence", "consistency", "reflection"):
        values = out.column(col).to_pylist()
        assert all(v is not None and 0.0 <= v <= 1.0 for v in values), (col, values)
    lm = tiny_pool.get("ref")
    calls = lm.stats.calls
    again = stage(table, StageContext(models=tiny_pool)).kept
    assert lm.stats.calls == calls  # every sample and reflection came from the cache
    assert again.column("confidence").equals(out.column("confidence"))


def test_transformers_choose_reads_one_forward_pass_like_scoring_each_option(tiny_pool):
    lm = tiny_pool.get("ref")
    contexts = [lm.chat_prompt([{"role": "user", "content": "Is 2 + 2 = " + "4 " * i + "?"}]) + REFLECTION_PREFIX
                for i in range(1, 12)]
    fast = np.array(lm._choose(contexts, OPTIONS))
    slow = np.array(LM._choose(lm, contexts, OPTIONS))
    np.testing.assert_allclose(fast, slow, atol=1e-4)
