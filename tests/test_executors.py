"""The executor is how a version is made, never what it is: every stage of the registry, run
locally and on a real Ray cluster (``ray.init(num_cpus=2)`` in this process) over the same
real CHAMP rows, gives the same kept ids in the same order, the same rejects with the same
reasons and details, the same stats, the same model calls and the same fingerprints; a
row-wise stage gives the same rows at any block size; a killed row-wise step resumes at its
first unfinished block."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from curate import Pipeline, Store
from curate.executors import ExecutorConfig
from curate.models import ModelPool
from curate.sources import SOURCES
from curate.stage import Stage
from curate.stages import REGISTRY, Verify

ray = pytest.importorskip("ray", reason="the ray executor's tests need curate[ray]")

ROOT = Path(__file__).resolve().parents[1]
HELDOUT = str(ROOT / "pipelines" / "data" / "champ_heldout.jsonl")
BLOCK = 25  # rows per block: the ~100-row input is 4-5 blocks, so Ray runs them in parallel
# A target / component / positives reference: the reference solutions of CHAMP's first 16 problems
# (the input's 8 among them); small, so that embedding it costs little.
GEN = {"max_tokens": 12, "temperature": 1.0}  # the tiny LM's generations: short, so the stages are quick
REFERENCES = {"type": "champ", "include_model_solutions": False, "include_reference": True, "limit_problems": 16}

# One config per stage of the registry, small enough for the tiny LM (``lm``) on ~100 rows.
CONFIGS: dict[str, dict] = {
    "confidence": {"model": "lm", "k": 2, "reflections": 1, "similarity": "none", "max_tokens": 12},
    "decontaminate": {"eval_sets": [HELDOUT], "threshold": 0.05, "min_k_model": "lm"},
    "difficulty": {"sampling": {"method": "prop2diff", "k_p": 3}, "group_by": "problem_id"},
    "exact_dedup": {"field": "answer"},
    "extract_text": {"field": "answer"},  # CHAMP's answers are not HTML: every row a not_html reject
    "heuristic_filter": {},
    "ifd_score": {"model": "lm", "max_ifd": 1.0},
    "language_id": {"threshold": 0.9},
    "line_filter": {"field": "response", "min_sentences": 2, "curly_bracket": "line"},
    "llm2llm": {"model": "lm", "student": "lm", "rounds": 1, "student_train": {"max_steps": 1}, "max_calls": 4,
                "student_max_tokens": 12, **GEN},
    "minhash_dedup": {"threshold": 0.5},
    "mix": {"components": [{"data": "input", "weight": 2}, {"data": REFERENCES, "weight": 1}], "total": 60},
    "perplexity_filter": {"model": "lm", "max_percentile": 80},
    "pii_redact": {},
    "quality_classifier": {"positives": REFERENCES, "top_fraction": 0.5},
    "rectify": {"model": "lm", "k": 2, "reflections": 1, "similarity": "none", "filter_fraction": 0.2,
                "min_confidence": 0.5, "max_tokens": 12},
    "rejection_sample": {"model": "lm", "sampling": {"method": "uniform", "k_u": 1}, "max_trials": 2,
                         "samples_per_round": 2, "max_calls": 6, **GEN},
    "select_target": {"target": REFERENCES, "fraction": 0.5},
    "semantic_dedup": {"epsilon": 0.3},
    "verify": {"field": "response"},
}


def test_every_stage_has_a_config_here():
    assert set(CONFIGS) == set(REGISTRY)


@pytest.fixture(scope="module")
def ray_cluster():
    """A real local Ray cluster in this process, shared by the module's tests."""
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def champ_input(store: Store, block_rows: int = BLOCK) -> None:
    """``input``: real CHAMP solutions of 8 problems by 3 models under 5 prompt settings, with
    verify's columns (difficulty reads ``verified``), in ``store``; verify is row-wise, so the
    version is one Parquet file per block of ``block_rows``: a stage reading it must read
    across files."""
    source = SOURCES["champ"](limit_problems=8, models=["GPT-3.5", "GPT-4", "PaLM 2 Medium"],
                              prompt_settings=["0-Shot", "5-Shot", "1/3 Soln", "2/3 Soln", "No C w/ H"])
    Pipeline([Verify(drop_unverified=False, drop_unknown=False)], source, name="input").run(
        store, executor=ExecutorConfig(block_rows=block_rows))


