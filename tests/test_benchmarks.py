"""The benchmark scripts run (on synthetic data, so that they do not rot); their timings are not asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_io_bench_runs(synthetic_root):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "io_bench.py"), str(synthetic_root / "Synth_000"), "--repeats", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "raw NIfTI" in proc.stdout and "speed-up" in proc.stdout
