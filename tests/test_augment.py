"""rejection_sample: DART-Math's DARS (METHODS 3) with a Bernoulli(p_q) stand-in teacher:
difficulty-aware targets, only verified responses kept, the budget's clean stop, results
independent of the call cache, errors that name the field, and what old augment recipes are
told."""

from __future__ import annotations

import json
import re
import typing
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest
import yaml

import curate
from curate.algorithms.allocate import Prop2Diff, Uniform, prop2diff_quota
from curate.algorithms.answers import check_answer, extract_answer
from curate.algorithms.textstats import approx_tokens
from curate.errors import RecipeError, StageError
from curate.models.cache import CallCache
from curate.recipe import load_recipe
from curate.records import MESSAGES_TYPE, response_of
from curate.sources import SOURCES
from curate.stage import Reporter, StageContext
from curate.stages import REGISTRY, RENAMED
from curate.stages.dart import RejectionSample

from .scripted import BernoulliTeacher, Pool


def question(q: int) -> str:
    return f"Problem {q}: what is {q} + 100?"


def prompts(n: int, difficulty: list[float] | None = None, answers: list[str | None] | None = None) -> pa.Table:
    """n SFT rows, one per problem, with a seed solution; the reference of problem q is q + 100."""
    msgs = [[{"role": "user", "content": question(q)}, {"role": "assistant", "content": f"Seed solution {q}."}]
            for q in range(n)]
    cols = {"id": [f"p{q}" for q in range(n)], "messages": pa.array(msgs, MESSAGES_TYPE), "problem_id": list(range(n)),
            "answer": answers if answers is not None else [str(q + 100) for q in range(n)]}
    if difficulty is not None:
        cols["difficulty"] = pa.array(difficulty, pa.float64())
    return pa.table(cols)


def teacher(p: list[float], **kw) -> BernoulliTeacher:
    return BernoulliTeacher({question(q): pq for q, pq in enumerate(p)},
                            {question(q): str(q + 100) for q in range(len(p))}, **kw)


def run(stage: RejectionSample, table: pa.Table, lm: BernoulliTeacher, reporter: Reporter | None = None):
    return stage(table, StageContext(models=Pool(t=lm), reporter=reporter or Reporter()))


def new_rows(out) -> list[dict]:
    return [r for r in out.kept.to_pylist() if r["generated_by"] is not None]


def per_question(lm: BernoulliTeacher) -> tuple[Counter, Counter]:
    """Samples and correct samples the teacher wrote, per question."""
    trials, right = Counter(), Counter()
    for q, _, _, ok, _ in lm.log:
        trials[q] += 1
        right[q] += ok
    return trials, right


def assert_valid(table: pa.Table, out) -> None:
    """Input rows kept unchanged and first, every new row verified, ids unique, rows accounted."""
    assert len(out.kept) == len(table) + out.added and len(out.rejected) == 0
    assert {"reason", "detail"} <= set(out.rejected.column_names)
    assert out.kept.slice(0, len(table)).select(table.column_names).equals(table)
    ids = out.kept.column("id").to_pylist()
    assert len(set(ids)) == len(ids)
    for row in new_rows(out):
        found = extract_answer(response_of(row["messages"]), "number")
        assert check_answer(found.text, row["answer"], "number") is True
        assert row["verified"] == "true" and row["id"].startswith(f"{row['seed_id']}#dart")