def run_stage(name: str, store: Store, lm: Path, cache: Path, executor: ExecutorConfig):
    models = {"lm": {"backend": "transformers", "model": str(lm)}}
    with ModelPool(models, store=store, cache_root=str(cache)) as pool:
        result = Pipeline([REGISTRY[name](CONFIGS[name])], "input", name="out", models=models).run(
            store, pool=pool, executor=executor, workers=2)
    return result


def outcome(result) -> dict:
    kept, rejected = result.final.table(), result.final.rejected()
    manifest = result.final.manifest
    return {
        "fingerprint": result.fingerprint,
        "kept_ids": kept.column("id").to_pylist(),
        "kept_columns": sorted(kept.column_names),
        "rejects": [(r["id"], r["reason"], r["detail"], r["stage"]) for r in rejected.to_pylist()],
        "counts": manifest["counts"], "rejections": manifest["rejections"], "stats": manifest["stats"],
        "scores": manifest["scores"],
        "calls": {n: s.calls + getattr(s, "cached", 0) for n, s in result.model_calls.items()},
    }


STREAMED = sorted(n for n, cls in REGISTRY.items() if cls.row_wise or cls.decide is not Stage.decide)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_a_stage_gives_the_same_version_locally_and_on_ray(name, ray_cluster, tiny_lm, tmp_path):
    stores = {}
    for kind in ("local", "ray"):
        store = Store(tmp_path / kind)
        champ_input(store)
        stores[kind] = outcome(run_stage(name, store, tiny_lm, tmp_path / f"cache_{kind}",
                                         ExecutorConfig(type=kind, block_rows=BLOCK)))
    local, on_ray = stores["local"], stores["ray"]
    assert local["counts"]["in"] > 3 * BLOCK  # several blocks, so a row-wise stage really is split
    assert on_ray == local
    version = Store(tmp_path / "ray").resolve("out")
    assert version.manifest["executor"]["type"] == "ray"
    if name in STREAMED:  # the Ray run's blocks were written by Ray tasks
        assert len(version.manifest["shards"]) > 1


def test_the_stages_that_stream_are_the_row_wise_ones_and_the_dedups():
    assert {"heuristic_filter", "verify", "decontaminate", "ifd_score", "exact_dedup", "minhash_dedup"} <= set(STREAMED)


@pytest.mark.parametrize("name", STREAMED)
def test_a_streamed_stage_gives_the_same_rows_at_any_block_size(name, tiny_lm, tmp_path):
    results = []
    for block_rows in (7, 10_000):
        store = Store(tmp_path / str(block_rows))
        champ_input(store, block_rows)
        results.append(outcome(run_stage(name, store, tiny_lm, tmp_path / f"cache_{block_rows}",
                                         ExecutorConfig(block_rows=block_rows))))
    small, whole = results
    # A model's float32 scores can move in the 7th digit with the batch a row is scored in.
    scores = small.pop("scores"), whole.pop("scores")
    assert scores[0].keys() == scores[1].keys()
    for column in scores[0]:
        assert scores[0][column] == pytest.approx(scores[1][column], rel=1e-5)
    assert small == whole


def test_a_second_executor_finds_the_first_ones_versions_cached(ray_cluster, tiny_lm, tmp_path):
    store = Store(tmp_path / "store")
    champ_input(store)
    first = run_stage("heuristic_filter", store, tiny_lm, tmp_path / "cache", ExecutorConfig(block_rows=BLOCK))
    again = run_stage("heuristic_filter", store, tiny_lm, tmp_path / "cache", ExecutorConfig(type="ray"))
    assert again.all_cached and again.fingerprint == first.fingerprint


RESUME_RECIPE = """
name: resumable
source: {type: champ, include_model_solutions: true}
executor: {type: local, block_rows: 400}
stages:
  - heuristic_filter
"""


