"""Is one model better than another on the same cases? A paired comparison of per-case scores: the mean
difference, a percentile bootstrap confidence interval over cases (cases resampled with replacement, both models'
scores of a case kept together), and on how many cases each model is ahead. With 22 cases the interval is wide:
it says which differences the cross-validation can resolve at all."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError


def paired_bootstrap(
    a: NDArray[Any], b: NDArray[Any], resamples: int = 10000, level: float = 0.95, seed: int = 0, tie: float = 0.005
) -> dict[str, float | int]:
    """``a`` minus ``b``, each one score per case (the same cases in the same order): ``mean`` difference,
    ``low`` / ``high`` the ``level`` percentile bootstrap interval of it, ``ahead`` / ``behind`` the cases where
    ``a`` leads / trails by more than ``tie``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise BratsSegError(
            f"a paired comparison needs two equal-length score lists of 2+ cases, got {a.shape}, {b.shape}"
        )
    if not np.isfinite(a).all() or not np.isfinite(b).all():
        raise BratsSegError("a paired comparison needs finite scores (score empty masks by a policy, not NaN)")
    if not 0.0 < level < 1.0 or resamples < 1:
        raise BratsSegError(f"level must lie in (0, 1) and resamples be >= 1, got {level}, {resamples}")
    d = a - b
    picks = np.random.default_rng(seed).integers(0, d.size, size=(resamples, d.size))
    means = d[picks].mean(axis=1)
    low, high = np.percentile(means, [50 * (1 - level), 50 * (1 + level)])
    return {
        "mean": float(d.mean()),
        "low": float(low),
        "high": float(high),
        "ahead": int((d > tie).sum()),
        "behind": int((d < -tie).sum()),
        "cases": int(d.size),
    }
