"""Every script in benchmarks/ runs, at a tiny size, as a user runs it (``python
benchmarks/X.py ...`` from the repository root) and ends with its one JSON line, so that a
benchmark cannot silently stop working. Sizes are smoke sizes: nothing here asserts a speed
target, only that the figures the README promises are there and make sense. Each run has
its own store and bench cache (``CURATE_BENCH_CACHE``) in a temp dir; the model cache is
the session's, as conftest sets it for every test, so nothing reaches ~/.cache."""

from __future__ import annotations

import ast
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from .conftest import ROOT

BENCH = ROOT / "benchmarks"


def runnable_scripts() -> set[str]:
    """The scripts of benchmarks/ with an ``if __name__ == "__main__":`` entry (helper
    modules such as dedup_corpus.py have none)."""

    def is_main_guard(node: ast.stmt) -> bool:
        if not isinstance(node, ast.If) or not isinstance(node.test, ast.Compare):
            return False
        sides = [node.test.left, *node.test.comparators]
        return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
                and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))

    return {p.name for p in BENCH.glob("*.py") if any(is_main_guard(n) for n in ast.parse(p.read_text()).body)}


def positive(figures: dict, *keys: str) -> None:
    for key in keys:
        value = figures.get(key)
        assert isinstance(value, (int, float)) and math.isfinite(value) and value > 0, f"{key} = {value!r} in {figures}"


def share(figures: dict, *keys: str) -> None:
    for key in keys:
        value = figures.get(key)
        assert isinstance(value, (int, float)) and 0 <= value <= 1, f"{key} = {value!r} in {figures}"


# ---------------------------------------------------------------------------------------
# One smoke run per script: (tiny arguments, checks of its JSON). A new script needs one.
# ---------------------------------------------------------------------------------------


