"""curate audit: per step of a version's lineage, against labelled rows, the removal precision
and recall and the good share of what remains, with Wilson intervals; labels by id or text,
from a file or CHAMP's human annotations; the recipe's audit: section."""

import json

import pytest

import curate
from curate.audit import audit, read_labels
from curate.errors import UsageError
from curate.evaluate import wilson_interval
from curate.sources import SOURCES
from curate.sources.champ import annotation_labels
from curate.stages import ExactDedup, HeuristicFilter

from .conftest import run_cli
from .test_pipeline import PROSE


def labelled_pool(tmp_path):
    """41 rows: 30 distinct solutions (even variants good, odd bad), 10 exact copies of the first
    ten (labelled bad: a copy is not worth keeping), one too short to keep (bad)."""
    path = tmp_path / "pool.jsonl"
    rows = [{"question": f"question {i}", "solution": f"{PROSE} Variant {i % 30}."} for i in range(40)]
    rows.append({"question": "short", "solution": "Too short to keep."})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    labels = [{"id": f"pool:{i + 1}", "label": "good" if i < 30 and i % 2 == 0 else "bad"} for i in range(40)]
    labels.append({"text": "  Too short\\n to keep. ".replace("\\n", "\n"), "label": "bad"})  # by text, spaces collapsed
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in labels))
    source = SOURCES["jsonl"](path=str(path), fields={"prompt": "question", "response": "solution"})
    curate.Pipeline([ExactDedup(), HeuristicFilter(min_words=20)], source=source, name="demo").run()
    return tmp_path / "labels.jsonl"


def test_each_step_gets_its_removal_precision_recall_and_the_good_share_left(isolated_store, tmp_path):
    result = audit("demo", read_labels(labelled_pool(tmp_path)))
    assert result.labelled == 41
    src, dedup, rules = result.steps
    assert (src.step, src.labelled_in, src.labelled_removed) == ("source", 41, 0)
    assert (src.good_share.k, src.good_share.n) == (15, 41)
    # exact_dedup removes the ten copies, all bad: precision 10/10, recall 10 of the 26 bad rows
    assert (dedup.labelled_removed, dedup.precision.k, dedup.precision.n) == (10, 10, 10)
    assert (dedup.recall.k, dedup.recall.n) == (10, 26)
    assert (dedup.good_share.k, dedup.good_share.n) == (15, 31)
    # heuristic_filter removes the short row (labelled by its text): 1/1, 1 of the 16 bad left
    assert (rules.precision.k, rules.precision.n, rules.recall.k, rules.recall.n) == (1, 1, 1, 16)
    assert (rules.good_share.k, rules.good_share.n) == (15, 30)
    assert result.ratio == pytest.approx((15 / 30) / (15 / 41))
    assert rules.good_share.interval == wilson_interval(15, 30)
    text = result.markdown()
    assert "| exact_dedup | 41 | 31 | 10 | 41 | 10 | 100.0% [72.2%, 100.0%] (10/10) |" in text
    assert "1.37x the pool's" in text


def test_the_cli_prints_the_audit_and_bad_label_files_name_their_line(isolated_store, tmp_path):
    labels = labelled_pool(tmp_path)
    proc = run_cli("audit", "demo", "--labels", str(labels), "--store", str(isolated_store), "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert [s["step"] for s in data["steps"]] == ["source", "exact_dedup", "heuristic_filter"]
    assert data["steps"][1]["recall"]["k"] == 10 and data["steps"][1]["recall"]["n"] == 26
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "pool:1", "label": "good"}\n{"id": "pool:2", "label": "perhaps"}\n')
    proc = run_cli("audit", "demo", "--labels", str(bad), "--store", str(isolated_store))
    assert proc.returncode == 2 and f"labels {bad}, line 2: label must be good or bad" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad.write_text('{"id": "nobody", "label": "good"}\n')
    proc = run_cli("audit", "demo", "--labels", str(bad), "--store", str(isolated_store))
    assert proc.returncode != 0 and "none of the 1 labelled rows" in proc.stderr and "pool:1" in proc.stderr
    with pytest.raises(UsageError, match="no such file"):
        read_labels(tmp_path / "missing.jsonl")


def test_champ_annotations_are_labels_of_the_champ_sources_rows():
    labels = annotation_labels()
    assert len(labels) == 540 and sum(labels.values()) == 96  # fully correct: no wrong step marked
    ids = set(SOURCES["champ"]().read().kept.column("id").to_pylist())
    assert set(labels) <= ids


def test_a_recipes_audit_section_is_printed_after_the_funnel_and_written_to_the_reports(isolated_store, tmp_path):
    labels = labelled_pool(tmp_path)
    (tmp_path / "r.yaml").write_text(
        "name: audited\nsource: {type: jsonl, path: pool.jsonl, fields: {prompt: question, response: solution}}\n"
        "stages:\n  - exact_dedup: {}\naudit: {labels: labels.jsonl}\n")
    proc = run_cli("run", str(tmp_path / "r.yaml"), "--store", str(isolated_store))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.index("Audit of audited") > proc.stdout.index("exact_dedup")
    assert "| exact_dedup | 41 | 31 | 10 | 41 | 10 |" in proc.stdout
    saved = isolated_store / "reports" / "audited" / "audit.md"
    assert saved.is_file() and "| exact_dedup |" in saved.read_text()
    assert json.loads((saved.parent / "audit.json").read_text())["labelled"] == 41
    (tmp_path / "r.yaml").write_text((tmp_path / "r.yaml").read_text().replace("labels.jsonl", "nope.jsonl"))
    proc = run_cli("validate", str(tmp_path / "r.yaml"))
    assert proc.returncode == 2 and "audit.labels" in proc.stderr and "nope.jsonl" in proc.stderr
    assert labels.is_file()
