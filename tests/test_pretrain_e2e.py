"""The pretraining job end to end, as a user runs it: `curate run recipes/pretrain_docs.yaml`
on this machine's own documents, offline, then a cached rerun."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest

from curate.store import Store

from .conftest import ROOT, run_cli

RECIPE = str(ROOT / "recipes" / "pretrain_docs.yaml")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pretrain_run(tmp_path_factory, session_cache):
    store = tmp_path_factory.mktemp("pretrain_job") / "store"
    env = {"CURATE_CACHE": str(session_cache), "HF_DATASETS_CACHE": str(store.parent / "hf")}
    done = run_cli("run", RECIPE, "--store", str(store), env=env, timeout=1200)
    return store, done, env


def test_the_pretraining_job_runs_every_stage_and_exports_token_counted_shards(pretrain_run):
    store_path, done, env = pretrain_run
    assert done.returncode == 0, done.stderr[-3000:]
    assert "tokens kept" in done.stdout and "quality_classifier" in done.stdout  # the funnel, with tokens
    store = Store(store_path)
    final = store.resolve("pretrain_docs")
    steps = [e["step"] for e in final.manifest["lineage"]]
    assert steps == ["source", "extract_text", "language_id", "line_filter", "heuristic_filter", "pii_redact",
                     "exact_dedup", "minhash_dedup", "quality_classifier", "decontaminate"]
    rows = final.table().to_pylist()
    assert len(rows) >= 100
    assert {r["lang"] for r in rows} == {"en"} and min(r["lang_score"] for r in rows) >= 0.65
    assert not any(EMAIL.search(r["text"]) for r in rows)  # every address redacted
    cut = store.resolve("pretrain_docs/quality_classifier").manifest["stats"]["cut"]
    assert min(r["quality_score"] for r in rows) >= cut
    # each stage removed something, and said why (nothing is lost)
    reasons = {step: store.resolve(f"pretrain_docs/{step}").manifest["rejections"] for step in steps}
    assert "text_too_long" in reasons["source"] and "not_text" in reasons["source"]
    assert reasons["language_id"]["language"] > 0 and reasons["quality_classifier"]["low_quality"] > 0
    assert reasons["exact_dedup"].get("exact_duplicate", 0) + reasons["minhash_dedup"].get("near_duplicate", 0) > 0
    assert sum(reasons["line_filter"].values()) > 0 and sum(reasons["heuristic_filter"].values()) > 0
    # the shards: every kept row once, the token counts the funnel's
    out = store_path / "exports" / "pretrain_docs"
    index = json.loads((out / "index.json").read_text())
    shard_rows = [json.loads(line) for s in index["shards"] for line in gzip.open(out / s["file"], "rt")]
    assert [r["id"] for r in shard_rows] == [r["id"] for r in rows]
    assert index["tokens"] == sum(s["tokens"] for s in index["shards"]) > 0
    assert index["tokenizer"] == "doc_lm"
    card = (out / "README.md").read_text()
    assert "tokens kept" in card and f"{index['tokens']:,}" in card
    funnel_tokens = [int(t.replace(",", "")) for t in re.findall(r"│ decontaminate\s+│[^│]+│[^│]+│\s*([\d,]+)", done.stdout)]
    assert funnel_tokens == [index["tokens"]]


def test_a_rerun_of_the_pretraining_job_is_cached(pretrain_run):
    store_path, done, env = pretrain_run
    assert done.returncode == 0
    again = run_cli("run", RECIPE, "--store", str(store_path), env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "every step was cached" in again.stdout
    assert Path(store_path / "exports" / "pretrain_docs" / "index.json").is_file()
