import json
import shutil
from collections import Counter

import pyarrow as pa
import pytest

import curate
from curate.algorithms.textstats import approx_tokens
from curate.errors import CurateError, CurateWarning, RecipeError, StageError
from curate.records import MESSAGES_TYPE, texts
from curate.sources import SOURCES
from curate.stage import Reporter, StageContext
from curate.stages.mix import Mix


class Lines(Reporter):
    def __init__(self):
        self.lines = []

    def log(self, message):
        self.lines.append(message)


def sft_table(n, prefix="in", words=3):
    msgs = [[{"role": "user", "content": f"{prefix} question {i}"},
             {"role": "assistant", "content": " ".join(["word"] * words) + f" {i}"}] for i in range(n)]
    return pa.table({"id": pa.array([f"{prefix}:{i}" for i in range(1, n + 1)]), "messages": pa.array(msgs, MESSAGES_TYPE)})


def sft_file(path, n, words=3):
    rows = [{"prompt": f"{path.stem} question {i}", "response": " ".join(["word"] * words) + f" {i}"} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def component_counts(out):
    return Counter(out.kept.column("mix_component").to_pylist())


def test_rows_mix_gives_exact_counts_rejects_unchosen_input_and_keeps_accounting(tmp_path):
    table = sft_table(100)
    extra = sft_file(tmp_path / "extra.jsonl", 100)
    log = Lines()
    out = Mix(components=[{"data": "input", "weight": 7}, {"data": str(extra), "weight": 3}], total=50)(
        table, StageContext(reporter=log))
    assert component_counts(out) == {"input": 35, "extra.jsonl": 15}
    assert out.stats["share:input"] == 0.7 and out.stats["share:extra.jsonl"] == 0.3
    assert out.stats["target:input"] == 0.7 and out.stats["rows:extra.jsonl"] == 15
    assert len(out.rejected) == 65 and set(out.rejected.column("reason").to_pylist()) == {"not_selected"}
    assert "down-sampled to 35 of 100 rows (share 0.70)" in out.rejected.column("detail")[0].as_py()
    assert len(table) + out.added == len(out.kept) + len(out.rejected)
    kept_input = [i for i, c in zip(out.kept.column("id").to_pylist(), out.kept.column("mix_component").to_pylist()) if c == "input"]
    assert set(kept_input) | set(out.rejected.column("id").to_pylist()) == set(table.column("id").to_pylist())
    assert "source" in out.kept.column_names  # the file's extra column; null for the input rows
    assert any("input 0.700 (target 0.700)" in line for line in log.lines)


def test_default_total_is_the_largest_mix_without_repeats(tmp_path):
    small = sft_file(tmp_path / "small.jsonl", 20)
    out = Mix(components=[{"data": "input", "weight": 1}, {"data": str(small), "weight": 1}])(sft_table(100))
    # the scarce component (20 rows at share 0.5) bounds the mix at 40 rows, all of it used once
    assert component_counts(out) == {"input": 20, "small.jsonl": 20}
    assert set(out.kept.column("mix_copy").to_pylist()) == {0} and len(out.rejected) == 80


def test_tokens_shares_land_within_one_row_of_their_targets(tmp_path):
    table = sft_table(60, words=200)  # ~210 tokens a row
    short = sft_file(tmp_path / "short.jsonl", 400, words=2)  # ~15 tokens a row
    out = Mix(components=[{"data": "input", "weight": 0.5}, {"data": str(short), "weight": 0.5}], unit="tokens", total=6000)(table)
    kept = out.kept
    sizes = [approx_tokens(t) for t in texts(kept, "conversation")]
    by = Counter()
    for c, s in zip(kept.column("mix_component").to_pylist(), sizes):
        by[c] += s
    longest = {c: max(s for cc, s in zip(kept.column("mix_component").to_pylist(), sizes) if cc == c) for c in by}
    for c in by:
        assert 3000 <= by[c] < 3000 + longest[c]  # reached, overshot by less than its last row
        assert out.stats[f"tokens:{c}"] == by[c]
        assert out.stats[f"share:{c}"] == pytest.approx(by[c] / sum(by.values()), abs=1e-4)
    counts = component_counts(out)
    assert counts["short.jsonl"] > 5 * counts["input"]  # equal tokens, very unequal rows


def test_tokens_use_the_token_column_when_given():
    table = sft_table(10).append_column("n_tokens", pa.array([100] * 5 + [1] * 5, pa.int64()))
    out = Mix(components=[{"data": "input", "weight": 1}], unit="tokens", token_column="n_tokens", total=300)(table)
    counted = sum(out.kept.column("n_tokens").to_pylist())
    assert out.stats["tokens:input"] == counted and 300 <= counted < 400
    with pytest.raises(RecipeError, match="token_column is only used with unit: tokens"):
        Mix(components=[{"data": "input", "weight": 1}], token_column="n_tokens")


def test_small_component_is_repeated_with_unique_ids_and_copy_numbers(tmp_path):
    table = sft_table(40)
    small = sft_file(tmp_path / "small.jsonl", 4)
    out = Mix(components=[{"data": "input", "weight": 1}, {"data": str(small), "weight": 1}], total=24)(table)
    rows = [r for r in out.kept.to_pylist() if r["mix_component"] == "small.jsonl"]
    assert Counter(r["mix_copy"] for r in rows) == {0: 4, 1: 4, 2: 4}
    ids = out.kept.column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 24
    assert {r["id"] for r in rows if r["mix_copy"] == 2} == {f"small:{i}#copy2" for i in range(1, 5)}
    assert len(table) + out.added == len(out.kept) + len(out.rejected)
    # a remainder after whole passes is a sample without replacement
    out = Mix(components=[{"data": "input", "weight": 1}, {"data": str(small), "weight": 1}], total=20)(table)
    assert Counter(r["mix_copy"] for r in out.kept.to_pylist() if r["mix_component"] == "small.jsonl") == {0: 4, 1: 4, 2: 2}


def test_repeated_input_rows_are_added_not_rejected():
    table = sft_table(5)
    out = Mix(components=[{"data": "input", "weight": 1}], total=12)(table)
    assert Counter(out.kept.column("mix_copy").to_pylist()) == {0: 5, 1: 5, 2: 2}
    assert len(out.rejected) == 0 and out.added == 7
    assert len(set(out.kept.column("id").to_pylist())) == 12


def test_without_upsampling_a_small_component_gives_all_it_has_and_reports_its_share(tmp_path):
    table = sft_table(40)
    small = sft_file(tmp_path / "small.jsonl", 4)
    with pytest.warns(CurateWarning, match="mix: component 'small.jsonl' has 4 rows, short of its quota"):
        out = Mix(components=[{"data": "input", "weight": 1}, {"data": str(small), "weight": 1}], total=24,
                  upsample=False)(table)
    assert component_counts(out) == {"input": 12, "small.jsonl": 4}
    assert set(out.kept.column("mix_copy").to_pylist()) == {0}
    assert out.stats["share:small.jsonl"] == 0.25 and out.stats["target:small.jsonl"] == 0.5


def test_colliding_ids_from_a_later_component_get_its_name_as_prefix(tmp_path):
    table = sft_table(3, prefix="pool")
    pool = sft_file(tmp_path / "pool.jsonl", 3)  # ids pool:1..pool:3, as the input's
    out = Mix(components=[{"data": "input", "weight": 1}, {"data": str(pool), "weight": 1, "name": "web"}])(table)
    ids = out.kept.column("id").to_pylist()
    assert ids == ["pool:1", "pool:2", "pool:3", "web/pool:1", "web/pool:2", "web/pool:3"]


def test_same_seed_same_rows_other_seed_other_rows():
    table = sft_table(200)

    def ids(seed):
        return Mix(components=[{"data": "input", "weight": 1}], total=50, seed=seed)(table).kept.column("id").to_pylist()

    assert ids(0) == ids(0)
    assert ids(0) != ids(1)


def mix_pipeline(tmp_path, extra_file):
    source = SOURCES["jsonl"](path=str(sft_file(tmp_path / "main.jsonl", 30)))
    stage = Mix(components=[{"data": "input", "weight": 2}, {"data": "extra", "weight": 1},
                            {"data": str(extra_file), "weight": 1}], total=20)
    return curate.Pipeline([stage], source=source, name="mixed")


def test_store_dataset_and_local_file_components_load_in_a_pipeline_and_file_edits_rerun(tmp_path):
    curate.Pipeline([], source=SOURCES["jsonl"](path=str(sft_file(tmp_path / "extra.jsonl", 10))), name="extra").run()
    side = sft_file(tmp_path / "side.jsonl", 10)
    first = mix_pipeline(tmp_path, side).run()
    m = first.final.manifest
    assert m["stats"]["rows:input"] == 10 and m["stats"]["rows:extra"] == 5 and m["stats"]["rows:side.jsonl"] == 5
    assert m["stats"]["share:input"] == 0.5 and m["stats"]["target:extra"] == 0.25
    assert m["counts"]["in"] + m["counts"]["added"] == m["counts"]["kept"] + m["counts"]["rejected"]
    assert mix_pipeline(tmp_path, side).run().all_cached

    moved = tmp_path / "elsewhere" / "side.jsonl"  # same content and name: the path is not in the fingerprint
    moved.parent.mkdir()
    shutil.copy(side, moved)
    assert mix_pipeline(tmp_path, moved).run().fingerprint == first.fingerprint

    sft_file(side, 12)
    second = mix_pipeline(tmp_path, side).run()
    assert [s.cached for s in second.steps] == [True, False]
    assert second.fingerprint != first.fingerprint


def test_dataset_reference_outside_a_pipeline_asks_for_one():
    with pytest.raises(StageError, match="run it inside a pipeline"):
        Mix(components=[{"data": "input", "weight": 1}, {"data": "extra", "weight": 1}])(sft_table(4))


def test_unknown_dataset_name_names_the_field(tmp_path):
    p = curate.Pipeline([Mix(components=[{"data": "input", "weight": 1}, {"data": "no_such_set", "weight": 1}])],
                        source=SOURCES["jsonl"](path=str(sft_file(tmp_path / "main.jsonl", 3))), name="mixed")
    with pytest.raises(CurateError, match=r"mix\.components\[1\]\.data: no dataset named 'no_such_set'"):
        p.run()


def test_config_errors_name_the_field():
    with pytest.raises(RecipeError, match=r"mix\.components: components 0, 1 are all 'input'"):
        Mix(components=[{"data": "input", "weight": 1}, {"data": "input", "weight": 1}])
    with pytest.raises(RecipeError, match=r"mix\.components\.0\.weight"):
        Mix(components=[{"data": "input", "weight": 0}])
    with pytest.raises(RecipeError, match=r"mix\.components:"):
        Mix(components=[])


def test_messages_and_text_components_do_not_mix(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("First paragraph of prose.\n\nSecond paragraph.\n")
    with pytest.raises(StageError, match=r"component 'notes\.txt' holds text \(pretraining\) rows but 'input'"):
        Mix(components=[{"data": "input", "weight": 1}, {"data": str(notes), "weight": 1}])(sft_table(4))


def test_a_column_of_two_types_is_an_error_naming_it(tmp_path):
    path = tmp_path / "graded.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": "r", "score": "high"}) + "\n" for i in range(3)))
    table = sft_table(3).append_column("score", pa.array([1, 2, 3], pa.int64()))
    spec = {"type": "jsonl", "path": str(path), "keep_fields": ["score"]}
    with pytest.raises(StageError, match=r"column 'score' is string in component 'jsonl' but int64 in 'input'"):
        Mix(components=[{"data": "input", "weight": 1}, {"data": spec, "weight": 1}])(table)
