"""Is one model better than another on the same cases? A paired comparison of per-case scores: the mean
difference, a percentile bootstrap confidence interval over cases (cases resampled with replacement, both models'
scores of a case kept together), and on how many cases each model is ahead. With 22 cases the interval is wide:
it says which differences the cross-validation can resolve at all."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS


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


def paired_per_case(
    baseline: list[dict[str, Any]], other: list[dict[str, Any]], where: Any = None, metric: str = "dice"
) -> dict[str, dict[str, float | int]]:
    """``other`` minus ``baseline``, per region, from two ``per_case.csv`` row lists (``read_per_case``) of the
    same cases: :func:`paired_bootstrap` of ``metric``. Refuses row lists of different cases (``where`` names the
    file in the error)."""

    def scores(rows: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
        return {(r["case_id"], r["region"]): float(r[metric]) for r in rows}

    a, b = scores(other), scores(baseline)
    if set(a) != set(b):
        odd = sorted({c for c, _ in set(a) ^ set(b)})
        raise BratsSegError(f"not the baseline's cases (differing: {', '.join(odd[:5])})", where)
    cases = sorted({c for c, _ in a})
    return {
        g: paired_bootstrap(np.array([a[c, g] for c in cases]), np.array([b[c, g] for c in cases])) for g in REGIONS
    }


FEW_CASES = 10  # below this many cases a bootstrap interval is noise, and the table says so


def paired_table(names: list[str], results: list[dict[str, dict[str, float | int]]], baseline: str) -> str:
    """Plain-text lines: each result minus ``baseline``, per region, with its interval and cases ahead / behind."""
    lines = [f"Dice minus {baseline}, case by case (mean [95% bootstrap interval], cases ahead / behind by > 0.005):"]
    for name, result in zip(names, results, strict=True):
        cells = [f"{g} {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] {d['ahead']}/{d['behind']}"
                 for g, d in result.items()]  # fmt: skip
        lines.append(f"  {name}: " + "   ".join(cells))
        n = int(next(iter(result.values()))["cases"]) if result else 0
        if n < FEW_CASES:
            lines.append(f"  warning: {n} paired case(s): an interval over so few cases says nothing; compare on more")
    return "\n".join(lines)
