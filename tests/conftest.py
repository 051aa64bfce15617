"""Shared fixtures: every test gets its own store and caches, and nothing reaches a hub."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    """One model cache per test session (the tiny LM, model-call caches): trained and paid
    for once, shared by every test and by the CLI runs they start. ``CURATE_TEST_CACHE``
    names a folder to keep it in across sessions (local iteration; CI starts empty)."""
    keep = os.environ.get("CURATE_TEST_CACHE")
    return Path(keep) if keep else tmp_path_factory.mktemp("curate_cache")


@pytest.fixture(autouse=True)
def isolated_store(tmp_path, monkeypatch, session_cache):
    """Point the default store and the Hugging Face caches at this test's temp dir, and the
    model cache at the session's."""
    store = tmp_path / "store"
    monkeypatch.setenv("CURATE_STORE", str(store))
    monkeypatch.setenv("CURATE_CACHE", str(session_cache))
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets_cache"))
    return store


@pytest.fixture(scope="session")
def tiny_lm(session_cache) -> Path:
    """A real causal LM: the tiny Llama recipes/math_sft.yaml trains as its reference LM (on
    CHAMP's reference solutions), trained once per session into the session cache, so the
    end-to-end runs of the recipe reuse it."""
    from curate.models.hf import model_dir
    from curate.recipe import load_recipe

    spec = load_recipe(ROOT / "recipes" / "math_sft.yaml").models["ref_lm"]
    return model_dir(spec, root=str(session_cache))


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run the installed ``curate`` entry point as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "curate", *args], cwd=cwd or ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=timeout,
    )
