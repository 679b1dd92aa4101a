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
    python scripts/component_filter_oof.py --render --write README.md      # the README block from the JSON
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.data.cache import open_cache
from bratsseg.engine.crossval import SMALL_ET_VOXELS
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.lesion import PRESETS, lesion_scores
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import Postprocessing, read_card, write_card

#: the regions whose holes may be filled (ET is a rim: its holes are necrosis)
HOLE_REGIONS = ("WT", "TC")
#: a stricter choice, reported beside the shipped one: filling chosen only where it raises the objective this much
HOLE_MIN_GAIN = 0.001
#: the enhancing-tumour rule's candidates: off, or ET = tumour core with z-scored T1ce above these values
T1CE_CANDIDATES: tuple[float | None, ...] = (None, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
#: keep all, remove components below these volumes (mm^3), keep the largest only
CANDIDATES: tuple[float | str, ...] = (0, 200, 800, 1600, 3200, 6400, "largest")
ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "component_filter.json"
BEGIN = "<!-- component-filter: begin (scripts/component_filter_oof.py --render --write README.md) -->"
END = "<!-- component-filter: end -->"


def rule_name(c: float | str) -> str:
    if c == "largest":
        return "largest component only"
    return "keep all" if float(c) == 0 else f"remove below {float(c):g} mm^3"


def settings_for(base: Postprocessing, choice: dict[str, float | str], t1ce: float | None = None) -> Postprocessing:
    """``base`` with the component rule ``choice`` (region -> candidate) and the enhancing-tumour rule ``t1ce``."""
    return dataclasses.replace(
        base,
        et_t1ce_threshold=t1ce,
        min_component_mm3={g: float(c) for g, c in choice.items() if c != "largest" and float(c) > 0},
        largest_component_only=tuple(g for g in REGIONS if choice.get(g) == "largest"),
    )


def scores(
    pred: np.ndarray, truth: np.ndarray, spacing: Any, with_hd95: bool = False, regions: tuple[str, ...] = REGIONS
) -> dict[str, dict[str, float]]:
    dice = dice_per_region(pred, truth)
    rules = PRESETS["BraTS-GLI"]
    out: dict[str, dict[str, float]] = {}
    for r, g in enumerate(REGIONS):
        if g not in regions:
            continue
        lesion = lesion_scores(pred[r], truth[r], spacing, rules)
        out[g] = {"dice": float(dice[g]), "lesion_dice": float(lesion.dice), "lesion_hd95": float(lesion.hd95)}
        if with_hd95:
            out[g]["hd95"] = float(hd95(pred[r], truth[r], spacing))
    return out


def region_objective(s: dict[str, float]) -> float:
    """One region's selection objective: the mean of its whole-region and lesion-wise Dice."""
    return (s["dice"] + s["lesion_dice"]) / 2


def mean_objective(s: dict[str, dict[str, float]]) -> float:
    """The objective over the three regions (``s`` as :func:`scores` returns it)."""
    return float(np.mean([region_objective(s[g]) for g in REGIONS]))


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
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import measured_block_main

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
    folds = sorted({c["fold"] for c in cases})
    others = {f: [c["id"] for c in cases if c["fold"] != f] for f in folds}
    everyone = [c["id"] for c in cases]

    # the component rule first, on the network's own regions: each candidate on one region at a time,
    # table[case][region][candidate]
    table: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for c in cases:
        table[c["id"]] = {g: {} for g in REGIONS}
        for cand in CANDIDATES:
            for g in REGIONS:
                pred = postprocess_regions(c["pred"], c["spacing"], settings_for(base, {g: cand}))
                table[c["id"]][g][str(cand)] = scores(pred, c["truth"], c["spacing"], regions=(g,))[g]

    def objective(ids: list[str], g: str, cand: float | str) -> float:
        return float(np.mean([region_objective(table[i][g][str(cand)]) for i in ids]))

    def choose(ids: list[str]) -> dict[str, float | str]:
        # ties go to the earlier (milder) candidate
        return {g: max(CANDIDATES, key=lambda cand, g=g: (round(objective(ids, g, cand), 12), -CANDIDATES.index(cand)))
                for g in REGIONS}  # fmt: skip

    nested_choice = {f: choose(others[f]) for f in folds}
    shipped_choice = choose(everyone)

    # then the enhancing-tumour rule (applied first by postprocess_regions), chosen on top of the component rule:
    # the rule makes enhancing speckles that the component rule removes, so it is judged with it.
    # t1ce_objective[choice][case][candidate], for each distinct component choice
    t1ce_objective: dict[str, dict[str, dict[str, float]]] = {}
    for choice in [*nested_choice.values(), shipped_choice]:
        key = json.dumps(choice, sort_keys=True)
        if key in t1ce_objective:
            continue
        t1ce_objective[key] = {
            c["id"]: {
                str(t): mean_objective(scores(postprocess_regions(c["pred"], c["spacing"],
                                                                  settings_for(base, choice, t), c["image"]),
                                              c["truth"], c["spacing"]))
                for t in T1CE_CANDIDATES
            }
            for c in cases
        }  # fmt: skip

    def choose_t1ce(ids: list[str], choice: dict[str, float | str]) -> float | None:
        rows = t1ce_objective[json.dumps(choice, sort_keys=True)]

        def key(t: float | None) -> tuple[float, int]:  # ties go to the earlier candidate (off first)
            return round(float(np.mean([rows[i][str(t)] for i in ids])), 12), -T1CE_CANDIDATES.index(t)

        return max(T1CE_CANDIDATES, key=key)

    t1ce_nested = {f: choose_t1ce(others[f], nested_choice[f]) for f in folds}
    t1ce_shipped = choose_t1ce(everyone, shipped_choice)
    print(f"enhancing-tumour rule: nested {t1ce_nested}, shipped {t1ce_shipped}", file=sys.stderr)

    def score_rule(
        choice_of: dict[str, dict[str, float | str]],
        holes_of: dict[str, tuple[str, ...]] | None = None,
        t1ce_of: dict[str, float | None] | None = None,
    ) -> dict[str, Any]:
        """Every case scored once with its fold's component rule, hole filling and enhancing-tumour rule (off
        unless given)."""
        rows = {g: {"dice": [], "lesion_dice": [], "hd95": []} for g in REGIONS}
        small: list[float] = []
        for c in cases:
            settings = settings_for(base, choice_of[c["fold"]], (t1ce_of or {}).get(c["fold"]))
            if holes_of:
                settings = dataclasses.replace(settings, fill_holes=holes_of[c["fold"]])
            pred = postprocess_regions(c["pred"], c["spacing"], settings, c["image"])
            s = scores(pred, c["truth"], c["spacing"], with_hd95=True)
            for g in REGIONS:
                for k in rows[g]:
                    rows[g][k].append(s[g][k])
            if c["small_et"]:
                small.append(s["ET"]["dice"])
        return {
            "per_region": {g: {k: float(np.mean(v)) for k, v in rows[g].items()} for g in REGIONS},
            "small_et_dice": float(np.mean(small)) if small else None,
        }

    shipped_all = dict.fromkeys(folds, shipped_choice)
    nested_key = {c["id"]: json.dumps(nested_choice[c["fold"]], sort_keys=True) for c in cases}
    out = {
        "cases": len(cases),
        "rules": "BraTS-GLI",
        "objective": "mean of whole-region Dice and lesion-wise Dice of the region",
        "thresholds": nested_t,
        "candidates": {
            rule_name(cand): {
                g: {
                    k: float(np.mean([table[c["id"]][g][str(cand)][k] for c in cases]))
                    for k in ("dice", "lesion_dice", "lesion_hd95")
                }
                for g in REGIONS
            }
            for cand in CANDIDATES
        },
        "none": score_rule(dict.fromkeys(folds, dict.fromkeys(REGIONS, 0))),
        "nested": {"chosen": nested_choice, **score_rule(nested_choice)},
        "shipped": {"chosen": shipped_choice, **score_rule(shipped_all)},
        "t1ce": {
            "candidates": {str(t): score_rule(nested_choice, t1ce_of=dict.fromkeys(folds, t)) for t in T1CE_CANDIDATES},
            "nested": {"chosen": t1ce_nested, **score_rule(nested_choice, t1ce_of=t1ce_nested)},
            "shipped": {"chosen": t1ce_shipped, **score_rule(shipped_all, t1ce_of=dict.fromkeys(folds, t1ce_shipped))},
            "per_case_gain": {
                c["id"]: t1ce_objective[nested_key[c["id"]]][c["id"]][str(t1ce_nested[c["fold"]])]
                - t1ce_objective[nested_key[c["id"]]][c["id"]]["None"]
                for c in cases
            },
        },
    }
    out["holes"] = holes_stage(cases, base, nested_choice, shipped_choice, score_rule, t1ce_nested, t1ce_shipped)
    if args.apply:
        post = dataclasses.replace(
            settings_for(card.postprocessing, shipped_choice, t1ce_shipped),
            fill_holes=tuple(out["holes"]["shipped"]["chosen"]),
        )
        write_card(bundle, card.replace(postprocessing=post))
        print(f"{bundle / 'model.json'}: postprocessing {dataclasses.asdict(post)}", file=sys.stderr)
    return out


def holes_stage(
    cases: list[dict[str, Any]],
    base: Postprocessing,
    nested_choice: dict[str, dict[str, float | str]],
    shipped_choice: dict[str, float | str],
    score_rule: Any,
    t1ce_nested: dict[str, float | None],
    t1ce_shipped: float | None,
) -> dict[str, Any]:
    """Hole filling on top of each fold's nested component rule: the candidates (no filling; the holes of one
    region filled), the nested choice per fold and the choice on all cases."""
    options: list[tuple[str, ...]] = [(), *[(g,) for g in HOLE_REGIONS]]
    objective: dict[str, dict[tuple[str, ...], float]] = {}  # case -> option -> mean over regions
    for c in cases:
        objective[c["id"]] = {}
        for option in options:
            settings = settings_for(base, nested_choice[c["fold"]], t1ce_nested[c["fold"]])
            settings = dataclasses.replace(settings, fill_holes=option)
            s = scores(postprocess_regions(c["pred"], c["spacing"], settings, c["image"]), c["truth"], c["spacing"])
            objective[c["id"]][option] = mean_objective(s)

    def choose(ids: list[str], min_gain: float = 0.0) -> tuple[str, ...]:
        """Each region whose filling alone helps these cases on average (by more than ``min_gain``, or at least
        it when it is positive; ties: no filling, as the component rule's ties go to the milder rule)."""
        mean = {o: float(np.mean([objective[i][o] for i in ids])) for o in options}
        gain = {g: round(mean[(g,)] - mean[()], 12) for g in HOLE_REGIONS}
        return tuple(g for g in HOLE_REGIONS if (gain[g] >= min_gain if min_gain > 0 else gain[g] > 0))

    folds = sorted({c["fold"] for c in cases})
    nested = {f: choose([c["id"] for c in cases if c["fold"] != f]) for f in folds}
    strict = {f: choose([c["id"] for c in cases if c["fold"] != f], HOLE_MIN_GAIN) for f in folds}
    shipped = choose([c["id"] for c in cases])
    per_case_tc = {c["id"]: objective[c["id"]][("TC",)] - objective[c["id"]][()] for c in cases}
    return {
        "per_case_gain_tc": per_case_tc,
        "nested_min_gain": {
            "min_gain": HOLE_MIN_GAIN,
            "chosen": {f: list(h) for f, h in strict.items()},
            **score_rule(nested_choice, strict, t1ce_nested),
        },
        "none": score_rule(nested_choice, dict.fromkeys(folds, ()), t1ce_nested),
        "candidates": {g: score_rule(nested_choice, dict.fromkeys(folds, (g,)), t1ce_nested) for g in HOLE_REGIONS},
        "nested": {"chosen": {f: list(h) for f, h in nested.items()}, **score_rule(nested_choice, nested, t1ce_nested)},
        "shipped": {
            "chosen": list(shipped),
            **score_rule(
                dict.fromkeys(folds, shipped_choice), dict.fromkeys(folds, shipped), dict.fromkeys(folds, t1ce_shipped)
            ),
        },
    }


if __name__ == "__main__":
    sys.exit(main())
