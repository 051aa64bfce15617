import json
import textwrap

import pytest

from curate.errors import RecipeError
from curate.recipe import load_recipe

from .conftest import ROOT, run_cli

GOOD = """\
# curate run {path}
name: demo
source:
  type: jsonl
  path: pool.jsonl
  fields: {{prompt: question, response: solution}}
stages:
  - exact_dedup: {{}}
  - heuristic_filter:
      min_words: 5
"""


def write(tmp_path, text, data=True):
    if data:
        (tmp_path / "pool.jsonl").write_text(json.dumps({"question": "q", "solution": "a b c d e f"}) + "\n")
    path = tmp_path / "recipe.yaml"
    path.write_text(textwrap.dedent(text).format(path=path))
    return path


def test_good_recipe_builds_pipeline_with_paths_relative_to_the_recipe(tmp_path):
    r = load_recipe(write(tmp_path, GOOD))
    p = r.pipeline()
    assert p.steps == ["exact_dedup", "heuristic_filter"]
    assert p.stages[1].config.min_words == 5
    assert r.source.config.path == str(tmp_path / "pool.jsonl")


def test_misspelled_stage_names_the_field_line_and_suggests(tmp_path):
    path = write(tmp_path, GOOD.replace("heuristic_filter:", "heuristic_filtr:"))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    msg = str(e.value)
    assert f"{path}:9: stages[1].heuristic_filtr: unknown stage 'heuristic_filtr'; did you mean 'heuristic_filter'?" in msg


def test_misspelled_key_names_the_field_line_and_suggests(tmp_path):
    path = write(tmp_path, GOOD.replace("min_words: 5", "min_wrods: 5"))
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert f"{path}:10: stages[1].heuristic_filter.min_wrods: unknown key; did you mean 'min_words'?" in str(e.value)


def test_wrong_type_and_unknown_top_level_key_are_all_reported_at_once(tmp_path):
    text = GOOD.replace("min_words: 5", "min_words: lots").replace("name: demo", "name: demo\nstagse: []")
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, text))
    assert len(e.value.problems) == 2
    assert "stagse: unknown key; did you mean 'stages'?" in str(e.value)
    assert "stages[1].heuristic_filter.min_words: Input should be a valid integer" in str(e.value)


def test_missing_input_file_names_the_source_path_field(tmp_path):
    path = write(tmp_path, GOOD, data=False)
    with pytest.raises(RecipeError) as e:
        load_recipe(path)
    assert f"{path}:5: source.path:" in str(e.value) and "pool.jsonl" in str(e.value)


def test_named_pipeline_with_overrides(tmp_path):
    text = """\
    name: demo
    source: {{type: champ, limit_problems: 2}}
    models: {{ref_lm: {{model: some/hub-model}}}}
    pipeline: math_sft
    overrides:
      heuristic_filter: {{min_words: 7}}
    """
    p = load_recipe(write(tmp_path, text)).pipeline()
    assert p.steps == ["exact_dedup", "minhash_dedup", "heuristic_filter", "decontaminate", "verify", "difficulty",
                       "select_target", "perplexity_filter", "rectify"]
    assert p.stages[2].config.min_words == 7
    assert p.stages[2].config.min_alpha_word_fraction == 0.2  # the rest of the chain's config is kept
    bad = text.replace("heuristic_filter: {{min", "heuristic_filtre: {{min")
    with pytest.raises(RecipeError, match="pipeline 'math_sft' has no step 'heuristic_filtre'; did you mean 'heuristic_filter'"):
        load_recipe(write(tmp_path, bad))


def test_shipped_recipes_validate():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        load_recipe(path)
        assert path.read_text().startswith(f"# curate run recipes/{path.name}")


