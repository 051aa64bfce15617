"""DART-Math difficulty and difficulty-aware sampling: the fail-rate estimates, Prop2Diff /
Uniform / histogram allocation (METHODS 3(e)), budgets, curriculum order, and config errors."""

from __future__ import annotations

import re
from collections import Counter
from itertools import pairwise

import numpy as np
import pyarrow as pa
import pytest
import yaml

from curate.algorithms.allocate import Prop2Diff, Uniform, prop2diff_quota
from curate.algorithms.textstats import approx_tokens
from curate.errors import RecipeError, StageError
from curate.recipe import load_recipe
from curate.records import MESSAGES_TYPE, conversation_of
from curate.stage import Reporter, StageContext
from curate.stages.difficulty import Difficulty, VerifiedEstimate

from .conftest import ROOT
from .scripted import Pool, ScriptedLM


def pool(fails: list[int], per_prompt: int = 20, **extra) -> pa.Table:
    """Prompt q has ``per_prompt`` rows, the first ``fails[q]`` of them verified false."""
    rows = [(q, r) for q in range(len(fails)) for r in range(per_prompt)]
    msgs = [[{"role": "user", "content": f"Problem {q}?"}, {"role": "assistant", "content": f"Attempt {r} at {q}."}]
            for q, r in rows]
    cols = {
        "id": [f"p{q}-r{r}" for q, r in rows],
        "messages": pa.array(msgs, MESSAGES_TYPE),
        "problem_id": [q for q, _ in rows],
        "verified": ["false" if r < fails[q] else "true" for q, r in rows],
    }
    return pa.table({**cols, **{k: v(rows) for k, v in extra.items()}})


def spread_pool(prompts: int = 100, per_prompt: int = 20) -> pa.Table:
    """Difficulty spread evenly over 0..1: prompt q fails round(20 q / 99) of its 20 rows."""
    return pool([round(per_prompt * q / (prompts - 1)) for q in range(prompts)], per_prompt)


def per_prompt_counts(table: pa.Table) -> Counter:
    return Counter(table.column("problem_id").to_pylist())


def difficulty_of(table: pa.Table) -> dict:
    return dict(zip(table.column("problem_id").to_pylist(), table.column("difficulty").to_pylist()))


def assert_invariant(table: pa.Table, out) -> None:
    assert out.kept.num_rows + out.rejected.num_rows == table.num_rows
    assert set(out.kept.column("id").to_pylist()).isdisjoint(out.rejected.column("id").to_pylist())


# -- 1, 2: allocation ---------------------------------------------------------------------------
def test_prop2diff_gives_the_hardest_decile_at_least_3x_the_easiest_and_uniform_is_even():
    table = spread_pool()
    out = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": 20})(table)
    assert_invariant(table, out)
    counts = per_prompt_counts(out.kept)
    easiest, hardest = range(10), range(90, 100)  # prompts are ordered by difficulty
    assert sum(counts[q] for q in hardest) >= 3 * sum(counts[q] for q in easiest)
    assert all(counts[q] >= 1 for q in range(100))
    assert counts[99] == 20

    out = Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": 7})(table)
    assert set(per_prompt_counts(out.kept).values()) == {7} and len(per_prompt_counts(out.kept)) == 100
    assert set(out.rejected.column("reason").to_pylist()) == {"not_sampled"}


def test_prop2diff_targets_for_fail_rates_0_01_05_1_with_k_p_8_rise_to_8_and_are_at_least_1():
    targets = prop2diff_quota(np.array([0, 0.1, 0.5, 1.0]), 8)
    assert targets.tolist() == [1, 1, 4, 8]
    assert prop2diff_quota(np.array([0.3, 0.6, 1.0]), 8).tolist() == [3, 5, 8]  # rounded up: 2.4 -> 3, 4.8 -> 5
    # the same through the stage: verified fail rates 0/10, 1/10, 5/10, 10/10
    table = pool([0, 1, 5, 10], per_prompt=10)
    out = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": 8})(table)
    counts = [per_prompt_counts(out.kept)[q] for q in range(4)]
    assert counts == sorted(counts) and counts[-1] == 8 and min(counts) >= 1
    assert counts == [1, 1, 4, 8]
    # the largest difficulty sets the scale: halving every d changes no target
    assert prop2diff_quota(np.array([0, 0.05, 0.25, 0.5]), 8).tolist() == [1, 1, 4, 8]