def test_a_killed_row_wise_step_resumes_at_its_first_unfinished_block(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RESUME_RECIPE)
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    cmd = [sys.executable, "-m", "curate", "run", str(recipe), "--workers", "1"]
    proc = subprocess.Popen([*cmd, "--store", str(killed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    parts: list[Path] = []
    while time.monotonic() < deadline and proc.poll() is None:
        parts = list((killed / "tmp" / "work").glob("*/parts/*.json"))
        if len(parts) >= 2:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the step finished before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written = len(list((killed / "tmp" / "work").glob("*/parts/*.json")))
    assert written >= 2

    resumed = subprocess.run([*cmd, "--store", str(killed)], capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming: {written}" in resumed.stdout + resumed.stderr
    fresh = subprocess.run([*cmd, "--store", str(whole)], capture_output=True, text=True, timeout=600)
    assert fresh.returncode == 0, fresh.stderr
    a, b = Store(killed).resolve("resumable"), Store(whole).resolve("resumable")
    assert a.fingerprint == b.fingerprint
    assert a.table().column("id").to_pylist() == b.table().column("id").to_pylist()
    assert a.rejected().select(["id", "reason", "detail"]).to_pylist() == b.rejected().select(["id", "reason", "detail"]).to_pylist()
    assert not list((killed / "tmp" / "work").glob("*"))  # the finished version left the work folder


def test_a_version_is_scanned_in_exact_batches_across_its_files(tmp_path):
    store = Store(tmp_path / "store")
    champ_input(store, block_rows=7)  # one file per 7 rows
    version = store.resolve("input")
    assert len(version.manifest["shards"]) > 10
    batches = list(version.scan(["id"], 10))
    assert [len(b) for b in batches[:-1]] == [10] * (len(batches) - 1) and 0 < len(batches[-1]) <= 10
    assert [i for b in batches for i in b.column("id").to_pylist()] == version.table().column("id").to_pylist()


def test_executor_settings_are_checked_with_the_recipe(tmp_path):
    from curate.errors import RecipeError, UsageError
    from curate.recipe import load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsource: {type: champ, limit_problems: 2}\nstages: [heuristic_filter]\n"
                      "executor: {type: spark, block_rows: 0}\n")
    with pytest.raises(RecipeError) as e:
        load_recipe(recipe)
    assert "r.yaml:4: executor.type" in str(e.value) and "executor.block_rows" in str(e.value)
    recipe.write_text("name: r\nsource: {type: champ, limit_problems: 2}\nstages: [heuristic_filter]\nexecutor: ray\n")
    assert load_recipe(recipe).executor.type == "ray"
    assert load_recipe(recipe, settings={"executor.block_rows": 500}).executor.block_rows == 500
    with pytest.raises(UsageError, match="unknown executor 'dask'"):
        Pipeline([REGISTRY["heuristic_filter"]()], "input").run(tmp_path / "s", executor="dask")


def _fails(table, offset):
    raise ValueError(f"bad block at {offset}")


def test_the_dedups_decide_through_ray_tasks_as_they_do_here(ray_cluster, tmp_path):
    """exact_dedup's and minhash_dedup's decisions run as Ray tasks over the stored blocks (the
    map's outputs stay in the object store) and equal the local plan's, whatever the blocks
    and partitions; a task's error names the step."""
    import dataclasses

    from curate.errors import StageError
    from curate.executors import RayExecutor, RayPlan
    from curate.stage import LocalPlan, StageContext

    store = Store(tmp_path)
    champ_input(store)
    version = store.resolve("input")
    ctx = StageContext(store=store, step="dedup")
    plan = RayExecutor(BLOCK).plan(version, ctx)
    assert isinstance(plan, RayPlan) and plan.partitions >= 2
    handles = plan.map(version, ["id"], lambda table, offset: (len(table), offset), outputs=2)
    assert len(handles) == len(plan.spans(version)) > 3
    assert isinstance(handles[0][0], ray.ObjectRef)
    assert plan.fetch([h[1] for h in handles]) == [s for s, _ in plan.spans(version)]
    local = dataclasses.replace(ctx, plan=LocalPlan(ctx, 10))
    shuffled = RayExecutor(BLOCK, driver_pairs=0).plan(version, ctx)  # minhash_dedup clusters in Ray tasks
    for name, ray_plan in (("exact_dedup", plan), ("minhash_dedup", plan), ("minhash_dedup", shuffled)):
        stage = REGISTRY[name](CONFIGS[name])
        here, there = stage.decide(version, local), stage.decide(version, dataclasses.replace(ctx, plan=ray_plan))
        assert 0 < (~here.keep).sum() < len(here.keep), name  # the input has duplicates, and distinct rows
        assert (here.keep == there.keep).all(), name
        assert here.reason == there.reason if isinstance(here.reason, str) else here.reason.equals(there.reason)
        assert here.detail.equals(there.detail) and here.extra.keys() == there.extra.keys()
        assert all(here.extra[k].equals(there.extra[k]) for k in here.extra)
        assert all(here.columns[k].equals(there.columns[k]) for k in here.columns)
    with pytest.raises(StageError, match=r"step 'dedup'.*bad block at 0"):
        plan.fetch([h[0] for h in plan.map(version, ["id"], _fails)])
