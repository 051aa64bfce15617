"""perplexity_filter and ifd_score on a real tiny causal LM (the session's ``tiny_lm``)."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest

from curate import Pipeline
from curate.models import ModelPool, Scores
from curate.records import MESSAGES_TYPE
from curate.sources import SOURCES
from curate.stage import StageContext
from curate.stages import IfdScore, PerplexityFilter
from curate.stages.perplexity import scoring_pairs


@pytest.fixture(scope="module")
def pool(tiny_lm):
    return ModelPool({"ref": {"backend": "transformers", "model": str(tiny_lm)}}, cache=False)


@pytest.fixture(scope="module")
def solutions():
    """Held-out text: model-written CHAMP solutions (the tiny LM saw only reference solutions)."""
    table = SOURCES["champ"](include_model_solutions=True, models=["GPT-4"], prompt_settings=["0-Shot"],
                             limit_problems=60).read(StageContext()).kept
    return table.slice(0, 40)


def sft_table(rows: list[tuple[str, str]]) -> pa.Table:
    msgs = [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in rows]
    return pa.table({"id": [f"r{i}" for i in range(len(rows))], "messages": pa.array(msgs, MESSAGES_TYPE)})


def shuffled(text: str, seed: int) -> str:
    words = text.split()
    random.Random(seed).shuffle(words)
    return " ".join(words)


def garbled(text: str, seed: int) -> str:
    """Words shuffled and letters scrambled inside each word: what a broken generation or
    an encoding accident looks like."""
    rng = random.Random(seed)
    return " ".join("".join(rng.sample(w, len(w))) for w in shuffled(text, seed).split())


def test_clean_held_out_text_has_lower_perplexity_than_the_same_words_shuffled(pool, solutions):
    lm = pool.get("ref")
    responses = [m[-1]["content"] for m in solutions.column("messages").to_pylist()]
    clean = [Scores(a).ppl for a in lm.logprobs([("", r) for r in responses])]
    mixed = [Scores(a).ppl for a in lm.logprobs([("", shuffled(r, i)) for i, r in enumerate(responses)])]
    wins = sum(c < m for c, m in zip(clean, mixed))
    assert wins == len(responses), (wins, np.median(clean), np.median(mixed))
    assert np.median(mixed) > 1.5 * np.median(clean)


def test_perplexity_filter_keeps_clean_rows_and_rejects_garbled_ones_by_percentile(pool, solutions):
    rows = [(m[0]["content"], m[-1]["content"]) for m in solutions.column("messages").to_pylist()]
    broken = [(q, garbled(a, i)) for i, (q, a) in enumerate(rows[:4])]
    table = sft_table(rows[4:] + broken)
    out = PerplexityFilter(model="ref", max_percentile=88.0)(table, StageContext(models=pool))
    rejected = set(out.rejected.column("id").to_pylist())
    garbled_ids = {f"r{i}" for i in range(len(rows) - 4, len(rows))}
    assert garbled_ids <= rejected and len(rejected) <= 5
    assert set(out.rejected.column("reason").to_pylist()) == {"ppl_too_high"}
    assert all("percentile" in d for d in out.rejected.column("detail").to_pylist())
    kept = out.kept.column("ppl").to_pylist()
    assert all(k > 1 for k in kept) and len(out.kept) + len(out.rejected) == len(table)
    assert set(out.kept.column("ppl_bucket").to_pylist()) <= {"head", "middle", "tail"}


def test_ppl_is_the_exponential_of_the_pooled_token_loss_and_absolute_bounds_apply(pool):
    lm = pool.get("ref")
    table = sft_table([("What is 2+2?", "We add 2 and 2 to get 4. Answer: 4"), ("Find x.", "x = 3 because 2x = 6.")])
    lp = lm.logprobs(scoring_pairs(table, lm, "response"))
    expected = [math.exp(-float(np.mean(a))) for a in lp]
    out = PerplexityFilter(model="ref", max_ppl=min(expected) * 1.001)(table, StageContext(models=pool))
    got = {r["id"]: r["ppl"] for r in out.kept.to_pylist() + out.rejected.to_pylist()}
    assert got["r0"] == pytest.approx(expected[0], rel=1e-5) and got["r1"] == pytest.approx(expected[1], rel=1e-5)
    assert len(out.kept) == 1 and out.rejected.column("reason").to_pylist() == ["ppl_too_high"]


def test_bucket_edges_follow_the_ccnet_percentiles(pool):
    pool.get("ref")  # the model is built before the stage runs
    texts = [f"Let n = {i}. Then n + 1 = {i + 1}, so the answer is {i + 1}." + " word" * (i % 7) for i in range(20)]
    table = pa.table({"id": [str(i) for i in range(20)], "text": texts})
    out = PerplexityFilter(model="ref")(table, StageContext(models=pool))
    ppl = np.array(out.kept.column("ppl").to_pylist())
    p30, p60 = np.percentile(ppl, [30, 60])
    want = ["head" if p < p30 else "middle" if p < p60 else "tail" for p in ppl]
    assert out.kept.column("ppl_bucket").to_pylist() == want and len(out.rejected) == 0


def test_long_texts_are_scored_in_windows_not_truncated(pool, tiny_lm):
    lm = pool.get("ref")
    long_text = " ".join(f"step {i}: we add {i} to the sum and carry on." for i in range(300))
    n_tokens = len(lm.tokenizer(long_text, add_special_tokens=False).input_ids)
    assert n_tokens > 2 * lm.window
    (full,) = lm.logprobs([("", long_text)])
    assert len(full) == n_tokens and np.all(np.isfinite(full)) and np.all(full <= 0)
    # the first window's tokens are scored exactly as a short text would be
    head = lm.tokenizer.decode(lm.tokenizer(long_text, add_special_tokens=False).input_ids[:100])
    (short,) = lm.logprobs([("", head)])
    assert np.allclose(full[:90], short[:90], atol=1e-4)


def test_scores_do_not_depend_on_batching_or_padding(pool):
    lm = pool.get("ref")
    pairs = [("", "a short one"), (lm.chat_prompt([{"role": "user", "content": "Compute 3 * 4."}]), "3 * 4 = 12."),
             ("", "a much longer text about sums of squares and how they add up " * 5)]
    together = lm.logprobs(pairs)
    alone = [lm.logprobs([p])[0] for p in pairs]
    for a, b in zip(together, alone):
        assert np.allclose(a, b, atol=1e-4)


def test_ifd_is_the_ratio_of_conditional_to_unconditional_loss_and_max_ifd_drops_above_one(pool):
    lm = pool.get("ref")
    # problems and their reference solutions, as the tiny reference LM was trained on them: a
    # problem makes its solution more likely (IFD < 1), if only slightly for a 2-layer model
    refs = SOURCES["champ"](SOURCES["champ"].Config(include_model_solutions=False, include_reference=True,
                                                    limit_problems=10)).read().kept.column("messages").to_pylist()
    pairs = [(m[0]["content"], m[1]["content"]) for m in refs]
    table = sft_table([*pairs, ("", pairs[0][1])])  # the last: an empty instruction, IFD = 1 exactly
    out = IfdScore(model="ref")(table, StageContext(models=pool))
    ifd = dict(zip(out.kept.column("id").to_pylist(), out.kept.column("ifd").to_pylist()))
    assert ifd["r10"] == pytest.approx(1.0, abs=1e-6)
    assert np.median([ifd[f"r{i}"] for i in range(10)]) < 1.0
    problem, solution = pairs[0]
    given = lm.logprobs([(lm.chat_prompt([{"role": "user", "content": problem}]), solution)])[0]
    alone = lm.logprobs([(lm.chat_prompt([{"role": "user", "content": ""}]), solution)])[0]
    assert len(given) == len(alone)  # the same solution tokens in both
    assert ifd["r0"] == pytest.approx(float(np.mean(given) / np.mean(alone)), rel=1e-5)
    filtered = IfdScore(model="ref", max_ifd=1.0)(table, StageContext(models=pool))
    assert all(v <= 1.0 for v in filtered.kept.column("ifd").to_pylist())
    assert set(filtered.rejected.column("reason").to_pylist()) <= {"ifd_too_high"}
    assert len(filtered.rejected) == sum(v > 1.0 for v in ifd.values()) > 0


def test_a_stage_naming_an_undefined_model_is_refused_before_running():
    from curate.errors import UsageError
    from curate.sources import JsonlSource

    with pytest.raises(UsageError, match="uses model 'nope'"):
        Pipeline([PerplexityFilter(model="nope")], JsonlSource(path="x.jsonl"), models={"ref": "some/path"})
