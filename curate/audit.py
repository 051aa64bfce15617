"""The audit of a version against labels: what each step of its lineage removed, and whether it
should have.

A label file names rows of a labelled subset as ``good`` or ``bad``, one JSON object a line:
``{"id": "P_Sequence_18/GPT-4/0-Shot", "label": "good"}``, or by text instead of id:
``{"text": "...", "label": "bad"}`` (the row whose response -- for SFT rows -- or text is that
text, whitespace collapsed; every row with it, when several have it). ``label`` also takes
``true`` / ``false``, 1 / 0 and "correct" / "wrong". ``champ`` names the built-in labels of
the ``champ`` source: CHAMP's human annotations (``fws_annotations``: 540 model solutions whose
first wrong step the annotators marked; none marked is good), ``curate.sources.champ.annotation_labels``.

For each step of the lineage, from the source to the version, among the labelled rows that
entered the step:

* **removal precision** -- the bad share of the labelled rows the step removed (how right its
  removals are);
* **removal recall** -- the share of the labelled bad rows that entered and that it removed;
* **good share** -- the good share of the labelled rows it kept (the source's row: the pool's).

each with a Wilson 95% interval (``algorithms.intervals``). The last line compares the final
good share with the pool's (their ratio). A step that adds rows (augmentation) adds
unlabelled ones; a row whose id comes back after it was removed is counted where it was kept.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .algorithms.intervals import wilson_interval
from .errors import SourceError, UsageError
from .records import text_columns, texts
from .store import Store, Version

GOOD = {"good", "true", "1", "correct", "yes"}
BAD = {"bad", "false", "0", "wrong", "no", "none"}  # none: no answer (benchmarks/data/champ_answer_labels.jsonl)
BUILTIN = ("champ",)


@dataclass
class Labels:
    """Labels of a subset of rows: by id and by normalised text (good = True)."""

    origin: str  # the file, or the built-in's name
    by_id: dict[str, bool] = field(default_factory=dict)
    by_text: dict[str, bool] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.by_id) + len(self.by_text)


def normal_text(text: str) -> str:
    return " ".join(text.split())


def read_labels(spec: str | Path) -> Labels:
    """A label file (JSON lines) or a built-in label set (``champ``); errors name the file and line."""
    if str(spec) in BUILTIN:
        from .sources.champ import annotation_labels

        return Labels("champ (CHAMP's human annotations)", by_id=annotation_labels())
    path = Path(spec)
    if not path.is_file():
        raise UsageError(f"labels {path}: no such file (a JSON-lines file of {{\"id\" or \"text\", \"label\"}}, "
                         f"or one of the built-in label sets: {', '.join(BUILTIN)})")
    labels = Labels(str(path))
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise UsageError(f"labels {path}, line {n}: not JSON ({e.msg})") from None
            if not isinstance(record, dict):
                raise UsageError(f"labels {path}, line {n}: a JSON object is needed, not {type(record).__name__}")
            value = str(record.get("label", "")).strip().lower()
            if value not in GOOD | BAD:
                raise UsageError(f"labels {path}, line {n}: label must be good or bad (or true/false, 1/0), "
                                 f"not {record.get('label')!r}")
            if isinstance(record.get("id"), str) and record["id"]:
                labels.by_id[record["id"]] = value in GOOD
            elif isinstance(record.get("text"), str) and record["text"].strip():
                labels.by_text[normal_text(record["text"])] = value in GOOD
            else:
                raise UsageError(f"labels {path}, line {n}: needs a non-empty string \"id\" or \"text\"")
    if not len(labels):
        raise UsageError(f"labels {path}: no labelled rows")
    return labels


@dataclass
class Share:
    k: int
    n: int

    @property
    def value(self) -> float | None:
        return self.k / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def __str__(self) -> str:
        if not self.n:
            return "-"
        low, high = self.interval
        return f"{self.k / self.n:.1%} [{low:.1%}, {high:.1%}] ({self.k}/{self.n})"

    def to_dict(self) -> dict[str, Any]:
        return {"k": self.k, "n": self.n, "share": self.value, "interval": list(self.interval) if self.n else None}


@dataclass
class AuditStep:
    step: str
    rows_in: int
    kept: int
    removed: int
    labelled_in: int
    labelled_removed: int
    precision: Share  # bad among the labelled removed
    recall: Share  # removed among the labelled bad that entered
    good_share: Share  # good among the labelled kept

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(precision=self.precision.to_dict(), recall=self.recall.to_dict(), good_share=self.good_share.to_dict())
        return out


@dataclass
class Audit:
    ref: str
    fingerprint: str
    labels: str
    labelled: int  # labelled rows found in the source
    steps: list[AuditStep]

    @property
    def ratio(self) -> float | None:
        """The final good share over the pool's (None when either is undefined)."""
        pool, final = self.steps[0].good_share.value, self.steps[-1].good_share.value
        return final / pool if pool and final is not None else None

    def to_dict(self) -> dict[str, Any]:
        return {"ref": self.ref, "fingerprint": self.fingerprint, "labels": self.labels, "labelled": self.labelled,
                "ratio": self.ratio, "steps": [s.to_dict() for s in self.steps]}

    def markdown(self) -> str:
        head = ("| step | rows in | kept | removed | labelled in | labelled removed | removal precision (bad share) "
                "| removal recall | good share of what remains |")
        lines = [f"Audit of {self.ref} ({self.fingerprint}) against {self.labels}: {self.labelled:,} labelled rows "
                 "in the source; shares with Wilson 95% intervals.", "", head, "|" + "---|" * 9]
        for s in self.steps:
            lines.append(f"| {s.step} | {s.rows_in:,} | {s.kept:,} | {s.removed:,} | {s.labelled_in:,} | "
                         f"{s.labelled_removed:,} | {s.precision} | {s.recall} | {s.good_share} |")
        pool, final = self.steps[0].good_share, self.steps[-1].good_share
        ratio = self.ratio
        lines += ["", f"good share: pool {pool}, final {final}" + (f"; {ratio:.2f}x the pool's" if ratio is not None else "")]
        return "\n".join(lines)


