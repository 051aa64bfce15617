"""Embedders are models: entries like LMs, reached through the run's one ModelPool. The
built-in ``minilm`` (the packaged all-MiniLM-L6-v2) needs no entry; an entry's identity (a
content hash of its folder) enters the fingerprint of every step that embeds with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import Pipeline
from curate.errors import RecipeError, UsageError
from curate.models import BUILTIN_MODELS, Embedder, ModelPool
from curate.models.base import ModelError
from curate.models.embeddings import packaged_model_path
from curate.recipe import load_recipe
from curate.stage import StageContext
from curate.stages import Confidence, Difficulty, PerplexityFilter, SelectTarget, SemanticDedup

from .scripted import ScriptedLM

TEXTS = ["The cat sat on the mat.", "A cat sat on the mat.", "Dividing 12 by 4 gives 3.",
         "Paris is the capital of France.", "The capital of France is Paris."]


@pytest.fixture(scope="module")
def pool():
    with ModelPool() as p:
        yield p


def encoder_copy(where: Path, edit: bool = False) -> Path:
    """A copy of the packaged model's folder (the weights linked, not copied); ``edit`` changes
    one byte of its config, so the copy has another identity and the same numbers."""
    src = packaged_model_path()
    shutil.copytree(src, where, ignore=shutil.ignore_patterns("model.safetensors"))
    (where / "model.safetensors").symlink_to(src / "model.safetensors")
    if edit:
        (where / "config.json").write_text((where / "config.json").read_text() + " ")
    return where


def sft(responses: list[str]) -> pa.Table:
    return pa.table({"id": [f"r{i}" for i in range(len(responses))],
                     "messages": [[{"role": "user", "content": "Say it."}, {"role": "assistant", "content": r}] for r in responses]})


def test_an_embedder_defined_on_the_packaged_folder_embeds_like_the_built_in_default(pool):
    mine = ModelPool({"mine": {"backend": "sentence_transformers", "model": str(packaged_model_path()), "batch_size": 2}})
    try:
        ours, builtin = mine.embedder("mine").embed(TEXTS), pool.embedder("minilm").embed(TEXTS)
        assert ours.shape == (5, 384) and np.allclose(ours, builtin, atol=1e-6)
        assert mine.identity("mine") == pool.identity("minilm")  # the same folder: the same identity
        kept = SemanticDedup(embedder="mine")(sft(TEXTS), StageContext(models=mine)).kept
        assert kept.equals(SemanticDedup()(sft(TEXTS), StageContext(models=pool)).kept)
    finally:
        mine.close()


def test_the_step_fingerprint_follows_the_embedders_identity(tmp_path):
    a, b = encoder_copy(tmp_path / "a"), encoder_copy(tmp_path / "b", edit=True)

    def fp(stage, **models):
        return stage.fingerprint("parent", None, ModelPool({n: {"backend": "sentence_transformers", "model": str(m)}
                                                            for n, m in models.items()}))

    stage = SemanticDedup(embedder="enc")
    assert fp(stage, enc=a) == fp(SemanticDedup(embedder="enc"), enc=a)  # nothing changed: the step is reused
    assert fp(stage, enc=a) == fp(stage, enc=encoder_copy(tmp_path / "a2"))  # a content hash, not a path
    assert fp(stage, enc=b) != fp(stage, enc=a)  # other files: the step recomputes
    # the built-in default, and a recipe that redefines its name
    assert fp(SemanticDedup()) == fp(SemanticDedup()) == fp(SemanticDedup(), minilm=a)
    assert fp(SemanticDedup(), minilm=b) != fp(SemanticDedup())
    # a stage that does not embed leaves the embedder's identity out
    target = tmp_path / "target.jsonl"
    target.write_text(json.dumps({"id": "t", "text": "x y z"}) + "\n")
    dsir = SelectTarget(target=str(target), method="dsir", budget=1, field="text", embedder="enc")
    assert dsir.models_used() == [] and fp(dsir, enc=a) == fp(dsir, enc=b)
    lm = ScriptedLM({})
    conf = Confidence(model="m", embedder="enc", similarity="none")
    assert conf.models_used() == ["m"]
    assert Confidence(model="m", embedder="enc").models_used() == ["m", "enc"]
    with_lm = {"m": lm, "enc": {"backend": "sentence_transformers", "model": str(a)}}
    assert conf.fingerprint("p", None, ModelPool(with_lm)) == conf.fingerprint("p", None, ModelPool({**with_lm, "enc": {
        "backend": "sentence_transformers", "model": str(b)}}))


RECIPE = """\
name: demo
source:
  type: jsonl
  path: pool.jsonl
  fields: {{prompt: question, response: solution}}
{models}stages:
  - {stage}
