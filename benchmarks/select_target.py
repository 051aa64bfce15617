"""GOT-D at scale: ``select_target``'s optimal-transport scoring (POT's lazy, block-wise
Sinkhorn) on a pool of 200,000 embedded candidates, against the textbook way (POT's
log-domain Sinkhorn on the dense N x |T| cost matrix), same data, same run.

    python benchmarks/select_target.py [--candidates 200000] [--target 500] [--budget 20000]
    python benchmarks/select_target.py --candidates 2000 --target 50 --budget 200 --base-texts 60   # smoke run

The pool: real texts embedded with the packaged all-MiniLM-L6-v2 -- CHAMP problem statements
and solutions (math) and paragraphs of the licences and manual pages this machine ships
(not math) -- each the centre of a cloud of perturbed copies (cosine ~0.9 to its centre,
renormalised) until there are ``--candidates``; the target: perturbed copies of held-out
CHAMP problems. Embedding 200,000 texts takes an hour on this CPU and is not what is being
measured; the clouds keep the real embeddings' geometry. The base embeddings are cached in
``~/.cache/curate-bench/`` (or ``$CURATE_BENCH_CACHE``).

Each side runs in its own process, so ``peak_rss_mb`` is that side's own peak (Python,
numpy, POT and the torch POT imports, the embeddings, the solver). Figures: wall seconds of
the solve, Sinkhorn iterations, peak RSS; the overlap of the two top-``budget`` sets; the
math share of ours and of a random selection; how much closer to the target mean our
selection's mean is than a random one's. The target is peak RSS < 4 GB for 200,000
candidates. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("CURATE_BENCH_CACHE", Path.home() / ".cache" / "curate-bench"))


def base_texts() -> tuple[list[str], list[bool], list[str]]:
    """(pool texts, is_math, target texts): CHAMP statements and reference solutions, and
    licence / manual paragraphs, cut to 400 characters."""
    from curate.sources import SOURCES

    refs = SOURCES["champ"](include_model_solutions=False, include_reference=True).read().kept.column("messages").to_pylist()
    statements = [m[0]["content"] for m in refs]
    held_out = statements[::9]
    math = [s for i, s in enumerate(statements) if i % 9] + [m[1]["content"] for m in refs]
    other: list[str] = []
    for path in sorted(Path("/usr/share/common-licenses").glob("*")):
        if path.is_file():
            other += [p for p in re.split(r"\n\s*\n", path.read_text(errors="ignore")) if len(p.split()) >= 25]
    for path in sorted(Path("/usr/share/man/man1").glob("*.gz"))[:600]:
        text = re.sub(r"^\.\S+\s?|\\f[BIRP]|\\-|\\\(..|\\", " ", gzip.decompress(path.read_bytes()).decode(errors="ignore"), flags=re.M)
        other += [p for p in re.split(r"\n\s*\n|\n\.PP|\n\.SH", text) if len(p.split()) >= 25]
    other = [" ".join(p.split()) for p in other][: 2 * len(math)]
    pool = [t[:400] for t in math + other]
    return pool, [True] * len(math) + [False] * len(other), [t[:400] for t in held_out]


def base_embeddings(limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The embedded base texts; with ``limit``, an evenly spaced ``limit`` of the pool's
    (math and other alike; the target's are all kept)."""
    path = CACHE / ("select_base.npz" if not limit else f"select_base-n{limit}.npz")
    if not path.is_file():
        from curate.models import DEFAULT_EMBEDDER, ModelPool

        pool, is_math, target = base_texts()
        if limit and limit < len(pool):
            keep = np.linspace(0, len(pool) - 1, limit).round().astype(int)
            pool, is_math = [pool[i] for i in keep], [is_math[i] for i in keep]
        print(f"embedding {len(pool) + len(target):,} base texts once (cached in {path})", file=sys.stderr)
        CACHE.mkdir(parents=True, exist_ok=True)
        with ModelPool() as models:  # the built-in embedder: the packaged all-MiniLM-L6-v2
            embedder = models.embedder(DEFAULT_EMBEDDER)
            np.savez(path, pool=embedder.embed(pool), is_math=np.array(is_math), target=embedder.embed(target))
    z = np.load(path)
    return z["pool"], z["is_math"], z["target"]


