"""One warnings channel: what curate notices and runs past is a ``CurateWarning`` through
Python's ``warnings`` -- a notebook shows it, a test asserts it, the CLI renders it -- from
the main process or from a worker process alike."""

import json
import warnings

import pyarrow as pa
import pytest

from curate import Pipeline, Stage, StageConfig, StageOutput
from curate.errors import CurateWarning, warn
from curate.sources import JsonlSource
from curate.stages import Verify

from .conftest import run_cli


def write_pool(path, n=6):
    path.write_text("".join(json.dumps({"q": f"What is {i} + {i}?", "a": f"It is {2 * i}."}) + "\n" for i in range(n)))
    return path


def test_a_warning_inside_a_stage_reaches_pythons_warnings_in_a_notebook(tmp_path):
    """As a notebook runs it: build, run, read the warning -- nothing of the CLI involved."""
    source = JsonlSource(path=str(write_pool(tmp_path / "pool.jsonl")), fields={"prompt": "q", "response": "a"})
    with pytest.warns(CurateWarning, match="no 'answer' column, so no row has a reference answer"):
        result = Pipeline([Verify(kind="number")], source, name="nb").run(tmp_path / "store")
    assert result.final.num_rows == 6  # a warning, not an error: the run went on


def test_a_source_warns_when_a_mapped_field_is_absent_in_every_record(tmp_path):
    source = JsonlSource(path=str(write_pool(tmp_path / "pool.jsonl")),
                         fields={"prompt": "q", "response": "a", "answer": "final_answer"})
    with pytest.warns(CurateWarning, match=r"mapped field 'answer' \(key 'final_answer'\) is absent in every record"):
        Pipeline([], source, name="nb").run(tmp_path / "store")


def warn_on_odd(batch: list[int]) -> list[int]:
    for x in batch:
        if x % 2:
            warn(f"odd number {x}")
    return batch


class WarnInWorkers(Stage):
    """A user's own stage, as the Stage API allows: its per-row work runs in worker processes."""

    name = "warn_in_workers"

    class Config(StageConfig):
        pass

    def process(self, table, ctx):
        ctx.map_batches(warn_on_odd, list(range(table.num_rows)), batch_size=2)
        return StageOutput(table, table.schema.empty_table().append_column("reason", pa.array([], pa.string()))
                           .append_column("detail", pa.array([], pa.string())))


def test_warnings_raised_in_worker_processes_reach_the_caller(tmp_path):
    source = JsonlSource(path=str(write_pool(tmp_path / "pool.jsonl")), fields={"prompt": "q", "response": "a"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CurateWarning)
        Pipeline([WarnInWorkers()], source, name="w").run(tmp_path / "store", workers=2)
    assert sorted(str(w.message) for w in caught if w.category is CurateWarning) == [
        "odd number 1", "odd number 3", "odd number 5"]


def test_an_unexpected_curate_warning_fails_a_test():
    """pyproject's filterwarnings makes our own warnings errors unless a test expects them."""
    with pytest.raises(CurateWarning):
        warn("not expected")


def test_the_cli_renders_warnings_and_still_succeeds(tmp_path):
    write_pool(tmp_path / "pool.jsonl")
    (tmp_path / "r.yaml").write_text(
        "name: w\nsource: {type: jsonl, path: pool.jsonl, fields: {prompt: q, response: a, answer: final_answer}}\n"
        "stages: [exact_dedup]\n")
    proc = run_cli("run", str(tmp_path / "r.yaml"), "--store", str(tmp_path / "store"))
    assert proc.returncode == 0, proc.stderr
    assert "warning: mapped field 'answer' (key 'final_answer') is absent in every record" in proc.stderr
    assert "Traceback" not in proc.stderr and "CurateWarning" not in proc.stderr
