"""Scale-out: exact_dedup -> minhash_dedup -> heuristic_filter over 100k and 1M real documents,
streamed on this machine (``executor: local``) and on a local Ray cluster (``executor: ray``),
the same run both ways.

    python benchmarks/scale.py [--docs 100000,1000000] [--executors local,ray] [--workers 2]

Other flags: ``--block-rows N`` (rows a streamed step reads at a time; default the store's
10,000), ``--max-files N`` (the corpus from N of this machine's files: smoke runs, figures not
comparable), ``--memory-limit-mb`` (a run whose process tree passes it is killed and reported),
``--driver-pairs N`` (the Ray run's ``executor.driver_pairs``: 0 has minhash_dedup verify and
cluster its candidate pairs in Ray tasks, not the driver; the local run always clusters in
its driver, so ``same_kept_ids`` then compares the two paths).

Corpus: ``dedup_corpus.py``'s generator (real text from this machine's files, seeded injected
near-duplicates), cached in ``~/.cache/curate-bench/`` (or ``$CURATE_BENCH_CACHE``), read by
the ``parquet`` source once into a store of its own (``scale-store-<corpus>``): the source step
is preparation, not measured. With ``--mix same`` (the default) every smaller size's corpus is
the first rows of the largest one -- a uniform sample of it, its rows being shuffled: the same
sources and the same share of injected copies, so the time exponent compares one workload at
two sizes (the generator's own 100k corpus is 17% copies, its 1M one 65%, mostly changelogs).
``--mix own`` builds each size's corpus for that size. Each measured run is its own process:
``Pipeline([ExactDedup(), MinhashDedup(), HeuristicFilter()], source="corpus")`` with
``force=True`` (every step computed again), ``workers`` processes for the local run's per-row
work, ``ray.init(num_cpus=workers)`` for the Ray run (the cluster starts inside the measured
process: its start-up is part of Ray's time).

Measures
--------
* **docs/s**: documents in / wall time of the three steps (reading the stored corpus, writing
  every version, rejects included).
* **peak RSS**: the peak, sampled every 100 ms from outside, of the proportional set size
  summed over the run's whole process tree (for Ray: the driver, its GCS and raylet, every
  worker; pages shared by k processes count 1/k in each), or the driver's own peak RSS if
  larger -- ``dedup.py``'s ``TreeMemory``.
* **same_kept_ids**: the final version's ids, in order, are the same on both executors (and
  the fingerprints are, by construction: the executor is not in them).
* **time_exponent**: log(t(1M) / t(100k)) / log(10) of the local run (1.0 = linear); reported
  when both sizes run. Targets on this 2-core machine: local peak < 3 GB at 1M docs, Ray
  within 2x of local docs/s at 1M docs, exponent <= 1.1.

The last line is one JSON object: ``docs`` (the largest size), ``local_docs_per_s``,
``ray_docs_per_s``, ``local_peak_rss_mb``, ``ray_peak_rss_mb``, ``same_kept_ids``,
``time_exponent``, and ``runs``: every (size, executor) run's figures.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dedup import _status_mb, measured  # noqa: E402
from dedup_corpus import CACHE, CorpusSpec, load_corpus  # noqa: E402


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def prepare(spec: CorpusSpec, first: int | None = None) -> Path:
    """The corpus as a stored version named ``corpus`` in a store of its own (built once);
    with ``first``, the corpus is the first ``first`` rows of ``spec``'s."""
    from curate import Pipeline, Store
    from curate.sources import SOURCES

    stem = spec.stem() + (f"-first{first}" if first else "")
    store = Store(CACHE / f"scale-store-{stem}")
    if "corpus" in store.names():
        return store.root
    if not spec.path.exists():
        load_corpus(spec, log)
    path = spec.path if first is None else _first_rows(spec.path, first, CACHE / f"{stem}.parquet")
    source = SOURCES["parquet"](path=str(path), shape="text")
    t0 = time.perf_counter()
    Pipeline([], source, name="corpus").run(store)
    log(f"  stored the corpus in {store.root} ({time.perf_counter() - t0:.1f} s)")
    return store.root


def _first_rows(path: Path, n: int, out: Path) -> Path:
    """The first ``n`` rows of the Parquet file ``path`` as ``out`` (row group by row group)."""
    import pyarrow.parquet as pq

    if out.exists():
        return out
    pf = pq.ParquetFile(path)
    tmp = out.with_suffix(".tmp")
    with pq.ParquetWriter(tmp, pf.schema_arrow) as w:
        left = n
        for g in range(pf.num_row_groups):
            if left <= 0:
                break
            t = pf.read_row_group(g)
            w.write_table(t.slice(0, left), row_group_size=10_000)
            left -= len(t)
    tmp.rename(out)
    return out