def test_gpu_recipe_validates_and_configures_the_real_scale_chain():
    proc = run_cli("validate", "recipes/math_sft_gpu.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "model ref_lm (vllm)" in proc.stdout and "Qwen/Qwen2.5-1.5B-Instruct" in proc.stdout
    steps = dict(zip((p := load_recipe(ROOT / "recipes" / "math_sft_gpu.yaml").pipeline()).steps, p.stages))
    assert steps["difficulty"].config.drop_incorrect is False  # wrong solutions go on to be corrected
    c = steps["rectify"].config
    assert (c.k, c.reflections, c.max_tokens, c.alpha, c.beta, c.correct, c.similarity) == (5, 2, 1024, 0.8, 0.7, True, "embedding")


@pytest.mark.parametrize("edit, field", [
    (lambda t: t.replace("heuristic_filter:", "heuristic_filtr:"), "stages[1].heuristic_filtr"),
    (lambda t: t.replace("min_words: 5", "min_wrods: 5"), "stages[1].heuristic_filter.min_wrods"),
    (lambda t: t.replace("pool.jsonl", "missing.jsonl"), "source.path"),
])
def test_cli_exits_2_with_one_clear_message_and_no_traceback(tmp_path, edit, field):
    path = write(tmp_path, edit(GOOD))
    for cmd in ("run", "validate"):
        proc = run_cli(cmd, str(path))
        assert proc.returncode == 2, proc.stderr
        assert field in proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout


MODELS = """\
name: demo
source:
  type: jsonl
  path: pool.jsonl
  fields: {{prompt: question, response: solution}}
models:
  ref:
    backend: transformers
    model: ./lm
    batch_size: 8
  teacher:
    backend: openai
    base_url: http://127.0.0.1:9/v1
    model: big
    api_key_env: TEACHER_KEY
stages:
  - decontaminate: {{eval_sets: [evals/test.jsonl]}}
  - perplexity_filter: {{model: ref, max_percentile: 95}}
"""


def test_models_section_resolves_local_folders_and_stage_paths_relative_to_the_recipe(tmp_path):
    (tmp_path / "lm").mkdir()
    (tmp_path / "evals").mkdir()
    r = load_recipe(write(tmp_path, MODELS))
    assert r.models["ref"].model == str(tmp_path / "lm") and r.models["ref"].batch_size == 8
    assert r.models["teacher"].api_key_env == "TEACHER_KEY"
    assert r.pipeline().stages[0].config.eval_sets == [str(tmp_path / "evals" / "test.jsonl")]


def test_model_problems_are_reported_with_line_and_field(tmp_path):
    bad = (MODELS.replace("backend: openai", "backend: opneai").replace("batch_size: 8", "batch_sise: 8")
           .replace("model: ref, max", "model: reff, max"))
    with pytest.raises(RecipeError) as e:
        load_recipe(write(tmp_path, bad))
    msg = str(e.value)
    assert "recipe.yaml:12: models.teacher.backend: unknown backend 'opneai'; did you mean 'openai'?" in msg
    assert "recipe.yaml:10: models.ref.batch_sise: unknown key" in msg
    assert "uses model 'reff', which the recipe does not define under models:; did you mean 'ref'?" in msg


def test_data_references_in_stage_fields_resolve_files_against_the_recipe_and_keep_dataset_names(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "extra.jsonl").write_text(json.dumps({"question": "q2", "solution": "x y z"}) + "\n")
    (tmp_path / "input").mkdir()  # a folder named like mix's keyword must not turn it into a path
    r = load_recipe(write(tmp_path, """\
        name: demo
        source: {{type: jsonl, path: pool.jsonl, fields: {{prompt: question, response: solution}}}}
        stages:
          - mix:
              components:
                - {{data: input, weight: 2}}
                - {{data: data/extra.jsonl, weight: 1}}
                - {{data: other_dataset@2, weight: 1}}
          - select_target:
              target: {{type: jsonl, path: data/extra.jsonl, fields: {{prompt: question, response: solution}}}}
              method: dsir
              budget: 1
        """))
    mix, select = r.pipeline().stages
    assert [c.data for c in mix.config.components] == ["input", str(tmp_path / "data" / "extra.jsonl"), "other_dataset@2"]
    assert select.config.target["path"] == str(tmp_path / "data" / "extra.jsonl")


def test_the_main_jobs_reference_lm_never_trains_on_the_heldout_problems():
    # it is also the finetune step's base, graded on those problems; the notebook builds the same model
    from pipelines.math_sft import heldout_ids, reference_lm_data

    recipe = load_recipe(ROOT / "recipes" / "math_sft.yaml")
    assert recipe.models["ref_lm"].train_tiny.data == reference_lm_data()
    assert len(heldout_ids()) == 10 and recipe.train.model == "ref_lm"
    assert str(recipe.eval.data).endswith("champ_heldout.jsonl")


def test_a_source_uri_is_left_as_written_and_the_recipe_runs_from_it(tmp_path):
    from curate import Store

    recipe = write(tmp_path, GOOD.replace("path: pool.jsonl", f"path: file://{tmp_path}/pool.jsonl"))
    r = load_recipe(recipe)
    assert r.source.config.path == f"file://{tmp_path}/pool.jsonl"
    result = r.pipeline().run(Store(f"file://{tmp_path}/store"))
    assert result.final.manifest["counts"]["in"] == 1 and (tmp_path / "store" / "versions").is_dir()
    bad = write(tmp_path, GOOD.replace("path: pool.jsonl", f"path: file://{tmp_path}/missing.jsonl"))
    with pytest.raises(RecipeError, match="missing.jsonl"):
        load_recipe(bad)
