"""The documentation's cross-validation tables, rendered from the bundled model's card (never typed by hand).

    python scripts/cv_tables.py                 # print the tables
    python scripts/cv_tables.py --write docs/results/accuracy.md

``tests/test_docs.py`` checks that the page's block is what this script renders from the shipped model.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

BEGIN, END = "<!-- cv-tables: begin (scripts/cv_tables.py writes this block) -->", "<!-- cv-tables: end -->"
REGIONS = ("WT", "TC", "ET")
ROOT = Path(__file__).resolve().parents[1]
MODEL_JSON = ROOT / "src" / "bratsseg" / "models" / "bundled" / "brats3d" / "model.json"
ABLATION_JSON = ROOT / "docs" / "ablation.json"
COMPONENTS_JSON = ROOT / "docs" / "component_filter.json"


def _row(label: str, values: dict[str, float], bold: bool = False) -> str:
    cells = [f"{values[g]:.3f}" for g in REGIONS] + [f"{sum(values[g] for g in REGIONS) / 3:.3f}"]
    if bold:
        label, cells = f"**{label}**", [f"**{c}**" for c in cells]
    return f"| {label} | " + " | ".join(cells) + " |"


def _component_rule(post: dict[str, Any]) -> str:
    parts = [f"{g} largest component only" for g in post.get("largest_component_only", [])]
    parts += [f"{g} components below {v:g} mm³ removed" for g, v in post.get("min_component_mm3", {}).items() if v]
    return ", ".join(parts) if parts else "none"


def render(
    card: dict[str, Any], ablation: dict[str, Any] | None = None, components: dict[str, Any] | None = None
) -> str:
    cv = card["bundle"]["cross_validation"]
    n, folds = cv["n_cases"], cv["folds"]
    if "postprocessing_rules" in cv:  # made by `bratsseg bundle`: its post-processing study is in the card
        components = cv["postprocessing_rules"]
        ablation = None  # the inference-variant study (docs/ablation.json) was measured on an earlier bundle
    lines = [BEGIN, "", "| | Dice WT | Dice TC | Dice ET | mean |", "|---|---|---|---|---|"]
    for name, fold in cv["per_fold"].items():
        lines.append(_row(f"{name} ({', '.join(fold['cases'])})", fold["dice"]))
    pooled = cv["pooled"]
    lines.append(
        _row(
            f"all {n} cases, each scored once out of fold (threshold 0.5)",
            {g: pooled[g]["dice_mean"] for g in REGIONS},
            True,
        )
    )
    lines.append(_row(f"median over the {n} cases", {g: pooled[g]["dice_median"] for g in REGIONS}))
    best = cv["sweep_best_global"]
    lines.append(_row(f"pooled out-of-fold sweep, best global threshold {best['threshold']:.2f}", best["per_region"]))
    nested = cv["nested_threshold"]
    ts = sorted(nested["thresholds"].values())
    lines.append(
        _row(
            f"nested: each fold at the global threshold the other {folds - 1} folds' sweep chose "
            f"({ts[0]:.2f}-{ts[-1]:.2f})",
            nested["per_region"],
            True,
        )
    )
    first = card["bundle"].get("first_stage_cross_validation")
    if first:  # the shipped model is a cascade: the first stage alone, scored the same way, beside it
        lines.append(
            _row(
                "the first stage alone (`--mode coarse`, no refinement), nested the same way",
                first["nested_threshold"]["per_region"],
            )
        )
    post = cv.get("postprocessing")
    if post:
        rows = post["rows"]
        lines.append(
            _row("nested, + regions nested as in the written label map", rows["+ nested regions"]["per_region"])
        )
        vols = sorted(post["nested_volumes_mm3"].values())
        lines.append(
            _row(
                f"nested, + small-ET rule (volume chosen per fold on the others: {vols[0]:g}-{vols[-1]:g} mm³)",
                rows["+ small-ET rule"]["per_region"],
            )
        )
    if components:
        holes, t1ce = components.get("holes"), components.get("t1ce")
        stages = [
            ("nested, + regions nested, + connected-component rule chosen per fold on the others", components["nested"])
        ]
        if t1ce:
            stages.append(("nested, + regions nested, + component rule, + ET redrawn from T1ce", t1ce["nested"]))
        if holes:
            label = "nested, + regions nested, + component rule, " + ("+ ET from T1ce, " if t1ce else "")
            stages.append((label + "+ holes of the tumour core filled", holes["nested"]))
        for i, (label, m) in enumerate(stages):
            last = i == len(stages) - 1
            label += ", each chosen per fold on the others" if last and i else ""
            dice = {g: m["per_region"][g]["dice"] for g in REGIONS}
            source = "`bratsseg bundle`" if "postprocessing_rules" in cv else "`scripts/component_filter_oof.py`"
            lines.append(_row(f"{label} ({source})", dice, last))
    lines.append("")
    hd = {g: pooled[g]["hd95_mean"] for g in REGIONS}
    lines.append(f"Out-of-fold HD95 at threshold 0.5: {hd['WT']:.1f} / {hd['TC']:.1f} / {hd['ET']:.1f} mm.")
    shipped = cv.get("shipped")
    if shipped:
        pp, h = shipped["postprocessing"], shipped["hd95_pooled"]
        nesting = "on" if pp["nested_regions"] else "off"
        rule = f"below {pp['et_min_volume_mm3']:g} mm³" if pp["et_min_volume_mm3"] else "off"
        lines.append(
            f"Shipped: global threshold {shipped['threshold']:.2f}, nested regions {nesting}, small-ET rule {rule}; "
            f"its pooled HD95 {h['WT']:.1f} / {h['TC']:.1f} / {h['ET']:.1f} mm (chosen on these cases)."
        )
        rule = _component_rule(card["postprocessing"])
        lines.append(
            f"Connected-component rule shipped: {rule}"
            + (" (the HD95 above is without it)." if rule != "none" else ".")
        )
        filled = card["postprocessing"].get("fill_holes") or []
        lines.append(f"Hole filling shipped: {', '.join(filled) if filled else 'none'}.")
        t = card["postprocessing"].get("et_t1ce_threshold")
        lines.append(
            "ET redrawn from T1ce shipped: "
            + ("off." if t is None else f"ET = the tumour core's voxels with z-scored T1ce above {t:g}.")
        )
    small = cv.get("small_et")
    if small and small["cases"] and post:
        rows = post["rows"]
        lines.append(
            f"ET Dice on the {len(small['cases'])} cases with under {small['voxels_below']:,} true ET voxels "
            f"({', '.join(small['cases'])}): {small['et_dice_at_0.5']:.3f} at threshold 0.5, "
            f"{rows['nested threshold']['small_et_dice']:.3f} nested, "
            f"{rows['+ small-ET rule']['small_et_dice']:.3f} nested with the small-ET rule"
            + (
                f" (the first stage alone: {first['postprocessing']['rows']['nested threshold']['small_et_dice']:.3f}"
                " nested)"
                if first
                else ""
            )
            + (
                f", {components['t1ce']['nested']['small_et_dice']:.3f} nested with the component rule and ET redrawn "
                "from T1ce."
                if components and components.get("t1ce")
                else "."
            )
        )
    accurate = cv.get("accurate_mode")
    if accurate:
        lines.append(
            f"Accurate mode (the {folds} fold models averaged, mirrored along axes "
            f"{''.join(map(str, accurate['mirror_axes']))}): threshold {accurate['threshold']:.2f} from the mirrored "
            "out-of-fold sweep; nested at the threshold alone "
            + " / ".join(f"{accurate['nested_threshold']['per_region'][g]:.3f}" for g in REGIONS)
            + "."
        )
    per_case = cv.get("per_case")
    if per_case:
        lines += ["", "<details><summary>Per case, out of fold (threshold 0.5)</summary>", ""]
        lines += ["| case | fold | true ET voxels | Dice WT | TC | ET |", "|---|---|---|---|---|---|"]
        for cid, c in sorted(per_case.items()):
            d = c["dice"]
            lines.append(
                f"| {cid} | {c['fold']} | {c['et_voxels']:,} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} |"
            )
        lines += ["", "</details>"]
    if ablation:
        lines += ["", render_ablation(ablation)]
    lines += ["", END]
    return "\n".join(lines)


def render_ablation(ablation: dict[str, Any]) -> str:
    """What each inference variant of the fold models does out of fold (nested threshold), and what it costs."""
    lines = [
        f"Inference variants of the {ablation['folds']} fold models, each case scored out of fold at the nested "
        f"threshold (`scripts/cv_ablation.py`; network seconds per case on {ablation['threads']} CPU threads):",
        "",
        "| variant | Dice WT | TC | ET | mean | ET, small-ET cases | HD95 WT / TC / ET (0.5) | s/case |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, v in ablation["variants"].items():
        d, h = v["nested"]["per_region"], v["hd95_at_0.5"]
        small = "-" if v["small_et_dice_nested"] is None else f"{v['small_et_dice_nested']:.3f}"
        lines.append(
            f"| {name} | {d['WT']:.3f} | {d['TC']:.3f} | {d['ET']:.3f} | {sum(d.values()) / 3:.3f} | {small} | "
            f"{h['WT']:.1f} / {h['TC']:.1f} / {h['ET']:.1f} | {v['network_seconds_per_case']:.2f} |"
        )
    timing = ablation.get("modes_end_to_end")
    if timing:
        lines += [
            "",
            f"The bundled model end to end on `{timing['case']}` (`predict_case`, NIfTI in and out, "
            f"{timing['threads']} threads, median of {timing['repeats']}): "
            + ", ".join(f"`--mode {m}` {s:.2f} s" for m, s in timing["seconds"].items())
            + ".",
        ]
    return "\n".join(lines)


def replace_block(text: str, block: str) -> str:
    if BEGIN not in text or END not in text:
        raise SystemExit(f"the page has no block between {BEGIN!r} and {END!r}")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return head + block + tail


def main() -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-json", type=Path, default=MODEL_JSON)
    parser.add_argument("--ablation-json", type=Path, default=ABLATION_JSON)
    parser.add_argument("--write", type=Path, help="a page whose cv block is replaced")
    parser.add_argument("--components-json", type=Path, default=COMPONENTS_JSON)
    args = parser.parse_args()
    ablation = json.loads(args.ablation_json.read_text()) if args.ablation_json.is_file() else None
    components = json.loads(args.components_json.read_text()) if args.components_json.is_file() else None
    block = render(json.loads(args.model_json.read_text()), ablation, components)
    if args.write:
        args.write.write_text(replace_block(args.write.read_text(), block))
    else:
        print(block)
    return 0


if __name__ == "__main__":
    sys.exit(main())