def _row_text_ids(version: Version) -> dict[str, list[str]]:
    """Each normalised text of the version (SFT rows: the response) -> the ids of its rows; only
    the id and text columns are read."""
    field = "response" if "messages" in version.column_names else "text"
    table = version.table(["id", *text_columns(field, version.column_names)])
    out: dict[str, list[str]] = {}
    for rid, text in zip(table.column("id").to_pylist(), texts(table, field)):
        out.setdefault(normal_text(text or ""), []).append(rid)
    return out


def audit(ref: str, labels: Labels, store: Store | str | Path | None = None) -> Audit:
    """The audit of version ``ref`` (a name, ``name/step`` or a fingerprint) against ``labels``,
    step by step over its lineage (every version of it must still be in the store)."""
    st = store if isinstance(store, Store) else Store(store)
    version = st.resolve(ref)
    lineage = version.manifest.get("lineage") or []
    if not lineage:
        raise UsageError(f"{ref}: its manifest has no lineage to audit")
    missing = [e["step"] for e in lineage if not st.has(e["fingerprint"])]
    if missing:
        raise UsageError(f"{ref}: the versions of step(s) {', '.join(missing)} are no longer in the store "
                         f"({st.root}); rerun the recipe to audit it")
    versions = [st.version(e["fingerprint"]) for e in lineage]
    source = versions[0]
    truth = dict(labels.by_id)
    if labels.by_text:
        for text, ids in _row_text_ids(source).items():
            if text in labels.by_text:
                truth.update({i: labels.by_text[text] for i in ids})
    present = set(source.column("id").to_pylist()) & set(truth)
    if not present:
        raise SourceError(f"{ref}: none of the {len(labels):,} labelled rows of {labels.origin} is a row of its source "
                          f"(ids like {next(iter(labels.by_id), '-')!r}; the source's ids look like "
                          f"{source.column('id')[0].as_py() if source.num_rows else '-'!r})")
    steps = []
    entering = set(present)
    for entry, v in zip(lineage, versions):
        kept_ids = set(v.column("id").to_pylist())
        kept = entering & kept_ids
        removed = entering - kept_ids
        bad_in = {i for i in entering if not truth[i]}
        bad_removed = {i for i in removed if not truth[i]}
        counts = entry.get("counts", {})
        steps.append(AuditStep(
            step=entry["step"], rows_in=counts.get("in", v.num_rows), kept=v.num_rows, removed=counts.get("rejected", 0),
            labelled_in=len(entering), labelled_removed=len(removed),
            precision=Share(len(bad_removed), len(removed)), recall=Share(len(bad_removed), len(bad_in)),
            good_share=Share(sum(truth[i] for i in kept), len(kept))))
        entering = kept | (kept_ids & present)  # a row can come back (a mix of earlier versions)
    return Audit(ref, version.fingerprint, labels.origin, len(present), steps)


def write_audit(result: Audit, folder: Path) -> Path:
    """``audit.md`` and ``audit.json`` in ``folder`` (the run's report folder); the .md's path."""
    folder.mkdir(parents=True, exist_ok=True)
    md = folder / "audit.md"
    md.write_text(result.markdown() + "\n", encoding="utf-8")
    (folder / "audit.json").write_text(json.dumps(result.to_dict(), indent=1) + "\n", encoding="utf-8")
    return md