"""


def recipe(tmp_path: Path, stage: str, models: str = "") -> Path:
    rows = [{"question": "Say it.", "solution": t} for t in TEXTS]
    (tmp_path / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(models=textwrap.dedent(models), stage=stage))
    return path


def test_a_recipe_needs_no_models_section_for_the_built_in_embedder(tmp_path):
    r = load_recipe(recipe(tmp_path, "semantic_dedup: {}"))
    assert r.models == {} and r.stages[0].models_used() == ["minilm"] and "minilm" in BUILTIN_MODELS
    result = r.pipeline().run(store=tmp_path / "store", workers=1)
    assert result.final.num_rows == 3  # two paraphrase pairs collapse
    embedded = result.model_calls["minilm"]
    assert embedded.calls + embedded.cached == 5  # each distinct text once (the session's cache may hold some)
    again = r.pipeline().run(store=tmp_path / "store", workers=1)
    assert again.all_cached and again.model_calls == {}


def test_a_recipe_may_redefine_the_built_in_name(tmp_path):
    models = f"""\
    models:
      minilm:
        backend: sentence_transformers
        model: {encoder_copy(tmp_path / "enc", edit=True)}
        batch_size: 2
    """
    r = load_recipe(recipe(tmp_path, "semantic_dedup: {}", models))
    assert r.models["minilm"].batch_size == 2
    pool = ModelPool(r.models)
    assert pool.identity("minilm") != ModelPool().identity("minilm")


@pytest.mark.parametrize("stage, expected", [
    ("semantic_dedup: {embedder: ./encoders/bge}",
     "'./encoders/bge' looks like a model folder or hub id, but this field takes the name of a models: entry: define it "
     "under models: (my_embedder: {backend: sentence_transformers, model: ./encoders/bge}) and give that name here"),
    ("semantic_dedup: {embedder: BAAI/bge-small-en-v1.5}", "backend: sentence_transformers, model: BAAI/bge-small-en-v1.5"),
    ("select_target: {target: pool.jsonl, fraction: 0.5, embedder: sentence-transformers/all-MiniLM-L6-v2}",
     "is the packaged model, the built-in embedder 'minilm': write embedder: minilm, or leave it out"),
    ("semantic_dedup: {model: sentence-transformers/all-MiniLM-L6-v2}",
     "semantic_dedup.model: renamed to 'embedder': the name of a models: entry with backend: sentence_transformers"),
    ("select_target: {target: pool.jsonl, fraction: 0.5, embed_batch_size: 8}",
     "select_target.embed_batch_size: renamed to the embedder's own batch_size"),
])
def test_a_path_where_a_models_name_is_expected_says_to_define_it_under_models(tmp_path, stage, expected):
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe(tmp_path, stage))
    assert expected in str(e.value)


def test_a_path_given_to_a_pipeline_or_a_pool_gets_the_same_advice():
    with pytest.raises(UsageError, match="define it under models: .my_embedder: .backend: sentence_transformers"):
        Pipeline([SemanticDedup(embedder="/models/bge")], source="demo")
    with pytest.raises(RecipeError, match="define it under models: .my_embedder: .backend: sentence_transformers"):
        ModelPool().embedder("BAAI/bge-small-en-v1.5")
    with pytest.raises(UsageError, match="define it under models: .my_lm: .backend: transformers, model: Qwen/Qwen2.5-0.5B"):
        Pipeline([PerplexityFilter(model="Qwen/Qwen2.5-0.5B")], source="demo")


def test_each_field_names_a_model_of_its_kind(tmp_path):
    models = """\
    models:
      ref: {backend: transformers, model: some/lm}
    """
    with pytest.raises(RecipeError, match="uses 'ref', a transformers model, where it needs an embedder .backend: sentence_tr"):
        load_recipe(recipe(tmp_path, "semantic_dedup: {embedder: ref}", models), check_inputs=False)
    with pytest.raises(RecipeError, match="uses 'minilm', a sentence_transformers model, where it needs a language model"):
        load_recipe(recipe(tmp_path, "perplexity_filter: {model: minilm, max_percentile: 90}"), check_inputs=False)
    # a model named inside a sub-config (difficulty's sampler) is checked too
    with pytest.raises(RecipeError, match="uses 'minilm', a sentence_transformers model, where it needs a language model"):
        load_recipe(recipe(tmp_path, "difficulty: {estimate: {method: samples, model: minilm}}"), check_inputs=False)
    with pytest.raises(UsageError, match="step 'difficulty' uses model 'sampler', which is not defined"):
        Pipeline([Difficulty(estimate={"method": "samples", "model": "sampler"})], source="demo")
    with pytest.raises(ModelError, match="'minilm' is a sentence_transformers embedder, not a language model"):
        ModelPool().get("minilm")
    with pytest.raises(ModelError, match="'m' is a language model .scripted., not an embedder"):
        ModelPool({"m": ScriptedLM({})}).embedder("m")


def test_the_pool_closes_the_embedders_it_loaded_and_not_those_given(pool):
    given = pool.embedder("minilm")
    given.dimension()  # loads its weights
    run = ModelPool({"given": given}, cache=False)  # no vector cache: embed() below must load the weights
    own = run.embedder("minilm")
    own.embed(["a text"])
    assert own.loaded and set(run.used()) == {"given", "minilm"}
    run.close()
    assert not own.loaded and set(run.used()) == {"given"}
    assert given.loaded  # its owner (the module's pool) closes it
    assert isinstance(own, Embedder) and own.embed(["again"]).shape == (1, 384)  # a closed embedder reloads


def test_a_model_folder_is_hashed_once_per_cache_not_on_every_run(tmp_path, monkeypatch):
    from curate.models import hf

    hashed: list[str] = []
    real = hf.hash_file
    monkeypatch.setattr(hf, "hash_file", lambda p: hashed.append(Path(p).name) or real(p))
    first = ModelPool(cache_root=str(tmp_path)).identity("minilm")
    assert "model.safetensors" in hashed
    hashed.clear()
    assert ModelPool(cache_root=str(tmp_path)).identity("minilm") == first and hashed == []  # size + mtime unchanged


def test_embedding_needs_no_environment_variable_and_sets_none():
    """Offline because every load is of a local folder with local_files_only, not because
    the library set HF_HUB_OFFLINE; and the tokenizer setting is scoped to our own calls."""
    code = textwrap.dedent("""
        import os
        from curate.models import ModelPool
        with ModelPool() as pool:
            assert pool.embedder("minilm").embed(["one text", "another text"]).shape == (2, 384)
        left = [v for v in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM") if v in os.environ]
        assert not left, left
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TOKENIZERS_PARALLELISM")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr


def test_a_users_tokenizer_setting_is_left_as_it_was(pool, monkeypatch):
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "true")
    pool.embedder("minilm").embed(["a text to tokenize"])
    assert os.environ["TOKENIZERS_PARALLELISM"] == "true"


