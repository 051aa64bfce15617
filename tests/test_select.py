"""select_target: GOT-D (optimal-transport gradients), DSIR (hashed n-gram importance
resampling) and RDS+ (round-robin similarity), on real embeddings (the packaged
all-MiniLM-L6-v2) and real text: CHAMP math problems against licence and manual text
shipped on this machine."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate import Pipeline
from curate.algorithms import dsir as dsir_mod
from curate.algorithms import ot as ot_mod
from curate.algorithms import rds as rds_mod
from curate.errors import RecipeError, StoreError, UsageError
from curate.models import ModelPool
from curate.sources import SOURCES
from curate.stage import StageContext
from curate.stages import SelectTarget

LICENSES = Path("/usr/share/common-licenses")
MAN = Path("/usr/share/man/man1")


def unrelated_paragraphs(n: int) -> list[str]:
    """Paragraphs of prose that is not mathematics: the licences and manual pages Debian ships;
    where a machine has neither, the docstrings of the standard library."""
    out: list[str] = []
    for path in sorted(LICENSES.glob("*")) if LICENSES.is_dir() else []:
        if path.is_file():
            out += [p for p in re.split(r"\n\s*\n", path.read_text(errors="ignore")) if len(p.split()) >= 25]
    for path in sorted(MAN.glob("*.gz"))[:400] if MAN.is_dir() else []:
        text = gzip.decompress(path.read_bytes()).decode(errors="ignore")
        text = re.sub(r"^\.\S+\s?|\\f[BIRP]|\\-|\\\(..|\\", " ", text, flags=re.M)
        out += [p for p in re.split(r"\n\s*\n|\n\.PP|\n\.SH", text) if len(p.split()) >= 25]
    if len(out) < n:
        import email  # noqa: E401 - docstrings of these
        import http
        import json as js
        import logging
        import os as o
        import string
        import typing

        out += [m.__doc__ for mod in (email, http, js, logging, o, string, typing) for m in vars(mod).values()
                if callable(m) and isinstance(m.__doc__, str) and len(m.__doc__.split()) >= 25]
    rng = np.random.default_rng(0)
    return [" ".join(out[i].split()) for i in rng.choice(len(out), size=n, replace=False)]


@pytest.fixture(scope="module")
def math_pool():
    """200 CHAMP problems + 200 paragraphs of licences / manuals as the pool (text rows); 40
    other CHAMP problems as the target. Returns (pool table, is_math, target table)."""
    problems = SOURCES["champ"](include_model_solutions=False, include_reference=True).read().kept
    statements = [m[0]["content"] for m in problems.column("messages").to_pylist()]
    math, target = statements[:200], statements[200:240]
    other = unrelated_paragraphs(200)
    order = np.random.default_rng(1).permutation(400)
    text = [(math + other)[i] for i in order]
    is_math = np.array([i < 200 for i in order])
    pool = pa.table({"id": [f"p{i}" for i in range(400)], "text": text})
    return pool, is_math, pa.table({"id": [f"t{i}" for i in range(40)], "text": target})


@pytest.fixture(scope="module")
def ctx():
    """One pool for the module: the built-in embedder (minilm) is loaded once."""
    with ModelPool() as models:
        yield StageContext(models=models)


@pytest.fixture(scope="module")
def embedded(math_pool, ctx):
    pool, is_math, target = math_pool
    embed = ctx.models.embedder("minilm").embed
    return embed(pool.column("text").to_pylist()), embed(target.column("text").to_pylist())


def write_jsonl(path: Path, table: pa.Table) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return str(path)


@pytest.mark.parametrize("method", ["got_d", "dsir", "similarity"])
def test_each_method_selects_at_least_90_percent_math_for_a_math_target(method, math_pool, tmp_path, ctx):
    pool, is_math, target = math_pool
    stage = SelectTarget(target=write_jsonl(tmp_path / "target.jsonl", target), method=method, budget=150, field="text")
    kept, rejected, added = stage(pool, ctx)
    assert kept.num_rows == 150 and rejected.num_rows == 250 and added == 0
    chosen = np.isin(pool.column("id").to_numpy(zero_copy_only=False), kept.column("id").to_numpy(zero_copy_only=False))
    assert is_math[chosen].mean() >= 0.9, f"{method}: {is_math[chosen].mean():.2f} of the selection is math"
    assert set(rejected.column("reason").to_pylist()) == {"not_selected"}
    assert all("ranks" in d for d in rejected.column("detail").to_pylist())
    assert kept.column("selection_score").null_count == 0


def test_got_d_moves_the_selected_mean_closer_to_the_target_than_random(embedded):
    pool_emb, target_emb = embedded
    scores, result = ot_mod.got_d_scores(pool_emb, target_emb)
    k = 100
    chosen = np.argsort(-scores)[:k]
    target_mean = target_emb.mean(0)
    got_d = np.linalg.norm(pool_emb[chosen].mean(0) - target_mean)
    rng = np.random.default_rng(0)
    random = [np.linalg.norm(pool_emb[rng.choice(len(pool_emb), k, replace=False)].mean(0) - target_mean) for _ in range(50)]
    assert got_d < min(random), (got_d, min(random))
    assert result.converged


def test_got_d_ranks_targets_copied_into_the_pool_first():
    rng = np.random.default_rng(0)
    target = rng.standard_normal((5, 8)) * 0.1 + 3
    pool = np.vstack([rng.standard_normal((100, 8)), target])
    scores, _ = ot_mod.got_d_scores(pool, target, threshold=1e-4)
    assert set(np.argsort(-scores)[:5]) == set(range(100, 105))


def test_got_d_batched_equals_unbatched_and_matches_exact_ot_duals():
    import ot
    from scipy.stats import spearmanr

    rng = np.random.default_rng(0)
    pool, target = rng.standard_normal((40, 2)), rng.standard_normal((10, 2)) + 1
    small = ot_mod.candidate_potentials(pool, target, batch_size=7, threshold=1e-6).potentials
    whole = ot_mod.candidate_potentials(pool, target, batch_size=10_000, threshold=1e-6).potentials
    np.testing.assert_allclose(small, whole, atol=1e-4)
    # epsilon -> 0: the order of the entropic potentials is the exact (network simplex) duals' order
    _, log = ot.emd(np.full(40, 1 / 40), np.full(10, 1 / 10), ot.dist(pool, target), log=True)
    sharp = ot_mod.candidate_potentials(pool, target, epsilon=0.01, threshold=1e-5, max_iterations=20_000).potentials
    assert spearmanr(log["u"], sharp).statistic > 0.99


def test_calibration_is_invariant_to_a_constant_shift_of_the_potentials():
    g = np.random.default_rng(0).standard_normal(50)
    c = 3.7
    np.testing.assert_allclose(ot_mod.calibrate(g + c), ot_mod.calibrate(g) + c / 50, atol=1e-12)
    assert (np.argsort(ot_mod.calibrate(g)) == np.argsort(g)).all()


def test_dsir_features_count_unigrams_and_bigrams_and_recover_the_length():
    ids = dsir_mod.bucket_ids("one two three four five six seven", 2, 10_000)
    assert len(ids) == 13 and dsir_mod.document_length(len(ids), 2) == 7


def test_dsir_weights_are_zero_when_raw_equals_target():
    feats = [dsir_mod.bucket_ids(t, 2, 1000) for t in ("a b c", "c d e f", "a a b")]
    counts = dsir_mod.counts(feats, 1000)
    assert np.allclose(dsir_mod.log_weights(feats, dsir_mod.log_ratio(counts, counts)), 0)


def test_gumbel_top_1_draws_in_proportion_to_the_weights():
    log_w = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
    picks = np.bincount([dsir_mod.gumbel_top_k(log_w, 1, seed)[0] for seed in range(5000)], minlength=4)
    expected = 5000 * np.exp(log_w)
    chi2 = ((picks - expected) ** 2 / expected).sum()
    assert chi2 < 16.3  # chi-square, 3 degrees of freedom, p = 0.001


def test_dsir_never_draws_a_row_under_min_words_and_k_equal_n_returns_everything():
    log_w = np.zeros(6)
    eligible = np.array([True, False, True, True, False, True])
    assert set(dsir_mod.gumbel_top_k(log_w, 6, 0, eligible)) == {0, 2, 3, 5}
    assert set(dsir_mod.gumbel_top_k(log_w, 6, 0)) == set(range(6))


def test_dsir_selection_is_seeded(math_pool, tmp_path):
    pool, _, target = math_pool
    path = write_jsonl(tmp_path / "t.jsonl", target)
    ids = [set(SelectTarget(target=path, method="dsir", budget=100, field="text", seed=s)(pool).kept.column("id").to_pylist())
           for s in (0, 0, 1)]
    assert ids[0] == ids[1] and ids[0] != ids[2]


def test_round_robin_alternates_between_queries_and_never_repeats():
    pool = np.eye(6, dtype=np.float32)
    pool[1] = pool[0] * 0.9 + pool[1] * 0.1  # query 0's runner-up
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = pool[[0, 3]]
    picks = rds_mod.round_robin(pool, queries, 4)
    assert picks[:2].tolist() == [0, 3] and picks[2] == 1 and len(set(picks.tolist())) == 4
    assert len(rds_mod.round_robin(pool, queries, 6)) == 6


def test_task_round_robin_balances_tasks_whatever_their_score_scale():
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((60, 5)).astype(np.float32)
    pool /= np.linalg.norm(pool, axis=1, keepdims=True)
    queries = np.vstack([pool[:3], pool[3:6] * 0.1])  # task b's similarities are 10x smaller
    picks = rds_mod.task_round_robin(pool, queries, ["a"] * 3 + ["b"] * 3, 21)
    _, near_a = rds_mod.nearest(pool, queries[:3], 1)
    sims_a = (pool[picks] @ queries[:3].T).max(1)
    sims_b = (pool[picks] @ queries[3:].T).max(1)
    assert len(set(picks.tolist())) == 21
    assert abs(int((sims_a >= sims_b * 10).sum()) - 11) <= 11  # both tasks are served


def test_selection_in_a_pipeline_records_scores_and_reruns_when_the_target_changes(math_pool, tmp_path):
    pool, _, target = math_pool
    src = tmp_path / "pool.jsonl"
    write_jsonl(src, pool)
    tgt = tmp_path / "target.jsonl"
    write_jsonl(tgt, target)
    source = SOURCES["jsonl"](path=str(src), shape="text")
    first = Pipeline([SelectTarget(target=str(tgt), method="dsir", fraction=0.25, field="text")], source=source, name="sel").run()
    step = first.steps[-1]
    assert step.kept == 100 and step.stats["selected"] == 100 and step.stats["target_rows"] == 40
    write_jsonl(tgt, target.slice(0, 20))
    second = Pipeline([SelectTarget(target=str(tgt), method="dsir", fraction=0.25, field="text")], source=source, name="sel").run()
    assert not second.steps[-1].cached and second.steps[-1].stats["target_rows"] == 20


def test_a_champ_category_is_a_target(tmp_path):
    pool = SOURCES["champ"](include_model_solutions=False, include_reference=True).read().kept
    stage = SelectTarget(target={"type": "champ", "include_model_solutions": False, "include_reference": True,
                                 "categories": ["Sequence"]}, method="dsir", budget=50, field="prompt", top_k=True)
    kept = stage(pool).kept
    assert sum(c == "Sequence" for c in kept.column("category").to_pylist()) >= 40


def test_text_rows_are_selected_by_their_text_by_default(tmp_path):
    """A pretraining pool (text rows) needs no field: the default reads ``text``."""
    docs = SOURCES["local_docs"](kinds=["pydoc"], limit_per_kind=20).read().kept
    target = tmp_path / "target.jsonl"
    target.write_text("".join(json.dumps({"text": t}) + "\n" for t in docs.column("text").to_pylist()[:5]))
    pool = pa.table({"id": [f"d{i}" for i in range(docs.num_rows)], "text": docs.column("text")})
    kept = SelectTarget(target=str(target), method="dsir", budget=5, top_k=True)(pool).kept.column("id").to_pylist()
    assert kept and set(kept) <= {f"d{i}" for i in range(docs.num_rows)}
    assert sum(k in {"d0", "d1", "d2", "d3", "d4"} for k in kept) >= 3  # the target's own documents score highest


def test_bad_configs_name_the_field():
    with pytest.raises(RecipeError, match="exactly one of budget"):
        SelectTarget(target="x.jsonl")
    with pytest.raises(RecipeError, match="task_column"):
        SelectTarget(target="x.jsonl", budget=3, method="dsir", task_column="task")
    with pytest.raises(RecipeError, match="method"):
        SelectTarget(target="x.jsonl", budget=3, method="lava")
    with pytest.raises(RecipeError, match="embed_batch_size: renamed to the embedder's own batch_size"):
        SelectTarget(target="x.jsonl", budget=3, embed_batch_size=16)


def test_only_the_embedding_methods_name_the_embedder():
    assert SelectTarget(target="x.jsonl", budget=3).models_used() == ["minilm"]
    assert SelectTarget(target="x.jsonl", budget=3, method="similarity", embedder="bge").models_used() == ["bge"]
    assert SelectTarget(target="x.jsonl", budget=3, method="dsir").models_used() == []


def test_a_missing_target_is_a_clear_error(math_pool):
    pool, _, _ = math_pool
    with pytest.raises(Exception, match="select_target.target: file .*nope.jsonl does not exist"):
        SelectTarget(target="./nope.jsonl", budget=3, method="dsir")(pool)
    with pytest.raises((StoreError, UsageError), match="select_target.target"):
        SelectTarget(target="no_such_dataset", budget=3, method="dsir")(pool)
