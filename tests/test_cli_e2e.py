"""End-to-end: the main job through the CLI, exactly as the README runs it."""

import json
import math
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from curate.store import Store

from .conftest import ROOT, run_cli

pytestmark = pytest.mark.slow
RECIPE = "recipes/math_sft.yaml"


def versions_of(store: Path) -> list[dict]:
    proc = run_cli("datasets", "list", "--all", "--json", "--store", str(store))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def main_run(tmp_path_factory, session_cache):
    """One cold run of the main job, shared by the tests of this module: (store, CLI result,
    seconds). A module fixture is set up before the per-test environment, so the model cache
    is named here."""
    store = tmp_path_factory.mktemp("main_job") / "store"
    env = {"CURATE_CACHE": str(session_cache), "HF_DATASETS_CACHE": str(store.parent / "hf")}
    t0 = time.perf_counter()
    first = run_cli("run", RECIPE, "--store", str(store), env=env, timeout=1800)  # ~8-15 min on 2 cores
    return store, first, time.perf_counter() - t0


def test_main_job_runs_caches_and_recomputes_on_force(main_run):
    isolated_store, first, t_first = main_run
    assert first.returncode == 0, first.stderr
    assert "rows in" in first.stdout and "heuristic_filter" in first.stdout  # the funnel table
    # the recipe's audit: against CHAMP's human annotations, after the funnel and in the reports
    assert first.stdout.index("Audit of math_sft") > first.stdout.index("heuristic_filter")
    assert "good share: pool 17.8% [14.8%, 21.2%] (96/540)" in first.stdout
    assert (isolated_store / "reports" / "math_sft" / "audit.md").is_file()

    listed = {d["name"]: d for d in json.loads(run_cli("datasets", "list", "--json", "--store", str(isolated_store)).stdout)}
    assert listed["math_sft"]["rows"] > 0

    t0 = time.perf_counter()
    again = run_cli("run", RECIPE, "--store", str(isolated_store))
    t_again = time.perf_counter() - t0
    assert again.returncode == 0, again.stderr
    assert "every step was cached" in again.stdout
    assert again.stdout.count(" yes ") >= 3 and " no " not in again.stdout.split("\n", 1)[1]
    assert t_again < t_first / 3, (t_first, t_again)

    assert "no model calls" in again.stdout
    # nor is a model trained again: the finetune step's models are keyed by data, base and settings
    assert "finetune math_sft: cached" in again.stdout and "finetune math_sft/source: cached" in again.stdout

    # --force recomputes what is cached (the first steps here; the SIGKILL test recomputes the later ones
    # and checks that the reference LM is not asked again)
    forced = run_cli("run", RECIPE, "--store", str(isolated_store), "--force", "--until", "minhash_dedup")
    assert forced.returncode == 0 and "every step was cached" not in forced.stdout
    assert re.search(r"exact_dedup .* no ", forced.stdout) and re.search(r"minhash_dedup .* no ", forced.stdout)

    # verify counts the wrong solutions (and the funnel shows it) and drops what it cannot check; difficulty measures
    # fail rates with the wrong ones, then drops them; rectify reports what it filtered and corrected
    ver = json.loads(run_cli("datasets", "show", "math_sft/verify", "--json", "--store", str(isolated_store)).stdout)
    assert ver["stats"]["verified_false"] > 1000
    assert ver["rejections"] == {"unverifiable": ver["stats"]["verified_unknown"]} and ver["stats"]["verified_unknown"] > 1000
    assert f"verified_false {ver['stats']['verified_false']:,}" in first.stdout
    dif = json.loads(run_cli("datasets", "show", "math_sft/difficulty", "--json", "--store", str(isolated_store)).stdout)
    assert dif["rejections"]["wrong_answer"] == ver["stats"]["verified_false"] and dif["rejections"]["not_sampled"] > 0
    assert dif["stats"]["prompts"] > 200
    rect = json.loads(run_cli("datasets", "show", "math_sft/rectify", "--json", "--store", str(isolated_store)).stdout)
    s = rect["stats"]
    assert s["kept"] == rect["counts"]["kept"] and s["filtered"] == rect["counts"]["rejected"]
    assert s["trusted"] + s["scored"] == rect["counts"]["in"] and s["flagged"] == s["corrected"] + s["filtered"]

    # every version: counts add up, and every removed id is in its rejected parquet with a reason
    for d in versions_of(isolated_store):
        m = json.loads(run_cli("datasets", "show", d["name"], "--json", "--store", str(isolated_store)).stdout)
        c = m["counts"]
        assert c["in"] == c["kept"] + c["rejected"], d["name"]
        for entry in m["lineage"]:
            assert entry["counts"]["in"] == entry["counts"]["kept"] + entry["counts"]["rejected"]
        vdir = isolated_store / "versions" / m["fingerprint"]
        rejected = pq.read_table(vdir / "rejected")  # plain Parquet parts, read with pyarrow alone
        assert rejected.num_rows == c["rejected"]
        assert all(rejected.column("reason").to_pylist()) and set(rejected.column("stage").to_pylist()) <= {m["stage"]["step"]}
        if m["parents"]:
            parent_ids = set(pq.read_table(isolated_store / "versions" / m["parents"][0] / "data").column("id").to_pylist())
            kept_ids = set(pq.read_table(vdir / "data").column("id").to_pylist())
            assert parent_ids - kept_ids == set(rejected.column("id").to_pylist())