def test_a_borrowed_model_goes_through_the_pool_for_one_block_then_is_freed_and_forgotten(tiny_lm):
    """How a run reaches the models it makes as it goes (a fine-tuned model under evaluation,
    LLM2LLM's student of one round): through its one pool, with no name clash and nothing left."""
    with ModelPool({"ref": {"backend": "transformers", "model": str(tiny_lm)}}, cache=False) as pool:
        with pool.borrowed("eval:trained", {"backend": "transformers", "model": str(tiny_lm)}) as lm:
            assert "eval:trained" in pool and pool.used()["eval:trained"] is lm
            (scores,) = lm.logprobs([("The answer is", " 4")])
            assert len(scores) > 0 and np.all(np.asarray(scores) <= 0)
        assert "eval:trained" not in pool and "eval:trained" not in pool.used()
        with pytest.raises(ModelError, match="already in this run's pool"):
            with pool.borrowed("ref", {"backend": "transformers", "model": str(tiny_lm)}):
                pass
        assert "ref" in pool  # a clash leaves the run's own entry alone


def test_a_second_selection_over_the_same_pool_embeds_nothing(tmp_path, monkeypatch):
    """Vectors are cached on disk by model identity and text: another selection over the
    same pool (another budget, so the step itself is not cached) reads them back."""
    monkeypatch.setenv("CURATE_CACHE", str(tmp_path / "cache"))  # an empty cache, not the session's
    from curate import Pipeline
    from curate.sources import SOURCES
    from curate.stages import SelectTarget

    source = SOURCES["champ"](limit_problems=4, models=["GPT-4"])
    target = {"type": "champ", "include_model_solutions": False, "include_reference": True, "limit_problems": 2}
    first = Pipeline([SelectTarget(target=target, budget=10, field="response")], source, name="a").run(tmp_path / "s")
    embedded = first.model_calls["minilm"]
    assert embedded.calls > 0 and embedded.cached == 0
    second = Pipeline([SelectTarget(target=target, budget=5, field="response")], source, name="b").run(tmp_path / "s")
    assert not second.steps[-1].cached
    again = second.model_calls["minilm"]
    assert again.calls == 0 and again.cached == embedded.calls
    assert second.describe_model_calls() == [f"minilm: 0 texts embedded, {embedded.calls:,} from the cache"]
    kept_first = first.final.table().column("selection_score").to_pylist()
    assert sorted(kept_first, reverse=True)[:5] == sorted(second.final.table().column("selection_score").to_pylist(),
                                                          reverse=True)  # the same vectors, the same scores