def test_a_prompt_never_gets_more_rows_than_it_has_and_rows_verified_true_come_first():
    table = pool([15, 18], per_prompt=20)  # 5 and 2 true rows
    out = Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": 4})(table)
    kept = out.kept.to_pylist()
    assert [r["verified"] for r in kept if r["problem_id"] == 0] == ["true"] * 4
    assert sorted(r["verified"] for r in kept if r["problem_id"] == 1) == ["false", "false", "true", "true"]
    out = Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": 50})(pool([0, 3], per_prompt=6))
    assert out.kept.num_rows == 12 and out.rejected.num_rows == 0


# -- 3: difficulty from verdicts ----------------------------------------------------------------
def test_verified_estimate_is_false_over_true_plus_false_per_prompt_ignoring_unknowns():
    prompts = ["A?", "A?", "A?", "A?", "B?", "B?", "C?", "C?", "C?"]
    verdicts = ["true", "false", "unknown", "false", "unknown", None, "true", "true", "false"]
    msgs = [[{"role": "user", "content": p}, {"role": "assistant", "content": f"r{i}"}] for i, p in enumerate(prompts)]
    table = pa.table({"id": [f"r{i}" for i in range(9)], "messages": pa.array(msgs, MESSAGES_TYPE), "verified": verdicts})
    out = Difficulty()(table)  # grouped by the prompt text
    d = out.kept.column("difficulty").to_pylist()
    assert d[:4] == [pytest.approx(2 / 3)] * 4
    assert d[4:6] == [None, None]
    assert d[6:] == [pytest.approx(1 / 3)] * 3
    assert out.kept.schema.field("difficulty").type == pa.float64()
    assert out.stats["prompts"] == 3 and out.stats["prompts_unknown"] == 1

    out = Difficulty(drop_incorrect=True)(table)
    assert_invariant(table, out)
    assert out.rejected.column("id").to_pylist() == ["r1", "r3", "r8"]
    assert set(out.rejected.column("reason").to_pylist()) == {"wrong_answer"}
    assert out.rejected.column("difficulty").to_pylist() == [pytest.approx(2 / 3)] * 2 + [pytest.approx(1 / 3)]


def test_unknown_difficulty_is_allocated_as_the_median_of_the_others():
    table = pool([0, 5, 10, 0], per_prompt=10)  # d = 0, .5, 1 and (made unknown) prompt 3
    table = table.set_column(3, "verified", pa.array(["unknown" if i >= 30 else v
                                                       for i, v in enumerate(table.column("verified").to_pylist())]))
    out = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": 8})(table)
    counts = per_prompt_counts(out.kept)
    assert counts[3] == counts[1] == 4  # the median difficulty, 0.5
    assert difficulty_of(out.kept)[3] is None
    assert "median" in out.rejected.filter(pa.compute.equal(out.rejected.column("problem_id"), 3)).column("detail")[0].as_py()


def test_column_estimate_is_the_percentile_rank_of_the_group_mean_ties_sharing_their_rank():
    scores = [[0.9, 0.7], [0.2, 0.2], [0.5, None], [0.1, 0.3], [None, None]]  # means .8, .2, .5, .2, none
    table = pool([0] * 5, per_prompt=2, ifd=lambda rows: [scores[q][r] for q, r in rows])
    d = difficulty_of(Difficulty(estimate={"method": "column", "score_column": "ifd"}, group_by="problem_id")(table).kept)
    assert d == {0: 1.0, 1: pytest.approx(1 / 6), 2: pytest.approx(2 / 3), 3: pytest.approx(1 / 6), 4: None}
    d = difficulty_of(Difficulty(estimate={"method": "column", "score_column": "ifd", "higher_is_harder": False}, group_by="problem_id")(table).kept)
    assert d[0] == 0.0 and d[1] == pytest.approx(5 / 6)


