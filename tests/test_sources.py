"""Sources: real files in tmp_path (JSONL, CSV, Parquet, save_to_disk folders, files
through datasets builders) and the CHAMP pool shipped by champ-dataset."""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
from collections import Counter
from pathlib import Path
from typing import get_args

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from curate.errors import CurateWarning, RecipeError, SourceError
from curate.records import MESSAGES_TYPE
from curate.sources import (
    REASONS,
    REJECT_SCHEMA,
    SOURCES,
    ChampSource,
    CsvSource,
    HfDiskSource,
    HfFilesConfig,
    HfFilesSource,
    JsonlSource,
    ParquetSource,
)
from curate.sources.champ import PARTIAL_MARKER, data_path
from curate.sources.formats import FORMATS, file_format, read_records, suffixes
from curate.sources.refs import resolve_data
from curate.stage import Reporter, StageContext

MAPPING = {"id": "uid", "prompt": "question", "response": "solution", "answer": "final", "category": "topic"}
GOOD = [
    {"uid": 1, "question": "What is 2+2?", "solution": "2+2 = 4.", "final": 4, "topic": "arithmetic"},
    {"uid": 2, "question": "Solve x+1=3.", "solution": "x = 2.", "final": "2", "topic": "algebra"},
    {"uid": 3, "question": "Is 7 prime?", "solution": "Yes: no divisor below it.", "final": "yes", "topic": "number theory"},
]


