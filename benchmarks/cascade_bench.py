"""What the refinement stage (cascade) costs: network seconds per case of the first stage alone and of the
refinement around the tumour, measured in one process on the same cached cases, interleaved.

    python benchmarks/cascade_bench.py --cascade runs/refine/cascade/fold0 --cache runs/refine/cache [--repeats 3]
    python benchmarks/cascade_bench.py --render --write docs/results/speed.md

``--cascade`` is a model folder with a refinement stage (``scripts/refine_recipe.sh`` writes one per fold). Both
stages run on ONNX Runtime where the folders hold ``model.onnx`` (the refinement is exported to a temporary file
otherwise, with float16 weights as the bundle ships them), on ``--threads`` threads. Per case: the median of
``--repeats`` runs of each stage, and the refinement box's share of the cropped case.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import measured_block_main

from bratsseg.data.cache import open_cache
from bratsseg.inference.cascade import CascadePredictor, refine_box, refine_in_box
from bratsseg.inference.loading import load_predictor

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "cascade_bench.json"
BEGIN = "<!-- cascade-bench: begin (benchmarks/cascade_bench.py --render --write docs/results/speed.md) -->"
END = "<!-- cascade-bench: end -->"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cascade is None or args.cache is None:
        raise SystemExit("give --cascade and --cache (or --render)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "cascade"
        shutil.copytree(args.cascade, folder)
        from bratsseg.compress.onnx_export import export_model_folder

        export_model_folder(folder)  # both stages on ONNX Runtime, float16 weights, as the bundle ships
        predictor = load_predictor(folder, threads=args.threads)
        if not isinstance(predictor, CascadePredictor):
            raise SystemExit(f"{args.cascade} has no refinement stage")
        settings = predictor.settings
        rows = []
        for case in open_cache(args.cache)[:: args.every]:
            image = np.asarray(case.image, dtype=np.float32)
            first_s, refine_s = [], []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                prior = predictor.first.probabilities(image)
                box = refine_box(prior[0] > settings.box_threshold, settings.margin)
                t1 = time.perf_counter()
                refine_in_box(predictor.refiner.probabilities, image, prior, settings)
                t2 = time.perf_counter()
                first_s.append(t1 - t0)
                refine_s.append(t2 - t1)
            share = 0.0 if box is None else float(np.prod([s.stop - s.start for s in box]) / np.prod(image.shape[1:]))
            rows.append(
                {
                    "case": case.case_id,
                    "first_s": statistics.median(first_s),
                    "refine_s": statistics.median(refine_s),
                    "box_share": share,
                }
            )
            print(rows[-1], file=sys.stderr)
    return {"threads": args.threads, "repeats": args.repeats, "cascade": str(args.cascade), "cases": rows}


def render(result: dict[str, Any]) -> str:
    rows = result["cases"]
    first = statistics.median(r["first_s"] for r in rows)
    refine = statistics.median(r["refine_s"] for r in rows)
    share = statistics.median(r["box_share"] for r in rows)
    worst = max(rows, key=lambda r: r["refine_s"])
    return "\n".join(
        [
            BEGIN,
            f"What the refinement costs (`python benchmarks/cascade_bench.py`, {len(rows)} cached cases, ONNX Runtime, "
            f"{result['threads']} threads, median of {result['repeats']} per case, both stages in one process): the "
            f"first stage {first:.2f} s per case (median), the refinement {refine:.2f} s more "
            f"({refine / first:.1f}x the first stage; its box is {share:.0%} of the cropped case at the median, "
            f"up to {worst['refine_s']:.2f} s for {worst['case']}, whose box is {worst['box_share']:.0%} of it).",
            END,
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cascade", type=Path, help="a model folder with a refinement stage")
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--every", type=int, default=1, help="every k-th cached case")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
