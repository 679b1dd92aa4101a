"""One out-of-fold case looked at closely (issue 31): where a run's fold model draws the tumour core and ET that the
reference does not have, and what the reference's core looks like to it. The case is scored as the run's bundle
would write it (its fold at the nested threshold, with the chosen post-processing; ``RUN/bundle_choices.json``).

For each region: true and predicted voxels, their overlap and Dice, and the network's mean probability inside the
true region. For the core and ET drawn outside the reference's: which reference label lies under them (background,
necrosis, oedema, ET) and how far their centre lies from the true core's centre (mm). For the reference's ET,
necrosis and oedema and for the wrongly drawn ET: the mean of each modality, z-scored over the brain as the network
sees it. A figure shows two axial slices (through the wrongly drawn ET and through the true ET), T1ce and FLAIR,
with the reference's and the prediction's outlines. Stored under the case id in ``docs/case_look.json``.

    python scripts/case_look.py --run RUN --case CASE_ID [--figure docs/figures/look_CASE.png]
    python scripts/case_look.py --render --write docs/results/accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "case_look.json"
BEGIN = "<!-- case-look: begin (scripts/case_look.py --render --write docs/results/accuracy.md) -->"
END = "<!-- case-look: end -->"
LABEL_NAMES = {0: "background", 1: "necrosis", 2: "oedema", 4: "ET"}
MODALITIES = ("flair", "t1", "t1ce", "t2")


def _centre_mm(mask: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0) * np.asarray(spacing, dtype=float)


def _figure(path: Path, image: np.ndarray, labels: np.ndarray, pred: np.ndarray, wrong_et: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slices = {
        "through the wrongly drawn ET": round(float(np.argwhere(wrong_et)[:, 2].mean())),
        "through the true ET": round(float(np.argwhere(labels == 4)[:, 2].mean())),
    }
    fig, axes = plt.subplots(2, 2, figsize=(8, 8.6))
    for row, (where, z) in enumerate(slices.items()):
        for col, (channel, name) in enumerate(((2, "T1ce"), (0, "FLAIR"))):
            ax = axes[row, col]
            ax.imshow(image[channel][:, :, z].T, cmap="gray", origin="lower")
            for mask, colour in (
                (labels[:, :, z] > 0, "yellow"),
                (labels[:, :, z] == 4, "lime"),
                (pred[0][:, :, z], "cyan"),
                (pred[2][:, :, z], "red"),
            ):
                if mask.any():
                    ax.contour(mask.T, [0.5], colors=colour, linewidths=0.8)
            ax.set_title(f"{name}, slice {z} ({where})", fontsize=8)
            ax.axis("off")
    fig.suptitle("reference: WT yellow, ET green; prediction: WT cyan, ET red", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=60)
    plt.close(fig)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bratsseg.engine.bundle import choose, shipped_settings
    from bratsseg.engine.crossval import OutOfFold
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.labels import REGIONS
    from bratsseg.metrics.overlap import dice_per_region

    if not (args.run and args.case):
        raise SystemExit("give --run and --case (or --render)")
    choices = choose(args.run, say=lambda line: print(line, file=sys.stderr))
    cv, post = choices["cv"], shipped_settings(choices)[1]
    nested = cv["nested_threshold"]["thresholds"]
    oof = OutOfFold(args.run / "eval", args.run / "cache")
    ids = [c.case_id for c in oof.cases]
    if args.case not in ids:
        raise SystemExit(f"{args.case}: not among {args.run}'s out-of-fold cases")
    i = ids.index(args.case)
    case = oof.cases[i]
    image = np.asarray(case.image, dtype=np.float32)
    labels = np.asarray(case.labels())
    probs = oof.probabilities(i)
    pred = postprocess_regions(probs > nested[oof.fold_of[i]], case.spacing, post, image)
    truth = oof.truth[i]
    dice = dice_per_region(pred, truth)
    regions = {
        name: {
            "true_voxels": int(truth[r].sum()),
            "pred_voxels": int(pred[r].sum()),
            "overlap_voxels": int((truth[r] & pred[r]).sum()),
            "dice": dice[name],
            "mean_probability_inside_truth": float(probs[r][truth[r]].mean()) if truth[r].any() else None,
        }
        for r, name in enumerate(REGIONS)
    }
    core_centre = _centre_mm(truth[1], case.spacing) if truth[1].any() else None
    wrong: dict[str, Any] = {}
    for r, name in ((1, "TC"), (2, "ET")):
        extra = pred[r] & ~truth[r]
        under = {
            LABEL_NAMES[int(v)]: int(n) for v, n in zip(*np.unique(labels[extra], return_counts=True), strict=True)
        }
        wrong[name] = {
            "voxels": int(extra.sum()),
            "reference_label_under": under,
            "outside_reference_wt_voxels": int((extra & ~truth[0]).sum()),
            "centre_from_true_core_mm": float(np.linalg.norm(_centre_mm(extra, case.spacing) - core_centre))
            if extra.any() and core_centre is not None
            else None,
        }
    wrong_et = pred[2] & ~truth[2]
    brain = np.any(image != 0, axis=0)
    looks = {}
    for name, mask in (
        ("reference ET", labels == 4),
        ("reference necrosis", labels == 1),
        ("reference oedema", labels == 2),
        ("ET drawn outside the reference's", wrong_et),
    ):
        looks[name] = {m: float(image[c][mask & brain].mean()) if (mask & brain).any() else None
                       for c, m in enumerate(MODALITIES)}  # fmt: skip
    figure = args.figure or ROOT / "docs" / "figures" / f"look_{args.case}.png"
    drawn = bool(wrong_et.any() and (labels == 4).any())  # the figure's two slices go through both
    if drawn:
        _figure(figure, image, labels, pred, wrong_et)
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {"cases": {}}
    stored["cases"][args.case] = {
        "run": str(args.run),
        "fold": oof.fold_of[i],
        "threshold": nested[oof.fold_of[i]],
        "regions": regions,
        "drawn_outside_reference": wrong,
        "mean_zscore": looks,
        "figure": None if not drawn else str(figure.relative_to(ROOT)) if figure.is_relative_to(ROOT) else str(figure),
    }
    return stored


def render(d: dict[str, Any]) -> str:
    lines = [BEGIN]
    for case, c in d["cases"].items():
        lines += [
            f"**{case}**, out of fold ({c['run']}, {c['fold']}, as its bundle would write it; "
            f"`python scripts/case_look.py --run {c['run']} --case {case}`).",
            "",
            "| region | true voxels | predicted | overlap | Dice | mean probability inside the true region |",
            "|---|---|---|---|---|---|",
        ]
        for name, r in c["regions"].items():
            p = r["mean_probability_inside_truth"]
            lines.append(
                f"| {name} | {r['true_voxels']:,} | {r['pred_voxels']:,} | {r['overlap_voxels']:,} | "
                f"{r['dice']:.2f} | {'-' if p is None else f'{p:.2f}'} |"
            )
        lines += [
            "",
            "| drawn outside the reference's | voxels | reference label under them | outside the reference's WT "
            "| centre from the true core's centre |",
            "|---|---|---|---|---|",
        ]
        for name, w in c["drawn_outside_reference"].items():
            under = ", ".join(
                f"{k} {v:,}" for k, v in sorted(w["reference_label_under"].items(), key=lambda kv: -kv[1])
            )
            dist = "-" if w["centre_from_true_core_mm"] is None else f"{w['centre_from_true_core_mm']:.0f} mm"
            lines.append(
                f"| {name} | {w['voxels']:,} | {under or '-'} | {w['outside_reference_wt_voxels']:,} | {dist} |"
            )
        lines += ["", "| mean z-score | " + " | ".join(MODALITIES) + " |", "|---|" + "---|" * len(MODALITIES)]
        for name, look in c["mean_zscore"].items():
            cells = ["-" if look[m] is None else f"{look[m]:+.2f}" for m in MODALITIES]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        if c["figure"]:
            lines += ["", f"![{case}: the reference and the prediction](../{Path(c['figure']).relative_to('docs')})"]
        lines.append("")
    if lines[-1] == "":
        lines.pop()
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, help="a cross-validation run whose folds are evaluated")
    parser.add_argument("--case", help="one of its cases")
    parser.add_argument("--figure", type=Path, help="where the figure goes (default docs/figures/look_CASE.png)")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
