"""Turning (context, target) pairs into the token windows a local backend scores.

Shared by the transformers and vLLM backends, so both score exactly the same tokens:

* the target is tokenized on its own (the same response has the same tokens whatever
  prompt precedes it; IFD compares exactly those spans);
* a start token (BOS, else EOS) goes in front when the text has no context, or when the
  tokenizer adds BOS and the context does not begin with it (chat templates often do);
* a sequence longer than the window is split into windows that each score their last
  tokens, every scored token seeing at least half a window of context -- never truncated.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from .base import ModelError


class Unit(NamedTuple):
    pair: int  # index of the (context, target) pair
    part: int  # window number within the pair
    ids: list[int]  # the window's token ids
    scored: int  # how many of its last tokens are scored


class StartToken:
    """The tokenizer's start-of-text rule: which token begins a text, and whether it adds one."""

    def __init__(self, tok: Any):
        probe = tok("a").input_ids
        self.adds_bos = tok.bos_token_id is not None and len(probe) > 0 and probe[0] == tok.bos_token_id
        self.id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id

    def prefix(self, ids: list[int], scoring: bool = False) -> list[int]:
        """``ids`` with the start token in front when the tokenizer adds one and they lack it,
        or (``scoring``) when they are empty: the first target token needs something before it."""
        if self.id is None:
            return ids
        if (scoring and not ids) or (self.adds_bos and (not ids or ids[0] != self.id)):
            return [self.id, *ids]
        return ids


def scoring_units(tok: Any, start: StartToken, pairs: Sequence[tuple[str, str]], window: int, name: str) -> list[Unit]:
    contexts = [c for c, _ in pairs]
    nonempty = [i for i, c in enumerate(contexts) if c]
    ctx_ids: list[list[int]] = [[] for _ in pairs]
    if nonempty:
        for i, ids in zip(nonempty, tok([contexts[i] for i in nonempty], add_special_tokens=False).input_ids):
            ctx_ids[i] = ids
    tgt_ids = tok([t for _, t in pairs], add_special_tokens=False).input_ids if pairs else []
    units = []
    for i, (ctx, tgt) in enumerate(zip(ctx_ids, tgt_ids)):
        ctx = start.prefix(ctx, scoring=True)
        if not ctx:
            raise ModelError(f"model '{name}' has neither a BOS nor an EOS token, so the first token of a text "
                             "cannot be scored; give a context")
        seq = ctx + tgt
        units += [Unit(i, k, seq[lo:b], b - a) for k, (lo, a, b) in enumerate(score_windows(len(ctx), len(seq), window))]
    return units


def score_windows(start: int, end: int, window: int) -> list[tuple[int, int, int]]:
    """Windows ``(lo, a, b)`` to score tokens ``start..end`` of a sequence: each window is
    ``seq[lo:b]`` (at most ``window`` tokens) and scores its last ``b - a`` tokens; every
    scored token sees at least half a window of context (or all there is)."""
    if start >= end:
        return []
    if start < 1 or window < 2:
        raise ValueError("need at least one token of context and a window of two tokens")
    stride = max(1, window // 2)
    out = []
    a, b = start, min(end, max(start + stride, window))
    while True:
        out.append((max(0, b - window), a, b))
        if b >= end:
            return out
        a, b = b, min(end, b + stride)
