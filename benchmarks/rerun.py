"""Cold run vs. cached rerun of a recipe, through the CLI as a user runs it.

    python benchmarks/rerun.py [--recipe recipes/math_sft.yaml] [--repeat 3] [--until STEP]

The baseline is the cold run (every step computed); the target is a rerun with nothing
changed costing under a third of it. ``--until STEP`` stops every run after that step (as
``curate run --until`` does: no fine-tuning either); with a small ``--recipe`` it makes a
smoke run of seconds (the main recipe cold takes about 8 minutes here). Last line: one JSON
object.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed(*args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "curate", *args], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # show why, not just the exit status
        sys.exit(f"curate {' '.join(args)} failed (exit {done.returncode}):\n{done.stderr or done.stdout}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="recipes/math_sft.yaml")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--until", default=None, help="stop every run after this step (default: the whole recipe)")
    args = ap.parse_args()
    until = ["--until", args.until] if args.until else []
    cold, cached, forced = [], [], []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as store:
            cold.append(timed("run", args.recipe, "--store", store, *until))
            cached.append(timed("run", args.recipe, "--store", store, *until))
            forced.append(timed("run", args.recipe, "--store", store, "--force", *until))
    c, h, f = statistics.median(cold), statistics.median(cached), statistics.median(forced)
    print(f"cold {c:.2f} s, cached rerun {h:.2f} s, --force {f:.2f} s (median of {args.repeat})")
    print(json.dumps({"recipe": args.recipe, "until": args.until, "cold_s": round(c, 3), "cached_s": round(h, 3),
                      "force_s": round(f, 3), "cached_over_cold": round(h / c, 4), "target_cached_over_cold": 0.3333}))


if __name__ == "__main__":
    main()