# -- 4: difficulty from samples ---------------------------------------------------------------
def test_samples_estimate_is_the_fail_rate_of_k_samples_per_distinct_prompt_uncheckable_left_out():
    right, wrong, vague = "2 + 2 makes 4. The answer is 4.", "The answer is 5.", "I am not sure."
    lm = ScriptedLM({
        "Quarter?": [right] * 6 + [wrong] * 2,  # d = 2/8
        "Hard?": [wrong],  # d = 1
        "Vague?": [vague, right],  # 4 unknown, 4 right: d = 0
        "Unreadable?": [vague],  # nothing checkable: unknown
        "No reference?": [right],  # never asked
    })
    prompts = ["Quarter?", "Hard?", "Vague?", "Unreadable?", "No reference?"]
    rows = [(p, j) for p in prompts for j in range(2)]  # two rows per prompt: sampled once each
    msgs = [[{"role": "user", "content": p}, {"role": "assistant", "content": f"row {j}"}] for p, j in rows]
    table = pa.table({"id": [f"{p}{j}" for p, j in rows], "messages": pa.array(msgs, MESSAGES_TYPE),
                      "answer": [None if p == "No reference?" else "4" for p, _ in rows]})
    stage = Difficulty(estimate={"method": "samples", "model": "m", "k": 8, "kind": "number"})
    assert stage.models_used() == ["m"]
    out = stage(table, StageContext(models=Pool(m=lm)))
    d = dict(zip([p for p, _ in rows], out.kept.column("difficulty").to_pylist()))
    assert d == {"Quarter?": 0.25, "Hard?": 1.0, "Vague?": 0.0, "Unreadable?": None, "No reference?": None}
    assert sorted(lm.calls) == sorted((p, 8) for p in prompts[:4])
    assert out.stats["samples"] == 32 and out.stats["samples_unknown"] == 12 and out.stats["prompts_unknown"] == 2


# -- 5: budgets and the histogram ---------------------------------------------------------------
def test_a_budget_in_rows_picks_the_largest_k_that_fits():
    table = spread_pool()
    out = Difficulty(group_by="problem_id", sampling="uniform", budget={"rows": 237})(table)
    assert out.kept.num_rows == 200 and out.stats["k_u"] == 2  # k_u = 3 would take 300

    out = Difficulty(group_by="problem_id", sampling="prop2diff", budget={"rows": 500})(table)
    k_p = out.stats["k_p"]
    assert out.kept.num_rows <= 500
    fits = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": k_p})(table)
    over = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": k_p + 1})(table)
    assert fits.kept.num_rows == out.kept.num_rows and over.kept.num_rows > 500


def test_a_budget_in_tokens_is_respected_counted_from_the_conversation_or_a_token_column():
    table = spread_pool()
    out = Difficulty(group_by="problem_id", sampling="prop2diff", budget={"tokens": 5000})(table)
    spent = sum(approx_tokens(conversation_of(m)) for m in out.kept.column("messages").to_pylist())
    assert 0 < spent <= 5000
    k_p = out.stats["k_p"]
    over = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": k_p + 1})(table)
    assert sum(approx_tokens(conversation_of(m)) for m in over.kept.column("messages").to_pylist()) > 5000

    table = table.append_column("n_tokens", pa.array([10 + i % 20 for i in range(table.num_rows)], pa.int64()))
    out = Difficulty(group_by="problem_id", sampling="uniform",
                     budget={"tokens": 4000, "token_column": "n_tokens"})(table)
    assert sum(out.kept.column("n_tokens").to_pylist()) <= 4000
    over = Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": out.stats["k_u"] + 1})(table)
    assert sum(over.kept.column("n_tokens").to_pylist()) > 4000


def test_histogram_hits_its_target_shares_within_a_row_or_two():
    table = spread_pool()
    edges, weights, budget = [0, 0.25, 0.5, 0.75, 1], [4, 3, 2, 1], 333
    out = Difficulty(group_by="problem_id", sampling={"method": "histogram", "bins": edges, "weights": weights},
                     budget={"rows": budget})(table)
    assert_invariant(table, out)
    d = np.array(out.kept.column("difficulty").to_pylist())
    got = [int(((d >= lo) & ((d < hi) | (hi == 1))).sum()) for lo, hi in pairwise(edges)]
    for g, w in zip(got, weights):
        assert abs(g - budget * w / sum(weights)) <= 2
    assert sum(got) <= budget
    assert [out.stats[f"bin_{lo:g}-{hi:g}"] for lo, hi in pairwise(edges)] == got


