"""Token counts: of texts, with a named Hugging Face tokenizer or the tokenizer-free count, and
of a whole version (what the funnel, the dataset card and a shards export report).

``TokenCounter(tokenizer)``: a local tokenizer folder (a train-tiny model's, any model
folder) or a Hugging Face id in the local cache, loaded offline; None counts
``textstats.approx_tokens`` (runs of word characters and single punctuation marks, no
tokenizer). Counts leave special tokens out. A counter remembers each text's count by its
hash, so the versions of one chain, which mostly share their texts, tokenize each text once.

``version_tokens(version, counter, cache)``: the tokens of a version's rows (its ``text``, or
the whole conversation of an SFT row), cached in the folder ``cache`` under the version's
fingerprint and the tokenizer's identity: a version never changes, so neither does its count.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import xxhash

from ..errors import UsageError
from ..fingerprint import hash_file, hash_parts
from ..records import texts
from .textstats import approx_token_counts

APPROX = "curate approx_tokens (\\w+|[^\\w\\s], no tokenizer)"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "tokenizer.model",
                   "vocab.txt", "special_tokens_map.json")
BATCH = 2_000
WORKER_BATCH = 100


class TokenCounter:
    """``count(texts)`` -> tokens per text (see the module docstring)."""

    def __init__(self, tokenizer: str | Path | None = None, label: str | None = None):
        self.label = label or (str(tokenizer) if tokenizer else APPROX)
        self.source = None if tokenizer is None else str(tokenizer)  # what it was loaded from
        self._memo: dict[int, int] = {}
        if tokenizer is None:
            self._tok: Any = None
            self.identity = hash_parts("approx_tokens", 1)
            return
        try:
            from transformers import AutoTokenizer

            self._tok = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError, ImportError) as e:
            raise UsageError(f"tokenizer {self.label}: cannot load it offline "
                             f"({type(e).__name__}: {str(e).splitlines()[0]})") from None
        folder = Path(getattr(self._tok, "name_or_path", "") or str(tokenizer)).expanduser()
        files = [(n, hash_file(folder / n)) for n in TOKENIZER_FILES if (folder / n).is_file()]
        self.identity = hash_parts("tokenizer", files or str(tokenizer))

    def count(self, values: list[str], workers: int = 1) -> list[int]:
        """Tokens per text; texts not seen before are tokenized in ``workers`` processes
        (forked, each loading the tokenizer once) when there are many."""
        keys = [xxhash.xxh3_64_intdigest(t.encode("utf-8", "surrogatepass")) for t in values]
        todo = {k: t for k, t in zip(keys, values) if k not in self._memo}
        if todo:
            fresh = list(todo.values())
            if self._tok is None:
                counts = approx_token_counts(fresh)
            elif workers > 1 and len(fresh) > WORKER_BATCH:
                counts = self._in_processes(fresh, workers)
            else:
                counts = _tokenized(self._tok, fresh)
            self._memo.update(zip(todo, counts))
        return [self._memo[k] for k in keys]

    def _in_processes(self, values: list[str], workers: int) -> list[int]:
        from .workers import map_with_state

        step = WORKER_BATCH  # small, so the workers share a few huge documents evenly
        batches = [values[i : i + step] for i in range(0, len(values), step)]
        return [n for part in map_with_state(_load_tokenizer, (self.source,), _tokenized, batches, workers) for n in part]


def _tokenized(tok: Any, values: list[str]) -> list[int]:
    from ..models.hf import tokenizer_threads_off

    counts: list[int] = []
    with tokenizer_threads_off():
        for i in range(0, len(values), BATCH):
            counts.extend(len(x) for x in tok(values[i : i + BATCH], add_special_tokens=False)["input_ids"])
    return counts


def _load_tokenizer(source: str) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(source, local_files_only=True)


def version_tokens(version: Any, counter: TokenCounter, cache: Path | None = None, workers: int = 1) -> int:
    """The tokens of every row of ``version`` (a stored version), cached under ``cache``."""
    path = None if cache is None else cache / f"{version.fingerprint}.{counter.identity}.json"
    if path is not None and path.is_file():
        try:
            return int(json.loads(path.read_text())["tokens"])
        except (OSError, ValueError, KeyError):
            pass  # a torn file: count again
    field = "text" if "text" in version.column_names else "conversation"
    columns = ["text"] if field == "text" else ["messages"]
    total = 0
    if version.num_rows:
        for batch in version.scan(columns, 10_000):
            total += sum(counter.count(texts(batch, field), workers))
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"tokens": total, "tokenizer": counter.label}))
        tmp.replace(path)
    return total
