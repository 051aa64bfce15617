"""Forked worker processes that each build a heavy object once (a tokenizer, a trained
classifier) and then apply a function to batches with it: what the token counts and the
quality classifiers' scoring share. The object's inputs are sent once per worker, not once
per batch; ``fork`` so that nothing has to be importable by name in a fresh interpreter.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from typing import Any, TypeVar

T = TypeVar("T")
R = TypeVar("R")

_STATE: dict[str, Any] = {}  # a worker process's object (the process ends with the map)


def _start(build: Callable[..., Any], args: tuple) -> None:
    _STATE["state"] = build(*args)


def _call(fn: Callable[[Any, T], R], item: T) -> R:
    return fn(_STATE["state"], item)


def map_with_state(build: Callable[..., Any], args: tuple, fn: Callable[[Any, T], R], items: Sequence[T],
                   workers: int) -> list[R]:
    """``[fn(build(*args), item) for item in items]``, in order, in ``workers`` forked processes
    (at most one per item), each calling ``build(*args)`` once."""
    with ProcessPoolExecutor(max(1, min(workers, len(items))), mp_context=multiprocessing.get_context("fork"),
                             initializer=_start, initargs=(build, args)) as pool:
        return list(pool.map(partial(_call, fn), items))
