"""``Recipe.run()``: the whole job from the API -- the chain, then train: and eval: -- is what
``curate run`` does; ``--set`` changes one value of a step, train: or eval:."""

import json
from pathlib import Path

import pytest

from curate import load_recipe
from curate.errors import RecipeError
from curate.recipe import parse_settings
from curate.store import Store
from curate.train import ModelStore

from .conftest import ROOT, run_cli

SMALL = """\
name: small
source: {{type: champ, limit_problems: 4, models: [GPT-4]}}
models:
  lm: {{backend: transformers, model: {lm}}}
stages:
  - exact_dedup: {{field: response}}
  - heuristic_filter: {{field: response, min_words: 5}}
train:
  model: lm
  method: full
  max_steps: 3
  batch_size: 2
  gradient_accumulation: 1
  max_length: 128
  save_steps: 3
  baselines: [source]
eval:
  data: eval.jsonl
  max_tokens: 16
"""


@pytest.fixture
def small_recipe(tmp_path, tiny_lm) -> Path:
    """A recipe that does every part of the job in seconds: a 4-problem CHAMP source, two
    steps, 3 training steps on the result and on the raw pool, 2 held-out problems."""
    heldout = (ROOT / "recipes" / "data" / "champ_heldout.jsonl").read_text().splitlines()[:2]
    (tmp_path / "eval.jsonl").write_text("\n".join(heldout) + "\n")
    path = tmp_path / "small.yaml"
    path.write_text(SMALL.format(lm=tiny_lm))
    return path


def test_the_api_run_trains_and_evaluates_as_curate_run_does(small_recipe, tmp_path):
    api_store, cli_store = Store(tmp_path / "api"), Store(tmp_path / "cli")

    done = load_recipe(small_recipe).run(api_store)
    assert [label for label, _, cached in done.finished.models] == ["small", "small/source"]
    assert not any(cached for _, _, cached in done.finished.models)  # trained, not found
    assert len(done.finished.rows) == 3  # the base, the curated set, the raw pool
    for row in done.finished.rows:
        assert row["eval"]["n"] == 2

    proc = run_cli("run", str(small_recipe), "--store", str(cli_store.root))
    assert proc.returncode == 0, proc.stderr
    assert "finetune small: trained" in proc.stdout and "comparison table:" in proc.stdout

    # the same versions, the same models (fingerprints: data, base, settings), the same table
    assert cli_store.resolve("small").fingerprint == done.final.fingerprint
    cli_models = {m.name: m.fingerprint for m in ModelStore(cli_store).list()}
    assert cli_models == {m.name: m.fingerprint for m in done.models}
    report = Path("reports") / "small" / "comparison.md"
    assert (cli_store.root / report).read_text() == (api_store.root / report).read_text()
    assert done.finished.table.strip() in (api_store.root / report).read_text()

    # and the API's rerun of what the CLI made computes nothing, trains nothing
    again = load_recipe(small_recipe).run(cli_store)
    assert again.chain.all_cached and all(cached for _, _, cached in again.finished.models)
    untimed = lambda rows: [{k: v for k, v in r["eval"].items() if k != "seconds"} for r in rows]  # noqa: E731
    assert untimed(again.finished.rows) == untimed(done.finished.rows)


def test_until_runs_the_chain_only(small_recipe, tmp_path):
    done = load_recipe(small_recipe).run(tmp_path / "s", until="exact_dedup")
    assert done.finished is None and done.models == []
    assert [s.step for s in done.chain.steps] == ["source", "exact_dedup"]


def test_set_changes_one_value_of_a_step_of_train_and_of_eval(small_recipe):
    r = load_recipe(small_recipe, settings={"heuristic_filter.min_words": 40, "train.max_steps": 5,
                                            "eval.max_tokens": 8})
    assert r.stages[1].config.min_words == 40 and r.stages[1].config.field == "response"  # the rest kept
    assert r.train.max_steps == 5 and r.train.batch_size == 2 and r.eval.max_tokens == 8


