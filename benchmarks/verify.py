"""verify's verdicts against hand labels: how often "true" is right and how many right answers it finds.

    python benchmarks/verify.py [--labels benchmarks/data/champ_answer_labels.jsonl] [--limit N] [--show K]

The labelled set: 400 CHAMP model solutions drawn at random (seed 17) from the 19,440 the
``champ`` source reads, each labelled by an annotator who read the solution's last ~1,800
characters (the conclusion and the one-sentence summary) and the reference answer, without
running any extraction code: ``correct`` (the final answer it commits to is equivalent to
the reference), ``wrong`` (a definite other answer, partly right included) or ``none`` (no
definite answer: cut off, a method only, hedged, body and summary disagreeing). The file
also holds what the annotator read as the stated answer and a note on hard cases.

Both tools see the whole response, as the ``verify`` stage does in the main job:

* ``curate``: the ``verify`` stage (``kind: math``, its defaults) on the rows;
* ``math_verify`` (Hugging Face's math-verify, the peer's checker): ``parse`` of the
  reference and of the response (its default extraction: LaTeX and plain expressions,
  last match), then ``verify(gold, answer)``; an exception or nothing parsed is unknown.

Figures, for each tool: *true precision* = share of the rows it calls true that are labelled
correct; *true recall* = share of the rows labelled correct that it calls true; *false
precision* = share of the rows it calls false that are labelled wrong or none (a solution
with no answer is not a right one); *unknown share*; rows/s. Wilson 95% intervals in the
table. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LABELS = ROOT / "benchmarks" / "data" / "champ_answer_labels.jsonl"

from curate.algorithms.intervals import wilson_interval as wilson  # noqa: E402 (after the path is set)


def figures(verdicts: list[str], labels: list[str]) -> dict:
    said_true = [lab for v, lab in zip(verdicts, labels) if v == "true"]
    said_false = [lab for v, lab in zip(verdicts, labels) if v == "false"]
    correct = [v for v, lab in zip(verdicts, labels) if lab == "correct"]
    tp, fp_ok = said_true.count("correct"), sum(lab != "correct" for lab in said_false)
    return {
        "true_precision": tp / len(said_true) if said_true else 1.0, "true_precision_ci": wilson(tp, len(said_true)),
        "true_recall": correct.count("true") / len(correct) if correct else 1.0,
        "true_recall_ci": wilson(correct.count("true"), len(correct)),
        "false_precision": fp_ok / len(said_false) if said_false else 1.0, "false_precision_ci": wilson(fp_ok, len(said_false)),
        "said_true": len(said_true), "said_false": len(said_false), "unknown_share": verdicts.count("unknown") / len(verdicts),
    }


def run_curate(table) -> tuple[list[str], list[str | None], float]:
    from curate.stages import Verify

    t0 = time.perf_counter()
    out = Verify()(table)
    wall = time.perf_counter() - t0
    kept = out.kept
    by_id = dict(zip(kept.column("id").to_pylist(), zip(kept.column("verified").to_pylist(),
                                                         kept.column("extracted_answer").to_pylist())))
    got = [by_id[i] for i in table.column("id").to_pylist()]
    return [v for v, _ in got], [a for _, a in got], wall


def run_math_verify(table) -> tuple[list[str], float]:
    from math_verify import parse, verify

    responses = [m[-1]["content"] for m in table.column("messages").to_pylist()]
    refs = table.column("answer").to_pylist()
    t0 = time.perf_counter()
    out = []
    for response, ref in zip(responses, refs):
        try:
            gold, answer = parse(ref), parse(response)
            out.append("unknown" if not gold or not answer else "true" if verify(gold, answer) else "false")
        except Exception:  # noqa: BLE001 -- the peer's failure is an unknown verdict, as ours is
            out.append("unknown")
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--labels", type=Path, default=LABELS)
    ap.add_argument("--limit", type=int, default=None, help="the first N labelled rows only (smoke runs)")
    ap.add_argument("--show", type=int, default=0, help="print up to K disagreements of each kind")
    args = ap.parse_args()

    import pyarrow as pa

    from curate.sources.champ import ChampSource

    labelled = [json.loads(line) for line in args.labels.read_text().splitlines() if line.strip()][: args.limit]
    want = {r["id"]: k for k, r in enumerate(labelled)}
    pool = ChampSource().read().kept
    rows = [r for r in pool.select(["id", "messages", "answer"]).to_pylist() if r["id"] in want]
    missing = set(want) - {r["id"] for r in rows}
    if missing:
        sys.exit(f"{args.labels}: {len(missing)} labelled ids are not rows of the champ source, e.g. {sorted(missing)[0]!r}")
    rows.sort(key=lambda r: want[r["id"]])
    table = pa.Table.from_pylist(rows)
    labels = [r["label"] for r in labelled]

    ours, extracted, ours_s = run_curate(table)
    theirs, theirs_s = run_math_verify(table)
    results = {"curate": figures(ours, labels), "math_verify": figures(theirs, labels)}
    print(f"{len(labels)} labelled solutions: {labels.count('correct')} correct, {labels.count('wrong')} wrong, "
          f"{labels.count('none')} without an answer")
    print(f"{'tool':<12} {'true precision':>22} {'true recall':>22} {'false precision':>22} {'unknown':>8}")
    for name, f in results.items():
        cell = lambda key: f"{f[key]:.3f} [{f[key + '_ci'][0]:.2f}, {f[key + '_ci'][1]:.2f}]"  # noqa: E731
        print(f"{name:<12} {cell('true_precision'):>22} {cell('true_recall'):>22} {cell('false_precision'):>22} "
              f"{f['unknown_share']:>8.1%}")
    if args.show:
        ids = table.column("id").to_pylist()
        for kind, test in (("called true, labelled otherwise", lambda v, lab: v == "true" and lab != "correct"),
                           ("labelled correct, not called true", lambda v, lab: lab == "correct" and v != "true"),
                           ("called false, labelled correct", lambda v, lab: v == "false" and lab == "correct")):
            hits = [k for k, (v, lab) in enumerate(zip(ours, labels)) if test(v, lab)]
            print(f"-- {kind}: {len(hits)}")
            for k in hits[: args.show]:
                print(f"   {ids[k]}: {ours[k]}, extracted {extracted[k]!r}, reference {rows[k]['answer']!r}, "
                      f"annotator read {labelled[k]['stated']!r}")
    line = {"labelled": len(labels), "labelled_correct": labels.count("correct")}
    for name, f in results.items():
        prefix = "" if name == "curate" else "baseline_"
        line.update({f"{prefix}{k}": (v if not isinstance(v, tuple) else [round(x, 4) for x in v]) for k, v in f.items()})
    line.update({"rows_per_s": len(labels) / ours_s, "baseline_rows_per_s": len(labels) / theirs_s,
                 "ratio": theirs_s / ours_s})
    print(json.dumps(line))


if __name__ == "__main__":
    main()