def write_jsonl(path: Path, records: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def canonical(table: pa.Table) -> list[dict]:
    return table.select(["id", "messages", "answer", "category"]).to_pylist()


def check_invariant(out) -> None:
    assert out.rows_in == len(out.kept) + len(out.rejected)
    assert out.rejected.schema == REJECT_SCHEMA
    assert set(out.rejected.column("reason").to_pylist()) <= set(REASONS)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """datasets' Arrow cache inside the test's temp dir, never the user's."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


@pytest.fixture
def broken_jsonl(tmp_path) -> Path:
    lines = [
        json.dumps(GOOD[0]),  # 1 kept
        '{"uid": 10, "question": "broken", ',  # 2 bad_json
        json.dumps({"uid": 11, "question": "No solution here", "final": 1}),  # 3 missing_field
        "",  # 4 blank: not a record
        json.dumps({"uid": 12, "question": "Empty?", "solution": "   \n"}),  # 5 empty_text
        json.dumps({"uid": 13, "question": "A number?", "solution": 7}),  # 6 not_a_string
        "[1, 2]",  # 7 not_an_object
        json.dumps({**GOOD[1], "uid": 1}),  # 8 duplicate_id
        json.dumps(GOOD[2]),  # 9 kept
    ]
    path = tmp_path / "data" / "in.jsonl"
    path.parent.mkdir()
    path.write_text("\n".join(lines) + "\n")
    return path


# -- JSONL: good rows kept, each bad row rejected with its reason ----------------------


def test_jsonl_keeps_good_rows_and_rejects_each_bad_row_with_reason_line_and_file(broken_jsonl):
    out = JsonlSource(path=str(broken_jsonl), fields=MAPPING).read()
    check_invariant(out)
    assert out.rows_in == 8  # the blank line is not a record
    assert out.kept.column("id").to_pylist() == ["1", "3"]
    assert out.kept.schema.field("messages").type == MESSAGES_TYPE
    first = out.kept.to_pylist()[0]
    assert first["messages"] == [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "2+2 = 4."}]
    assert first["answer"] == "4" and first["category"] == "arithmetic" and first["source"] == "in.jsonl"

    rejected = {r["line"]: r for r in out.rejected.to_pylist()}
    assert {line: r["reason"] for line, r in rejected.items()} == {
        2: "bad_json",
        3: "missing_field",
        5: "empty_text",
        6: "not_a_string",
        7: "not_an_object",
        8: "duplicate_id",
    }
    for line, r in rejected.items():
        assert f"in.jsonl line {line}:" in r["detail"]
        assert r["source_file"].endswith("in.jsonl")
    assert "mapped field 'response' (key 'solution') is missing" in rejected[3]["detail"]
    assert "line 1" in rejected[8]["detail"]  # names where the id was first used
    assert rejected[2]["raw"] == '{"uid": 10, "question": "broken", '  # nothing is lost
    assert json.loads(rejected[6]["raw"])["solution"] == 7
    assert rejected[3]["id"] == "11" and rejected[2]["id"] == "in:2"


def test_jsonl_default_ids_are_file_stem_and_line(broken_jsonl):
    mapping = {k: v for k, v in MAPPING.items() if k != "id"}
    out = JsonlSource(path=str(broken_jsonl), fields=mapping).read()
    assert out.kept.column("id").to_pylist() == ["in:1", "in:8", "in:9"]  # line 8 is no duplicate now


def test_jsonl_reads_gzip_and_dotted_paths(tmp_path):
    path = tmp_path / "nested.jsonl.gz"
    records = [{"meta": {"q": "Hi?"}, "a": {"text": "Hello."}}, {"meta": {}, "a": {"text": "x"}}]
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    out = JsonlSource(path=str(path), fields={"prompt": "meta.q", "response": "a.text"}).read()
    assert out.kept.to_pylist()[0]["messages"][0]["content"] == "Hi?"
    assert out.kept.column("id").to_pylist() == ["nested:1"]
    assert out.rejected.column("reason").to_pylist() == ["missing_field"]


def test_numbers_are_not_text_but_ids_and_answers_may_be_numbers(tmp_path):
    path = write_jsonl(tmp_path / "n.jsonl", [{"uid": 5, "prompt": "p", "response": 3.5, "final": 2.5}, {"uid": 6.0, "prompt": "p", "response": "r", "final": 2.5}])
    out = JsonlSource(path=str(path), fields={"id": "uid", "answer": "final"}).read()
    assert out.rejected.column("reason").to_pylist() == ["not_a_string"]
    assert out.kept.to_pylist()[0]["id"] == "6.0" and out.kept.to_pylist()[0]["answer"] == "2.5"


def test_text_longer_than_max_chars_is_rejected(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"text": "a" * 11}, {"text": "a" * 10}])
    out = JsonlSource(path=str(path), shape="text", max_chars=10).read()
    assert out.rejected.column("reason").to_pylist() == ["text_too_long"]
    assert len(out.kept) == 1


def test_a_json_file_holds_an_array_read_item_by_item_or_json_lines(tmp_path):
    array, lines = tmp_path / "arr.json", tmp_path / "lines.json"
    array.write_text("\n" + json.dumps([*GOOD, 7], indent=1))
    write_jsonl(lines, GOOD)
    out = JsonlSource(path=str(array), fields=MAPPING).read()
    assert canonical(out.kept) == canonical(JsonlSource(path=str(lines), fields=MAPPING).read().kept)
    [reject] = out.rejected.to_pylist()
    assert reject["reason"] == "not_an_object" and reject["detail"].startswith(f"{array} item 4:")
    array.write_text('[{"uid": 1},\n {"uid": 2,}]')
    with pytest.raises(SourceError, match=r"arr\.json line 2: not valid JSON"):
        JsonlSource(path=str(array)).read()


# -- the same mapping through every file format gives the same canonical rows ---------


def test_same_mapping_via_jsonl_parquet_csv_hf_disk_and_hf_files_gives_equal_tables(tmp_path, hf_cache):
    import datasets

    flat = [{**r, "final": str(r["final"])} for r in GOOD]  # csv holds text only
    jsonl = write_jsonl(tmp_path / "j" / "rows.jsonl", GOOD)
    # datasets' json builder turns a column of mixed types (4, "2", "yes") into JSON text
    flat_jsonl = write_jsonl(tmp_path / "flat" / "rows.jsonl", flat)
    pq.write_table(pa.Table.from_pylist(flat), tmp_path / "rows.parquet")
    csv_path = tmp_path / "rows.csv"
    pacsv.write_csv(pa.Table.from_pylist(flat), csv_path)
    datasets.Dataset.from_list(flat).save_to_disk(str(tmp_path / "saved"))
    datasets.DatasetDict({"train": datasets.Dataset.from_list(flat)}).save_to_disk(str(tmp_path / "saved_dict"))

    outputs = {
        "jsonl": JsonlSource(path=str(jsonl), fields=MAPPING).read(),
        "parquet": ParquetSource(path=str(tmp_path / "rows.parquet"), fields=MAPPING).read(),
        "csv": CsvSource(path=str(csv_path), fields=MAPPING).read(),
        "hf_disk": HfDiskSource(path=str(tmp_path / "saved"), fields=MAPPING).read(),
        "hf_disk_split": HfDiskSource(path=str(tmp_path / "saved_dict"), split="train", fields=MAPPING).read(),
        "hf_files_json": HfFilesSource(path=str(flat_jsonl), builder="json", fields=MAPPING).read(),
        "hf_files_parquet": HfFilesSource(path=str(tmp_path / "rows.parquet"), builder="parquet", fields=MAPPING).read(),
    }
    expected = canonical(outputs["jsonl"].kept)
    assert [r["id"] for r in expected] == ["1", "2", "3"]
    for name, out in outputs.items():
        check_invariant(out)
        assert len(out.rejected) == 0, name
        assert canonical(out.kept) == expected, name
        assert out.kept.schema.field("messages").type == MESSAGES_TYPE


def test_default_ids_follow_line_numbers_for_csv_and_rows_for_parquet(tmp_path):
    (tmp_path / "qa.csv").write_text('prompt,response\n"multi\nline",one\n\nshort\nq,r,extra\nq2,r2\n')
    out = CsvSource(path=str(tmp_path / "qa.csv")).read()
    check_invariant(out)
    assert out.kept.column("id").to_pylist() == ["qa:2", "qa:7"]  # header is line 1; the quoted field spans 2-3
    assert out.kept.to_pylist()[0]["messages"][0]["content"] == "multi\nline"
    rejected = {r["line"]: r["reason"] for r in out.rejected.to_pylist()}
    assert rejected == {5: "missing_field", 6: "bad_csv"}

    pq.write_table(pa.table({"prompt": ["a", "b"], "response": ["c", ""]}), tmp_path / "qa.parquet")
    out = ParquetSource(path=str(tmp_path / "qa.parquet")).read()
    assert out.kept.column("id").to_pylist() == ["qa:1"]
    assert out.rejected.to_pylist()[0]["detail"].endswith("qa.parquet row 2: mapped field 'response' (key 'response') is empty")


def test_files_sharing_a_stem_get_ids_that_stay_unique(tmp_path):
    write_jsonl(tmp_path / "a" / "x.jsonl", [{"prompt": "p", "response": "r"}])
    write_jsonl(tmp_path / "b" / "x.jsonl", [{"prompt": "p", "response": "r"}])
    write_jsonl(tmp_path / "b" / "y.jsonl", [{"prompt": "p", "response": "r"}])
    out = JsonlSource(path=str(tmp_path)).read()
    assert out.kept.column("id").to_pylist() == ["a/x:1", "b/x:1", "y:1"]


def test_path_takes_a_directory_a_glob_or_a_list(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "d" / "one.jsonl", [{"prompt": "p1", "response": "r"}])
    write_jsonl(tmp_path / "d" / "two.jsonl", [{"prompt": "p2", "response": "r"}])
    (tmp_path / "d" / "notes.txt").write_text("not data")
    monkeypatch.chdir(tmp_path)
    for path in ("d", "d/*.jsonl", ["d/two.jsonl", "d/one.jsonl"]):
        out = JsonlSource(path=path).read()
        assert out.kept.column("id").to_pylist() == ["one:1", "two:1"], path


# -- text and messages shapes ------------------------------------------------------------


def test_text_shape_reads_text_rows(tmp_path):
    path = write_jsonl(tmp_path / "web.jsonl", [{"content": "A page.", "url": "u1"}, {"content": ""}, {"content": ["x"]}])
    out = JsonlSource(path=str(path), shape="text", fields={"text": "content"}, keep_fields=["url"]).read()
    check_invariant(out)
    assert out.kept.to_pylist() == [{"id": "web:1", "text": "A page.", "source": "web.jsonl", "url": "u1"}]
    assert out.rejected.column("reason").to_pylist() == ["empty_text", "not_a_string"]


def test_messages_shape_maps_roles_and_rejects_unknown_ones(tmp_path):
    def conv(*turns):
        return {"conversations": [{"from": r, "value": v} for r, v in turns]}

    path = write_jsonl(
        tmp_path / "chat.jsonl",
        [
            {**conv(("system", "Be brief."), ("human", "Hi"), ("gpt", "Hello")), "sys": "ignored"},
            conv(("Human", "Q"), ("model", "A")),
            conv(("human", "Q"), ("tool", "A")),
            conv(("human", "only a question")),
            {"conversations": "not a list"},
            conv(("human", "Q"), ("gpt", 3)),
        ],
    )
    fields = {"messages": "conversations", "role_key": "from", "content_key": "value"}
    out = JsonlSource(path=str(path), fields=fields).read()
    check_invariant(out)
    assert out.kept.column("messages").to_pylist() == [
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}],
        [{"role": "user", "content": "Q"}, {"role": "assistant", "content": "A"}],
    ]
    reasons = out.rejected.column("reason").to_pylist()
    assert reasons == ["bad_messages", "bad_messages", "bad_messages", "not_a_string"]
    assert "'tool'" in out.rejected.column("detail")[0].as_py()


def test_prompt_response_with_system_field(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [{"sys": "You are terse.", "prompt": "p", "response": "r"}, {"prompt": "p2", "response": "r2"}])
    out = JsonlSource(path=str(path), fields={"system": "sys"}).read()
    roles = [[t["role"] for t in m] for m in out.kept.column("messages").to_pylist()]
    assert roles == [["system", "user", "assistant"], ["user", "assistant"]]


# -- config, check, fingerprint ---------------------------------------------------------


def test_unknown_field_name_is_a_recipe_error_with_a_suggestion():
    with pytest.raises(RecipeError, match="did you mean 'response'"):
        JsonlSource(path="x.jsonl", fields={"respone": "solution"})
    with pytest.raises(RecipeError, match="shape: text"):
        JsonlSource(path="x.jsonl", fields={"text": "body"})
    with pytest.raises(RecipeError, match="source.colour: unknown key"):
        JsonlSource(path="x.jsonl", colour="red")


def test_check_reports_a_missing_path_and_read_raises_source_error(tmp_path):
    missing = tmp_path / "nope" / "x.jsonl"
    source = JsonlSource(path=str(missing))
    assert source.check() == [f"path: no file matches '{missing}'"]
    with pytest.raises(SourceError, match="nope"):
        source.read()
    assert HfDiskSource(path=str(tmp_path / "nope")).check() == [f"path: no folder '{tmp_path / 'nope'}'"]
    assert ChampSource().check() == []


def test_check_reports_mapped_columns_the_file_lacks(tmp_path):
    pq.write_table(pa.table({"question": ["q"], "answer_text": ["a"]}), tmp_path / "f.parquet")
    problems = ParquetSource(path=str(tmp_path / "f.parquet"), fields={"prompt": "question", "response": "solution"}).check()
    assert len(problems) == 1 and problems[0].startswith("fields.response: key 'solution' is not a column")


def test_unreadable_parquet_is_a_source_error_naming_the_file(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_text("this is not parquet")
    source = ParquetSource(path=str(bad))
    assert "bad.parquet" in source.check()[0]
    with pytest.raises(SourceError, match="bad.parquet"):
        source.read()


def test_hf_disk_dataset_dict_needs_a_split_and_lists_them(tmp_path):
    import datasets

    folder = tmp_path / "dd"
    ds = datasets.Dataset.from_list([{"prompt": "p", "response": "r"}])
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(folder))
    problems = HfDiskSource(path=str(folder)).check()
    assert problems and "train" in problems[0] and "test" in problems[0]
    with pytest.raises(SourceError, match="set split to one of: "):
        HfDiskSource(path=str(folder)).read()
    assert "did you mean 'test'" in HfDiskSource(path=str(folder), split="tset").check()[0]
    assert HfDiskSource(path=str(folder), split="test").read().kept.column("id").to_pylist() == ["dd/test:1"]


def test_file_fingerprint_is_stable_and_follows_content_and_config(tmp_path):
    path = write_jsonl(tmp_path / "f.jsonl", GOOD)
    source = JsonlSource(path=str(path), fields=MAPPING)
    fp = source.fingerprint()
    assert fp == source.fingerprint() == JsonlSource(path=str(path), fields=MAPPING).fingerprint()
    assert JsonlSource(path=str(path), fields=MAPPING, max_chars=100).fingerprint() != fp
    write_jsonl(path, GOOD[:2])
    assert source.fingerprint() != fp


def test_reporter_tracks_the_record_loop(tmp_path):
    class Recording(Reporter):
        def __init__(self):
            self.descriptions = []

        def track(self, items, total=None, description=""):
            self.descriptions.append(description)
            yield from items

    reporter = Recording()
    JsonlSource(path=str(write_jsonl(tmp_path / "data.jsonl", GOOD))).read(StageContext(reporter=reporter))
    assert reporter.descriptions == ["read data.jsonl"]


def test_registry_names_every_source():
    assert set(SOURCES) == {"jsonl", "parquet", "csv", "hf_disk", "hf_files", "champ", "local_docs"}
    assert all(cls.type == name for name, cls in SOURCES.items())


# -- the formats table: one reader, one meaning per suffix ------------------------------

RECORDS = [
    {"id": "a", "prompt": "What is 2+2?", "response": "It is 4."},
    {"id": "b", "prompt": "Name a prime, \"quoted\".", "response": "7, say."},
]
LINES = ["The first text, with a comma.", "The second one."]
# (unit, number) of each record written by write_format: the CSV header is line 1, the text
# file has a blank line between its two lines.
NUMBERED = {
    "jsonl": [("line", 1), ("line", 2)],
    "json": [("item", 1), ("item", 2)],
    "csv": [("line", 2), ("line", 3)],
    "parquet": [("row", 1), ("row", 2)],
    "text": [("line", 1), ("line", 3)],
}
EVERY_SUFFIX = [pytest.param(f.name, s, id=s) for f in FORMATS.values() for s in f.suffixes]


def write_format(path: Path, name: str) -> Path:
    """RECORDS (LINES for text) in format ``name``, gzip-compressed when the name says so."""
    if name == "parquet":
        pq.write_table(pa.Table.from_pylist(RECORDS), path)
        return path
    if name == "jsonl":
        data = "".join(json.dumps(r) + "\n" for r in RECORDS)
    elif name == "json":
        data = json.dumps(RECORDS, indent=1)
    elif name == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=list(RECORDS[0]))
        writer.writeheader()
        writer.writerows(RECORDS)
        data = buf.getvalue()
    else:
        data = "\n\n".join(LINES) + "\n"
    path.write_bytes(gzip.compress(data.encode()) if path.name.endswith(".gz") else data.encode())
    return path


def sft_rows(ids: list[str]) -> list[dict]:
    return [{"id": i, "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["response"]}]}
            for i, r in zip(ids, RECORDS)]


@pytest.mark.parametrize("name, suffix", EVERY_SUFFIX)
def test_every_format_gives_the_same_records_through_the_reader_its_source_and_a_data_reference(tmp_path, name, suffix):
    path = write_format(tmp_path / f"data{suffix}", name)
    fmt = FORMATS[name]
    assert file_format(path) is fmt
    records = list(read_records(path))
    assert [r.value for r in records] == (LINES if name == "text" else RECORDS)
    assert [(r.unit, r.number) for r in records] == NUMBERED[name]
    referenced = resolve_data(str(path)).load()
    if fmt.source is None:  # text: no source type; a data reference gives a text row per line
        assert referenced.to_pylist() == [{"id": f"data:{n}", "text": t} for (_, n), t in zip(NUMBERED[name], LINES)]
        return
    out = SOURCES[fmt.source](path=str(path)).read()
    check_invariant(out)
    assert len(out.rejected) == 0
    ids = [f"data:{n}" for _, n in NUMBERED[name]]  # default ids: <file stem>:<line, row or item>
    assert out.kept.select(["id", "messages"]).to_pylist() == sft_rows(ids)
    assert referenced.to_pylist() == out.kept.to_pylist()


@pytest.mark.parametrize("name, suffix", EVERY_SUFFIX)
def test_every_format_reads_alike_through_the_datasets_builder_the_table_names(tmp_path, hf_cache, name, suffix):
    path = write_format(tmp_path / f"data{suffix}", name)
    fmt = FORMATS[name]
    if name == "text":  # the text builder gives a row per line, blank ones too (rejected as empty)
        out = HfFilesSource(path=str(path), builder=fmt.builder, shape="text").read()
        assert out.kept.select(["id", "text"]).to_pylist() == [{"id": "data:1", "text": LINES[0]}, {"id": "data:3", "text": LINES[1]}]
        return
    out = HfFilesSource(path=str(path), builder=fmt.builder, fields={"id": "id"}).read()
    assert len(out.rejected) == 0
    assert out.kept.select(["id", "messages"]).to_pylist() == sft_rows(["a", "b"])


def test_sources_and_builders_take_their_suffixes_from_the_formats_table():
    assert JsonlSource(path="x").extensions == (".jsonl", ".jsonl.gz", ".json", ".json.gz")
    assert CsvSource(path="x").extensions == (".csv", ".csv.gz")
    assert ParquetSource(path="x").extensions == (".parquet",)
    assert set(suffixes()) == {s for f in FORMATS.values() for s in f.suffixes}
    assert all(f.source is None or f.source in SOURCES for f in FORMATS.values())
    builders = get_args(HfFilesConfig.model_fields["builder"].annotation)
    assert set(builders) == {f.builder for f in FORMATS.values()}
    assert HfFilesSource(path="x", builder="text").extensions == (".txt", ".txt.gz")


def test_an_unknown_suffix_is_an_error_naming_the_file_and_the_known_suffixes(tmp_path):
    path = tmp_path / "questions.xlsx"
    path.write_text("not a format we read")
    for read in (lambda: file_format(path), lambda: read_records(path), lambda: resolve_data(str(path)).load()):
        with pytest.raises(SourceError) as err:
            read()
        assert "questions.xlsx: unknown file format" in str(err.value)
        assert all(s in str(err.value) for s in suffixes()), str(err.value)
        assert err.value.exit_code == 2


def test_a_csv_gz_data_reference_reads_as_csv(tmp_path):
    plain = write_format(tmp_path / "qa.csv", "csv")
    (tmp_path / "gz").mkdir()
    packed = write_format(tmp_path / "gz" / "qa.csv.gz", "csv")
    rows = resolve_data(str(packed)).load()
    assert rows.select(["id", "messages"]).to_pylist() == sft_rows(["qa:2", "qa:3"])
    assert rows.select(["id", "messages"]) == resolve_data(str(plain)).load().select(["id", "messages"])


def test_reader_errors_name_the_file_and_the_line_row_or_item(tmp_path):
    def error(name: str, data: bytes) -> str:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(SourceError) as err:
            list(read_records(path))
        return str(err.value)

    assert "bad.jsonl line 3: not valid JSON" in error("bad.jsonl", b'{"a": 1}\n\n{"a": \n')
    assert "bad.csv line 3: 3 fields, but the header has 2" in error("bad.csv", b"a,b\n1,2\n1,2,3\n")
    assert "bad.json line 3: not valid JSON" in error("bad.json", b'[\n{"a": 1},\n{"a" 2}]')
    assert "bad.txt line 2: not valid UTF-8" in error("bad.txt", b"fine\n\xff\xfe\n")
    assert "cannot read" in error("bad.jsonl.gz", b"not gzip") and "bad.jsonl.gz" in error("bad.jsonl.gz", b"not gzip")
    assert "bad.parquet as Parquet" in error("bad.parquet", b"not parquet")
    with pytest.raises(SourceError, match="missing.csv: No such file"):
        list(read_records(tmp_path / "missing.csv"))
    # Sources ask for bad records back, and reject them one by one.
    (tmp_path / "bad.csv").write_bytes(b"a,b\n1,2\n1,2,3\n")
    [ok, bad] = read_records(tmp_path / "bad.csv", bad="yield")
    assert ok.value == {"a": "1", "b": "2"} and bad.problem[0] == "bad_csv" and bad.where("bad.csv") == "bad.csv line 3"


def test_source_fingerprints_did_not_change_when_the_readers_became_one(tmp_path, monkeypatch):
    # Values from before curate.sources.formats: a changed one means every cached source step
    # reruns. Change them only with a Source.version bump.
    monkeypatch.chdir(tmp_path)
    write_jsonl(tmp_path / "rows.jsonl", [{"id": "a", "prompt": "What is 2+2?", "response": "It is 4."},
                                          {"id": "b", "prompt": "Name a prime.", "response": "7, say."}])
    (tmp_path / "rows.csv").write_text('id,prompt,response\na,What is 2+2?,It is 4.\nb,Name a prime.,"7, say."\n')
    assert JsonlSource(path="rows.jsonl").fingerprint() == "fad466e6ee7064f7"
    assert CsvSource(path="rows.csv").fingerprint() == "a7dc1e1702f5a181"


# -- CHAMP -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def champ_data() -> dict:
    return json.loads(data_path().read_bytes())


@pytest.fixture(scope="module")
def champ_rows():
    return ChampSource().read()  # ~1 s: not a slow test


def test_champ_reads_all_19440_model_solutions(champ_rows):
    out = champ_rows
    check_invariant(out)
    assert out.rows_in == len(out.kept) == 19_440
    assert len(set(out.kept.column("id").to_pylist())) == 19_440
    assert "P_Combinatorics_1/GPT-4/0-Shot" in out.kept.column("id").to_pylist()
    assert Counter(out.kept.column("finish_reason").to_pylist())["length"] == 261
    assert set(out.kept.column("source").to_pylist()) == {"champ"}


def test_champ_user_turn_is_the_problem_and_assistant_turn_is_not_empty(champ_rows, champ_data):
    out = champ_rows
    problems = champ_data["problems"]
    for row in out.kept.select(["messages", "problem_id", "answer"]).to_pylist():
        user, assistant = row["messages"]
        assert user == {"role": "user", "content": problems[row["problem_id"]]["_text"]}
        assert assistant["role"] == "assistant" and assistant["content"].strip()
        assert row["answer"] == problems[row["problem_id"]]["_answer"]


def test_champ_soln_rows_start_with_the_partial_solution_given_in_the_prompt(champ_rows, champ_data):
    out = champ_rows
    checked = 0
    for row in out.kept.filter(pc.is_in(out.kept["prompt_setting"], pa.array(["1/3 Soln", "2/3 Soln"]))).to_pylist():
        problem = champ_data["problems"][row["problem_id"]]
        prompt = problem["conversations"][f"{row['model']}|{row['prompt_setting']}"]["messages"][-4]["text"]
        if PARTIAL_MARKER in prompt:
            steps = problem["solution"]["steps"]
            assert row["messages"][1]["content"].startswith(f"1. {steps[0]['_text']}\n")
            checked += 1
    assert checked == 2032  # the rest had references too short for a partial prefix


def test_champ_response_is_solution_then_summary(champ_data):
    out = ChampSource(models=["GPT-4"], prompt_settings=["0-Shot"], limit_problems=1).read()
    messages = champ_data["problems"]["P_Combinatorics_1"]["conversations"]["GPT-4|0-Shot"]["messages"]
    assert out.kept.to_pylist()[0]["messages"][1]["content"] == f"{messages[-3]['text']}\n\n{messages[-1]['text']}"


def test_champ_filters_by_model_and_prompt_setting():
    out = ChampSource(models=["GPT-4", "PaLM 2 Medium"], prompt_settings=["0-Shot", "1/3 Soln"]).read()
    assert len(out.kept) == 270 * 2 * 2
    assert set(out.kept.column("model").to_pylist()) == {"GPT-4", "PaLM 2 Medium"}
    assert set(out.kept.column("prompt_setting").to_pylist()) == {"0-Shot", "1/3 Soln"}
    assert len(ChampSource(limit_problems=2).read().kept) == 144


def test_champ_include_reference_adds_270_reference_rows():
    out = ChampSource(prompt_settings=["0-Shot"], include_reference=True).read()
    assert out.rows_in == len(out.kept) == 270 * 4 + 270
    reference = out.kept.filter(pc.equal(out.kept["model"], "reference")).to_pylist()
    assert len(reference) == 270
    first = reference[0]
    assert first["id"] == "P_Combinatorics_1/reference" and first["prompt_setting"] == "reference"
    assert first["messages"][1]["content"].startswith("1. ") and first["messages"][1]["content"].endswith(f"Answer: {first['answer']}")
    only = ChampSource(include_model_solutions=False, include_reference=True).read()
    assert len(only.kept) == 270


def test_champ_unknown_model_is_a_recipe_error_with_a_suggestion():
    with pytest.raises(RecipeError, match="unknown model 'GPT4'; did you mean 'GPT-4'"):
        ChampSource(models=["GPT4"])
    with pytest.raises(RecipeError, match="did you mean '1/3 Soln'"):
        ChampSource(prompt_settings=["1/3 soln"])
    with pytest.raises(RecipeError, match="nothing to read"):
        ChampSource(include_model_solutions=False)


def test_champ_fingerprint_is_stable_and_changes_with_config():
    fp = ChampSource().fingerprint()
    assert fp == ChampSource().fingerprint() == ChampSource({}).fingerprint()
    assert ChampSource(include_reference=True).fingerprint() != fp
    assert ChampSource(models=["GPT-4"]).fingerprint() != fp


def test_source_accepts_a_config_object_and_overrides():
    source = ChampSource(ChampSource.Config(limit_problems=3), include_reference=True)
    assert source.config.limit_problems == 3 and source.config.include_reference
    assert repr(source) == "ChampSource(include_reference=True, limit_problems=3)"
    assert os.fspath(JsonlSource(path=Path("a.jsonl")).config.path) == "a.jsonl"


# -- URIs through pyarrow's filesystems ----------------------------------------------------


def test_a_file_uri_reads_through_pyarrows_filesystem_as_the_local_path_does(tmp_path):
    """``file://`` entries go through pyarrow's LocalFileSystem (the code path of s3://, gs://
    and hdfs://): a directory, a glob and a single file read the same rows and ids as the
    local paths, gzip and Parquet included; the fingerprint hashes the files' content."""
    from curate.sources.paths import RemotePath, resolve

    d = tmp_path / "data"
    write_jsonl(d / "one.jsonl", GOOD)
    (d / "sub").mkdir()
    with gzip.open(d / "sub" / "two.jsonl.gz", "wt") as f:
        f.write("".join(json.dumps({**r, "uid": f"gz{r['uid']}"}) + "\n" for r in GOOD))
    (d / ".hidden").mkdir()
    write_jsonl(d / ".hidden" / "skip.jsonl", GOOD)
    (d / "notes.txt").write_text("not data")
    pq.write_table(pa.Table.from_pylist([{**r, "final": str(r["final"])} for r in GOOD]), tmp_path / "rows.parquet")

    ext = JsonlSource(path="x").extensions
    for pattern in ("*.jsonl", "**/*.jsonl", "**/*.gz", "*/two.*", "[o]ne.jsonl", ".hidden/*.jsonl"):  # globs as local ones
        local_files, _ = resolve(f"{d}/{pattern}", ext)
        uri_files, _ = resolve(f"file://{d}/{pattern}", ext)
        assert [str(f) for f in uri_files] == [f"file://{f}" for f in local_files], pattern
    files, problems = resolve(f"file://{d}", JsonlSource(path="x").extensions)
    assert problems == [] and all(isinstance(f, RemotePath) for f in files)
    assert [str(f) for f in files] == [f"file://{d}/one.jsonl", f"file://{d}/sub/two.jsonl.gz"]
    for local, uri in ((str(d), f"file://{d}"), (f"{d}/*.jsonl", f"file://{d}/*.jsonl"),
                       (str(d / "one.jsonl"), f"file://{d}/one.jsonl")):
        here, there = JsonlSource(path=local, fields=MAPPING), JsonlSource(path=uri, fields=MAPPING)
        a, b = here.read(), there.read()
        assert len(a.kept) >= 3 and canonical(b.kept) == canonical(a.kept), uri
    from curate.fingerprint import hash_file

    assert hash_file(files[0]) == hash_file(files[0]) != hash_file(files[1])  # from the listing: no download
    before = JsonlSource(path=f"file://{d}").fingerprint()
    assert JsonlSource(path=f"file://{d}").fingerprint() == before
    write_jsonl(d / "one.jsonl", GOOD[:1])  # a changed file: another size and modification time
    assert JsonlSource(path=f"file://{d}").fingerprint() != before
    here = ParquetSource(path=str(tmp_path / "rows.parquet"), fields=MAPPING)
    there = ParquetSource(path=f"file://{tmp_path}/rows.parquet", fields=MAPPING)
    assert there.check() == [] and canonical(there.read().kept) == canonical(here.read().kept)


def test_a_wrong_uri_fails_at_once_naming_it(tmp_path):
    missing = f"file://{tmp_path}/nope/x.jsonl"
    assert JsonlSource(path=missing).check() == [f"path: no file matches '{missing}'"]
    with pytest.raises(SourceError, match="nope"):
        JsonlSource(path=missing).read()
    assert JsonlSource(path=f"file://{tmp_path}/nope/*.jsonl").check() == [f"path: no file matches 'file://{tmp_path}/nope/*.jsonl'"]
    (tmp_path / "empty").mkdir()
    assert "holds no" in JsonlSource(path=f"file://{tmp_path}/empty").check()[0]
    problem = JsonlSource(path="nosuchscheme://bucket/x.jsonl").check()
    assert len(problem) == 1 and problem[0].startswith("path: cannot open 'nosuchscheme://bucket/x.jsonl'")
    bad = tmp_path / "bad.parquet"
    bad.write_text("this is not parquet")
    assert "bad.parquet" in ParquetSource(path=f"file://{bad}").check()[0]
    with pytest.raises(SourceError, match="bad.parquet"):
        ParquetSource(path=f"file://{bad}").read()


# -- a source read block by block ------------------------------------------------------------


def test_a_file_source_is_written_block_by_block_with_the_rows_and_rejects_of_one_read(tmp_path, broken_jsonl):
    """The runner hands a file source a sink: every ``block_rows`` rows (or rejects) are
    written as they are read; the version holds exactly the rows, rejects and counts of an
    in-memory read, with several shards."""
    from curate import Pipeline, Store
    from curate.executors import ExecutorConfig

    bad = broken_jsonl.read_text()
    many = [json.dumps({**GOOD[k % 3], "uid": f"u{k}", "tag": k}) for k in range(57)]
    broken_jsonl.write_text(bad + "\n".join(many) + "\n")
    source = JsonlSource(path=str(broken_jsonl), fields=MAPPING, keep_fields=["tag"])
    whole = source.read()
    blocks = []
    rest = source.read(sink=blocks.append, block_rows=10)
    assert len(blocks) == 5 and all(len(b.kept) == 10 for b in blocks) and len(rest.kept) == 9
    result = Pipeline([], source, name="streamed").run(Store(tmp_path / "s"), executor=ExecutorConfig(block_rows=10))
    version = result.final
    assert len(version.manifest["shards"]) == 6
    assert version.table().to_pylist() == whole.kept.to_pylist()
    drop = ["stage"]
    assert version.rejected().drop_columns(drop).to_pylist() == whole.rejected.to_pylist()
    assert version.manifest["counts"] == {"in": whole.rows_in, "kept": len(whole.kept), "rejected": len(whole.rejected),
                                          "added": 0}
    assert version.manifest["columns"]["tag"] == "int64"


def test_a_save_to_disk_folder_is_written_block_by_block_as_one_read_gives_it(tmp_path, hf_cache):
    """hf_disk streams too: its memory-mapped Arrow files are read in batches and every
    ``block_rows`` normalised rows (or rejects: an empty response) go to the sink."""
    import datasets

    from curate import Pipeline, Store
    from curate.executors import ExecutorConfig

    rows = [{**GOOD[k % 3], "uid": f"u{k}", "final": str(GOOD[k % 3]["final"]), "tag": k} for k in range(47)]
    rows[5] = {**rows[5], "solution": ""}  # rejected: empty text
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "saved"))
    source = HfDiskSource(path=str(tmp_path / "saved"), fields=MAPPING, keep_fields=["tag"])
    assert source.streams
    whole = source.read()
    assert len(whole.rejected) == 1 and len(whole.kept) == 46
    blocks = []
    rest = source.read(sink=blocks.append, block_rows=10)
    assert [len(b.kept) for b in blocks] == [10, 10, 10, 10] and len(rest.kept) == 6  # each block: 10 rows (or rejects)
    assert sum(len(b.rejected) for b in blocks) + len(rest.rejected) == 1
    version = Pipeline([], source, name="saved").run(Store(tmp_path / "s"), executor=ExecutorConfig(block_rows=10)).final
    assert len(version.manifest["shards"]) == 5
    assert version.table().to_pylist() == whole.kept.to_pylist()
    assert version.rejected().drop_columns(["stage"]).to_pylist() == whole.rejected.to_pylist()


