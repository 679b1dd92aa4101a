"""Which connected-component rule pays? Out of fold, whole-region and lesion-wise, on the 22 shared cases; and the
rule the bundled model ships.

Each cross-validation fold model shipped with the bundled model (``folds/foldK``) predicts its own validation
cases, binarised as the bundle's cross-validation does (each fold at its *nested* threshold, regions nested).
Then, for each region alone, each candidate rule is applied (keep everything; remove 26-connected components
below S mm^3 except the largest, so that the region is never emptied; keep only the largest component; a
component removed from WT takes the TC and ET inside it) and scored by the mean of whole-region Dice and
BraTS-GLI lesion-wise Dice of that region. The "nested" row applies,
in each fold, the rule per region that the *other* folds' cases chose, all regions together; the bundled model
ships the rule chosen on all 22 cases (so its row is chosen on the cases it reports, as the threshold is).

Then, on top of each fold's nested component rule, the enhancing tumour redrawn at full resolution
(``postprocessing.et_t1ce_threshold``, which ``postprocess_regions`` applies before the component rule): ET becomes
the voxels of the predicted tumour core whose z-scored T1ce exceeds a threshold, chosen the same way (nested per
fold on the other folds, shipped on all cases) by the mean over the three regions of whole-region and lesion-wise
Dice. It is judged with the component rule because it makes enhancing speckles that the rule removes.

Last, on top of each fold's nested component and enhancing-tumour rules, hole filling
(``postprocessing.fill_holes``): the holes of WT or of TC filled in 3-D (a filled hole of TC is necrosis, and joins
WT), chosen the same way (nested per fold on the other folds, shipped on all cases) by the mean over the three
regions of whole-region and lesion-wise Dice (any gain counts, as for the component rule); the same nested row with
a stricter choice (a gain of at least 0.001) is reported beside it.

    bratsseg preprocess ../shared/data/brats -o /tmp/cache22
    python scripts/component_filter_oof.py --cache /tmp/cache22 [--apply]   # --apply: store it in the bundle
    python scripts/export_bundled_onnx.py                                  # after --apply: the ONNX metadata
    python scripts/component_filter_oof.py --render --write docs/results/postprocessing.md   # the block from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path
from typing import Any

from bratsseg.data.cache import open_cache
from bratsseg.engine.crossval import SMALL_ET_VOXELS
from bratsseg.engine.postchoice import HOLE_REGIONS, choose_postprocessing, rule_name, settings_for
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import read_card, write_card

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "component_filter.json"
BEGIN = (
    "<!-- component-filter: begin (scripts/component_filter_oof.py --render --write docs/results/postprocessing.md) -->"
)
END = "<!-- component-filter: end -->"


def render(result: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"Out of fold on the {result['cases']} shared cases (`python scripts/component_filter_oof.py`: the shipped "
        f"fold models, each fold at its nested threshold, regions nested; {result['rules']} lesion rules). First "
        "the component rule, each candidate applied to one region at a time:",
        "",
        "| rule | " + " | ".join(f"Dice {r} | LW Dice {r}" for r in REGIONS) + " |",
        "|---" * 7 + "|",
    ]
    for name, m in result["candidates"].items():
        cells = " | ".join(f"{m[r]['dice']:.3f} | {m[r]['lesion_dice']:.3f}" for r in REGIONS)
        lines.append(f"| {name} | {cells} |")
    lines += [
        "",
        "All regions together, each case scored once (whole-region Dice, lesion-wise Dice, HD95 in mm):",
        "",
        "| | " + " | ".join(f"Dice {r} | LW Dice {r} | HD95 {r}" for r in REGIONS) + " |",
        "|---" * 10 + "|",
    ]
    nested_choices = "; ".join(
        f"{fold}: " + ", ".join(f"{g} {rule_name(c)}" for g, c in ch.items())
        for fold, ch in result["nested"]["chosen"].items()
    )
    rows = [
        ("no component rule (as shipped before)", result["none"]),
        ("**nested: each fold with the rules the other folds chose**", result["nested"]),
        (f"shipped rule (chosen on all {result['cases']} cases)", result["shipped"]),
    ]
    lines += [_score_row(label, m) for label, m in rows]
    shipped = ", ".join(f"{g}: {rule_name(c)}" for g, c in result["shipped"]["chosen"].items())
    lines += ["", f"Shipped: {shipped}. Nested choices: {nested_choices}."]
    lines += _t1ce_block(result)
    holes = result.get("holes")
    if holes:
        lines += [
            "",
            "Last, hole filling, on top of each fold's nested component and enhancing-tumour rules (the holes of a "
            "region filled in 3-D; a filled hole of TC is necrosis and joins WT), each case scored once:",
            "",
            "| | " + " | ".join(f"Dice {r} | LW Dice {r} | HD95 {r}" for r in REGIONS) + " |",
            "|---" * 10 + "|",
        ]
        rows = [(_holes_name(()), holes["none"])]
        rows += [(_holes_name((g,)), holes["candidates"][g]) for g in HOLE_REGIONS]
        nested_label = (
            "**nested: each fold with the component rule, the enhancing-tumour rule and the hole filling the other "
            "folds chose**"
            if result.get("t1ce")
            else "**nested: each fold with the component rule and the hole filling the other folds chose**"
        )
        shipped_name = _holes_name(tuple(holes["shipped"]["chosen"]))
        shipped_label = f"shipped ({shipped_name}, chosen on all {result['cases']} cases)"
        strict = holes["nested_min_gain"]
        strict_label = f"nested, filling chosen only for a gain of at least {strict['min_gain']:g}"
        rows += [(nested_label, holes["nested"]), (strict_label, strict), (shipped_label, holes["shipped"])]
        lines += [_score_row(label, m) for label, m in rows]
        chosen = "; ".join(f"{fold}: {_holes_name(tuple(ch))}" for fold, ch in holes["nested"]["chosen"].items())
        stricter = "; ".join(f"{fold}: {_holes_name(tuple(ch))}" for fold, ch in strict["chosen"].items())
        gains = holes["per_case_gain_tc"]
        helped = sorted((g, c) for c, g in gains.items() if g > 0.0005)[::-1]
        hurt = [c for c, g in gains.items() if g < -0.0005]
        lines += [
            "",
            f"Nested hole-filling choices: {chosen}. With the stricter choice: {stricter}. Filling TC's holes changes "
            f"the objective (mean over regions of Dice and lesion-wise Dice) by more than 0.0005 on "
            f"{len(helped)} of the {len(gains)} cases, "
            + ", ".join(f"{c} {g:+.3f}" for g, c in helped)
            + (f"; it lowers it on {', '.join(hurt)}." if hurt else "; it lowers it on none."),
        ]
    lines.append(END)
    return "\n".join(lines)


def _t1ce_name(t: float | None) -> str:
    return "network's ET (no rule)" if t is None else f"ET = tumour core with T1ce z > {t:g}"


def _t1ce_block(result: dict[str, Any]) -> list[str]:
    """The enhancing-tumour rule's table: every candidate on every fold, the nested choice, the shipped one."""
    t1ce = result.get("t1ce")
    if not t1ce:
        return []
    header = "| | " + " | ".join(f"Dice {r} | LW Dice {r} | HD95 {r}" for r in REGIONS) + " | ET Dice, small-ET cases |"
    rows = [(_t1ce_name(None if t == "None" else float(t)), m) for t, m in t1ce["candidates"].items()]
    rows += [
        ("**nested: each fold with the rule the other folds chose**", t1ce["nested"]),
        (f"shipped ({_t1ce_name(t1ce['shipped']['chosen'])}, chosen on all {result['cases']} cases)", t1ce["shipped"]),
    ]
    chosen = "; ".join(f"{fold}: {_t1ce_name(t)}" for fold, t in t1ce["nested"]["chosen"].items())
    gains = t1ce["per_case_gain"]
    up = sum(g > 0.0005 for g in gains.values())
    down = sorted((g, c) for c, g in gains.items() if g < -0.0005)
    return [
        "",
        "Then the enhancing tumour, redrawn at full resolution (`postprocessing.et_t1ce_threshold`, applied before "
        "the component rule but chosen on top of it, since the component rule removes the enhancing speckles it "
        "makes): ET becomes the voxels of the predicted tumour core whose z-scored T1ce exceeds a threshold (the "
        "network works on a grid 2x coarser and blurs thin enhancing rims; enhancing tumour is the part of the core "
        "that is bright on T1ce). With each fold's nested component rule, no hole filling; each case scored once:",
        "",
        header,
        "|---" * 11 + "|",
        *[_score_row(label, m) + f" {_small(m)} |" for label, m in rows],
        "",
        f"Nested choices: {chosen}. With its fold's nested rule, the objective (mean over regions of Dice and "
        f"lesion-wise Dice) rises by more than 0.0005 on {up} of the {len(gains)} cases and falls on "
        + (", ".join(f"{c} ({g:+.3f})" for g, c in down) if down else "none")
        + ".",
    ]


