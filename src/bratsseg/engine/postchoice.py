"""The post-processing rules of a bundle, chosen out of fold: the connected-component rule per region, the enhancing
tumour redrawn from T1ce, and hole filling, each chosen *nested* (every fold with the rule the other folds' cases
chose, so no case scores a rule it helped choose) and, for the model that ships, on every case.

The input is every case's binarised out-of-fold prediction (its fold at its nested threshold, regions nested),
its truth, spacing and image (:func:`oof_cases` makes them from a cross-validation run's saved probabilities).
Each rule is judged by the mean of whole-region Dice and BraTS-GLI lesion-wise Dice; ties go to the milder rule.
:func:`choose_postprocessing` returns every table (candidates, nested, shipped) as plain JSON values; ``bratsseg
bundle`` stores them in the card and ships the rule chosen on every case; ``scripts/component_filter_oof.py``
renders them for the README.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from typing import Any

import numpy as np

from bratsseg.engine.crossval import SMALL_ET_VOXELS, OutOfFold
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.lesion import PRESETS, lesion_scores
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.card import Postprocessing

log = logging.getLogger(__name__)

#: the regions whose holes may be filled (ET is a rim: its holes are necrosis)
HOLE_REGIONS = ("WT", "TC")
#: a stricter choice, reported beside the shipped one: filling chosen only where it raises the objective this much
HOLE_MIN_GAIN = 0.001
#: the enhancing-tumour rule's candidates: off, or ET = tumour core with z-scored T1ce above these values
T1CE_CANDIDATES: tuple[float | None, ...] = (None, 0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5)
#: keep all, remove components below these volumes (mm^3), keep the largest only
CANDIDATES: tuple[float | str, ...] = (0, 200, 800, 1600, 3200, 6400, "largest")


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
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Any,
    with_hd95: bool = False,
    regions: tuple[str, ...] = REGIONS,
    lesion_hd95: bool = True,
) -> dict[str, dict[str, float]]:
    dice = dice_per_region(pred, truth)
    rules = PRESETS["BraTS-GLI"]
    out: dict[str, dict[str, float]] = {}
    for r, g in enumerate(REGIONS):
        if g not in regions:
            continue
        lesion = lesion_scores(pred[r], truth[r], spacing, rules, with_hd95=lesion_hd95)
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


def oof_cases(oof: OutOfFold, nested_t: dict[str, float], base: Postprocessing) -> list[dict[str, Any]]:
    """Each case's out-of-fold prediction binarised at its fold's nested threshold and post-processed by ``base``,
    with its id, fold, truth, spacing and image (what :func:`choose_postprocessing` takes)."""
    cases = []
    for i, case in enumerate(oof.cases):
        fold = oof.fold_of[i]
        pred = postprocess_regions(oof.probabilities(i) > nested_t[fold], case.spacing, base)
        truth = oof.truth[i]
        cases.append(
            {"id": case.case_id, "fold": fold, "pred": pred, "truth": truth, "spacing": case.spacing,
             "image": np.asarray(case.image), "small_et": int(truth[2].sum()) < SMALL_ET_VOXELS}
        )  # fmt: skip
    return cases


def choose_postprocessing(
    cases: list[dict[str, Any]], base: Postprocessing, hd95_everywhere: bool = True
) -> dict[str, Any]:
    """The component rule, then the enhancing-tumour rule on top of it, then hole filling on top of both, each
    chosen nested and on every case; ``result["shipped_postprocessing"]`` is ``base`` with the rules chosen on
    every case. ``hd95_everywhere=False`` computes HD95 (the slowest metric, not used to choose) only for the
    final rows (hole filling nested and shipped); the other rows' ``hd95`` is then None."""
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
                table[c["id"]][g][str(cand)] = scores(
                    pred, c["truth"], c["spacing"], regions=(g,), lesion_hd95=hd95_everywhere
                )[g]

    def objective(ids: list[str], g: str, cand: float | str) -> float:
        return float(np.mean([region_objective(table[i][g][str(cand)]) for i in ids]))

    def choose(ids: list[str]) -> dict[str, float | str]:
        # ties go to the earlier (milder) candidate
        def best(g: str) -> float | str:
            def key(cand: float | str) -> tuple[float, int]:
                return round(objective(ids, g, cand), 12), -CANDIDATES.index(cand)

            return max(CANDIDATES, key=key)

        return {g: best(g) for g in REGIONS}

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
                                              c["truth"], c["spacing"], lesion_hd95=False))
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
    log.info("enhancing-tumour rule: nested %s, shipped %s", t1ce_nested, t1ce_shipped)

    def score_rule(
        choice_of: dict[str, dict[str, float | str]],
        holes_of: dict[str, tuple[str, ...]] | None = None,
        t1ce_of: dict[str, float | None] | None = None,
        final: bool = False,
    ) -> dict[str, Any]:
        """Every case scored once with its fold's component rule, hole filling and enhancing-tumour rule (off
        unless given)."""
        rows: dict[str, dict[str, list[float]]] = {
            g: {"dice": [], "lesion_dice": [], "hd95": [], "lesion_hd95": []} for g in REGIONS
        }
        small: list[float] = []
        per_case: dict[str, dict[str, float]] = {}
        for c in cases:
            settings = settings_for(base, choice_of[c["fold"]], (t1ce_of or {}).get(c["fold"]))
            if holes_of:
                settings = dataclasses.replace(settings, fill_holes=holes_of[c["fold"]])
            pred = postprocess_regions(c["pred"], c["spacing"], settings, c["image"])
            with_hd95 = hd95_everywhere or final
            s = scores(pred, c["truth"], c["spacing"], with_hd95=with_hd95, lesion_hd95=with_hd95)
            for g in REGIONS:
                for k in rows[g]:
                    rows[g][k].append(s[g].get(k, math.nan))
            if c["small_et"]:
                small.append(s["ET"]["dice"])
            per_case[c["id"]] = {g: round(float(s[g]["dice"]), 6) for g in REGIONS}
        return {
            "per_region": {
                g: {k: (float(np.mean(v)) if not np.isnan(v).all() else None) for k, v in rows[g].items()}
                for g in REGIONS
            },
            "small_et_dice": float(np.mean(small)) if small else None,
            "per_case_dice": per_case,
        }

    shipped_all = dict.fromkeys(folds, shipped_choice)
    nested_key = {c["id"]: json.dumps(nested_choice[c["fold"]], sort_keys=True) for c in cases}
    out = {
        "cases": len(cases),
        "rules": "BraTS-GLI",
        "objective": "mean of whole-region Dice and lesion-wise Dice of the region",
        "candidates": {
            rule_name(cand): {
                g: {
                    k: float(np.mean([table[c["id"]][g][str(cand)][k] for c in cases]))
                    for k in ("dice", "lesion_dice", *(("lesion_hd95",) if hd95_everywhere else ()))
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
    holes = holes_stage(cases, base, nested_choice, shipped_choice, score_rule, t1ce_nested, t1ce_shipped)
    out["holes"] = holes
    shipped = dataclasses.replace(
        settings_for(base, shipped_choice, t1ce_shipped), fill_holes=tuple(holes["shipped"]["chosen"])
    )
    out["shipped_postprocessing"] = dataclasses.asdict(shipped)
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
            pred = postprocess_regions(c["pred"], c["spacing"], settings, c["image"])
            s = scores(pred, c["truth"], c["spacing"], lesion_hd95=False)  # the objective needs no distance
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
        "nested": {
            "chosen": {f: list(h) for f, h in nested.items()},
            **score_rule(nested_choice, nested, t1ce_nested, final=True),
        },
        "shipped": {
            "chosen": list(shipped),
            **score_rule(
                dict.fromkeys(folds, shipped_choice),
                dict.fromkeys(folds, shipped),
                dict.fromkeys(folds, t1ce_shipped),
                final=True,
            ),
        },
    }