def test_set_reaches_the_steps_of_a_named_pipeline_as_overrides():
    r = load_recipe(ROOT / "recipes" / "math_sft.yaml", check_inputs=False,
                    settings=parse_settings(["heuristic_filter.min_words=30", "select_target.fraction=0.5"]))
    steps = dict(zip(r.pipeline().steps, r.stages))
    assert steps["heuristic_filter"].config.min_words == 30
    assert steps["heuristic_filter"].config.min_alpha_word_fraction == 0.2  # the pipeline's own value stays
    assert steps["select_target"].config.fraction == 0.5
    assert steps["select_target"].config.target["categories"] == ["Number-Theory"]  # the recipe's override stays


def test_set_problems_name_the_set_item_not_a_line_of_the_file(small_recipe):
    with pytest.raises(RecipeError) as e:
        load_recipe(small_recipe, settings=parse_settings(
            ["heuristic_filter.min_wrds=3", "nope.x=1", "train.max_steps=abc", "minwords=3"]))
    text = str(e.value)
    assert "--set heuristic_filter.min_wrds: unknown key; did you mean 'min_words'?" in text
    assert "--set nope.x: the recipe has no step 'nope'" in text
    assert "--set train.max_steps: Input should be a valid integer" in text
    assert "--set minwords: name a step and a key" in text
    assert "small.yaml" not in text.split("problems:")[1]  # nothing blamed on the file
    with pytest.raises(RecipeError, match="--set x: write KEY=VALUE"):
        parse_settings(["x"])


def test_set_values_are_yaml():
    assert parse_settings(["a.n=30", "a.f=0.5", "a.l=[1, 2]", "a.none=null", "a.s=hello world", "a.t=true"]) == {
        "a.n": 30, "a.f": 0.5, "a.l": [1, 2], "a.none": None, "a.s": "hello world", "a.t": True}


def test_curate_run_set_changes_the_step_and_its_fingerprint(small_recipe, tmp_path):
    store = tmp_path / "s"
    plain = run_cli("run", str(small_recipe), "--store", str(store), "--until", "heuristic_filter")
    changed = run_cli("run", str(small_recipe), "--store", str(store), "--until", "heuristic_filter",
                      "--set", "heuristic_filter.min_words=100000")
    assert plain.returncode == 0 and changed.returncode == 0, changed.stderr
    show = json.loads(run_cli("datasets", "show", "small/heuristic_filter", "--json", "--store", str(store)).stdout)
    assert show["stage"]["config"]["min_words"] == 100000 and show["counts"]["kept"] == 0  # every row too short
    assert sum(show["rejections"].values()) == show["counts"]["in"]
    bad = run_cli("run", str(small_recipe), "--store", str(store), "--set", "heuristic_filter.min_wrds=3")
    assert bad.returncode == 2 and "--set heuristic_filter.min_wrds: unknown key" in bad.stderr


def test_set_reaches_into_a_variant_and_keeps_its_other_settings():
    r = load_recipe(ROOT / "recipes" / "math_sft.yaml", check_inputs=False,
                    settings={"difficulty.sampling.k_p": 40})
    sampling = dict(zip(r.pipeline().steps, r.stages))["difficulty"].config.sampling
    assert (sampling.method, sampling.k_p) == ("prop2diff", 40)


def test_settings_merge_into_mappings_unless_they_name_another_variant():
    from curate.stage import merge_settings

    base = {"sampling": {"method": "prop2diff", "k_p": 12}, "seed": 1}
    assert merge_settings(base, {"sampling": {"k_p": 40}}) == {"sampling": {"method": "prop2diff", "k_p": 40}, "seed": 1}
    assert merge_settings(base, {"sampling": {"method": "uniform", "k_u": 5}})["sampling"] == {"method": "uniform", "k_u": 5}
    assert merge_settings({"sampling": "uniform"}, {"sampling": {"k_u": 5}}) == {"sampling": {"method": "uniform", "k_u": 5}}
    assert base == {"sampling": {"method": "prop2diff", "k_p": 12}, "seed": 1}  # nothing mutated