# -- 1: difficulty-aware targets ----------------------------------------------------------------
def test_prop2diff_spends_more_trials_on_harder_prompts_and_keeps_only_verified():
    n = 30
    d = np.linspace(0.05, 0.95, n)
    table, lm = prompts(n, d.tolist()), teacher((1 - d).tolist())
    stage = RejectionSample(model="t", sampling={"method": "prop2diff", "k_p": 8}, max_trials=64, samples_per_round=4,
                            kind="number", group_by="problem_id")
    assert stage.models_used() == ["t"] and REGISTRY["rejection_sample"] is RejectionSample
    out = run(stage, table, lm)
    assert_valid(table, out)

    trials, right = per_question(lm)
    target = prop2diff_quota(d, 8)
    kept = Counter(r["seed_id"] for r in new_rows(out))
    for q in range(n):
        assert kept[f"p{q}"] == min(target[q], right[question(q)])
        assert trials[question(q)] <= 64
    t = np.array([trials[question(q)] for q in range(n)])
    assert t[-n // 3:].mean() > t[: n // 3].mean()

    s = out.stats
    assert s["prompts"] == n and s["trials"] == len(lm.log) and s["generated_correct"] == sum(right.values())
    assert s["kept_new"] == out.added == sum(kept.values())
    assert s["prompts_short"] == sum(right[question(q)] < target[q] for q in range(n)) > 0
    assert s["budget_exhausted"] == 0 and s["prompts_unfinished"] == 0
    bins = ["d0.0-0.2", "d0.2-0.4", "d0.4-0.6", "d0.6-0.8", "d0.8-1.0"]
    assert sum(s[f"trials:{b}"] for b in bins) == s["trials"]
    assert sum(s[f"target:{b}"] for b in bins) == target.sum()
    assert s["yield:d0.8-1.0"] < s["yield:d0.0-0.2"]

    row = next(r for r in new_rows(out) if r["seed_id"] == "p29")  # copied from its prompt's row
    assert row["problem_id"] == 29 and row["difficulty"] == pytest.approx(0.95) and row["answer"] == "129"
    assert row["messages"][0] == {"role": "user", "content": question(29)} and len(row["messages"]) == 2
    assert row["generated_by"] == "t" and isinstance(row["round"], int)
    assert out.kept.slice(0, n).column("generated_by").null_count == n  # input rows: null


def test_uniform_gives_each_prompt_exactly_k_u_and_stops_sampling_it_once_it_has_them():
    table, lm = prompts(12), teacher([0.6] * 12)
    out = run(RejectionSample(model="t", sampling=Uniform(k_u=5), max_trials=200, samples_per_round=4, kind="number"), table, lm)
    assert_valid(table, out)
    assert Counter(r["seed_id"] for r in new_rows(out)) == {f"p{q}": 5 for q in range(12)}
    for q in range(12):  # the 5th correct sample came in the prompt's last round
        seeds = [(s, ok) for qq, s, _, ok, _ in lm.log if qq == question(q)]
        last = max(s for s, _ in seeds)
        assert sum(ok for s, ok in seeds if s < last) < 5 <= sum(ok for _, ok in seeds)
    rounds = {r["round"] for r in new_rows(out)}
    assert {s for _, _, s in lm.requests} == set(range(out.stats["rounds"])) and rounds <= set(range(out.stats["rounds"]))


def test_vrt_setting_keeps_every_correct_one_of_52_samples():
    p = [0.2, 0.5, 0.8] * 15
    table, lm = prompts(len(p)), teacher(p)
    out = run(RejectionSample(model="t", sampling=Uniform(k_u=52), max_trials=52, samples_per_round=13, kind="number"), table, lm)
    trials, right = per_question(lm)
    assert set(trials.values()) == {52}
    kept = Counter(r["seed_id"] for r in new_rows(out))
    assert all(kept[f"p{q}"] == right[question(q)] for q in range(len(p)))
    for pq in (0.2, 0.5, 0.8):
        mean = np.mean([kept[f"p{q}"] for q in range(len(p)) if p[q] == pq])
        assert abs(mean - 52 * pq) < 3


# -- 2: budgets and the cache -------------------------------------------------------------------
def test_a_call_budget_stops_the_run_cleanly_and_the_partial_result_is_a_valid_version(tmp_path):
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps({"id": f"p{q}", "prompt": question(q), "response": f"Seed {q}.", "answer": q + 100}) + "\n"
                            for q in range(10)))
    lm = teacher([0.3] * 10)
    stage = RejectionSample(model="t", sampling=Uniform(k_u=4), max_trials=100, samples_per_round=4, max_calls=30,
                            kind="number")
    source = SOURCES["jsonl"](path=str(path), fields={"id": "id", "answer": "answer"})
    result = curate.Pipeline([stage], source=source, name="aug", models={"t": lm}).run(store=tmp_path / "store")
    m = result.final.manifest
    assert m["stats"]["budget_exhausted"] == 1 and m["stats"]["trials"] == 30 == len(lm.log)
    assert m["counts"]["in"] + m["counts"]["added"] == m["counts"]["kept"] and m["counts"]["rejected"] == 0
    stored = curate.load("aug", as_="arrow", store=tmp_path / "store")
    assert stored.num_rows == 10 + m["stats"]["kept_new"] and stored.column("round").to_pylist()[10:] == [0] * m["stats"]["kept_new"]
    trials, _ = per_question(lm)
    assert set(trials.values()) == {3}  # the last round's samples are shared out prompt by prompt
    added = [r for r in stored.to_pylist() if r["generated_by"]]
    assert added and all(check_answer(extract_answer(response_of(r["messages"]), "number").text, r["answer"], "number")
                         for r in added)


