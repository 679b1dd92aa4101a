"""What the bundled model finds in a brain without tumour, and what tells such a brain from a finding (issue 32.7).

Tumour-free inputs are built from the shared cases: the hemisphere without tumour (fewer than 0.5% of the case's
true whole-tumour voxels on its side of the volume's midline, x = 120 on the BraTS grid) is mirrored onto the other
side, all four modalities alike. Each case, real and mirrored, is segmented by the bundled fold model that did not
train on it (out of fold; ONNX Runtime, the bundle's threshold and post-processing). For each prediction: the
volume of each region in cm^3 and the case's *confidence*, the mean whole-tumour probability over the voxels
predicted as whole tumour (a sure finding is near 1, a hesitant one lower).

The rule measured (not shipped: it never separated the two well enough): a case whose confidence is below a threshold
would be written as "no tumour found" (all regions empty). Its threshold is chosen nested: for each fold, the largest
candidate that empties no real case of the other folds, scored on the fold's own real and tumour-free cases.

    python scripts/tumour_free.py [--data ../shared/data/brats]       # measure (docs/tumour_free.json)
    python scripts/tumour_free.py --render --write docs/results/robustness.md           # the block from the JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.data.geometry import crop
from bratsseg.data.preprocess import crop_and_normalise
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
JSON_OUT = ROOT / "docs" / "tumour_free.json"
BEGIN = "<!-- tumour-free: begin (scripts/tumour_free.py --render --write docs/results/robustness.md) -->"
END = "<!-- tumour-free: end -->"
#: candidate confidence thresholds (0: the rule off)
CANDIDATES = (0.0, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
MIDLINE = 120


def confidence(probs: np.ndarray, wt: np.ndarray) -> float:
    """Mean whole-tumour probability over the voxels predicted as whole tumour (0 when there are none)."""
    return float(probs[0][wt].mean()) if wt.any() else 0.0


def mirrored_healthy(channels: list[np.ndarray], wt: np.ndarray) -> list[np.ndarray] | None:
    """The four modalities with their tumour-free hemisphere mirrored onto the other side, or None when both
    hemispheres hold tumour."""
    left, right = int(wt[:MIDLINE].sum()), int(wt[MIDLINE:].sum())
    total = left + right
    if min(left, right) > 0.005 * total:
        return None
    out = []
    for ch in channels:
        a = np.array(ch)
        if left <= right:  # the left half is healthy: mirror it over the right
            a[MIDLINE : 2 * MIDLINE] = a[:MIDLINE][::-1]
        else:
            a[:MIDLINE] = a[MIDLINE : 2 * MIDLINE][::-1]
        out.append(a)
    return out


def run_case(predictor: Any, shipped: Any, channels: list[np.ndarray], zooms: Any) -> dict[str, Any]:
    norm = crop_and_normalise(channels, predictor.card.preprocessing.margin)
    probs = probabilities_at_model_spacing(predictor, norm.image, tuple(zooms))
    regions = binarize(probs, shipped.thresholds)
    post = postprocess_regions(regions, zooms, shipped.postprocessing, norm.image)
    voxel_cm3 = float(np.prod(zooms)) / 1000
    return {
        "box": norm.box,
        "regions": post,
        "volume_cm3": {g: float(post[r].sum()) * voxel_cm3 for r, g in enumerate(REGIONS)},
        "confidence": confidence(probs, regions[0]),
    }


def measure(args: argparse.Namespace) -> dict[str, Any]:
    bundle = default_model_path()
    shipped = read_card(bundle)
    fold_of = {c: p.name for c, p in fold_of_cases(sorted((bundle / "folds").iterdir())).items()}
    predictors = {f: load_predictor(bundle / "folds" / f, threads=args.threads) for f in set(fold_of.values())}
    rows = []
    for case in discover_cases(args.data).cases:
        if case.case_id not in fold_of:
            continue
        raw = load_raw_case(case)
        zooms = raw.header["zooms"]
        seg = open_nifti(case.seg)
        truth = labels_to_regions(np.asarray(read_array(seg, case.seg)).astype(np.uint8), case.convention)
        channels = [np.asarray(c) for c in raw.channels]
        predictor = predictors[fold_of[case.case_id]]
        real = run_case(predictor, shipped, channels, zooms)
        d = dice_per_region(real["regions"], crop(truth, real["box"]))
        row: dict[str, Any] = {
            "case": case.case_id,
            "fold": fold_of[case.case_id],
            "real": {"volume_cm3": real["volume_cm3"], "confidence": real["confidence"], "dice": d},
        }
        healthy = mirrored_healthy(channels, truth[0])
        if healthy is not None:
            free = run_case(predictor, shipped, healthy, zooms)
            row["tumour_free"] = {"volume_cm3": free["volume_cm3"], "confidence": free["confidence"]}
        rows.append(row)
        print(case.case_id, row["real"]["confidence"], row.get("tumour_free"), file=sys.stderr)
    return {"cases": rows, "candidates": list(CANDIDATES), "nested": nested_rule(rows)}


def _scores(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    """The rule at ``threshold`` on ``rows``: real cases emptied, tumour-free inputs emptied, and what remains."""
    real = list(rows)
    free = [r for r in rows if "tumour_free" in r]
    kept_real = [r for r in real if r["real"]["confidence"] >= threshold]
    return {
        "real_emptied": len(real) - len(kept_real),
        "free_emptied": sum(r["tumour_free"]["confidence"] < threshold for r in free),
        "free_wt_cm3": [
            0.0 if r["tumour_free"]["confidence"] < threshold else r["tumour_free"]["volume_cm3"]["WT"] for r in free
        ],
        "real_dice": [
            {g: (r["real"]["dice"][g] if r["real"]["confidence"] >= threshold else 0.0) for g in REGIONS} for r in real
        ],
    }


def nested_rule(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per fold: the largest candidate that empties no real case of the other folds; scored on the fold's own."""
    folds = sorted({r["fold"] for r in rows})
    chosen = {}
    for f in folds:
        others = [r for r in rows if r["fold"] != f]
        ok = [t for t in CANDIDATES if _scores(others, t)["real_emptied"] == 0]
        chosen[f] = max(ok)
    own = {f: _scores([r for r in rows if r["fold"] == f], chosen[f]) for f in folds}
    everyone = max(t for t in CANDIDATES if _scores(rows, t)["real_emptied"] == 0)
    free_wt = [v for s in own.values() for v in s["free_wt_cm3"]]
    real_dice = [d for s in own.values() for d in s["real_dice"]]
    off = _scores(rows, 0.0)
    return {
        "chosen": chosen,
        "shipped": everyone,
        "free_inputs": len(free_wt),
        "free_emptied": sum(s["free_emptied"] for s in own.values()),
        "real_emptied": sum(s["real_emptied"] for s in own.values()),
        "free_wt_cm3_mean": float(np.mean(free_wt)) if free_wt else None,
        "free_wt_cm3_max": float(np.max(free_wt)) if free_wt else None,
        "off_free_wt_cm3_mean": float(np.mean(off["free_wt_cm3"])) if off["free_wt_cm3"] else None,
        "off_free_wt_cm3_max": float(np.max(off["free_wt_cm3"])) if off["free_wt_cm3"] else None,
        "real_dice": {g: float(np.mean([d[g] for d in real_dice])) for g in REGIONS},
        "off_real_dice": {g: float(np.mean([d[g] for d in off["real_dice"]])) for g in REGIONS},
    }


