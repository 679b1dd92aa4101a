"""What a few extreme voxels do to a segmentation, with and without the clipping before the z-score (issue 32.6).

Each of the 22 shared cases is segmented by the bundled fold model that did not train on it (out of fold, ONNX
Runtime, the fast path of ``predict``, at the bundle's threshold and with its post-processing), as read from disk
and with ten voxels of one modality set to 1e6 (random brain voxels, seeded), once with today's normalisation (each
channel clipped to its brain's 0.05-99.95th percentiles, then z-scored) and once without the clipping (plain
z-score, as before). Dice per region against the truth, mean over the cases, and the worst case's drop.

    python scripts/outlier_robustness.py [--data ../shared/data/brats] [--write docs/results/robustness.md]
    python scripts/outlier_robustness.py --render --write docs/results/robustness.md      # the block from the JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

import bratsseg.data.preprocess as preprocess
from bratsseg.data.geometry import crop
from bratsseg.engine.cascade import fold_of_cases
from bratsseg.engine.predict import probabilities_at_model_spacing
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import binarize
from bratsseg.io.discovery import discover_cases
from bratsseg.io.nifti import load_raw_case, open_nifti, read_array
from bratsseg.labels import REGIONS, labels_to_regions
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import read_card

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "outlier_robustness.json"
BEGIN = "<!-- outlier-robustness: begin (scripts/outlier_robustness.py --render --write docs/results/robustness.md) -->"
END = "<!-- outlier-robustness: end -->"
INPUTS = {"as read": None, "10 FLAIR voxels at 1e6": 0, "10 T1ce voxels at 1e6": 2}


def segment(predictor: Any, shipped: Any, channels: list[np.ndarray], zooms: Any) -> tuple[np.ndarray, Any]:
    """The fold model's probabilities, binarised and post-processed as the bundle ships (``shipped``: its card)."""
    norm = preprocess.crop_and_normalise(channels, predictor.card.preprocessing.margin)
    probs = probabilities_at_model_spacing(predictor, norm.image, tuple(zooms))
    regions = binarize(probs, shipped.thresholds)
    return postprocess_regions(regions, zooms, shipped.postprocessing, norm.image), norm.box


def measure(args: argparse.Namespace) -> dict[str, Any]:
    bundle = default_model_path()
    shipped = read_card(bundle)
    fold_of = fold_of_cases(sorted((bundle / "folds").iterdir()))
    predictors = {f: load_predictor(f, threads=args.threads) for f in set(fold_of.values())}
    cases = [c for c in discover_cases(args.data).cases if c.case_id in fold_of]
    scores: dict[str, dict[str, list[dict[str, float]]]] = {"clipped": {}, "plain": {}}
    for case in cases:
        raw = load_raw_case(case)
        zooms = raw.header["zooms"]
        seg = open_nifti(case.seg)
        truth_full = labels_to_regions(np.asarray(read_array(seg, case.seg)).astype(np.uint8), case.convention)
        brain = np.flatnonzero(np.asarray(raw.channels[0]) != 0)
        rng = np.random.default_rng(0)
        picks = rng.choice(brain, 10, replace=False)
        for variant, percentiles in (("clipped", preprocess.CLIP_PERCENTILES), ("plain", (0.0, 100.0))):
            old = preprocess.CLIP_PERCENTILES
            preprocess.CLIP_PERCENTILES = percentiles
            try:
                for name, channel in INPUTS.items():
                    channels = [np.asarray(c) for c in raw.channels]
                    if channel is not None:
                        channels[channel] = channels[channel].astype(np.float32)
                        channels[channel][np.unravel_index(picks, channels[channel].shape)] = 1e6
                    pred, box = segment(predictors[fold_of[case.case_id]], shipped, channels, zooms)
                    d = dice_per_region(pred, crop(truth_full, box))
                    scores[variant].setdefault(name, []).append({g: float(d[g]) for g in REGIONS})
            finally:
                preprocess.CLIP_PERCENTILES = old
        print(case.case_id, {v: {n: s[n][-1] for n in s} for v, s in scores.items()}, file=sys.stderr)
    out: dict[str, Any] = {"cases": len(cases), "percentiles": list(preprocess.CLIP_PERCENTILES), "rows": {}}
    for variant, by_input in scores.items():
        for name, rows in by_input.items():
            clean = scores[variant]["as read"]
            drop = [float(np.mean([c[g] - r[g] for g in REGIONS])) for c, r in zip(clean, rows, strict=True)]
            out["rows"][f"{variant}|{name}"] = {
                "dice": {g: float(np.mean([r[g] for r in rows])) for g in REGIONS},
                "worst_mean_drop": float(max(drop)),
                "cases_zeroed": int(sum(all(r[g] == 0 for g in REGIONS) for r in rows)),
            }
    return out


def render(result: dict[str, Any]) -> str:
    lo, hi = result["percentiles"]
    lines = [
        BEGIN,
        f"Out of fold on the {result['cases']} shared cases (each by the bundled fold model that did not train on it; "
        "`python scripts/outlier_robustness.py`): mean Dice with ten random brain voxels of one modality set to 1e6, "
        f"with the clipping to the brain's {lo:g}-{hi:g}th percentiles before the z-score (shipped) and without it "
        "(plain z-score, before). Worst drop: the largest fall of a case's mean Dice against the same case as read.",
        "",
        "| normalisation | input | Dice WT | Dice TC | Dice ET | worst drop | cases with every region 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, row in result["rows"].items():
        variant, name = key.split("|")
        label = f"clipped at {lo:g}-{hi:g}%" if variant == "clipped" else "plain z-score (before)"
        d = row["dice"]
        lines.append(
            f"| {label} | {name} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} | {row['worst_mean_drop']:.3f} "
            f"| {row['cases_zeroed']} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats")
    parser.add_argument("--threads", type=int, default=2)
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