def test_a_token_budget_is_not_exceeded_and_counts_prompt_and_response_tokens():
    table, lm = prompts(10), teacher([0.3] * 10)
    out = run(RejectionSample(model="t", sampling=Uniform(k_u=4), max_trials=100, samples_per_round=4, max_tokens=40,
                              max_tokens_budget=2000, kind="number"), table, lm)
    assert_valid(table, out)
    spent = sum(approx_tokens(q) + approx_tokens(y) for q, _, _, _, y in lm.log)
    assert out.stats["tokens"] == spent <= 2000 and out.stats["budget_exhausted"] == 1
    assert out.stats["prompts_unfinished"] > 0


def test_cached_samples_count_against_the_budget_so_results_do_not_depend_on_the_cache(tmp_path):
    table = prompts(8, answers=[str(q + 100) for q in range(8)])
    stage = RejectionSample(model="t", sampling=Uniform(k_u=3), max_trials=40, samples_per_round=4, max_calls=50,
                            kind="number")
    cold, warm = (teacher([0.4] * 8) for _ in range(2))
    cold.cache = warm.cache = CallCache(tmp_path / "calls.sqlite")
    first, second = run(stage, table, cold), run(stage, table, warm)
    assert cold.stats.calls > 0 and warm.stats.calls == 0 and warm.stats.cached == cold.stats.calls
    assert first.kept.equals(second.kept) and first.stats == second.stats
    assert first.stats["trials"] <= 50


def test_the_same_seed_gives_the_same_rows_and_another_seed_other_samples():
    table = prompts(6)

    def rows(seed):
        out = run(RejectionSample(model="t", sampling=Uniform(k_u=3), samples_per_round=2, kind="number", seed=seed), table,
                  teacher([0.5] * 6))
        return [(r["id"], r["round"]) for r in new_rows(out)]
    assert rows(0) == rows(0)
    assert rows(0) != rows(7)


# -- 3: which prompts, which rows ---------------------------------------------------------------
def test_only_prompts_with_a_reference_are_sampled_once_per_distinct_prompt():
    table = prompts(5, answers=["100", None, "102", " ", "104"])
    table = pa.concat_tables([table, table.slice(0, 1).set_column(0, "id", pa.array(["p0-again"]))])  # a repeated prompt
    lm = teacher([0.9] * 5)
    out = run(RejectionSample(model="t", sampling=Uniform(k_u=2), samples_per_round=2, kind="number"), table, lm)
    assert {q for q, *_ in lm.log} == {question(0), question(2), question(4)}
    assert out.stats["prompts"] == 3
    assert {r["seed_id"] for r in new_rows(out)} == {"p0", "p2", "p4"}
    assert "trials:unknown" in out.stats  # no difficulty column: one bin for the report


def test_prompt_rows_get_messages_with_the_system_prompt_and_an_existing_verified_column_is_kept():
    table = pa.table({"id": ["a", "b"], "prompt": [question(0), question(1)], "answer": ["100", "101"],
                      "verified": ["false", None], "category": ["Sum", "Sum"]})
    lines = []

    class Log(Reporter):
        def log(self, message):
            lines.append(message)
    out = run(RejectionSample(model="t", sampling=Uniform(k_u=2), kind="number", system_prompt="Box the answer."), table,
              teacher([1.0, 1.0]), Log())
    assert_valid(table, out)
    assert out.kept.column("verified").to_pylist() == ["false", None] + ["true"] * 4
    assert out.kept.column("messages").to_pylist()[:2] == [None, None]
    row = new_rows(out)[0]
    assert [m["role"] for m in row["messages"]] == ["system", "user", "assistant"]
    assert row["messages"][0]["content"] == "Box the answer." and row["prompt"] == question(0) and row["category"] == "Sum"
    assert [r["id"] for r in new_rows(out)] == ["a#dart1", "a#dart2", "b#dart1", "b#dart2"]
    assert len(lines) == 1 and "2 prompts" in lines[0] and "added 4 rows" in lines[0]


# -- 4: errors ----------------------------------------------------------------------------------
def test_input_errors_name_the_missing_column():
    lm = teacher([0.5] * 3)
    with pytest.raises(StageError, match="answer_column 'answer'"):
        run(RejectionSample(model="t", kind="number"), prompts(3).drop_columns(["answer"]), lm)
    with pytest.raises(StageError, match="'difficulty'"):
        run(RejectionSample(model="t", sampling=Prop2Diff(k_p=4), kind="number"), prompts(3), lm)
    with pytest.raises(StageError, match="no rows"):
        run(RejectionSample(model="t", kind="number"), prompts(3).slice(0, 0), lm)
    with pytest.raises(StageError, match="reference answer in 'answer'"):
        run(RejectionSample(model="t", kind="number"), prompts(3, answers=[None, "", None]), lm)
    with pytest.raises(StageError, match="group_by 'problem'"):
        run(RejectionSample(model="t", kind="number", group_by="problem"), prompts(3), lm)
    with pytest.raises(StageError, match="'messages' .* or 'prompt'"):
        run(RejectionSample(model="t", kind="number"), pa.table({"id": ["x"], "text": ["hi"], "answer": ["1"]}), lm)
    assert lm.log == []


