"""Does removing small predicted components pay? Out of fold, whole-region and lesion-wise, on the 22 shared cases.

Each cross-validation fold model shipped with the bundled model (``folds/foldK``) predicts its own validation
cases (as in training: the cache, the fold card's thresholds and post-processing). Then, per region, predicted
26-connected components smaller than S mm^3 are removed (a removed WT component takes the TC and ET inside it),
for each S in ``--sizes``; whole-region Dice and BraTS-GLI lesion-wise Dice are scored. The "nested" row chooses S
for each fold on the other folds' cases only (by mean lesion-wise Dice over the regions) and scores it on that fold.

    bratsseg preprocess ../shared/data/brats -o /tmp/cache22
    python scripts/component_filter_oof.py --cache /tmp/cache22 --sizes 0 25 100 200 400 800 1600 3200
    python scripts/component_filter_oof.py --render --write README.md     # the README block from the JSON
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bratsseg.data.cache import open_cache
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import binarize
from bratsseg.labels import REGIONS
from bratsseg.metrics.lesion import PRESETS
from bratsseg.metrics.tables import case_rows
from bratsseg.models.bundled import default_model_path

SIZES = (0, 10, 25, 50, 100, 200, 400)
ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "component_filter.json"
BEGIN = "<!-- component-filter: begin (scripts/component_filter_oof.py --render --write README.md) -->"
END = "<!-- component-filter: end -->"


def render(result: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"Out of fold on the {result['cases']} shared cases (`python scripts/component_filter_oof.py`; the shipped "
        f"fold models, {result['rules']} lesion rules):",
        "",
        "| predicted components removed below | " + " | ".join(f"Dice {r} | LW Dice {r}" for r in REGIONS) + " |",
        "|---" * 7 + "|",
    ]
    rows = [(f"{float(s):g} mm^3", m) for s, m in result["by_min_component_mm3"].items()]
    chosen = ", ".join(f"{v:g}" for v in result["nested"]["chosen"].values())
    rows.append((f"nested (chosen per fold on the others: {chosen})", result["nested"]))
    for label, m in rows:
        cells = " | ".join(f"{m['dice'][r]:.3f} | {m['lesion_dice'][r]:.3f}" for r in REGIONS)
        lines.append(f"| {label} | {cells} |")
    return "\n".join([*lines, END])


def remove_small(regions: np.ndarray, spacing: list[float], min_mm3: float) -> np.ndarray:
    if min_mm3 <= 0:
        return regions
    voxel = float(np.prod(spacing))
    out = regions.copy()
    for r in range(3):
        labels, n = ndimage.label(out[r], structure=np.ones((3, 3, 3), dtype=bool))
        if n:
            sizes = np.bincount(labels.ravel())[1:] * voxel
            out[r] = np.isin(labels, np.flatnonzero(sizes >= min_mm3) + 1)
    out[1] &= out[0]
    out[2] &= out[1]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=JSON_OUT)
    parser.add_argument("--render", action="store_true", help="print the README block from the JSON")
    parser.add_argument("--write", type=Path, help="with --render: replace the block in this file")
    parser.add_argument("--sizes", type=float, nargs="+", default=SIZES)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if args.render:
        block = render(json.loads(args.output.read_text()))
        if args.write:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from common import replace_block

            args.write.write_text(replace_block(args.write.read_text(), block, BEGIN, END))
        print(block)
        return 0
    if args.cache is None:
        parser.error("give --cache (or --render)")
    by_id = {c.case_id: c for c in open_cache(args.cache)}
    rules = PRESETS["BraTS-GLI"]
    rows: dict[str, dict[float, list[dict[str, Any]]]] = {}  # fold -> size -> rows
    for fold in sorted((default_model_path() / "folds").iterdir()):
        predictor = load_predictor(fold, threads=args.threads)
        rows[fold.name] = {s: [] for s in args.sizes}
        for cid in predictor.card.training.val_cases:
            case = by_id[cid]
            probs = predictor.probabilities(case.image)
            pred = postprocess_regions(
                binarize(probs, predictor.thresholds), case.spacing, predictor.card.postprocessing
            )
            total = int(np.prod(case.original_shape))
            for s in args.sizes:
                kept = remove_small(pred, list(case.spacing), s)
                rows[fold.name][s] += case_rows(cid, kept, case.regions(), case.spacing, total, lesion=rules)
        print(f"{fold.name}: {len(predictor.card.training.val_cases)} cases", file=sys.stderr)

    def means(selected: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
        return {
            m: {r: float(np.mean([x[m] for x in selected if x["region"] == r])) for r in REGIONS}
            for m in ("dice", "lesion_dice", "lesion_fp", "hd95", "lesion_hd95")
        }

    def score(selected: list[dict[str, Any]]) -> float:
        return float(np.mean([x["lesion_dice"] for x in selected]))

    table = {str(s): means([x for f in rows.values() for x in f[s]]) for s in args.sizes}
    nested_rows, chosen = [], {}
    for fold in rows:
        others = {s: [x for g in rows if g != fold for x in rows[g][s]] for s in args.sizes}
        best = max(args.sizes, key=lambda s: score(others[s]))
        chosen[fold] = best
        nested_rows += rows[fold][best]
    out = {"cases": sum(len(f[args.sizes[0]]) for f in rows.values()) // 3, "rules": rules.name,
           "by_min_component_mm3": table, "nested": {"chosen": chosen, **means(nested_rows)}}  # fmt: skip
    args.output.write_text(json.dumps(out, indent=1))
    print(f"{'min mm3':>8}  " + "  ".join(f"Dice {r}  LW {r}  FP {r}" for r in REGIONS))
    for s, m in [*table.items(), ("nested", out["nested"])]:
        print(f"{s:>8}  " + "  ".join(f"{m['dice'][r]:.3f}  {m['lesion_dice'][r]:.3f}  {m['lesion_fp'][r]:.2f}"
                                       for r in REGIONS))  # fmt: skip
    print("nested choices:", chosen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