def clouds(centres: np.ndarray, n: int, seed: int, spread: float = 0.45) -> tuple[np.ndarray, np.ndarray]:
    """n unit vectors, each a centre plus Gaussian noise (cosine ~0.9 to it); (vectors, centre index)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(centres), n)
    out = np.empty((n, centres.shape[1]), dtype=np.float32)
    for i in range(0, n, 50_000):
        part = centres[which[i : i + 50_000]] + rng.standard_normal((len(which[i : i + 50_000]), centres.shape[1]),
                                                                    dtype=np.float32) * (spread / np.sqrt(centres.shape[1]))
        out[i : i + 50_000] = part / np.linalg.norm(part, axis=1, keepdims=True)
    return out, which


def data(candidates: int, target: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    pool_c, is_math, target_c = base_embeddings(limit)
    pool, which = clouds(pool_c, candidates, 0)
    tgt, _ = clouds(target_c, target, 1)
    return pool, is_math[which], tgt


def side(args: argparse.Namespace) -> None:
    """One side of the comparison, in this process: prints its JSON."""
    import warnings

    import ot

    from curate.algorithms import ot as got

    pool, _, target = data(args.candidates, args.target, args.base_texts)
    start = time.perf_counter()
    if args.side == "ours":
        scores, result = got.got_d_scores(pool, target, threshold=args.threshold)
        iterations = result.iterations
    else:
        a, b = np.full(len(pool), 1 / len(pool)), np.full(len(target), 1 / len(target))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            _, log = ot.sinkhorn(a, b, ot.dist(pool, target), got.DEFAULT_EPSILON, method="sinkhorn_log",
                                 stopThr=args.threshold, numItermax=got.DEFAULT_MAX_ITERATIONS, log=True)
        scores = -got.calibrate(got.DEFAULT_EPSILON * np.asarray(log["log_u"], dtype=np.float64))
        iterations = int(log["niter"])
    seconds = time.perf_counter() - start
    top = np.argsort(-scores, kind="stable")[: args.budget]
    np.save(args.out, top)
    print(json.dumps({"seconds": round(seconds, 2), "iterations": iterations, "peak_rss_mb": peak_rss_mb()}))


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process's own address space;
    ru_maxrss would carry over the parent's peak across fork + exec on Linux."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def run_side(name: str, args: argparse.Namespace, out: Path) -> dict:
    cmd = [sys.executable, __file__, "--side", name, "--out", str(out), "--candidates", str(args.candidates),
           "--target", str(args.target), "--budget", str(args.budget), "--threshold", str(args.threshold)]
    if args.base_texts:
        cmd += ["--base-texts", str(args.base_texts)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidates", type=int, default=200_000)
    p.add_argument("--target", type=int, default=500)
    p.add_argument("--budget", type=int, default=20_000)
    p.add_argument("--threshold", type=float, default=1e-4,
                   help="Sinkhorn stopping threshold for both sides (L1 marginal error; the stage's default is the paper's 0.1).")
    p.add_argument("--no-baseline", action="store_true", help="Skip the dense-matrix baseline.")
    p.add_argument("--base-texts", type=int, default=None,
                   help="Embed only an evenly spaced N of the pool's base texts (smoke runs; default: all, ~1,500).")
    p.add_argument("--side", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.side:
        side(args)
        return
    base_embeddings(args.base_texts)  # embed once, outside the timed processes
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        ours = run_side("ours", args, Path(tmp) / "ours.npy")
        base = {} if args.no_baseline else run_side("baseline", args, Path(tmp) / "baseline.npy")
        pool, is_math, target = data(args.candidates, args.target, args.base_texts)
        top = np.load(Path(tmp) / "ours.npy") if "error" not in ours else None
        base_top = np.load(Path(tmp) / "baseline.npy") if base and "error" not in base else None
    rng = np.random.default_rng(0)
    random = rng.choice(len(pool), args.budget, replace=False)
    mean = target.mean(0)
    figures = {
        "candidates": args.candidates, "target": args.target, "budget": args.budget, "dim": int(pool.shape[1]),
        "seconds": ours.get("seconds"), "iterations": ours.get("iterations"), "peak_rss_mb": ours.get("peak_rss_mb"),
        "baseline_seconds": base.get("seconds"), "baseline_iterations": base.get("iterations"),
        "baseline_peak_rss_mb": base.get("peak_rss_mb"),
        "pool_math_share": round(float(is_math.mean()), 4), "random_math_share": round(float(is_math[random].mean()), 4),
    }
    if top is not None:
        figures["math_share"] = round(float(is_math[top].mean()), 4)
        figures["mean_distance_to_target"] = round(float(np.linalg.norm(pool[top].mean(0) - mean)), 4)
        figures["random_mean_distance_to_target"] = round(float(np.linalg.norm(pool[random].mean(0) - mean)), 4)
    if top is not None and base_top is not None:
        figures["top_overlap_with_baseline"] = round(len(set(top.tolist()) & set(base_top.tolist())) / args.budget, 4)
    if "error" in ours or "error" in base:
        figures["errors"] = {k: v["error"] for k, v in (("ours", ours), ("baseline", base)) if "error" in v}
    if figures["seconds"] and figures["baseline_seconds"]:
        figures["ratio"] = round(figures["baseline_seconds"] / figures["seconds"], 3)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
