"""How long the README's first command takes: the whole `bratsseg demo` process, on this machine.

    python benchmarks/demo_bench.py [--threads 2] [--json docs/demo_bench.json]
    python benchmarks/demo_bench.py --render --write README.md     # the README's block from the JSON

One cold process (`python -m bratsseg demo -o TMP --threads N`), its wall time, the seconds of each of its steps (the
demo's own `demo.json`) and the load of the machine before it started (1-minute load average, waited for to fall
under 0.7 for up to 3 minutes: a busy machine makes every number here larger) and after. The README promises
what this measured, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import measured_block_main

ROOT = Path(__file__).resolve().parents[1]

JSON_OUT = ROOT / "docs" / "demo_bench.json"
BEGIN = "<!-- demo-bench: begin (benchmarks/demo_bench.py --render --write README.md) -->"
END = "<!-- demo-bench: end -->"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    waited = 0
    while os.getloadavg()[0] > 0.7 and waited < 180:  # let earlier work's load decay: it would slow the demo
        time.sleep(10)
        waited += 10
    with tempfile.TemporaryDirectory() as tmp:
        load_before = os.getloadavg()[0]
        t0 = time.perf_counter()
        cmd = [sys.executable, "-m", "bratsseg", "demo", "-o", str(Path(tmp) / "demo"), "--threads", str(args.threads)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if done.returncode:
            raise SystemExit(f"the demo failed:\n{done.stderr[-2000:]}")
        steps = json.loads((Path(tmp) / "demo" / "demo.json").read_text())["seconds"]
        warnings = [line for line in (done.stdout + done.stderr).splitlines() if "warning" in line.lower()]
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPU(s), Python {platform.python_version()}",
        "threads": args.threads,
        "wall_s": wall,
        "steps_s": steps,
        "load_before": load_before,
        "load_after": os.getloadavg()[0],
        "warnings": warnings,
    }


def render(result: dict[str, Any]) -> str:
    steps = ", ".join(f"{name} {s:.0f} s" for name, s in result["steps_s"].items())
    busy = result["load_before"]  # the demo's own threads make the load after it ~2: only the load before counts
    note = (
        f" The machine was busy (load average {busy:.1f} on {result['machine'].split(',')[1].strip()}): on idle "
        "cores it is shorter."
        if busy > 1.0
        else ""
    )
    return "\n".join([
        BEGIN,
        f"It took **{result['wall_s'] / 60:.1f} minutes** on {result['threads']} threads when last measured "
        f"({result['date']}, {result['machine']}; `python benchmarks/demo_bench.py`): {steps}.{note} Its numbers are "
        "about synthetic data and a minute of training: they show the pipeline works, not how well it segments real "
        "tumours. It writes `demo/report.html`, and prints where everything is.",
        END,
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=2)
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
