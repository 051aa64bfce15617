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