def test_main_job_selects_toward_the_category_it_names_and_allocates_by_difficulty(main_run):
    store, first, _ = main_run
    assert first.returncode == 0, first.stderr

    def rows(step: str) -> list[dict]:
        m = json.loads(run_cli("datasets", "show", f"math_sft/{step}", "--json", "--store", str(store)).stdout)
        return pq.read_table(store / "versions" / m["fingerprint"] / "data").to_pylist()

    checked, allocated, selected = rows("verify"), rows("difficulty"), rows("select_target")
    share = lambda rs: sum(r["category"] == "Number-Theory" for r in rs) / len(rs)  # noqa: E731
    assert share(selected) >= 0.9 and share(allocated) < 0.5, (share(selected), share(allocated))
    assert all(r["selection_score"] is not None for r in selected)
    # Prop2Diff, exactly: each problem keeps min(its correct rows, max(1, ceil(16 d / max d))) solutions (verify
    # dropped the unchecked ones), a problem without an estimate counting as the median difficulty
    available = Counter(r["problem_id"] for r in checked if r["verified"] != "false")
    kept = Counter(r["problem_id"] for r in allocated)
    # a problem's difficulty: the share of its checked solutions that are wrong (all of them, for a problem
    # no solution of which is left to keep)
    verdicts = Counter((r["problem_id"], r["verified"]) for r in checked)
    difficulty = {p: verdicts[p, "false"] / (verdicts[p, "false"] + verdicts[p, "true"])
                  for p in {r["problem_id"] for r in checked} if verdicts[p, "false"] + verdicts[p, "true"]}
    assert all(r["difficulty"] == pytest.approx(difficulty[r["problem_id"]]) for r in allocated)
    known = list(difficulty.values())
    top, median = max(known), statistics.median(known)
    for problem, n in available.items():
        d = difficulty.get(problem, median)
        assert kept[problem] == min(n, max(1, math.ceil(16 * d / top - 1e-9))), problem
    # so among problems with 16 rows to choose from, the hardest tenth keep 3x the solutions of the easiest
    full = sorted((difficulty[p], kept[p]) for p, n in available.items() if n >= 16 and difficulty[p] is not None)
    tenth = max(1, len(full) // 10)
    assert sum(k for _, k in full[-tenth:]) >= 3 * sum(k for _, k in full[:tenth])


def test_main_job_ends_with_finetune_and_eval_and_writes_the_comparison_table(main_run):
    store, first, _ = main_run
    assert first.returncode == 0, first.stderr
    show = lambda ref: json.loads(run_cli("datasets", "show", ref, "--json", "--store", str(store)).stdout)  # noqa: E731
    listed = run_cli("models", "list", "--json", "--store", str(store))
    assert listed.returncode == 0, listed.stderr
    models = {m["name"]: m for m in json.loads(listed.stdout)}
    # the curated set and the raw pool, each trained the same way from the same base
    assert set(models) == {"math_sft", "math_sft/source"}
    assert models["math_sft"]["dataset"]["fingerprint"] == show("math_sft")["fingerprint"]
    assert models["math_sft/source"]["dataset"]["fingerprint"] == show("math_sft/source")["fingerprint"]
    assert len({m["base"]["identity"] for m in models.values()}) == 1
    for m in models.values():
        assert m["train"]["steps"] == 100 and m["train"]["final_loss"] < m["train"]["first_loss"], m["train"]
        model_dir = store / "models" / m["fingerprint"]
        log = [json.loads(line) for line in (model_dir / "log.jsonl").read_text().splitlines()]
        assert [e["step"] for e in log] == list(range(1, 101))
        evals = [json.loads(p.read_text()) for p in (model_dir / "evals").glob("*/eval.json")]
        assert len(evals) == 1 and evals[0]["n"] == 10 and evals[0]["ci_low"] <= evals[0]["accuracy"] <= evals[0]["ci_high"]
        assert evals[0]["loss"] > 0 and evals[0]["loss_tokens"] > 1000
    table = (store / "reports" / "math_sft" / "comparison.md").read_text()
    lines = [line for line in table.splitlines() if line.startswith("| ")]  # the header and one row per model
    assert "accuracy [95% CI]" in lines[0] and "held-out loss" in lines[0]
    labels = [line.split("|")[1].strip() for line in lines[1:]]
    assert labels == ["ref_lm (base, not fine-tuned)", "math_sft", "math_sft/source"]
    assert all(re.search(r"\d+\.\d% \[\d+\.\d, \d+\.\d\] \| \d+ / 10 \|", line) for line in lines[1:]), table
    assert table.strip() in first.stdout.replace("\r", "")


def test_sigkill_during_a_later_stage_then_rerun_matches_uninterrupted(tmp_path, main_run):
    clean_store, clean, _ = main_run
    killed_store = tmp_path / "killed"
    assert clean.returncode == 0, clean.stderr
    final = json.loads(run_cli("datasets", "show", "math_sft", "--json", "--store", str(clean_store)).stdout)["fingerprint"]

    proc = subprocess.Popen([sys.executable, "-m", "curate", "run", RECIPE, "--store", str(killed_store)],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = killed_store / "names" / "math_sft%2Fexact_dedup.json"  # exact_dedup done: heuristic_filter is running
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = [d["name"] for d in versions_of(killed_store)]
    assert "math_sft" not in names, "the run finished before it could be killed; the test proved nothing"
    assert "math_sft/exact_dedup" in names

    # the chain only (--until its last step): the finetune step after it is another test's subject. It resumes
    # on Ray (a cluster of this machine, started for the run): the row-wise steps are Ray tasks, and every
    # version is the uninterrupted local run's -- same fingerprints, same rows in the same order, same rejects
    resumed = run_cli("run", RECIPE, "--store", str(killed_store), "--until", "rectify", "--executor", "ray",
                      timeout=1200)
    assert resumed.returncode == 0, resumed.stderr
    show = json.loads(run_cli("datasets", "show", "math_sft/rectify", "--json", "--store", str(killed_store)).stdout)
    assert show["fingerprint"] == final
    # (rectify is left out of the row comparison: its confidence is not reproducible run to run yet --
    # measured in CI, 30 of 392 rows got a different consistency with every model answer cached; see issue 15's note)
    for step in ("minhash_dedup", "heuristic_filter", "decontaminate", "verify", "difficulty", "select_target",
                 "perplexity_filter"):
        on_ray, local = Store(killed_store).resolve(f"math_sft/{step}"), Store(clean_store).resolve(f"math_sft/{step}")
        assert on_ray.fingerprint == local.fingerprint
        assert on_ray.table().column("id").to_pylist() == local.table().column("id").to_pylist()
        assert (on_ray.rejected().select(["id", "reason", "detail"]).to_pylist()
                == local.rejected().select(["id", "reason", "detail"]).to_pylist())
        assert on_ray.manifest["stats"] == local.manifest["stats"]
    assert Store(killed_store).resolve("math_sft/verify").manifest["executor"]["type"] == "ray"
    # every later step was computed, but the reference LM was not asked again: its answers are cached on disk
    scored = json.loads(run_cli("datasets", "show", "math_sft/select_target", "--json", "--store",
                                str(killed_store)).stdout)["counts"]["kept"]
    answered = re.search(r"ref_lm: 0 model calls, ([\d,]+) answered from the cache", resumed.stdout)
    assert answered, resumed.stdout
    # perplexity of every selected row, plus rectify's samples and reflections
    rect = json.loads(run_cli("datasets", "show", "math_sft/rectify", "--json", "--store", str(killed_store)).stdout)
    assert int(answered.group(1).replace(",", "")) >= scored + 2 * rect["stats"]["scored"]
    # only complete versions exist: each versions/ dir has its manifest, and tmp/ holds nothing of the dead run
    for vdir in (killed_store / "versions").iterdir():
        assert (vdir / "manifest.json").is_file()
    assert not list((killed_store / "tmp").glob(f"*.{proc.pid}.*"))


def test_bad_jsonl_rows_are_rejected_with_their_line_and_the_run_completes(tmp_path):
    good = "The committee met on a grey morning to review the budget and the cost of the new bridge for the town."
    lines = [
        json.dumps({"question": "q1", "solution": good}),
        '{"question": "q2", "solution": "broken',                      # line 2: bad JSON
        json.dumps({"question": "q3"}),                                # line 3: missing mapped field
        json.dumps({"question": "q4", "solution": "   "}),            # line 4: empty response
        json.dumps({"question": "q5", "solution": good + " Again."}),
    ]
    (tmp_path / "pool.jsonl").write_text("\n".join(lines) + "\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: bad_input\nsource:\n  type: jsonl\n  path: pool.jsonl\n"
                      "  fields: {prompt: question, response: solution}\nstages:\n  - exact_dedup: {}\n")
    proc = run_cli("run", str(recipe), "--store", str(tmp_path / "s"))
    assert proc.returncode == 0, proc.stderr
    src = json.loads(run_cli("datasets", "show", "bad_input/source", "--json", "--store", str(tmp_path / "s")).stdout)
    rejected = pq.read_table(tmp_path / "s" / "versions" / src["fingerprint"] / "rejected").to_pylist()
    by_line = {r["line"]: r for r in rejected}
    assert set(by_line) == {2, 3, 4}
    assert by_line[2]["reason"] == "bad_json" and "line 2" in by_line[2]["detail"]
    assert by_line[3]["reason"] == "missing_field" and "line 3" in by_line[3]["detail"]
    assert by_line[4]["reason"] == "empty_text" and "line 4" in by_line[4]["detail"]
    assert src["counts"] == {"in": 5, "kept": 2, "rejected": 3, "added": 0}


def test_export_diff_and_show_from_the_cli(tmp_path, tiny_lm):
    store = str(tmp_path / "s")
    recipe = tmp_path / "small.yaml"
    recipe.write_text("name: small\nsource: {type: champ, limit_problems: 3}\npipeline: math_sft\n"
                      f"models:\n  ref_lm: {{backend: transformers, model: {tiny_lm}}}\n")
    assert run_cli("run", str(recipe), "--store", store).returncode == 0
    jsonl = tmp_path / "out.jsonl"
    assert run_cli("datasets", "export", "small", "--format", "jsonl", "--out", str(jsonl), "--store", store).returncode == 0
    first = json.loads(jsonl.read_text().splitlines()[0])
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
    hf = tmp_path / "hf"
    assert run_cli("datasets", "export", "small", "--format", "hf", "--out", str(hf), "--store", store).returncode == 0
    import datasets

    assert datasets.load_from_disk(str(hf)).num_rows == len(jsonl.read_text().splitlines())
    d = json.loads(run_cli("datasets", "diff", "small/source", "small", "--json", "--store", store).stdout)
    assert d["only_in_b"] == 0 and d["only_in_a"] == d["a"]["rows"] - d["b"]["rows"] and d["changed"] == 0
    shown = run_cli("datasets", "show", "small", "--store", store)
    assert shown.returncode == 0 and "lineage" in shown.stdout
    rj = run_cli("datasets", "rejects", "small/exact_dedup", "--json", "--store", store)
    removed = json.loads(rj.stdout)
    assert rj.returncode == 0 and removed and all(r["reason"] == "exact_duplicate" for r in removed)
    cal = run_cli("dedup-calibrate", "small/source", "--json", "--store", store)
    assert cal.returncode == 0, cal.stderr
    assert json.loads(cal.stdout)["settings"]["bands"] == 21
    bad = run_cli("datasets", "show", "smal", "--store", store)
    assert bad.returncode == 2 and "did you mean 'small'" in bad.stderr and "Traceback" not in bad.stderr


def test_pip_install_dot_then_the_main_recipe_runs_from_another_folder_to_the_same_versions(tmp_path, session_cache,
                                                                                            main_run):
    """``pip install .`` (not editable) into a fresh venv, then the main recipe run from another
    folder: nothing may find its files relative to the checkout. Against the store of the cold
    run above, every step up to decontaminate (the one that reads the packaged held-out
    problems) is found cached: the installed copy computes the same fingerprints."""
    store, _, _ = main_run
    # What `pip install .` reads, copied, so the build writes nothing into the checkout.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for package in ("curate", "pipelines"):
        shutil.copytree(ROOT / package, src / package, ignore=shutil.ignore_patterns("__pycache__"))

    # A fresh venv without pip; its dependencies come from this test environment's site-packages
    # (a .pth line: that folder's own .pth files, among them the editable install's finder, are
    # not run), and curate itself only from the wheel pip builds and installs.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                          "--no-build-isolation", str(src)], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stdout[-2000:] + pip.stderr[-2000:]
    assert list(site.glob("curate-*.dist-info")) and not list(site.glob("__editable__*"))

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "CURATE_CACHE": str(session_cache), "HF_DATASETS_CACHE": str(store.parent / "hf"),
           "PYTHONPATH": "", "CURATE_STORE": str(store)}
    where = subprocess.run([str(python), "-c", "import curate; from pipelines.math_sft import HELDOUT; "
                            "print(curate.__file__); print(HELDOUT, HELDOUT.is_file())"], cwd=elsewhere, capture_output=True, text=True,
                           env=env)
    assert where.returncode == 0, where.stderr
    assert str(site) in where.stdout and str(ROOT / "curate") not in where.stdout  # the installed copy
    assert where.stdout.strip().endswith("True")  # the held-out set ships inside the package

    recipe = ROOT / "recipes" / "math_sft.yaml"
    curate = venv / "bin" / "curate"
    ok = subprocess.run([str(curate), "validate", str(recipe)], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    run = subprocess.run([str(curate), "run", str(recipe), "--until", "decontaminate"], cwd=elsewhere,
                         capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "nothing to compute: every step was cached" in run.stdout
    assert not (elsewhere / ".curate").exists() and not list(elsewhere.iterdir())  # wrote nothing where it ran
