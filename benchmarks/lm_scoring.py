"""Throughput of ``perplexity_filter`` against a bare transformers forward loop, same model,
same texts, same run.

    python benchmarks/lm_scoring.py [--rows 1000] [--model DIR] [--batch-size 16] [--repeat 3]

Texts: CHAMP model solutions (pretraining-style ``text`` rows, so both sides score exactly
the same tokens). Model: the tiny reference LM of recipes/math_sft.yaml (trained once into
the curate cache if missing), or ``--model`` (any local causal LM folder).

* baseline: what one writes by hand -- batches in corpus order, tokenizer padding and
  truncation at the model's window, ``model(**enc).logits``, log-softmax, gather;
* ours: ``PerplexityFilter`` through the stage API with a fresh on-disk call cache (so
  the cost of caching is included): tokenization, length-sorted batches, windowing of
  long texts, Arrow columns.

tokens/s counts scored tokens (every token after the first of each text). The target is
ours >= 0.8 x the baseline. Last line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def champ_texts(rows: int) -> list[str]:
    from curate.sources import SOURCES
    from curate.stage import StageContext

    table = SOURCES["champ"](include_model_solutions=True).read(StageContext()).kept
    step = max(1, len(table) // rows)
    msgs = table.column("messages").to_pylist()[::step][:rows]
    return [m[-1]["content"] for m in msgs]


def baseline(model, tok, texts: list[str], batch_size: int, window: int) -> int:
    import torch

    tok.padding_side = "right"
    scored = 0
    with torch.inference_mode():
        for i in range(0, len(texts), batch_size):
            enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True, max_length=window)
            logits = model(**enc).logits[:, :-1].float()
            labels = enc.input_ids[:, 1:]
            lp = logits.log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            mask = enc.attention_mask[:, 1:]
            (lp * mask).sum(-1)
            scored += int(mask.sum())
    return scored


def ours(model_dir: str, texts: list[str], batch_size: int) -> tuple[int, float]:
    import pyarrow as pa

    from curate.models import ModelPool
    from curate.stage import StageContext
    from curate.stages import PerplexityFilter

    table = pa.table({"id": [str(i) for i in range(len(texts))], "text": texts})
    with tempfile.TemporaryDirectory() as cache:
        pool = ModelPool({"ref": {"model": model_dir, "batch_size": batch_size}}, cache_root=cache)
        pool.get("ref")  # loading is not scoring
        t0 = time.perf_counter()
        out = PerplexityFilter(model="ref")(table, StageContext(models=pool))
        dt = time.perf_counter() - t0
    return int(sum(out.kept.column("ppl_tokens").to_pylist())), dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--model", default=None, help="a local causal LM folder (default: the recipe's tiny LM)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    from curate.models import ModelPool
    from curate.models.hf import model_dir
    from curate.recipe import load_recipe

    path = args.model or str(model_dir(load_recipe(ROOT / "recipes" / "math_sft.yaml").models["ref_lm"]))
    texts = champ_texts(args.rows)
    lm = ModelPool({"ref": {"model": path}}, cache=False).get("ref")
    model, tok, window = lm.model, lm.tokenizer, lm.window
    baseline(model, tok, texts[:32], args.batch_size, window)  # warm-up

    base_s, our_s, base_tokens, our_tokens = [], [], 0, 0
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        base_tokens = baseline(model, tok, texts, args.batch_size, window)
        base_s.append(time.perf_counter() - t0)
        our_tokens, dt = ours(path, texts, args.batch_size)
        our_s.append(dt)
    b, o = statistics.median(base_s), statistics.median(our_s)
    result = {
        "model": path, "rows": len(texts), "window": window, "batch_size": args.batch_size,
        "tokens": our_tokens, "baseline_tokens": base_tokens,  # the baseline truncates at the window; we window
        "seconds": round(o, 3), "baseline_seconds": round(b, 3),
        "tokens_per_s": round(our_tokens / o), "baseline_tokens_per_s": round(base_tokens / b),
        "ratio": round((our_tokens / o) / (base_tokens / b), 3), "target_ratio": 0.8,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
