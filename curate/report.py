"""Human-readable views of runs and versions: the funnel table and manifests."""

from __future__ import annotations

from typing import Any

from rich.markup import escape
from rich.table import Table

from .pipeline import RunResult


MAX_COUNTERS = 12  # a step's own counters shown in the funnel


def funnel_table(result: RunResult, top: int = 3) -> Table:
    """One row per step: rows in, kept, rejected (and the tokens kept, when the run counted
    them), the top reasons and the stage's counters, seconds, cached."""
    t = Table(title=f"{result.name}  ->  {result.fingerprint}", title_justify="left")
    tokens = any(s.tokens is not None for s in result.steps)
    columns = [("stage", "left"), ("rows in", "right"), ("kept", "right"), *([("tokens kept", "right")] if tokens else []),
               ("rejected", "right"), ("top reasons · counts", "left"), ("seconds", "right"), ("cached", "center")]
    for col, justify in columns:
        t.add_column(col, justify=justify, no_wrap=not col.startswith("top"), overflow="fold")
    for s in result.steps:
        counters = [f"{k} {v:,}" for k, v in s.stats.items()]
        if len(counters) > MAX_COUNTERS:  # language_id counts every language: the rest are in the manifest
            counters = [*counters[:MAX_COUNTERS], f"… {len(counters) - MAX_COUNTERS} more (curate datasets show)"]
        reasons = ", ".join([f"{r} {n:,}" for r, n in list(s.reasons.items())[:top]] + counters)
        kept_tokens = [f"{s.tokens:,}" if s.tokens is not None else "-"] if tokens else []
        t.add_row(escape(s.step), f"{s.rows_in:,}", f"{s.kept:,}", *kept_tokens, f"{s.rejected:,}", escape(reasons) or "-",
                  f"{s.seconds:.2f}", "yes" if s.cached else "no")
    return t


def manifest_table(m: dict[str, Any]) -> Table:
    t = Table(show_header=False, title=f"version {m['fingerprint']}", title_justify="left")
    t.add_column("field", style="bold")
    t.add_column("value")
    c = m["counts"]
    t.add_row("name", str(m.get("name")))
    t.add_row("stage", f"{m['stage']['step']} ({m['stage']['name']} v{m['stage']['version']})")
    t.add_row("config", escape(str(m["stage"]["config"])))
    t.add_row("parents", ", ".join(m["parents"]) or "-")
    t.add_row("counts", f"in {c['in']:,}  kept {c['kept']:,}  rejected {c['rejected']:,}  added {c.get('added', 0):,}")
    t.add_row("rejections", ", ".join(f"{k} {v:,}" for k, v in m.get("rejections", {}).items()) or "-")
    if m.get("stats"):
        t.add_row("stage counts", ", ".join(f"{k} {v:,}" for k, v in m["stats"].items()))
    t.add_row("created", f"{m['created']}  ({m['wall_time_s']} s, curate {m['curate_version']})")
    if m.get("recipe"):
        t.add_row("recipe", f"{m['recipe']['path']} (sha256 {m['recipe']['sha256'][:12]})")
    t.add_row("columns", escape(", ".join(f"{k}: {v}" for k, v in m["columns"].items())))
    for col, s in m.get("scores", {}).items():
        if "mean" in s:
            t.add_row(f"score {col}", f"min {s['min']:.4g}  median {s['median']:.4g}  mean {s['mean']:.4g}  max {s['max']:.4g}")
    t.add_row("lineage", escape(" -> ".join(f"{e['step']} ({e['counts']['kept']:,})" for e in m.get("lineage", []))))
    return t
