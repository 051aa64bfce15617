import numpy as np
import pyarrow as pa
import pytest

from curate.errors import RecipeError
from curate.stages import ExactDedup


def sft(rows):
    return pa.table({
        "id": [r[0] for r in rows],
        "messages": [[{"role": "user", "content": p}, {"role": "assistant", "content": a}] for _, p, a in rows],
    })


def test_duplicates_differing_in_case_and_spacing_are_found_and_first_is_kept():
    t = sft([
        ("a", "q1", "The answer is 42."),
        ("b", "q2", "A different solution entirely."),
        ("c", "q3", "the  ANSWER is\n42.  "),
        ("d", "q4", "The answer is 43."),
    ])
    kept, rejected, _ = ExactDedup()(t)
    assert kept.column("id").to_pylist() == ["a", "b", "d"]
    assert rejected.column("id").to_pylist() == ["c"]
    assert rejected.column("duplicate_of").to_pylist() == ["a"]
    assert rejected.column("reason").to_pylist() == ["exact_duplicate"]


def test_distinct_texts_are_all_kept():
    t = sft([(str(i), "q", f"solution number {i}") for i in range(50)])
    kept, rejected, _ = ExactDedup()(t)
    assert len(kept) == 50 and len(rejected) == 0


def test_field_choice_decides_what_counts_as_duplicate():
    t = sft([("a", "same prompt", "answer one"), ("b", "same prompt", "answer two")])
    assert len(ExactDedup(field="response")(t).kept) == 2
    kept, rejected, _ = ExactDedup(field="prompt")(t)
    assert kept.column("id").to_pylist() == ["a"] and rejected.column("duplicate_of").to_pylist() == ["a"]
    assert len(ExactDedup(field="conversation")(t).kept) == 2


def test_case_sensitive_mode_keeps_case_variants():
    t = pa.table({"id": ["a", "b"], "text": ["Hello World", "hello world"]})
    assert len(ExactDedup()(t).kept) == 1
    assert len(ExactDedup(lowercase=False)(t).kept) == 2


def test_rows_in_equals_kept_plus_rejected_on_many_duplicates():
    t = pa.table({"id": [str(i) for i in range(300)], "text": [f"doc {i % 7}" for i in range(300)]})
    kept, rejected, _ = ExactDedup()(t)
    assert len(kept) == 7 and len(kept) + len(rejected) == 300
    assert set(rejected.column("duplicate_of").to_pylist()) <= set(kept.column("id").to_pylist())


def test_unknown_config_key_is_a_recipe_error_with_suggestion():
    with pytest.raises(RecipeError, match="fild: unknown key; did you mean 'field'"):
        ExactDedup(fild="response")


def test_unicode_nfkc_folds_full_width_letters_and_can_be_turned_off():
    t = pa.table({"id": ["a", "b"], "text": ["ＡＢＣ 42", "abc 42"]})
    assert len(ExactDedup()(t).kept) == 1
    assert len(ExactDedup(unicode_nfkc=False)(t).kept) == 2


def test_normalize_unicode_was_renamed_to_minhash_dedups_name_and_the_default_fingerprint_is_kept():
    with pytest.raises(RecipeError, match="normalize_unicode: renamed to 'unicode_nfkc'"):
        ExactDedup(normalize_unicode=False)
    # Only non-default settings enter a fingerprint, so stores made before the rename stay cached
    # (these are the fingerprints the stage had as normalize_unicode).
    assert ExactDedup().fingerprint("parent0") == ExactDedup(unicode_nfkc=True).fingerprint("parent0") == "7584d19072766a96"
    assert ExactDedup(field="response").fingerprint("parent0") == "85cee071b596fafe"


def test_the_decision_does_not_depend_on_the_plans_blocks_or_partitions():
    from curate.stage import LocalPlan, StageContext

    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "Gamma", "delta  ", "EPSILON"]
    texts = [" ".join(rng.choice(words, 3)) for _ in range(400)]
    table = pa.table({"id": [f"r{k}" for k in range(len(texts))], "text": texts})
    out = ExactDedup()(table)
    assert 0 < len(out.kept) <= 125 and len(out.rejected) > 250
    seen = {}
    for r in table.to_pylist():  # the first of each normalised text is kept, the rest name it
        seen.setdefault(" ".join(r["text"].lower().split()), r["id"])
    assert out.kept.column("id").to_pylist() == sorted(set(seen.values()), key=lambda i: int(i[1:]))
    assert all(r["duplicate_of"] == seen[" ".join(r["text"].lower().split())] for r in out.rejected.to_pylist())
    for block_rows, parts in ((7, 4), (100, 1), (1000, 9)):
        ctx = StageContext()
        ctx.plan = LocalPlan(ctx, block_rows)
        ctx.plan.partitions = parts
        other = ExactDedup()(table, ctx)
        assert other.kept.equals(out.kept) and other.rejected.equals(out.rejected), (block_rows, parts)