def smoke_rerun(folder: Path, request) -> list[str]:
    """A two-step recipe on a five-row jsonl file, stopped after its first step: seconds,
    where the main recipe cold takes minutes."""
    rows = [{"question": f"q{i}", "solution": f"the answer to question {i % 3} is {i % 3} because it is"}
            for i in range(5)]  # two exact duplicates
    (folder / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    recipe = folder / "tiny.yaml"
    recipe.write_text(textwrap.dedent("""\
        # python benchmarks/rerun.py --recipe tiny.yaml --repeat 1 --until exact_dedup
        name: tiny
        source: {type: jsonl, path: pool.jsonl, fields: {prompt: question, response: solution}}
        stages:
          - exact_dedup: {}
          - heuristic_filter: {min_words: 3}
        """))
    return ["--recipe", str(recipe), "--repeat", "1", "--until", "exact_dedup"]


def check_rerun(figures: dict, folder: Path) -> None:
    assert figures["until"] == "exact_dedup" and figures["recipe"].endswith("tiny.yaml")
    positive(figures, "cold_s", "cached_s", "force_s", "cached_over_cold", "target_cached_over_cold")


def smoke_dedup(folder: Path, request) -> list[str]:
    # 1,000 documents from 300 of the machine's files (reading all of them alone takes ~20 s);
    # the datasketch loops (~150 docs/s) on the first 200 rows, which also runs ours there.
    return ["--docs", "1000", "--max-files", "300", "--baseline-docs", "200", "--workers", "2"]


def check_dedup(figures: dict, folder: Path) -> None:
    assert figures["errors"] is None and figures["docs"] == 1000 and figures["datasketch_docs"] == 200
    positive(figures, "docs_per_s", "datasketch_docs_per_s", "rensa_docs_per_s", "datasketch_update_batch_docs_per_s",
             "ratio_vs_datasketch", "ratio_vs_rensa", "ratio_vs_datasketch_update_batch", "peak_rss_mb",
             "datasketch_peak_rss_mb", "rensa_peak_rss_mb", "datasketch_update_batch_peak_rss_mb", "truth_pairs",
             "target_ratio_vs_datasketch", "target_ratio_vs_rensa")
    share(figures, "precision", "recall", "f1", "removal_precision", "removal_recall", "removal_f1", "datasketch_f1",
          "rensa_f1", "datasketch_removal_f1", "rensa_removal_f1", "datasketch_update_batch_f1",
          "f1_at_datasketch_docs", "removal_f1_at_datasketch_docs")
    assert figures["f1"] > 0  # the corpus has injected near-duplicates: ours finds some
    assert list((folder / "bench").glob("*-files300.parquet")), "the corpus is cached in CURATE_BENCH_CACHE"


def smoke_lm_scoring(folder: Path, request) -> list[str]:
    # the session's tiny LM (trained once for the whole test run), 8 CHAMP texts
    return ["--rows", "8", "--batch-size", "4", "--repeat", "1", "--model", str(request.getfixturevalue("tiny_lm"))]


def check_lm_scoring(figures: dict, folder: Path) -> None:
    assert figures["rows"] == 8 and figures["batch_size"] == 4
    positive(figures, "window", "tokens", "baseline_tokens", "seconds", "baseline_seconds", "tokens_per_s",
             "baseline_tokens_per_s", "ratio", "target_ratio", "peak_rss_mb")


def smoke_select_target(folder: Path, request) -> list[str]:
    # 60 base texts embedded (not the ~1,500 of a real run), 2,000 candidates around them
    return ["--candidates", "2000", "--target", "50", "--budget", "200", "--base-texts", "60"]


def check_select_target(figures: dict, folder: Path) -> None:
    assert "errors" not in figures, figures["errors"]
    assert (figures["candidates"], figures["target"], figures["budget"]) == (2000, 50, 200)
    positive(figures, "dim", "seconds", "iterations", "peak_rss_mb", "baseline_seconds", "baseline_iterations",
             "baseline_peak_rss_mb", "ratio", "mean_distance_to_target", "random_mean_distance_to_target")
    share(figures, "top_overlap_with_baseline", "math_share", "random_math_share", "pool_math_share")
    assert list((folder / "bench").glob("select_base*.npz")), "the embeddings are cached in CURATE_BENCH_CACHE"


def smoke_scale(folder: Path, request) -> list[str]:
    # 1,000 and 3,000 documents from 300 files, blocks of 500 rows: both executors, both sizes
    return ["--docs", "1000,3000", "--max-files", "300", "--block-rows", "500", "--workers", "2"]


def check_scale(figures: dict, folder: Path) -> None:
    assert figures["errors"] is None and figures["docs"] == 3000
    positive(figures, "local_docs_per_s", "ray_docs_per_s", "local_peak_rss_mb", "ray_peak_rss_mb")
    # at 1,000 and 3,000 documents start-up costs dominate, so the exponent can come out below 0 here
    assert math.isfinite(figures["time_exponent"])
    assert figures["same_kept_ids"] is True and figures["same_fingerprint"] is True
    assert {(r["size"], r["executor"]) for r in figures["runs"]} == {(n, e) for n in (1000, 3000) for e in ("local", "ray")}
    assert all(r["processes"] > 2 for r in figures["runs"] if r["executor"] == "ray")  # the cluster's processes counted


def smoke_pretrain(folder: Path, request) -> list[str]:
    return ["--docs", "300", "--per-language", "30", "--html-pages", "10", "--workers", "2", "--classifier-docs", "300"]


def check_pretrain(figures: dict, folder: Path) -> None:
    assert figures["docs"] == 300 and figures["languages"] == 21 and figures["labelled_messages"] > 600
    assert figures["html_pages"] == 10
    positive(figures, *(f"{s}_{k}" for s in ("extract_text", "language_id", "line_filter", "pii_redact")
                        for k in ("docs_per_s", "baseline_docs_per_s", "ratio")), "peak_rss_mb")
    share(figures, "language_id_accuracy", "language_id_english_precision", "language_id_english_recall")
    assert figures["language_id_accuracy"] > 0.8  # far above chance (1 in 97), even on 30 messages a language
    assert set(figures["language_id_per_language"]) == {"en", "de", "fr", "es", "it", "pt", "nl", "pl", "ru", "sv", "cs",
                                                         "ja", "zh", "fi", "da", "tr", "uk", "hu", "ro", "ko", "vi"}
    assert figures["classifier_docs"] == 300
    for method in ("hashed_linear", "fasttext"):
        positive(figures, *(f"classifier_{method}_{k}" for k in ("train_s", "score_docs_per_s", "baseline_score_docs_per_s")))
        # a classifier of READMEs finds held-out READMEs far more often than picking at random
        assert figures[f"classifier_{method}_precision"] > 3 * figures["classifier_random_precision"]


def smoke_verify(folder: Path, request) -> list[str]:
    return ["--limit", "40"]  # the first 40 hand-labelled CHAMP solutions


def check_verify(figures: dict, folder: Path) -> None:
    assert figures["labelled"] == 40 and figures["labelled_correct"] > 0
    share(figures, "true_precision", "true_recall", "false_precision", "unknown_share", "baseline_true_precision",
          "baseline_true_recall", "baseline_false_precision", "baseline_unknown_share")
    positive(figures, "rows_per_s", "baseline_rows_per_s", "ratio")
    assert figures["true_recall"] > 0.5  # the stage verifies most of the right answers, even on 40 rows


# Started in this order; lm_scoring last, so that the others run while the session's tiny LM
# trains (when no earlier test has trained it yet).
SMOKE = {
    "rerun.py": (smoke_rerun, check_rerun),
    "dedup.py": (smoke_dedup, check_dedup),
    "select_target.py": (smoke_select_target, check_select_target),
    "scale.py": (smoke_scale, check_scale),
    "pretrain.py": (smoke_pretrain, check_pretrain),
    "verify.py": (smoke_verify, check_verify),
    "lm_scoring.py": (smoke_lm_scoring, check_lm_scoring),
}
TIMEOUT_S = 600  # per run, from its start


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory, session_cache, request):
    """The smoke runs of the selected scripts, all started at once: each is mostly one
    process at a time, so side by side they use both cores and the file takes about half as
    long. {script: (process, its folder, the time by which it must end)}. Each run has its
    own store and bench cache; the model cache is the session's, as for every test. Output
    goes to files, not pipes, so that no run waits for its reader."""
    selected = {item.callspec.params["script"] for item in request.session.items
                if getattr(item, "originalname", None) == "test_benchmark_runs_at_a_tiny_size_and_prints_its_figures"}
    runs: dict[str, tuple[subprocess.Popen, Path, float]] = {}
    for script, (args, _) in SMOKE.items():
        if script not in selected:
            continue
        folder = tmp_path_factory.mktemp(Path(script).stem)
        env = {**os.environ, "CURATE_STORE": str(folder / "store"), "CURATE_CACHE": str(session_cache),
               "HF_DATASETS_CACHE": str(folder / "hf_datasets_cache"), "CURATE_BENCH_CACHE": str(folder / "bench")}
        cmd = [sys.executable, str(Path("benchmarks") / script), *args(folder, request)]
        with open(folder / "stdout", "w") as out, open(folder / "stderr", "w") as err:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        runs[script] = proc, folder, time.monotonic() + TIMEOUT_S
    yield runs
    for proc, _, _ in runs.values():
        if proc.poll() is None:  # a test failed before its run ended: stop the run's whole process group
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def figures_of(script: str, proc: subprocess.Popen, folder: Path, deadline: float) -> dict:
    """Wait for one run: it must exit 0 and print one JSON object as its last line."""
    try:
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pytest.fail(f"{script} still running after {TIMEOUT_S} s:\n{(folder / 'stderr').read_text()[-4000:]}")
    err = (folder / "stderr").read_text()
    assert proc.returncode == 0, f"{script} exited {proc.returncode}:\n{err[-4000:]}"
    lines = (folder / "stdout").read_text().strip().splitlines()
    assert lines, f"{script} printed nothing:\n{err[-4000:]}"
    figures = json.loads(lines[-1])
    assert isinstance(figures, dict), lines[-1]
    return figures


def test_every_runnable_benchmark_has_a_smoke_run():
    assert runnable_scripts() == set(SMOKE), "add a smoke run (tiny arguments and checks) to SMOKE for each script"


def test_no_benchmark_shadows_a_standard_library_module():
    # `python benchmarks/X.py` puts benchmarks/ first on sys.path: a select.py there broke
    # every other script's `import subprocess`
    shadowing = {p.stem for p in BENCH.glob("*.py")} & set(sys.stdlib_module_names)
    assert not shadowing, f"rename benchmarks/{{{','.join(sorted(shadowing))}}}.py"


@pytest.mark.parametrize("script", list(SMOKE))
def test_benchmark_runs_at_a_tiny_size_and_prints_its_figures(script, smoke_runs):
    proc, folder, deadline = smoke_runs[script]
    _, check = SMOKE[script]
    check(figures_of(script, proc, folder, deadline), folder)
