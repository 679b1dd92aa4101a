"""What cross-validated fold models find in tumour-free brains, out of fold (issue 32.7 for a recipe, not a bundle).

For each labelled case under ``--data`` and each ``--run`` (a ``bratsseg crossval`` run on those cases), the fold
model that left the case out segments the real scan and two tumour-free inputs made from it: *healed* (the
training's construction, ``bratsseg.data.healthy``) and *mirrored* (the healthy hemisphere copied over the other,
which training never used), at the threshold and with the post-processing that run's bundle would ship
(``bratsseg.engine.bundle.choose``, kept in ``RUN/bundle_choices.json``). Recorded: the tumour found (cm^3 per region)
and the real scan's Dice. A recipe trained with tumour-free samples (``free_fraction``) should find far less in
the tumour-free inputs and no less on the real scans.

    python scripts/tumour_free_cv.py --data DATA --run "the recipe=runs/cv44" --run "+ free=runs/cv44free"
    python scripts/tumour_free_cv.py --render --write docs/results/robustness.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bratsseg.docblocks import named_path

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "tumour_free_cv.json"
BEGIN = "<!-- tumour-free-cv: begin (scripts/tumour_free_cv.py --render --write docs/results/robustness.md) -->"
END = "<!-- tumour-free-cv: end -->"
REGIONS = ("WT", "TC", "ET")


def shipped_choices(run: Path) -> Any:
    """What ``bratsseg bundle RUN`` would ship (its out-of-fold choices, made once and kept in the run): an object
    with ``thresholds`` (per region) and ``postprocessing``, as ``tumour_free.run_case`` reads a card."""
    from bratsseg.engine.bundle import choose, shipped_settings

    threshold, post = shipped_settings(choose(run, say=lambda line: print(line, file=sys.stderr)))
    return SimpleNamespace(thresholds=dict.fromkeys(REGIONS, threshold), postprocessing=post)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bratsseg.engine.workflow import fold_model
    from bratsseg.inference.loading import load_predictor
    from bratsseg.io.discovery import discover_cases
    from bratsseg.io.nifti import load_raw_case, open_nifti, read_array
    from bratsseg.labels import labels_to_regions

    sys.path.insert(0, str(ROOT / "scripts"))
    from tumour_free import mirrored_healthy
    from tumour_free_training import healed_input, score_inputs

    runs = []
    for name, run in args.run:
        splits = json.loads((run / "splits.json").read_text())
        fold_of = {c: f for f, s in splits.items() for c in s["val"]}
        runs.append((name, run, fold_of, shipped_choices(run)))
    predictors: dict[Path, Any] = {}
    cases: dict[str, Any] = {}
    t0 = time.monotonic()
    for data in args.data:
        for case in discover_cases(data).cases:
            if case.seg is None or not all(case.case_id in r[2] for r in runs):
                continue
            raw = load_raw_case(case)
            zooms = raw.header["zooms"]
            seg = np.asarray(read_array(open_nifti(case.seg), case.seg)).astype(np.uint8)
            truth = labels_to_regions(seg, case.convention)
            channels = [np.asarray(c) for c in raw.channels]
            inputs = {
                "real": channels,
                "healed": healed_input(channels, truth[0]),
                "mirrored": mirrored_healthy(channels, truth[0]),
            }
            row: dict[str, Any] = {}
            for name, run, fold_of, choices in runs:
                model = fold_model(run, int(fold_of[case.case_id].removeprefix("fold")))
                if model not in predictors:
                    predictors[model] = load_predictor(model, threads=args.threads, backend="torch")
                row[name] = score_inputs(predictors[model], choices, inputs, zooms, truth)
            cases[case.case_id] = row
            print(
                f"{case.case_id}: "
                + "; ".join(
                    f"{n} healed {r.get('healed', {}).get('cm3', {}).get('WT', float('nan')):.1f} cm3, mirrored "
                    f"{r.get('mirrored', {}).get('cm3', {}).get('WT', float('nan')):.1f} cm3"
                    for n, r in row.items()
                )
                + f" ({(time.monotonic() - t0) / 60:.1f} min)",
                file=sys.stderr,
                flush=True,
            )
    return {"runs": [n for n, *_ in runs], "data": [str(d) for d in args.data], "cases": cases}


def summary(d: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for name in d["runs"]:
        rows = [r[name] for r in d["cases"].values()]
        real = [np.mean([r["real"]["dice"][g] for g in REGIONS]) for r in rows]
        out[name] = {
            "cases": len(rows),
            "real_dice": float(np.mean(real)),
            **{
                kind: {
                    "inputs": sum(kind in r for r in rows),
                    "wt_cm3": float(np.mean([r[kind]["cm3"]["WT"] for r in rows if kind in r])),
                    "empty": int(sum(r[kind]["cm3"]["WT"] == 0 for r in rows if kind in r)),
                }
                for kind in ("healed", "mirrored")
            },
        }
    return out


def render(d: dict[str, Any]) -> str:
    s = summary(d)
    lines = [
        BEGIN,
        "Tumour found in tumour-free brains by cross-validated fold models, each input by the fold model that left "
        "its case out, at the threshold and post-processing its run's bundle would ship "
        "(`python scripts/tumour_free_cv.py`): mean whole tumour in cm^3, how many inputs came out empty, and the "
        "mean Dice (of the three regions) on the real scans, the same way.",
        "",
        "| recipe | cases | real scans: mean Dice | healed: WT cm^3 (empty / inputs) "
        "| mirrored: WT cm^3 (empty / inputs) |",
        "|---|---|---|---|---|",
    ]
    for name, v in s.items():
        h, m = v["healed"], v["mirrored"]
        lines.append(
            f"| {name} | {v['cases']} | {v['real_dice']:.3f} | {h['wt_cm3']:.1f} ({h['empty']} / {h['inputs']}) | "
            f"{m['wt_cm3']:.1f} ({m['empty']} / {m['inputs']}) |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", type=Path, default=[], help="dataset roots of the runs' cases")
    parser.add_argument("--run", type=named_path, action="append", default=[], help="NAME=RUN (repeatable)")
    parser.add_argument("--threads", type=int, default=2)
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
