"""Helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path

SHARED_BRATS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "brats"
DEFAULT_CASE = SHARED_BRATS / "BraTS2021_00006"


def median_time(fn: Callable[[], object], repeats: int) -> float:
    """Median wall-clock seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