def render(result: dict[str, Any]) -> str:
    rows = result["cases"]
    free = [r for r in rows if "tumour_free" in r]
    n = result["nested"]
    real_conf = [r["real"]["confidence"] for r in rows]
    free_conf = [r["tumour_free"]["confidence"] for r in free]
    lines = [
        BEGIN,
        f"Out of fold on the {len(rows)} shared cases and the {len(free)} tumour-free inputs made from them (the "
        "healthy hemisphere mirrored; `python scripts/tumour_free.py`). Confidence: the mean whole-tumour probability "
        "over the voxels predicted as whole tumour.",
        "",
        "| | inputs | WT found, mean cm^3 | WT found, max cm^3 | confidence, min-max | real cases' Dice WT / TC / ET |",
        "|---|---|---|---|---|---|",
        f"| tumour-free inputs, no rule | {len(free)} | {n['off_free_wt_cm3_mean']:.1f} | "
        f"{n['off_free_wt_cm3_max']:.1f} | {min(free_conf):.2f}-{max(free_conf):.2f} | |",
        f"| real cases, no rule | {len(rows)} | | | {min(real_conf):.2f}-{max(real_conf):.2f} | "
        + " / ".join(f"{n['off_real_dice'][g]:.3f}" for g in REGIONS)
        + " |",
        f"| **nested rule** (per fold, the largest confidence threshold that empties no real case of the other "
        f"folds) | {n['free_inputs']} tumour-free, {len(rows)} real | {n['free_wt_cm3_mean']:.1f} | "
        f"{n['free_wt_cm3_max']:.1f} | {n['free_emptied']} tumour-free and {n['real_emptied']} real emptied | "
        + " / ".join(f"{n['real_dice'][g]:.3f}" for g in REGIONS)
        + " |",
        "",
        f"Nested thresholds: {', '.join(f'{f} {t:g}' for f, t in n['chosen'].items())}; chosen on every case: "
        f"{n['shipped']:g}.",
        END,
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "brats")
    parser.add_argument("--threads", type=int, default=1)
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
