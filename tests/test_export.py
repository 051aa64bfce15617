"""Export for downstream training jobs: chat JSONL that TRL loads as it is, Parquet, a
datasets folder, and the dataset card with the lineage."""

from __future__ import annotations

import json

import pytest

import curate
from curate.errors import UsageError
from curate.sources import SOURCES
from curate.stages import ExactDedup, HeuristicFilter
from curate.versions import export

GOOD = "The committee met on a grey morning to review the budget and the cost of the new bridge for the town."


@pytest.fixture
def stored(tmp_path):
    """A two-step version of six SFT rows: one exact duplicate, one too short."""
    rows = [{"q": f"question {i}", "a": f"{GOOD} Point {i}."} for i in range(4)]
    rows += [{"q": "question 0", "a": f"{GOOD} Point 0."}, {"q": "question 9", "a": "Too short."}]
    path = tmp_path / "pool.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = SOURCES["jsonl"](path=str(path), fields={"prompt": "q", "response": "a"})
    curate.Pipeline([ExactDedup(), HeuristicFilter(min_words=5)], source=source, name="exp").run()
    return tmp_path


def test_chat_export_holds_only_messages_and_trl_reads_it_as_conversations(stored, tiny_lm):
    import datasets
    from transformers import AutoTokenizer
    from trl.data_utils import apply_chat_template, is_conversational

    out = export("exp", "chat", stored / "out" / "exp.jsonl")
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 4 and all(list(r) == ["messages"] for r in lines)
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    assert is_conversational(ds[0])
    text = apply_chat_template(ds[0], AutoTokenizer.from_pretrained(tiny_lm))["text"]
    assert "question 0" in text and GOOD in text


def test_the_card_carries_every_step_with_counts_reasons_and_fingerprints(stored):
    out = export("exp", "jsonl", stored / "exp.jsonl")
    card = (stored / "exp.README.md").read_text()
    manifest = curate.Store().resolve("exp").manifest
    assert card.startswith("---\nconfigs:") and "path: exp.jsonl" in card
    for entry in manifest["lineage"]:
        assert f"| {entry['step']} | {entry['stage']} |" in card and entry["fingerprint"] in card
    assert "exact_duplicate 1" in card and "min_words 1" in card
    assert '"min_words": 5' in card  # the step's config
    assert "**4 rows**" in card and "field_messages: messages" in card
    assert len(out.read_text().splitlines()) == 4


def test_parquet_and_hf_exports_have_their_cards_and_no_card_writes_none(stored):
    import datasets
    import pyarrow.parquet as pq

    pq_out = export("exp", "parquet", stored / "p" / "exp.parquet")
    assert pq.read_table(pq_out).num_rows == 4 and (stored / "p" / "exp.README.md").is_file()
    hf_out = export("exp", "hf", stored / "hf")
    assert datasets.load_from_disk(str(hf_out)).num_rows == 4 and "## Lineage" in (hf_out / "README.md").read_text()
    export("exp", "jsonl", stored / "bare" / "exp.jsonl", card=False)
    assert not (stored / "bare" / "exp.README.md").exists()


def test_chat_export_of_text_rows_is_a_clear_error(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text(json.dumps({"text": GOOD}) + "\n")
    curate.Pipeline([ExactDedup()], source=SOURCES["jsonl"](path=str(path), shape="text"), name="docs").run()
    with pytest.raises(UsageError, match="--format chat writes conversations, but docs has text rows"):
        export("docs", "chat", tmp_path / "x.jsonl")
    with pytest.raises(UsageError, match="use jsonl, chat, parquet, hf"):
        export("docs", "csv", tmp_path / "x.csv")  # type: ignore[arg-type]


@pytest.fixture
def documents(tmp_path):
    """A text version: the paragraphs of this machine's licence texts (real prose), stored."""
    from pathlib import Path

    paragraphs = [" ".join(p.split()) for f in sorted(Path("/usr/share/common-licenses").glob("*")) if f.is_file()
                  for p in f.read_text(errors="replace").split("\n\n") if len(p.split()) >= 20]
    assert len(paragraphs) > 300
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": p, "n": k}) + "\n" for k, p in enumerate(paragraphs)))
    curate.Pipeline([], source=SOURCES["jsonl"](path=str(path), shape="text", keep_fields=["n"]), name="docs").run(
        tmp_path / "store")
    return tmp_path / "store", paragraphs


@pytest.mark.parametrize("shard_format", ["jsonl.gz", "parquet"])
def test_pretraining_shards_hold_every_document_in_order_with_their_token_counts(documents, tmp_path, shard_format):
    import gzip

    import pyarrow.parquet as pq

    from curate.algorithms.textstats import approx_tokens

    store, paragraphs = documents
    out = export("docs", "shards", tmp_path / "shards", store, shard_mb=0.05, shard_format=shard_format)
    index = json.loads((out / "index.json").read_text())
    files = sorted(p.name for p in out.glob(f"part-*.{shard_format}"))
    assert files == [s["file"] for s in index["shards"]] and len(files) > 3
    rows = []
    for name in files:
        if shard_format == "parquet":
            rows += pq.read_table(out / name).to_pylist()
        else:
            with gzip.open(out / name, "rt") as f:
                rows += [json.loads(line) for line in f]
    assert [r["text"] for r in rows] == paragraphs and [r["n"] for r in rows] == list(range(len(paragraphs)))
    limit = 0.05 * 2**20
    for shard in index["shards"][:-1]:  # each closed once its text reached the target, one document past it at most
        assert limit <= shard["bytes"] < limit + max(len(p.encode()) for p in paragraphs)
    assert index["rows"] == len(paragraphs) and index["tokens"] == sum(approx_tokens(p) for p in paragraphs)
    card = (out / "README.md").read_text()
    assert f"**{index['tokens']:,} tokens**" in card and f"part-*.{shard_format}" in card


def test_shards_count_tokens_with_a_named_tokenizer_and_refuse_what_they_cannot_write(documents, tmp_path, tiny_lm,
                                                                                         stored):
    from transformers import AutoTokenizer

    store, paragraphs = documents
    out = export("docs", "shards", tmp_path / "tok", store, shard_mb=1.0, tokenizer=str(tiny_lm), card=False)
    index = json.loads((out / "index.json").read_text())
    tok = AutoTokenizer.from_pretrained(str(tiny_lm))
    assert index["tokens"] == sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in paragraphs)
    assert index["tokenizer"] == str(tiny_lm) and not (out / "README.md").exists()
    with pytest.raises(UsageError, match="no 'text' column"):
        export("exp", "shards", tmp_path / "sft")  # the SFT fixture's version, in the default store
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not an earlier shards export"):
        export("docs", "shards", tmp_path / "busy", store)
    with pytest.raises(UsageError, match="tokenizer nowhere: cannot load it offline"):
        export("docs", "shards", tmp_path / "t2", store, tokenizer="nowhere")
    assert not (tmp_path / "t2").exists() and not list(tmp_path.glob(".t2.*"))  # nothing half-written left