def _small(m: dict[str, Any]) -> str:
    return "-" if m.get("small_et_dice") is None else f"{m['small_et_dice']:.3f}"


def _score_row(label: str, m: dict[str, Any]) -> str:
    """A table row: whole-region Dice, lesion-wise Dice and HD95 of each region."""
    cells = " | ".join(
        f"{m['per_region'][r]['dice']:.3f} | {m['per_region'][r]['lesion_dice']:.3f} | {m['per_region'][r]['hd95']:.1f}"
        for r in REGIONS
    )
    return f"| {label} | {cells} |"


def _holes_name(regions: tuple[str, ...]) -> str:
    return "no hole filling" if not regions else "holes of " + " and ".join(regions) + " filled"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="the 22 shared cases, preprocessed")
    parser.add_argument("--apply", action="store_true", help="store the shipped rule in the bundled model's card")
    parser.add_argument("--threads", type=int, default=2)
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cache is None:
        raise SystemExit("give --cache (or --render)")
    bundle = default_model_path()
    card = read_card(bundle)
    cv = card.bundle["cross_validation"]
    nested_t = cv["nested_threshold"]["thresholds"]
    base = dataclasses.replace(card.postprocessing.without_components(), fill_holes=(), et_t1ce_threshold=None)
    by_id = {c.case_id: c for c in open_cache(args.cache)}
    cases: list[dict[str, Any]] = []  # per case: id, fold, binarised regions, truth, spacing, image
    for fold in sorted((bundle / "folds").iterdir()):
        predictor = load_predictor(fold, threads=args.threads)
        for cid in predictor.card.training.val_cases:
            case = by_id[cid]
            pred = postprocess_regions(predictor.probabilities(case.image) > nested_t[fold.name], case.spacing, base)
            truth = case.regions()
            cases.append(
                {"id": cid, "fold": fold.name, "pred": pred, "truth": truth, "spacing": case.spacing,
                 "image": case.image, "small_et": int(truth[2].sum()) < SMALL_ET_VOXELS}
            )  # fmt: skip
        print(f"{fold.name}: {len(predictor.card.training.val_cases)} cases", file=sys.stderr)
    out = choose_postprocessing(cases, base)
    out["thresholds"] = nested_t
    if args.apply:
        shipped = out["shipped_postprocessing"]
        post = dataclasses.replace(
            settings_for(card.postprocessing, out["shipped"]["chosen"], out["t1ce"]["shipped"]["chosen"]),
            fill_holes=tuple(shipped["fill_holes"]),
        )
        write_card(bundle, card.replace(postprocessing=post))
        print(f"{bundle / 'model.json'}: postprocessing {dataclasses.asdict(post)}", file=sys.stderr)
    return out


if __name__ == "__main__":
    sys.exit(main())
