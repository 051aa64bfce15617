"""GOT-D's scores: the gradient of an entropic optimal-transport distance with respect to each
candidate's probability mass (Kang et al., "Get More for Less: Principled Data Selection for
Warming Up Fine-Tuning in LLMs", ICLR 2024; official code REDSgnaoh/DV4LLM).

The pool D (N candidate embeddings, uniform mass) and the target T (embeddings of examples of
what the model should be good at, uniform mass) are compared by entropic OT with the
squared-Euclidean cost. At the optimum the distance's gradient with respect to candidate j's
mass is its dual potential alpha_j; a candidate whose extra mass would lower the distance to
the target the most has the most negative potential. The duals are defined up to a constant,
so they are calibrated as in LAVA:

    g_hat_j = alpha_j - 1/N * sum_{i != j} alpha_i

and GOT-D keeps the k candidates with the smallest g_hat. The calibration shifts every
candidate by the same function of its own potential (g_hat_j = (1 + 1/N) alpha_j - S/N), so it
never changes the order; it makes the score comparable across runs.

Paper defaults (``ot-selection.ipynb``): epsilon = 0.1, Sinkhorn batch 2,000, convergence
threshold 0.1, at most 2,000 iterations (momentum 1.3 in ott-jax; see below).

**Why POT.** The solver is POT's (Python Optimal Transport, PythonOT/POT, MIT, released
regularly since 2016) ``ot.bregman.empirical_sinkhorn`` with ``isLazy=True``: a log-domain
Sinkhorn that recomputes the cost matrix block by block at every iteration and returns only
the two dual vectors, so the N x |T| cost matrix never exists. It is a numpy/scipy wheel:
ott-jax (the paper's choice) would add the JAX runtime and its compile step to a CPU
install, and geomloss computes online only through KeOps, which compiles CUDA/C++ at first
use. POT's lazy solver has no momentum or epsilon scaling, so it takes more iterations than
ott's; on normalised sentence embeddings it converges in tens (``benchmarks/select_target.py``).

Memory: the embeddings (N + |T|) x dim, the potentials (N + |T|), and one cost block at a
time -- ``batch_size`` candidates against the whole target, or a slice of target columns
against the pool sized to hold max(``batch_size * |T|``, 2^24) costs -- never N x |T|.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import StageError

DEFAULT_EPSILON = 0.1
DEFAULT_BATCH = 2000
DEFAULT_THRESHOLD = 0.1
DEFAULT_MAX_ITERATIONS = 2000
POT_MISSING = "select_target method got_d needs POT (Python Optimal Transport): pip install 'curate[embed]' (or pip install pot)"
MIN_BLOCK = 2**24  # costs per column block, at least (see candidate_potentials)


@dataclass(frozen=True)
class OTResult:
    potentials: np.ndarray  # alpha: the dual potential of each candidate (epsilon * log-scaling)
    iterations: int
    marginal_error: float  # L1 distance of the plan's candidate marginal from uniform
    converged: bool


def candidate_potentials(
    pool: np.ndarray,
    target: np.ndarray,
    epsilon: float = DEFAULT_EPSILON,
    batch_size: int = DEFAULT_BATCH,
    threshold: float = DEFAULT_THRESHOLD,
    max_iterations: int = DEFAULT_MAX_ITERATIONS,
) -> OTResult:
    """Dual potentials of the candidates in entropic OT(uniform pool, uniform target) with the
    squared-Euclidean cost, by POT's lazy (block-wise) Sinkhorn."""
    try:
        import ot
    except ImportError:
        raise StageError(POT_MISSING) from None
    pool = np.ascontiguousarray(pool, dtype=np.float32)
    target = np.ascontiguousarray(target, dtype=np.float32)
    n, t = len(pool), len(target)
    if n == 0 or t == 0:
        raise StageError(f"got_d needs candidates and target examples (got {n} and {t})")
    # Row blocks: batch_size candidates x all targets. Column blocks: a slice of targets x all
    # candidates, as wide as fits in max(batch_size * |T|, 2^24) costs (64 MB of float32):
    # each column block re-reads the whole pool, so a thin one would make the solve memory-bound.
    target_batch = max(1, min(t, max(batch_size * t, MIN_BLOCK) // n))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        f, _, log = ot.bregman.empirical_sinkhorn(
            pool, target, epsilon, isLazy=True, batchSize=(min(batch_size, n), target_batch),
            numIterMax=max_iterations, stopThr=threshold, log=True,
        )
    errors = [float(e) for e in log["err"]]
    converged = not any("converge" in str(w.message) for w in caught)
    alpha = epsilon * np.asarray(f, dtype=np.float64)
    if not np.all(np.isfinite(alpha)):
        raise StageError(f"got_d: Sinkhorn diverged (non-finite potentials) at epsilon {epsilon}; raise epsilon")
    return OTResult(alpha, int(log["niter"]) + 1, errors[-1] if errors else float("nan"), converged)


def calibrate(potentials: np.ndarray) -> np.ndarray:
    """LAVA's calibrated gradient: g_hat_j = g_j - 1/N * sum_{i != j} g_i."""
    g = np.asarray(potentials, dtype=np.float64)
    return g - (g.sum() - g) / len(g)


def got_d_scores(pool: np.ndarray, target: np.ndarray, **solver) -> tuple[np.ndarray, OTResult]:
    """Each candidate's selection score, higher = chosen first: minus its calibrated
    gradient (how fast adding its mass lowers the OT distance to the target)."""
    result = candidate_potentials(pool, target, **solver)
    return -calibrate(result.potentials), result
