"""bratsseg's lesion-wise metrics against the official BraTS 2023+ evaluator, on label maps of real cases.

The official evaluator (github.com/rachitsaluja/BraTS-2023-Metrics: ``metrics.py`` and its ``surface_distance``)
is not a dependency of bratsseg: it pins NumPy 1.x and pandas 1.x. Give it its own environment and its checkout:

    python3 -m venv /tmp/offvenv && /tmp/offvenv/bin/pip install "numpy<2" "pandas<2" scipy \
        connected-components-3d nibabel
    git clone https://github.com/rachitsaluja/BraTS-2023-Metrics /tmp/official
    bratsseg predict ../shared/data/brats -o /tmp/lw/pred
    python scripts/lesion_vs_official.py /tmp/lw/pred ../shared/data/brats \
        --official-python /tmp/offvenv/bin/python --official-repo /tmp/official -o docs/lesion_vs_official.json

Both read the same files; labels are rewritten in the 2023 convention (ET = 3) first, as the official code expects.
Prints, per case and region, both results and the largest differences;
``--render --write docs/reference/metrics.md`` puts the summary of the JSON into that page (tests/test_docs.py
checks it is what the JSON renders).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.io.discovery import discover_cases
from bratsseg.io.nifti import header_essentials, open_nifti, read_array, save_nifti
from bratsseg.labels import BRATS2023, REGIONS, labels_to_regions, regions_to_labels
from bratsseg.metrics.lesion import lesion_scores

OFFICIAL = """
import json, sys, warnings
warnings.filterwarnings("ignore")
sys.path.insert(0, sys.argv[1])
import metrics
out = {}
for pred, gt, key in json.loads(sys.argv[2]):
    df = metrics.get_LesionWiseResults(pred, gt, sys.argv[3])
    out[key] = {r["Labels"]: {k: float(v) for k, v in r.items() if k != "Labels"} for r in df.to_dict("records")}
print(json.dumps(out))
"""
ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "lesion_vs_official.json"
BEGIN = "<!-- lesion-vs-official: begin (scripts/lesion_vs_official.py --render --write docs/reference/metrics.md) -->"
END = "<!-- lesion-vs-official: end -->"
FIELDS = {"lesion_dice": "LesionWise_Score_Dice", "lesion_hd95": "LesionWise_Score_HD95", "lesion_tp": "Num_TP",
          "lesion_fp": "Num_FP", "lesion_fn": "Num_FN"}  # fmt: skip


def official_results(
    pairs: list[tuple[str, str, str]], python: str, repo: str, challenge: str = "BraTS-GLI"
) -> dict[str, Any]:
    """The official evaluator's results for ``(pred, truth, key)`` files, run in its own interpreter."""
    cmd = [python, "-c", OFFICIAL, repo, json.dumps(pairs), challenge]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"the official evaluator failed: {done.stderr.strip().splitlines()[-1:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def compare(pred_dir: Path, data: Path, python: str, repo: str, limit: int | None = None) -> dict[str, Any]:
    cases = [
        c for c in discover_cases(data).cases if c.seg is not None and (pred_dir / f"{c.case_id}.nii.gz").is_file()
    ]
    cases = cases[:limit] if limit else cases
    ours: dict[str, dict[str, Any]] = {}
    pairs = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in cases:
            truth_img = open_nifti(case.seg)
            header = header_essentials(truth_img)
            truth = labels_to_regions(read_array(truth_img, case.seg, np.int64), case.convention)
            pred_path = pred_dir / f"{case.case_id}.nii.gz"
            pred = labels_to_regions(read_array(open_nifti(pred_path), pred_path, np.int64), case.convention)
            spacing = [float(z) for z in truth_img.header.get_zooms()[:3]]
            ours[case.case_id] = {r: lesion_scores(pred[i], truth[i], spacing).row() for i, r in enumerate(REGIONS)}
            p = save_nifti(regions_to_labels(pred, BRATS2023), header, Path(tmp, f"{case.case_id}_pred.nii.gz"))
            t = save_nifti(regions_to_labels(truth, BRATS2023), header, Path(tmp, f"{case.case_id}_seg.nii.gz"))
            pairs.append((str(p), str(t), case.case_id))
        official = official_results(pairs, python, repo)
    diffs = {f: 0.0 for f in FIELDS}
    for cid in ours:
        for r in REGIONS:
            for f, g in FIELDS.items():
                diffs[f] = max(diffs[f], abs(float(ours[cid][r][f]) - official[cid][r][g]))
    return {"cases": len(ours), "max_abs_difference": diffs, "bratsseg": ours, "official": official}


def render(result: dict[str, Any]) -> str:
    d = result["max_abs_difference"]
    lesions = sum(
        int(r[k]) for case in result["bratsseg"].values() for r in case.values() for k in ("lesion_tp", "lesion_fn")
    )
    fps = sum(int(r["lesion_fp"]) for case in result["bratsseg"].values() for r in case.values())
    return "\n".join([
        BEGIN,
        f"Measured by `python scripts/lesion_vs_official.py` on {result['cases']} real shared cases x 3 regions "
        f"({lesions} scored reference lesions, {fps} false-positive components; the label maps are the bundled "
        "model's, so this is a check of the metric, not of the model): largest difference from the official "
        f"evaluator in lesion-wise Dice {d['lesion_dice']:.2g}, in the TP / FP / FN counts "
        f"{d['lesion_tp']:.0f} / {d['lesion_fp']:.0f} / {d['lesion_fn']:.0f}, in lesion-wise HD95 "
        f"{d['lesion_hd95']:.2f} mm.",
        END,
    ])  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pred_dir", type=Path, nargs="?")
    parser.add_argument("data", type=Path, nargs="?")
    parser.add_argument("--official-python")
    parser.add_argument("--official-repo")
    parser.add_argument("--render", action="store_true", help="print the block from the JSON (-o or default)")
    parser.add_argument("--write", type=Path, help="with --render: replace the block in this file")
    parser.add_argument("--limit", type=int)
    parser.add_argument("-o", "--output", type=Path)
    args = parser.parse_args()
    if args.render:
        block = render(json.loads((args.output or JSON_OUT).read_text()))
        if args.write:
            from bratsseg.docblocks import replace_block

            args.write.write_text(replace_block(args.write.read_text(), block, BEGIN, END))
        print(block)
        return 0
    if not (args.pred_dir and args.data and args.official_python and args.official_repo):
        parser.error("give PRED_DIR DATA --official-python --official-repo (or --render)")
    result = compare(args.pred_dir, args.data, args.official_python, args.official_repo, args.limit)
    for cid, regions in result["bratsseg"].items():
        for r in REGIONS:
            a, b = regions[r], result["official"][cid][r]
            print(f"{cid:24s} {r}  ours dice {a['lesion_dice']:.4f} hd95 {a['lesion_hd95']:7.2f} "
                  f"tp/fp/fn {a['lesion_tp']}/{a['lesion_fp']}/{a['lesion_fn']}   official dice "
                  f"{b['LesionWise_Score_Dice']:.4f} hd95 {b['LesionWise_Score_HD95']:7.2f} tp/fp/fn "
                  f"{b['Num_TP']:.0f}/{b['Num_FP']:.0f}/{b['Num_FN']:.0f}")  # fmt: skip
    print("largest differences:", json.dumps(result["max_abs_difference"]))
    if args.output:
        args.output.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
