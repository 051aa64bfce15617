"""The multi-node path: a cluster started with ``ray start --head`` (its own processes, as on
a real head node), a recipe run against it through ``RAY_ADDRESS``, the cluster stopped at
the end. The versions are the local run's."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from curate.store import Store

from .conftest import run_cli

pytest.importorskip("ray", reason="the cluster test needs curate[ray]")
pytestmark = pytest.mark.slow

RECIPE = """
name: clustered
source: {type: champ, include_model_solutions: true, limit_problems: 60}
executor: {type: local, block_rows: 1000}
stages:
  - exact_dedup
  - minhash_dedup
  - heuristic_filter
  - decontaminate: {eval_sets: [%s]}
  - verify
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def cluster(tmp_path):
    """A head node on a free local port (2 CPUs, no dashboard); stopped, with its processes, at
    the end. Ray's default token authentication stays on: a driver naming the address sets
    RAY_AUTH_MODE=token and finds the token ``ray start`` wrote (~/.ray/auth_token)."""
    ray = str(Path(sys.executable).parent / "ray")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    # its own temp dir (short: Ray's socket paths must fit in 107 bytes), so that its processes are
    # found by it and stopped alone -- `ray stop` would stop every Ray process of the machine,
    # another test's cluster too
    temp = tempfile.mkdtemp(prefix="rayc", dir="/tmp")
    started = subprocess.run([ray, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                              "--disable-usage-stats", f"--temp-dir={temp}"], capture_output=True, text=True, env=env,
                             timeout=180)
    assert started.returncode == 0, started.stdout + started.stderr
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop_processes_of(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_processes_of(temp: str, timeout: float = 5) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s, to every process whose command line names
    ``temp`` (the head node's GCS, raylet, workers...)."""
    def pids() -> list[int]:
        out = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if temp.encode() in (entry / "cmdline").read_bytes():
                        out.append(int(entry.name))
                except OSError:
                    pass
        return out

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        while pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not pids():
            return


def test_a_recipe_runs_on_a_cluster_started_with_ray_start_to_the_local_versions(cluster, tmp_path):
    heldout = Path(__file__).resolve().parents[1] / "pipelines" / "data" / "champ_heldout.jsonl"
    recipe = tmp_path / "clustered.yaml"
    recipe.write_text(RECIPE % heldout)
    # driver_pairs=0: minhash_dedup verifies and clusters its candidate pairs in the cluster's tasks
    # (the shuffles of minhash_cluster), and the local run in the driver: the same versions
    on_cluster = run_cli("run", str(recipe), "--store", str(tmp_path / "ray"), "--executor", "ray",
                         "--set", "executor.driver_pairs=0",
                         env={"RAY_ADDRESS": cluster, "RAY_AUTH_MODE": "token"}, timeout=600)
    assert on_cluster.returncode == 0, on_cluster.stderr
    local = run_cli("run", str(recipe), "--store", str(tmp_path / "local"), timeout=600)
    assert local.returncode == 0, local.stderr

    for step in ("exact_dedup", "minhash_dedup", "heuristic_filter", "decontaminate", "verify"):  # the dedups:
        # their plans' maps and reduces ran as the cluster's tasks
        a, b = Store(tmp_path / "ray").resolve(f"clustered/{step}"), Store(tmp_path / "local").resolve(f"clustered/{step}")
        assert a.manifest["executor"] == {"type": "ray", "block_rows": 1000}  # made by the cluster's tasks
        assert a.fingerprint == b.fingerprint and a.num_rows == b.num_rows
        assert a.table().column("id").to_pylist() == b.table().column("id").to_pylist()
        assert a.rejected().select(["id", "reason", "detail"]).to_pylist() == b.rejected().select(
            ["id", "reason", "detail"]).to_pylist()
        assert a.manifest["stats"] == b.manifest["stats"] and a.manifest["rejections"] == b.manifest["rejections"]
    assert Store(tmp_path / "ray").resolve("clustered/minhash_dedup").manifest["counts"]["rejected"] > 0
    assert Store(tmp_path / "ray").resolve("clustered").num_rows > 100


def test_a_wrong_cluster_address_fails_at_once_with_the_address(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("name: r\nsource: {type: champ, limit_problems: 2}\nstages: [heuristic_filter]\n")
    port = free_port()  # nothing listens there
    out = run_cli("run", str(recipe), "--store", str(tmp_path / "s"), "--executor", "ray",
                  env={"RAY_ADDRESS": f"127.0.0.1:{port}"}, timeout=180)
    assert out.returncode != 0
    assert f"127.0.0.1:{port}" in out.stderr and "Traceback" not in out.stderr
