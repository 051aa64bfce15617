"""Confidence intervals of shares: Wilson's score interval (Wilson 1927, "Probable Inference,
the Law of Succession, and Statistical Inference"), the interval of a binomial proportion that
stays inside [0, 1] and keeps its coverage at small n and at shares near 0 or 1 (where the
normal approximation's p +- z sqrt(p(1-p)/n) collapses to a point). The evaluation's accuracy
and the audit's removal precision, recall and good share use it.
"""

from __future__ import annotations

import math

Z95 = 1.96


def wilson_interval(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson's score interval for ``k`` successes in ``n`` trials (z = 1.96: 95%).
    ``(0.0, 1.0)`` when ``n == 0``: no trial, no information."""
    if n < 0 or not 0 <= k <= n:
        raise ValueError(f"wilson_interval needs 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z / denom * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n))
    # The bounds are exactly 0 and 1 at k = 0 and k = n; floating point would miss them by an ulp.
    low = 0.0 if k == 0 else max(0.0, center - half)
    high = 1.0 if k == n else min(1.0, center + half)
    return low, high