# -- 6: order and seeds -------------------------------------------------------------------------
def test_curriculum_order_is_easy_to_hard_with_unknown_difficulty_last():
    fails = [7, 0, 3, 10, 1]
    table = pool(fails, per_prompt=10)
    table = table.set_column(3, "verified", pa.array(["unknown" if i >= 40 else v  # prompt 4: unknown
                                                       for i, v in enumerate(table.column("verified").to_pylist())]))
    out = Difficulty(group_by="problem_id", sampling={"method": "prop2diff", "k_p": 6}, order="curriculum")(table)
    d = out.kept.column("difficulty").to_pylist()
    known = [x for x in d if x is not None]
    assert known == sorted(known) and d[len(known):] == [None] * (len(d) - len(known)) and len(known) < len(d)
    assert out.kept.column("problem_id").to_pylist()[:1] == [1]


def test_the_same_seed_gives_the_same_rows_and_another_seed_another_choice():
    table = spread_pool(prompts=30)

    def ids(seed):
        out = Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": 3}, seed=seed)(table)
        return out.kept.column("id").to_pylist()
    assert ids(0) == ids(0)
    assert ids(0) != ids(1)


def test_approx_tokens_counts_word_runs_and_punctuation_marks():
    assert approx_tokens("x = 3.5, so it's 42!") == 12
    assert approx_tokens("") == 0


# -- 7: configuration and input errors ----------------------------------------------------------
HISTOGRAM = {"method": "histogram", "bins": [0, 0.5, 1], "weights": [1, 2]}


@pytest.mark.parametrize("args, field", [
    ({"sampling": "uniform"}, "k_u"),
    ({"sampling": "prop2diff"}, "k_p"),
    ({"sampling": HISTOGRAM}, "budget"),
    ({"sampling": {"method": "histogram", "bins": [0, 0.5, 1]}, "budget": {"rows": 10}}, "weights"),
    ({"sampling": {**HISTOGRAM, "weights": [1, 2, 3]}, "budget": {"rows": 10}}, "weights"),
    ({"sampling": {**HISTOGRAM, "bins": [0, 0.7, 0.5, 1], "weights": [1, 1, 1]}, "budget": {"rows": 10}}, "bins"),
    ({"estimate": "column"}, r"estimate.column.score_column: required key is missing"),
    ({"estimate": "samples"}, r"estimate.samples.model: required key is missing"),
    ({"estimate": "sampled"}, "method 'sampled' is not one of verified, samples, column"),
    ({"estimate": {"model": "m"}}, "say which method"),
    ({"sampling": {"method": "uniform", "k_u": 0}}, "k_u"),
    ({"sampling": "none"}, "method 'none' is not one of uniform, prop2diff, histogram"),
    ({"budget": {"rows": 100}}, "budget needs a sampling"),
    ({"sampling": "uniform", "budget": 100}, r"budget: a mapping: \{rows: N\}"),
    ({"sampling": "uniform", "budget": {"rows": 100, "token_column": "n"}}, "token_column: unknown key"),
    ({"sampling": {"method": "prop2diff", "k_p": 2, "min_per_prompt": 3}}, "min_per_prompt=3 is above k_p=2"),
    ({"samplng": "uniform"}, "samplng"),
])
def test_bad_config_is_a_recipe_error_naming_the_field(args, field):
    with pytest.raises(RecipeError, match=field):
        Difficulty(**args)


@pytest.mark.parametrize("sampling, field, variant", [
    ({"method": "uniform", "k_u": 5, "k_p": 12}, "k_p", "uniform"),
    ({"method": "uniform", "k_u": 5, "min_per_prompt": 2}, "min_per_prompt", "uniform"),
    ({"method": "prop2diff", "k_p": 12, "k_u": 5}, "k_u", "prop2diff"),
    ({"method": "prop2diff", "k_p": 12, "bins": [0, 1]}, "bins", "prop2diff"),
])
def test_a_setting_of_one_sampling_method_given_to_another_is_an_error_naming_the_field(sampling, field, variant):
    with pytest.raises(RecipeError, match=rf"difficulty.sampling.{variant}.{field}: unknown key"):
        Difficulty(sampling=sampling)
    with pytest.raises(RecipeError, match=r"difficulty.estimate.verified.k: unknown key"):
        Difficulty(estimate={"method": "verified", "k": 8})