def test_a_keep_field_promoted_between_blocks_loses_nothing(tmp_path):
    """ints in the first block, floats and wider structs later: the version holds the values
    of a one-table read (promoted), nothing truncated or dropped."""
    from curate import Pipeline, Store
    from curate.executors import ExecutorConfig

    rows = [{"prompt": f"p{k}", "response": "r", "n": k if k < 10 else k + 0.5, "s": {"a": k, **({"b": 1} if k > 12 else {})}}
            for k in range(20)]
    source = JsonlSource(path=str(write_jsonl(tmp_path / "wide.jsonl", rows)), keep_fields=["n", "s"])
    version = Pipeline([], source, name="w").run(Store(tmp_path / "s"), executor=ExecutorConfig(block_rows=10)).final
    assert len(version.manifest["shards"]) > 1
    assert version.table().to_pylist() == source.read().kept.to_pylist()
    assert version.table().column("n").to_pylist()[10:12] == [10.5, 11.5]


def test_a_keep_field_that_changes_type_between_blocks_is_an_error_naming_it(tmp_path):
    rows = [{"prompt": f"p{k}", "response": "r", "tag": k if k < 10 else f"t{k}"} for k in range(20)]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    source = JsonlSource(path=str(path), keep_fields=["tag"])
    with pytest.warns(CurateWarning, match="mixed types"):
        assert source.read().kept.schema.field("tag").type == pa.string()  # one table: kept as JSON text
    with pytest.raises(SourceError, match="keep_fields 'tag'.*int64"):
        source.read(sink=lambda out: None, block_rows=10)


