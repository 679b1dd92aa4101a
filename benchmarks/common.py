"""Helpers shared by the benchmark scripts (run as `python benchmarks/<name>.py`)."""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from bratsseg.docblocks import measured_block_main, replace_block

__all__ = ["measured_block_main", "replace_block"]

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


TIME = "/usr/bin/time"  # GNU time: the peak RSS of the command alone


def timed_process(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one process. Linux carries a parent's peak RSS over fork and exec into
    the child's ``ru_maxrss``, so a big benchmarking process would be counted in; GNU time (a small process
    between) reports the command's own peak. Without it, the child's ``ru_maxrss`` (an upper bound)."""
    wrapped = [TIME, "-f", "bratsseg-maxrss-kb %M", *cmd] if os.path.exists(TIME) else cmd
    t0 = time.perf_counter()
    proc = subprocess.Popen(wrapped, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    err = proc.stderr.read().decode() if proc.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {err.strip()}")
    marks = [line.split()[-1] for line in err.splitlines() if line.startswith("bratsseg-maxrss-kb")]
    kib = int(marks[-1]) if marks else usage.ru_maxrss
    return wall, kib / 1024


def median_process(cmd: list[str], env: dict[str, str], repeats: int) -> tuple[float, float]:
    return median_processes([cmd], env, repeats)[0]


def median_processes(cmds: list[list[str]], env: dict[str, str], repeats: int) -> list[tuple[float, float]]:
    """Median wall time and peak RSS of each command's process, the commands interleaved round by round (so that
    a machine that slows down or speeds up during the run weighs on every command alike), each warmed up once
    first (the page cache holds the files from there on)."""
    for cmd in cmds:
        timed_process(cmd, env)
    runs: list[list[tuple[float, float]]] = [[] for _ in cmds]
    for _ in range(repeats):
        for cmd, out in zip(cmds, runs, strict=True):
            out.append(timed_process(cmd, env))
    return [(statistics.median(r[0] for r in out), max(r[1] for r in out)) for out in runs]