@pytest.mark.parametrize("old, new", [
    ({"sampling": "prop2diff", "max_per_prompt": 12}, "'k_p' under sampling (sampling: {method: prop2diff, k_p: 12})"),
    ({"sampling": "uniform", "per_prompt": 50}, "'k_u' under sampling (sampling: {method: uniform, k_u: 50})"),
    ({"estimate": "samples", "model": "m"}, "'model' under estimate (estimate: {method: samples, model: teacher, k: 8})"),
    ({"estimate": "column", "score_column": "ifd"}, "'score_column' under estimate"),
    ({"sampling": "uniform", "budget": {"rows": 10}, "budget_unit": "tokens"}, "the key of budget"),
])
def test_an_old_flat_key_says_what_it_was_renamed_to(old, new, tmp_path):
    key = next(k for k in old if k not in ("sampling", "estimate", "budget"))
    with pytest.raises(RecipeError, match=re.escape(f"difficulty.{key}: renamed to {new}")):
        Difficulty(**old)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "old", "input": "pool", "stages": [{"difficulty": old}]}))
    with pytest.raises(RecipeError, match=re.escape(f"stages[0].difficulty.{key}: renamed to {new}")):
        load_recipe(recipe, check_inputs=False)


def test_a_bare_method_name_and_its_mapping_are_one_config_with_one_fingerprint():
    a = Difficulty(estimate="verified", sampling={"method": "uniform", "k_u": 3})
    b = Difficulty(estimate={"method": "verified"}, sampling=Uniform(k_u=3))
    assert a.config == b.config and a.fingerprint("p") == b.fingerprint("p")
    assert a.fingerprint_config() == {"sampling": {"method": "uniform", "k_u": 3}}  # the default estimate left out
    assert Difficulty(sampling={"method": "prop2diff", "k_p": 3, "min_per_prompt": 1}).fingerprint_config() == {
        "sampling": {"method": "prop2diff", "k_p": 3}}  # the method is written even where it is the default
    assert a.fingerprint("p") != Difficulty(sampling={"method": "prop2diff", "k_p": 3}).fingerprint("p")
    assert a.with_overrides({"seed": 1}).config.sampling == Uniform(k_u=3)  # re-read from its own dump
    sampled = Difficulty(estimate={"method": "samples", "model": "m"})
    assert sampled.models_used() == ["m"] and a.models_used() == []


def test_the_math_sft_chain_and_the_gpu_recipe_configure_prop2diff():
    from pipelines.math_sft import math_sft

    stage = next(s for s in math_sft() if isinstance(s, Difficulty))
    c = stage.config
    assert (c.estimate, c.group_by, c.drop_incorrect, c.sampling, c.budget) == (
        VerifiedEstimate(), "problem_id", True, Prop2Diff(k_p=16), None)
    steps = dict(zip((p := load_recipe(ROOT / "recipes" / "math_sft_gpu.yaml").pipeline()).steps, p.stages))
    c = steps["difficulty"].config
    assert (c.drop_incorrect, c.sampling, c.group_by) == (False, Prop2Diff(k_p=40), "problem_id")


def test_estimate_verified_without_a_verified_column_says_to_run_verify():
    table = spread_pool(prompts=3).drop_columns(["verified"])
    with pytest.raises(StageError, match="run the verify stage first"):
        Difficulty()(table)
    with pytest.raises(StageError, match="verified"):
        Difficulty(estimate={"method": "column", "score_column": "problem_id"}, drop_incorrect=True)(table)


def test_the_summary_is_logged_once():
    lines = []

    class Log(Reporter):
        def log(self, message):
            lines.append(message)
    Difficulty(group_by="problem_id", sampling={"method": "uniform", "k_u": 2})(spread_pool(prompts=5),
                                                                             StageContext(reporter=Log()))
    assert len(lines) == 1 and "5 prompts" in lines[0]