@pytest.mark.parametrize("args, field", [
    ({"sampling": "prop2diff"}, "sampling: prop2diff needs k_p"),
    ({"sampling": "uniform"}, "sampling: uniform needs k_u"),
    ({"sampling": {"method": "prop2diff", "k_p": 8, "k_u": 4}}, r"sampling.prop2diff.k_u: unknown key"),
    ({"sampling": {"method": "uniform", "k_u": 8, "k_p": 4}}, r"sampling.uniform.k_p: unknown key"),
    ({"sampling": "histogram"}, "method 'histogram' is not one of uniform, prop2diff"),
    ({"student": "s"}, "student: unknown key"),
    ({"samples_per_round": 0}, "samples_per_round"),
    ({"max_calls": 0}, "max_calls"),
    ({"trials": 5}, "trials"),
])
def test_bad_config_is_a_recipe_error_naming_the_field(args, field):
    with pytest.raises(RecipeError, match=field):
        RejectionSample(model="t", kind="number", **args)


@pytest.mark.parametrize("old, new", [
    ({"targets": "prop2diff"}, "'sampling' (e.g. sampling: {method: prop2diff, k_p: 192})"),
    ({"per_prompt": 40}, "'k_u' under sampling (sampling: {method: uniform, k_u: 40})"),
    ({"max_per_prompt": 192}, "'k_p' under sampling (sampling: {method: prop2diff, k_p: 192})"),
    ({"bins": 10}, "'report_bins'"),
    ({"method": "rejection_sampling"}, "a stage of its own: rejection_sample"),
])
def test_an_old_augment_key_says_what_it_was_renamed_to(old, new, tmp_path):
    (key, _), = old.items()
    with pytest.raises(RecipeError, match=re.escape(f"rejection_sample.{key}: renamed to {new}")):
        RejectionSample(model="t", kind="number", **old)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "old", "input": "pool", "models": {"t": {"model": "x"}},
                                      "stages": [{"rejection_sample": {"model": "t", "kind": "number", **old}}]}))
    with pytest.raises(RecipeError, match=re.escape(f"stages[0].rejection_sample.{key}: renamed to {new}")):
        load_recipe(recipe, check_inputs=False)


def test_augment_as_a_stage_name_says_which_two_stages_replaced_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "old", "input": "pool", "models": {"t": {"model": "x"}},
                                      "stages": [{"augment": {"model": "t", "per_prompt": 40}}]}))
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe, check_inputs=False)
    assert "stages[0].augment: stage 'augment' was renamed to two stages: 'rejection_sample'" in str(e.value)
    assert "'llm2llm' (augment's method: llm2llm)" in str(e.value) and "augment" not in REGISTRY
    assert set(RENAMED) == {"augment"}
    with pytest.raises(ImportError, match="two stages: curate.stages.dart.RejectionSample"):
        from curate.stages.augment import Augment  # noqa: F401


def test_one_sampling_config_class_serves_rejection_sample_and_difficulty_with_one_fingerprint_shape():
    from curate.stages.difficulty import DifficultyConfig

    for config in (RejectionSample.Config, DifficultyConfig):
        assert {Uniform, Prop2Diff} <= set(typing.get_args(config.model_fields["sampling"].annotation))
    default = RejectionSample(model="t", kind="number")
    assert default.config.sampling == Uniform(k_u=40) and default.fingerprint_config() == {"model": "t", "kind": "number"}
    models = Pool(t=teacher([0.5]))
    same = RejectionSample(model="t", kind="number", sampling={"method": "uniform", "k_u": 40}, temperature=1.6)
    assert same.fingerprint("p", models=models) == default.fingerprint("p", models=models)
    p2d = RejectionSample(model="t", kind="number", sampling=Prop2Diff(k_p=8))
    assert p2d.fingerprint_config()["sampling"] == {"method": "prop2diff", "k_p": 8}
    assert RejectionSample(model="t", kind="number", sampling={"method": "prop2diff", "k_p": 8}).fingerprint(
        "p", models=models) == p2d.fingerprint("p", models=models) != default.fingerprint("p", models=models)
