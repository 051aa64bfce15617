"""Dataset cards: a README.md for an exported version that carries its lineage -- the recipe,
every step with its stage, config, counts and rejection reasons, the fingerprints -- and how
the common trainers load it. Written by ``curate datasets export`` beside the data.

The card follows the Hugging Face dataset-card layout: a YAML header (``configs`` pointing at
the data file, so that as a repository's README.md it tells ``load_dataset`` what to read;
``tags``), then prose.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ._version import __version__
from .store import Store, Version

DATA_FILES = {"jsonl": "json", "chat": "json", "parquet": "parquet"}


def render_card(store: Store, version: Version, ref: str, fmt: str, data_file: str,
                shards: dict[str, Any] | None = None, tokens: dict[str, Any] | None = None) -> str:
    """The card's markdown for ``version`` exported as ``fmt`` to ``data_file`` (a path
    relative to the card; a glob for shards, whose ``index`` gives the token counts).
    ``tokens``: {"tokenizer": label, "counts": {fingerprint: tokens}} of the lineage's
    versions, a column of the lineage table."""
    m = version.manifest
    name = m.get("name") or ref
    counts = m["counts"]
    lines = ["---", "configs:", "- config_name: default", "  data_files:", "  - split: train", f"    path: {data_file}",
             "tags:", "- curate", "- sft" if "messages" in m.get("columns", {}) else "- text", "---", "",
             f"# {name}", "",
             f"Exported by curate {__version__} from the version `{ref}` (fingerprint `{m['fingerprint']}`, "
             f"created {m.get('created', '?')}): **{counts['kept']:,} rows**.", ""]
    if shards:
        lines += [f"Pretraining shards: {len(shards['shards']):,} files of `{shards['format']}`, "
                  f"**{shards['tokens']:,} tokens** ({shards['tokenizer']}), {shards['bytes'] / 2**20:,.1f} MiB of text; "
                  "per shard in `index.json`.", ""]
    if m.get("recipe"):
        lines += [f"Recipe: `{m['recipe']['path']}` (sha256 `{m['recipe']['sha256'][:16]}…`).", ""]
    counted = (tokens or {}).get("counts") or {}
    if counted:
        lines += [f"Tokens counted with {tokens['tokenizer']}.", ""]
    lines += ["## Lineage", "", "| step | stage | rows in | kept |" + (" tokens kept |" if counted else "")
              + " removed | why removed | fingerprint |", "|---|---|---:|---:|" + ("---:|" if counted else "") + "---:|---|---|"]
    configs = []
    for entry in m.get("lineage", []):
        step_m = _manifest(store, entry["fingerprint"])
        c = entry["counts"]
        reasons = ", ".join(f"{r} {n:,}" for r, n in (step_m.get("rejections") or {}).items()) or "-"
        kept_tokens = counted.get(entry["fingerprint"])
        column = (f" {kept_tokens:,} |" if kept_tokens is not None else " - |") if counted else ""
        lines.append(f"| {entry['step']} | {entry['stage']} | {c['in']:,} | {c['kept']:,} |{column} {c['rejected']:,} "
                     f"| {reasons} | `{entry['fingerprint']}` |")
        stage = step_m.get("stage") or {}
        if stage.get("config") or step_m.get("stats"):
            configs.append((entry["step"], stage.get("config"), step_m.get("stats")))
    lines += ["", "Every removed row is kept in the store with its reason (`curate datasets rejects NAME/STEP`).", ""]
    if configs:
        lines += ["## Step settings and counters", ""]
        for step, config, stats in configs:
            lines.append(f"- **{step}**" + (f": `{json.dumps(config, sort_keys=True, default=str)}`" if config else ""))
            if stats:
                lines.append(f"  - counters: {', '.join(f'{k} {v:,}' for k, v in stats.items())}")
        lines.append("")
    lines += ["## Columns", ""] + [f"- `{k}`: {v}" for k, v in m.get("columns", {}).items()] + [""]
    lines += _loading(fmt, data_file)
    return "\n".join(lines)


def _manifest(store: Store, fingerprint: str) -> dict[str, Any]:
    return store.version(fingerprint).manifest if store.has(fingerprint) else {}


def _loading(fmt: str, data_file: str) -> list[str]:
    if fmt == "hf":
        return ["## Loading", "", "```python", "import datasets", "ds = datasets.load_from_disk(\"<this folder>\")", "```", ""]
    if fmt == "shards":
        builder = "parquet" if data_file.endswith(".parquet") else "json"
        return ["## Loading", "", "```python", "import datasets",
                f"ds = datasets.load_dataset(\"{builder}\", data_files=\"<this folder>/{data_file}\", split=\"train\", "
                "streaming=True)", "```", "", "Each row's `text` is one document; `index.json` lists the shards in order.", ""]
    builder = DATA_FILES[fmt]
    out = ["## Loading", "", "```python", "import datasets",
           f"ds = datasets.load_dataset(\"{builder}\", data_files=\"{data_file}\", split=\"train\")", "```", ""]
    if fmt in ("chat", "jsonl"):
        out += ["Rows are conversations in the `messages` format (`[{role, content}, ...]`):", "",
                "- **TRL**: `SFTTrainer(train_dataset=ds, ...)` applies the model's chat template; "
                "`assistant_only_loss=True` trains on the assistant turns only.",
                "- **axolotl**: `datasets: [{path: " + data_file + ", type: chat_template, field_messages: messages}]`.",
                "- **LLaMA-Factory**: in `dataset_info.json`, `{\"file_name\": \"" + data_file + "\", \"formatting\": "
                "\"sharegpt\", \"columns\": {\"messages\": \"messages\"}, \"tags\": {\"role_tag\": \"role\", "
                "\"content_tag\": \"content\", \"user_tag\": \"user\", \"assistant_tag\": \"assistant\", "
                "\"system_tag\": \"system\"}}`.", ""]
    return out


def card_path(out: Path, fmt: str) -> Path:
    """Where the card of an export to ``out`` goes: README.md inside an hf or shards folder,
    else ``<file stem>.README.md`` beside the file."""
    return out / "README.md" if fmt in ("hf", "shards") else out.with_name(f"{out.name.split('.')[0]}.README.md")