def test_a_data_reference_may_be_a_uri_and_a_recipe_leaves_it_as_written(tmp_path):
    from curate.sources.refs import resolve_recipe_data

    path = write_jsonl(tmp_path / "t.jsonl", [{"prompt": "p", "response": "r"}, {"text": "only text"}])
    local, remote = resolve_data(str(path)), resolve_data(f"file://{path}")
    assert remote.load().to_pylist() == local.load().to_pylist()  # (its fingerprint is the listing's, not the content's)
    with pytest.raises(SourceError, match="nope.jsonl"):
        resolve_data(f"file://{tmp_path}/nope.jsonl", what="select_target.target")
    uri = f"file://{tmp_path}/t.jsonl"
    assert resolve_recipe_data(uri, tmp_path / "recipes") == uri
    assert resolve_recipe_data({"type": "jsonl", "path": uri}, tmp_path / "recipes") == {"type": "jsonl", "path": uri}
    assert resolve_recipe_data([{"data": uri, "weight": 1}], tmp_path / "recipes") == [{"data": uri, "weight": 1}]


def test_local_docs_reads_real_documents_and_rejects_what_is_not_a_document(tmp_path):
    """The pretraining demo's pool: a folder like /usr/share/doc (plain, gzip, HTML, binary,
    too long, too short) and the machine's own catalogues and distribution READMEs."""
    import gzip

    docs = tmp_path / "doc"
    (docs / "pkg").mkdir(parents=True)
    words = "the quick brown fox jumps over the lazy dog " * 10
    (docs / "pkg" / "README").write_text(words)
    (docs / "pkg" / "changelog.gz").write_bytes(gzip.compress(words.encode()))
    (docs / "pkg" / "manual.html").write_text(f"<html><body><p>{words}</p></body></html>")
    (docs / "pkg" / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00" + bytes(range(256)))
    (docs / "pkg" / "latin1.txt").write_bytes(("caf\xe9 " * 30).encode("latin-1"))
    (docs / "pkg" / "huge.txt").write_text(words * 100)
    (docs / "pkg" / "short.txt").write_text("too short")
    out = SOURCES["local_docs"](kinds=["doc"], doc_roots=[str(docs)], max_chars=10_000).read()
    kept = {r["id"]: r for r in out.kept.to_pylist()}
    assert set(kept) == {"doc:doc/pkg/README", "doc:doc/pkg/changelog.gz", "doc:doc/pkg/manual.html"}
    assert kept["doc:doc/pkg/changelog.gz"]["text"] == words
    assert kept["doc:doc/pkg/manual.html"]["format"] == "html" and kept["doc:doc/pkg/README"]["format"] == "text"
    rejected = {r["id"].rsplit("/", 1)[1]: (r["reason"], r["detail"]) for r in out.rejected.to_pylist()}
    assert {k: v[0] for k, v in rejected.items()} == {"logo.png": "not_text", "latin1.txt": "not_text",
                                                       "huge.txt": "text_too_long", "short.txt": "too_short"}
    assert all(str(docs) in detail for _, detail in rejected.values())  # each names its file
    assert out.rows_in == 7
    # this machine's own: translated catalogues (with their language) and distribution READMEs
    own = SOURCES["local_docs"](kinds=["locale", "metadata"], limit_per_kind=30).read().kept.to_pylist()
    locale = [r for r in own if r["source"] == "locale"]
    assert locale and all(r["declared_lang"] and r["text"] for r in locale)
    assert any(r["source"] == "metadata" for r in own)
