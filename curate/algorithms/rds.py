"""RDS+'s selection rule: round-robin over the target examples by cosine similarity (Ivison et
al., "Large-Scale Data Selection for Instruction Tuning", 2025; official code
hamishivi/automated-instruction-selection, ``get_top_influences.py`` and
``get_top_aggregated_influences.py``).

* One task ("max"): rank the pool for every target example by cosine similarity; cycle over
  the target examples, each taking its best candidate not taken yet, until k are taken. No
  target example's neighbourhood crowds out another's.
* Several tasks ("round_robin"): score every candidate per task by its best similarity to
  that task's examples, rank per task, and cycle over the tasks; score magnitudes never
  compete across tasks, so each task gets k / tasks (within one).

The paper embeds with the base LM's final hidden states (position-weighted mean); here the
embedder is a sentence-transformers model (the same one ``got_d`` uses), and faiss's exact
inner-product search ranks the candidates.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..models.embeddings import nearest


def round_robin(pool: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` distinct pool rows, taken in turn by each query (its best not yet
    taken), in the order taken."""
    n, q = len(pool), len(queries)
    k = min(k, n)
    depth = min(n, max(8, 2 * -(-k // q)))
    while True:
        _, ranked = nearest(queries, pool, depth)
        taken, out = np.zeros(n, dtype=bool), []
        pointer = np.zeros(q, dtype=np.int64)
        exhausted = False
        while len(out) < k and not exhausted:
            for i in range(q):
                while pointer[i] < depth and taken[ranked[i, pointer[i]]]:
                    pointer[i] += 1
                if pointer[i] == depth:
                    exhausted = depth < n  # this query needs a deeper list
                    if exhausted:
                        break
                    continue
                j = ranked[i, pointer[i]]
                taken[j] = True
                out.append(j)
                if len(out) == k:
                    break
        if not exhausted:
            return np.asarray(out, dtype=np.int64)
        depth = min(n, depth * 4)


def task_round_robin(pool: np.ndarray, queries: np.ndarray, tasks: Sequence[str], k: int) -> np.ndarray:
    """Indices of ``k`` distinct pool rows, taken in turn by each task: a task's ranking is
    its candidates' best similarity to any of its queries."""
    labels = np.asarray([str(t) for t in tasks])
    names = list(dict.fromkeys(labels.tolist()))
    k = min(k, len(pool))
    rankings = []
    for name in names:
        best, _ = nearest(pool, queries[labels == name], 1)
        rankings.append(np.argsort(-best[:, 0], kind="stable"))
    taken, out = np.zeros(len(pool), dtype=bool), []
    pointer = [0] * len(names)
    while len(out) < k:
        for t, ranking in enumerate(rankings):
            while taken[ranking[pointer[t]]]:
                pointer[t] += 1
            j = ranking[pointer[t]]
            taken[j] = True
            out.append(j)
            if len(out) == k:
                break
    return np.asarray(out, dtype=np.int64)


def best_similarity(pool: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Each candidate's highest cosine similarity to any query."""
    best, _ = nearest(pool, queries, 1)
    return best[:, 0].astype(np.float64)
