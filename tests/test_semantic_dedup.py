"""semantic_dedup with the real packaged all-MiniLM-L6-v2 embedder, the built-in ``minilm``
(loaded once per module, by one pool the tests share).

The paraphrase groups were checked against the model: within a group every pair scores
cosine >= 0.96, while no two texts of different groups (or unrelated texts) score above
0.41, so the default epsilon (0.05, i.e. > 0.95) separates them with room to spare."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from curate.errors import RecipeError, StageError
from curate.models import ModelPool
from curate.models.base import ModelError
from curate.stage import StageContext
from curate.stages import semantic
from curate.stages.semantic import SemanticDedup, greedy_duplicates

GROUPS = [
    ["The cat sat on the mat.", "A cat sat on the mat.", "The cat sat down on the mat."],
    [
        "To solve 2x + 6 = 10, subtract 6 from both sides and divide by 2, so x = 2.",
        "To solve 2x + 6 = 10, we subtract 6 from both sides and then divide by 2, giving x = 2.",
        "To solve 2x + 6 = 10, subtract 6 from both sides, then divide both sides by 2 to get x = 2.",
    ],
    ["The capital of France is Paris.", "Paris is the capital of France.", "The capital city of France is Paris."],
    [
        "Water boils at 100 degrees Celsius at sea level.",
        "At sea level, water boils at 100 degrees Celsius.",
        "At sea level, water boils at a temperature of 100 degrees Celsius.",
    ],
    [
        "Plants use photosynthesis to convert sunlight into chemical energy.",
        "Through photosynthesis, plants convert sunlight into chemical energy.",
        "Plants convert sunlight into chemical energy through the process of photosynthesis.",
    ],
    [
        "The Pythagorean theorem states that a squared plus b squared equals c squared.",
        "The Pythagorean theorem tells us that a squared plus b squared equals c squared.",
        "The Pythagorean theorem says that a squared plus b squared is equal to c squared.",
    ],
]
UNRELATED = [
    "The stock market fell sharply on Monday after the announcement.",
    "She plays the violin in the city orchestra every weekend.",
    "A prime number has exactly two positive divisors.",
    "The recipe calls for two cups of flour and one egg.",
    "Mount Everest is the highest mountain above sea level.",
    "He forgot his umbrella and got soaked in the rain.",
    "The derivative of x cubed is three x squared.",
    "Our team shipped the new release two days early.",
    "Penguins live mostly in the Southern Hemisphere.",
    "The library closes at nine o'clock on weekdays.",
    "Quantum computers use qubits instead of bits.",
    "The area of a circle is pi times the radius squared.",
    "My grandmother grows tomatoes in her backyard garden.",
    "The train to Berlin departs from platform four.",
    "Shakespeare wrote Hamlet around the year 1600.",
    "A healthy adult heart beats about seventy times per minute.",
    "The museum opened a new exhibition on ancient Egypt.",
    "Compound interest grows savings exponentially over time.",
    "The soccer match ended in a two to two draw.",
    "Volcanic eruptions can cool the global climate for years.",
    "The dog chased the ball across the yard.",
    "Dividing 12 by 4 gives 3.",
]


@pytest.fixture(scope="module")
def ctx():
    """One pool for the module: the built-in embedder is loaded once, and closed at the end."""
    with ModelPool() as pool:
        yield StageContext(models=pool)


def sft(responses: list[str], **columns) -> pa.Table:
    return pa.table({
        "id": [f"r{i}" for i in range(len(responses))],
        "messages": [[{"role": "user", "content": "Tell me something."}, {"role": "assistant", "content": r}] for r in responses],
        **columns,
    })


def mixed_table() -> pa.Table:
    """Groups and unrelated texts interleaved, so that duplicates are not adjacent."""
    rows = [t for g in GROUPS for t in g]
    order = list(range(0, len(rows), 3)) + list(range(1, len(rows), 3)) + list(range(2, len(rows), 3))
    responses = [rows[i] for i in order]
    for k, u in enumerate(UNRELATED):
        responses.insert(2 * k + 1, u)
    return sft(responses)


def test_paraphrase_groups_collapse_to_one_row_each_and_unrelated_texts_stay(ctx):
    t = mixed_table()
    kept, rejected, added = SemanticDedup()(t, ctx)
    assert added == 0 and len(kept) + len(rejected) == len(t)
    assert len(kept) == len(GROUPS) + len(UNRELATED) and len(rejected) == 2 * len(GROUPS)
    responses = dict(zip(t.column("id").to_pylist(), (m[-1]["content"] for m in t.column("messages").to_pylist())))
    kept_texts = {responses[i] for i in kept.column("id").to_pylist()}
    assert set(UNRELATED) <= kept_texts
    assert all(len(kept_texts & set(g)) == 1 for g in GROUPS)
    assert all(g[0] in kept_texts for g in GROUPS)  # keep=first: each group's earliest row
    for row in rejected.to_pylist():
        group = next(g for g in GROUPS if responses[row["id"]] in g)
        assert responses[row["duplicate_of"]] in group and responses[row["duplicate_of"]] in kept_texts
        assert row["reason"] == "semantic_duplicate" and 0.95 < row["similarity"] <= 1.0001
        assert row["duplicate_of"] in row["detail"]


def test_unrelated_texts_are_all_kept(ctx):
    kept, rejected, _ = SemanticDedup()(sft(UNRELATED), ctx)
    assert len(kept) == len(UNRELATED) and len(rejected) == 0
    assert rejected.column_names[-2:] == ["duplicate_of", "similarity"]


def test_a_larger_epsilon_removes_looser_paraphrases(ctx):
    t = pa.table({"id": ["a", "b", "c"], "text": ["The cat sat on the mat.", "The cat is sitting on the mat.", "Dividing 12 by 4 gives 3."]})
    assert len(SemanticDedup()(t, ctx).kept) == 3  # cosine 0.93: a looser paraphrase, kept at the default
    kept, rejected, _ = SemanticDedup(epsilon=0.1)(t, ctx)
    assert kept.column("id").to_pylist() == ["a", "c"] and rejected.column("duplicate_of").to_pylist() == ["a"]


def test_keep_longest_keeps_the_longest_text_of_a_group(ctx):
    group = GROUPS[4]  # lengths differ; the longest is the last
    kept, rejected, _ = SemanticDedup(keep="longest")(sft([*group, *UNRELATED[:5]]), ctx)
    kept_ids = kept.column("id").to_pylist()
    assert "r2" in kept_ids and "r0" not in kept_ids and "r1" not in kept_ids
    assert rejected.column("duplicate_of").to_pylist() == ["r2", "r2"]


def test_keep_score_keeps_the_highest_score_and_missing_scores_rank_last(ctx):
    group = GROUPS[1]
    t = sft([*group, UNRELATED[0]], quality=pa.array([0.2, 0.9, None, 0.1]))
    kept, rejected, _ = SemanticDedup(keep="score", score_column="quality")(t, ctx)
    assert kept.column("id").to_pylist() == ["r1", "r3"]
    assert sorted(rejected.column("id").to_pylist()) == ["r0", "r2"] and set(rejected.column("duplicate_of").to_pylist()) == {"r1"}


def test_ties_in_score_go_to_the_earliest_row(ctx):
    t = sft(GROUPS[2], quality=pa.array([1, 5, 5]))
    kept, _, _ = SemanticDedup(keep="score", score_column="quality")(t, ctx)
    assert kept.column("id").to_pylist() == ["r1"]


def test_semantic_cluster_is_added_to_kept_and_rejected_rows(ctx):
    kept, rejected, _ = SemanticDedup(n_clusters=4)(mixed_table(), ctx)
    for part in (kept, rejected):
        clusters = part.column("semantic_cluster")
        assert clusters.type == pa.int64() and clusters.null_count == 0
        assert set(clusters.to_pylist()) <= {0, 1, 2, 3}
    # A row and the row it duplicates were compared, so they share a cluster.
    cluster_of = dict(zip(kept.column("id").to_pylist(), kept.column("semantic_cluster").to_pylist()))
    for row in rejected.to_pylist():
        assert cluster_of[row["duplicate_of"]] == row["semantic_cluster"]


def test_rerun_gives_identical_output(ctx):
    t = mixed_table()
    first = SemanticDedup(n_clusters=4, seed=3)(t, ctx)
    second = SemanticDedup(n_clusters=4, seed=3)(t, ctx)
    assert first.kept.equals(second.kept) and first.rejected.equals(second.rejected)


def test_empty_table_and_empty_texts(ctx):
    empty = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string())})
    kept, rejected, _ = SemanticDedup()(empty, ctx)
    assert len(kept) == 0 and len(rejected) == 0 and "semantic_cluster" in kept.column_names
    t = pa.table({"id": ["a", "b", "c", "d"], "text": ["", "  ", "Paris is the capital of France.", "The capital of France is Paris."]})
    kept, rejected, _ = SemanticDedup()(t, ctx)
    assert kept.column("id").to_pylist() == ["a", "b", "c"]  # empty texts are never compared
    assert kept.column("semantic_cluster").to_pylist()[:2] == [-1, -1]
    assert rejected.column("duplicate_of").to_pylist() == ["c"]


def test_field_names_the_text_that_is_compared(ctx):
    t = pa.table({"id": ["a", "b"], "text": GROUPS[0][:2], "note": ["Dividing 12 by 4 gives 3.", "Penguins live mostly in the Southern Hemisphere."]})
    assert len(SemanticDedup()(t, ctx).kept) == 1
    assert len(SemanticDedup(field="note")(t, ctx).kept) == 2


def test_greedy_rule_compares_with_kept_rows_only_so_chains_do_not_spread():
    # b is close to a and to c, but a and c are far apart: b goes, c stays (it has no kept near row).
    a = np.array([1.0, 0.0], np.float32)
    b = np.array([np.cos(0.3), np.sin(0.3)], np.float32)
    c = np.array([np.cos(0.6), np.sin(0.6)], np.float32)
    parent, sim = greedy_duplicates(np.stack([a, b, c]), np.float32(np.cos(0.35)))
    assert parent.tolist() == [-1, 0, -1] and sim[1] == pytest.approx(np.cos(0.3))


def test_blocked_comparison_matches_one_block(monkeypatch):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(30, 16))
    x = np.repeat(centers, 7, axis=0) + 0.15 * rng.normal(size=(210, 16))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x = x[rng.permutation(len(x))]
    whole = greedy_duplicates(x, np.float32(0.95))
    monkeypatch.setattr(semantic, "BLOCK_ENTRIES", 210 * 8)  # blocks of 8 rows
    blocked = greedy_duplicates(x, np.float32(0.95))
    assert 0 < (whole[0] >= 0).sum() < len(x)
    assert np.array_equal(whole[0], blocked[0]) and np.allclose(whole[1], blocked[1], atol=1e-6)


def test_config_errors_are_recipe_errors():
    with pytest.raises(RecipeError, match="epsilonn: unknown key; did you mean 'epsilon'"):
        SemanticDedup(epsilonn=0.1)
    with pytest.raises(RecipeError, match="keep: score needs score_column"):
        SemanticDedup(keep="score")
    with pytest.raises(RecipeError, match="score_column is only used with keep: score"):
        SemanticDedup(score_column="quality")
    with pytest.raises(RecipeError, match="epsilon"):
        SemanticDedup(epsilon=1.5)
    # the keys the encoder's settings had before it became a models: entry
    with pytest.raises(RecipeError, match="model: renamed to 'embedder'.*backend: sentence_transformers"):
        SemanticDedup(model="sentence-transformers/all-MiniLM-L6-v2")
    with pytest.raises(RecipeError, match="batch_size: renamed to the embedder's own batch_size"):
        SemanticDedup(batch_size=32)


def test_missing_score_column_and_unavailable_model_are_errors(ctx):
    with pytest.raises(StageError, match="score_column 'quality' is not a column"):
        SemanticDedup(keep="score", score_column="quality")(sft(GROUPS[0]), ctx)
    pool = ModelPool({"remote": {"backend": "sentence_transformers", "model": "no-such-org/no-such-model"}})
    with pytest.raises(ModelError, match="no-such-org/no-such-model.*local Hugging Face cache"):
        SemanticDedup(embedder="remote")(sft(GROUPS[0]), StageContext(models=pool))


def test_a_stage_called_on_its_own_uses_the_built_in_embedder():
    """No run, no pool: the call builds the built-in embedder for itself and frees it after."""
    kept, rejected, _ = SemanticDedup()(sft(GROUPS[0]))
    assert len(kept) == 1 and len(rejected) == 2


def test_building_the_stage_does_not_import_torch():
    code = (
        "import sys; from curate.stages.semantic import SemanticDedup; SemanticDedup(epsilon=0.1); "
        "heavy = [m for m in ('torch', 'sentence_transformers', 'faiss') if m in sys.modules]; "
        "assert not heavy, heavy"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_nearest_finds_each_paraphrase_among_distinct_texts(ctx):
    from curate.models.embeddings import nearest

    embed = ctx.models.embedder("minilm").embed
    corpus = ["How many primes are below 100?", "Compute the area of a circle of radius 3.",
              "Find all real x with x^2 = 9.", "What is the capital of France?"]
    queries = ["What is the area of a circle whose radius is 3?", "Which city is France's capital?",
               "Count the prime numbers smaller than 100."]
    scores, ids = nearest(embed(queries), embed(corpus), k=2)
    assert ids[:, 0].tolist() == [1, 3, 0]
    assert (scores[:, 0] > scores[:, 1]).all() and ids.shape == (3, 2)