def child(store: str, executor: str, workers: int, block_rows: int | None, driver_pairs: int | None = None) -> None:
    """One measured run, in this process (started by ``measure``)."""
    from curate import Pipeline, Store
    from curate.executors import ExecutorConfig
    from curate.stages import ExactDedup, HeuristicFilter, MinhashDedup

    config = ExecutorConfig(type=executor, **({"block_rows": block_rows} if block_rows else {}),
                            driver_pairs=driver_pairs if executor == "ray" else None,
                            ray={"num_cpus": workers} if executor == "ray" else {})
    stages = [ExactDedup(), MinhashDedup(), HeuristicFilter()]
    docs = Store(store).resolve("corpus").num_rows
    t0 = time.perf_counter()
    result = Pipeline(stages, "corpus", name="scale").run(store, force=True, workers=workers, executor=config)
    wall = time.perf_counter() - t0
    ids = result.final.column("id").to_pylist()
    print(json.dumps({
        "executor": executor, "docs": docs, "wall_s": wall, "kept": len(ids), "fingerprint": result.fingerprint,
        "kept_ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
        "steps": {s.step: {"kept": s.kept, "rejected": s.rejected, "seconds": round(s.seconds, 2)} for s in result.steps},
        "peak_rss_self_mb": _status_mb("VmHWM"),
    }))


def measure(store: Path, executor: str, workers: int, block_rows: int | None, memory_limit_mb: float,
            driver_pairs: int | None = None) -> dict:
    cmd = [sys.executable, __file__, "--only", executor, "--store", str(store), "--workers", str(workers)]
    cmd += ["--block-rows", str(block_rows)] if block_rows else []
    cmd += ["--driver-pairs", str(driver_pairs)] if driver_pairs is not None else []
    result, mem = measured(cmd, memory_limit_mb)
    if "error" in result:
        return {"executor": executor, **result}
    result["peak_rss_mb"] = max(result["peak_rss_self_mb"], mem.peak_pss_mb)
    result["processes"] = mem.max_processes
    result["docs_per_s"] = result["docs"] / result["wall_s"]
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--docs", default="100000,1000000", help="comma-separated corpus sizes")
    p.add_argument("--executors", default="local,ray")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--block-rows", type=int, default=None)
    p.add_argument("--max-files", type=int, default=None)
    p.add_argument("--mix", choices=["same", "own"], default="same",
                   help="same: each smaller corpus is the first rows of the largest one; own: built for its size")
    p.add_argument("--memory-limit-mb", type=float, default=None)
    p.add_argument("--driver-pairs", type=int, default=None,
                   help="the Ray run's executor.driver_pairs (0: minhash_dedup clusters in Ray tasks); local runs cluster in the driver")
    p.add_argument("--only", help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.only:
        child(args.store, args.only, args.workers, args.block_rows, args.driver_pairs)
        return

    import psutil

    limit = args.memory_limit_mb or psutil.virtual_memory().total / 2**20 * 0.6
    sizes = [int(d) for d in args.docs.split(",")]
    executors = args.executors.split(",")
    runs: list[dict] = []
    for n in sizes:
        same = args.mix == "same" and n < max(sizes)
        spec = CorpusSpec(docs=max(sizes) if same else n, max_files=args.max_files)
        log(f"corpus of {n:,} documents" + (f" (the first rows of the {spec.docs:,}-document one)" if same else ""))
        store = prepare(spec, n if same else None)
        for executor in executors:
            log(f"running {executor} on {n:,} documents")
            r = measure(store, executor, args.workers, args.block_rows, limit, args.driver_pairs)
            r["size"] = n
            runs.append(r)
            if "error" in r:
                log(f"  {executor}: {r['error']}")
                continue
            log(f"  {r['docs']:,} docs in {r['wall_s']:.1f} s = {r['docs_per_s']:,.0f} docs/s, peak {r['peak_rss_mb']:,.0f} MB "
                f"({r['processes']} processes); kept {r['kept']:,}; {r['steps']}")

    def at(n: int, executor: str) -> dict:
        return next((r for r in runs if r["size"] == n and r["executor"] == executor and "error" not in r), {})

    top = sizes[-1]
    local, ray = at(top, "local"), at(top, "ray")
    same = [at(n, "local").get("kept_ids_sha256") == at(n, "ray").get("kept_ids_sha256") is not None for n in sizes]
    exponent = None
    if len(sizes) > 1 and at(sizes[0], "local") and local:
        exponent = math.log(local["wall_s"] / at(sizes[0], "local")["wall_s"]) / math.log(top / sizes[0])
    figures = {
        "docs": top,
        "local_docs_per_s": local.get("docs_per_s"),
        "ray_docs_per_s": ray.get("docs_per_s"),
        "ray_over_local": ray["docs_per_s"] / local["docs_per_s"] if local and ray else None,
        "local_peak_rss_mb": local.get("peak_rss_mb"),
        "ray_peak_rss_mb": ray.get("peak_rss_mb"),
        "same_kept_ids": all(same) if "ray" in executors and "local" in executors else None,
        "same_fingerprint": all(at(n, "local").get("fingerprint") == at(n, "ray").get("fingerprint") for n in sizes)
        if "ray" in executors and "local" in executors else None,
        "time_exponent": exponent,
        "workers": args.workers,
        "mix": args.mix,
        "ray_driver_pairs": args.driver_pairs,
        "errors": [f"{r['size']} {r['executor']}: {r['error']}" for r in runs if "error" in r] or None,
        "runs": [{k: v for k, v in r.items() if k != "kept_ids_sha256"} for r in runs],
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
