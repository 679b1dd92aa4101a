"""ET where it is small (issue 31): each out-of-fold case with fewer than 5,000 true ET voxels, its ET as a bundle
made by ``bratsseg bundle`` writes it (each fold at its nested threshold, with the shipped post-processing), the
true and predicted ET volumes, and the failure kind: ``missed`` (no ET predicted), ``elsewhere`` (ET drawn, but its
Dice under 0.1), ``over`` (more than twice the true volume), ``under`` (less than half), else ``close``. Each run
is stored under its ``--label`` in ``docs/small_et.json``; the block shows every stored run, case by case.

    python scripts/small_et.py --label NAME --run RUN [--model MODEL]
    python scripts/small_et.py --render --write docs/results/accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "small_et.json"
BEGIN = "<!-- small-et: begin (scripts/small_et.py --render --write docs/results/accuracy.md) -->"
END = "<!-- small-et: end -->"
KINDS = ("missed", "elsewhere", "over", "under", "close")


def kind_of(true_et: int, got: int, dice: float) -> str:
    if got == 0 and true_et:
        return "missed"
    if dice < 0.1:  # drawn, but hardly where the true ET is
        return "elsewhere"
    if got > 2 * true_et:
        return "over"
    if got < true_et / 2:
        return "under"
    return "close"


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bratsseg.engine.bundle import choose, shipped_settings
    from bratsseg.engine.crossval import SMALL_ET_VOXELS, OutOfFold
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.metrics.overlap import dice_per_region
    from bratsseg.models.card import read_card

    if not (args.label and args.run):
        raise SystemExit("give --label and --run (or --render)")
    if args.model is None:  # the run's own choices (made once, kept in RUN/bundle_choices.json)
        choices = choose(args.run, say=lambda line: print(line, file=sys.stderr))
        cv, post = choices["cv"], shipped_settings(choices)[1]
    else:
        card = read_card(args.model)
        cv, post = card.bundle["cross_validation"], card.postprocessing
    nested = cv["nested_threshold"]["thresholds"]
    oof = OutOfFold(args.run / "eval", args.run / "cache")
    rows = []
    for i, case in enumerate(oof.cases):
        true_et = oof.et_voxels[i]
        if true_et >= SMALL_ET_VOXELS:
            continue
        image = np.asarray(case.image, dtype=np.float32)
        pred = postprocess_regions(oof.probabilities(i) > nested[oof.fold_of[i]], case.spacing, post, image)
        got = int(pred[2].sum())
        dice = dice_per_region(pred, oof.truth[i])
        rows.append({"case": case.case_id, "true_et_voxels": true_et, "pred_et_voxels": got,
                     "kind": kind_of(true_et, got, dice["ET"]), "dice": dice})  # fmt: skip
        print(rows[-1], file=sys.stderr)
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {"sources": {}}
    stored["sources"][args.label] = {
        "run": str(args.run),
        "cases": len(rows),
        "kinds": {k: sum(r["kind"] == k for r in rows) for k in KINDS},
        "et_dice": float(np.mean([r["dice"]["ET"] for r in rows])),
        "rows": rows,
    }
    return stored


def render(d: dict[str, Any]) -> str:
    sources = d["sources"]
    names = list(sources)
    lines = [
        BEGIN,
        "ET on the small-ET cases (under 5,000 true ET voxels), out of fold, as each run's bundle would write it "
        "(each fold at its nested threshold, with the chosen post-processing; `python scripts/small_et.py`): the "
        "failure kinds (*missed*: no ET; *elsewhere*: ET drawn but its Dice under 0.1; *over*: more than twice the "
        "true volume; *under*: less than half), then case by case the predicted ET voxels (its kind) and the Dice of "
        "ET and of the tumour core (TC).",
        "",
        "| run | cases | ET Dice | missed / elsewhere / over / under / close |",
        "|---|---|---|---|",
    ]
    for name, s in sources.items():
        k = s["kinds"]
        lines.append(f"| {name} | {s['cases']} | {s['et_dice']:.3f} | " + " / ".join(str(k[x]) for x in KINDS) + " |")
    lines += ["", "| case | true ET voxels | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    by_case: dict[str, dict[str, Any]] = {}
    for name, s in sources.items():
        for r in s["rows"]:
            by_case.setdefault(r["case"], {"true": r["true_et_voxels"]})[name] = r
    for case, v in sorted(by_case.items(), key=lambda kv: kv[1]["true"]):
        cells = [
            f"{v[n]['pred_et_voxels']:,} ({v[n]['kind']}), ET {v[n]['dice']['ET']:.2f}, TC {v[n]['dice']['TC']:.2f}"
            if n in v
            else "-"
            for n in names
        ]
        lines.append(f"| {case} | {v['true']:,} | " + " | ".join(cells) + " |")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", help="the run's name in the table")
    parser.add_argument("--run", type=Path)
    parser.add_argument("--model", type=Path, help="a bundle made from RUN (default: RUN's own choices)")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
