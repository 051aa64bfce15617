"""A non-editable install works: ``pip install .`` into a fresh virtual environment, then the
main recipe run from another folder -- nothing may find its files relative to the checkout."""

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from .conftest import ROOT

pytestmark = pytest.mark.slow


def test_pip_install_dot_then_the_main_recipe_runs_from_another_folder(tmp_path, session_cache):
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
    env = {**os.environ, "CURATE_CACHE": str(session_cache), "HF_DATASETS_CACHE": str(tmp_path / "hf"),
           "PYTHONPATH": "", "CURATE_STORE": str(elsewhere / ".curate")}
    where = subprocess.run([str(python), "-c", "import curate, pipelines.math_sft as m; print(curate.__file__); "
                            "print(m.HELDOUT, m.HELDOUT.is_file())"], cwd=elsewhere, capture_output=True, text=True,
                           env=env)
    assert where.returncode == 0, where.stderr
    assert str(site) in where.stdout and str(ROOT / "curate") not in where.stdout  # the installed copy
    assert where.stdout.strip().endswith("True")  # the held-out set ships inside the package

    recipe = ROOT / "recipes" / "math_sft.yaml"
    curate = venv / "bin" / "curate"
    ok = subprocess.run([str(curate), "validate", str(recipe)], cwd=elsewhere, capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    # the chain up to decontaminate: the steps that read the packaged held-out problems (the
    # rest of the job is the e2e test's)
    run = subprocess.run([str(curate), "run", str(recipe), "--until", "decontaminate"], cwd=elsewhere,
                         capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "rows in math_sft" in run.stdout
    assert (elsewhere / ".curate" / "names").is_dir() and not (ROOT / "recipes" / ".curate").exists()
