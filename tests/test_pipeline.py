import json

import pyarrow as pa
import pytest

import curate
from curate.errors import StageError, UsageError
from curate.sources import SOURCES
from curate.stage import Stage, StageConfig, StageOutput, split
from curate.stages import ExactDedup, HeuristicFilter

PROSE = ("The committee met on a grey morning to review the budget, and the members argued about the cost "
         "of the new bridge that the town had wanted for years. Some of them said that the price was too high, "
         "while others thought it was a fair sum for a structure that would last a century.")


def pool(tmp_path, n=40):
    path = tmp_path / "pool.jsonl"
    rows = [{"question": f"question {i}", "solution": f"{PROSE} Variant {i % 30}."} for i in range(n)]
    rows.append({"question": "short", "solution": "Too short to keep."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_pipeline(path, **hf):
    source = SOURCES["jsonl"](path=str(path), fields={"prompt": "question", "response": "solution"})
    return curate.Pipeline([ExactDedup(), HeuristicFilter(min_words=20, **hf)], source=source, name="demo")


def test_run_writes_one_version_per_step_with_counts_that_add_up(isolated_store, tmp_path):
    result = make_pipeline(pool(tmp_path)).run()
    assert [s.step for s in result.steps] == ["source", "exact_dedup", "heuristic_filter"]
    assert [(s.rows_in, s.kept, s.rejected) for s in result.steps] == [(41, 41, 0), (41, 31, 10), (31, 30, 1)]
    store = curate.Store()
    for step in ("demo/source", "demo/exact_dedup", "demo/heuristic_filter", "demo"):
        m = store.resolve(step).manifest
        assert m["counts"]["in"] == m["counts"]["kept"] + m["counts"]["rejected"]
    final = store.resolve("demo")
    assert final.manifest["rejections"] == {"min_words": 1}
    assert [e["step"] for e in final.manifest["lineage"]] == ["source", "exact_dedup", "heuristic_filter"]
    rejected = final.rejected()
    assert rejected.column("stage").to_pylist() == ["heuristic_filter"]
    assert curate.load("demo", as_="polars").height == 30
    assert curate.load("demo/exact_dedup", rejected=True).num_rows == 10


def test_rerun_is_fully_cached_and_force_recomputes(tmp_path):
    p = make_pipeline(pool(tmp_path))
    first = p.run()
    again = p.run()
    assert again.all_cached and again.fingerprint == first.fingerprint
    forced = p.run(force=True)
    assert not any(s.cached for s in forced.steps) and forced.fingerprint == first.fingerprint


def test_changing_one_stage_config_recomputes_from_that_stage_on(tmp_path):
    path = pool(tmp_path)
    first = make_pipeline(path).run()
    changed = make_pipeline(path, max_words=1000).run()
    assert [s.cached for s in changed.steps] == [True, True, False]
    assert changed.fingerprint != first.fingerprint
    assert [h["fingerprint"] for h in curate.Store().history("demo")] == [first.fingerprint, changed.fingerprint]
    assert curate.Store().resolve("demo@1").fingerprint == first.fingerprint


def test_editing_the_input_file_recomputes_everything(tmp_path):
    path = pool(tmp_path)
    first = make_pipeline(path).run()
    with open(path, "a") as f:
        f.write(json.dumps({"question": "new", "solution": PROSE + " A brand new row."}) + "\n")
    second = make_pipeline(path).run()
    assert not any(s.cached for s in second.steps)
    assert second.final.num_rows == first.final.num_rows + 1


def test_until_stops_after_the_named_step(tmp_path):
    result = make_pipeline(pool(tmp_path)).run(until="exact_dedup")
    assert [s.step for s in result.steps] == ["source", "exact_dedup"]
    assert "demo" not in curate.Store().names()
    with pytest.raises(UsageError, match="no such step"):
        make_pipeline(pool(tmp_path)).run(until="nope")


class LosesRows(Stage):
    """A deliberately broken stage: drops a row without rejecting it."""

    name = "loses_rows"
    Config = StageConfig

    def process(self, table, ctx):
        return StageOutput(table.slice(1), table.slice(0, 0).append_column("reason", pa.array([], pa.string())))


def test_runner_fails_loudly_when_a_stage_loses_rows(tmp_path):
    source = SOURCES["jsonl"](path=str(pool(tmp_path)), fields={"prompt": "question", "response": "solution"})
    with pytest.raises(StageError, match="loses_rows.*broke the row invariant"):
        curate.Pipeline([LosesRows()], source=source, name="broken").run()


def test_pipeline_can_start_from_a_stored_version(tmp_path):
    make_pipeline(pool(tmp_path)).run()
    second = curate.Pipeline([HeuristicFilter(min_words=60)], source="demo", name="stricter").run()
    assert second.steps[0].rows_in == 30
    assert second.final.manifest["lineage"][0]["step"] == "source"


def test_repeated_stage_gets_distinct_step_names(tmp_path):
    source = SOURCES["jsonl"](path=str(pool(tmp_path)), fields={"prompt": "question", "response": "solution"})
    p = curate.Pipeline([HeuristicFilter(min_words=5), HeuristicFilter(min_words=50)], source=source, name="twice")
    assert p.steps == ["heuristic_filter", "heuristic_filter_2"]
    p.run()
    assert curate.Store().resolve("twice/heuristic_filter_2").manifest["counts"]["in"] == 40


def test_split_helper_carries_reason_detail_and_extra_columns():
    t = pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"]})
    out = split(t, [True, False, True], ["", "bad", ""], [None, "value 3 > 2", None], {"score": [1.0, 2.0, 3.0]})
    assert out.kept.column("id").to_pylist() == ["a", "c"]
    assert out.rejected.to_pylist() == [{"id": "b", "text": "y", "reason": "bad", "detail": "value 3 > 2", "score": 2.0}]


def test_output_is_identical_whatever_the_number_of_workers(tmp_path):
    rows = [{"question": f"q{i}", "solution": f"{PROSE} Variant {i % 900}." + (" loop" * 200 if i % 97 == 0 else "")}
            for i in range(2500)]
    path = tmp_path / "big.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    one = make_pipeline(path).run(tmp_path / "one", workers=1)
    two = make_pipeline(path).run(tmp_path / "two", workers=2)
    assert one.fingerprint == two.fingerprint
    assert one.table().equals(two.table())
    assert one.final.rejected().equals(two.final.rejected())
    assert one.steps[-1].rejected > 0
