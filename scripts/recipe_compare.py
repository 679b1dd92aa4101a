"""Does a recipe change pay? Two cross-validation runs on the same cases and folds, case by case, nested.

Each run's every case is scored as its bundle would report it: by the fold model that left the case out, at the
threshold and with the post-processing the other folds chose (``bundle.cross_validation.nested_final``, written
by ``bratsseg bundle RUN`` to ``RUN/bundle_choices.json`` as soon as every fold is evaluated). Each variant minus
the baseline: the mean difference per region and of the mean of the three, with its 95% paired bootstrap interval
over cases (:func:`bratsseg.metrics.paired.paired_bootstrap`), and the same for ET on the small-ET cases.

    python scripts/recipe_compare.py --baseline "the recipe=runs/cv44" \\
        --variant "+ tumour-free samples (free_fraction 0.2)=runs/cv44free" [--write docs/results/accuracy.md]
    python scripts/recipe_compare.py --render --write docs/results/accuracy.md
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.docblocks import named_path
from bratsseg.labels import REGIONS
from bratsseg.metrics.paired import paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "recipe_compare.json"
BEGIN = "<!-- recipe-compare: begin (scripts/recipe_compare.py --render --write docs/results/accuracy.md) -->"
END = "<!-- recipe-compare: end -->"


def _nested(run: Path) -> dict[str, Any]:
    """The run's out-of-fold tables (``bratsseg bundle``'s choices, made once and kept in the run)."""
    from bratsseg.engine.bundle import choose

    cv: dict[str, Any] = choose(run, say=lambda line: print(line, file=sys.stderr))["cv"]
    return cv


def _plan(run: Path) -> dict[str, Any]:
    plan: dict[str, Any] = json.loads((run / "crossval.json").read_text())
    return plan


def _changes(run: Path) -> list[str]:
    """What the run changed: its ``--set`` overrides, and its recipe's fine-tuning stage where it has one."""
    plan = _plan(run)
    stage = plan["recipe"].get("finetune")
    shown = []
    if stage:
        settings = ", ".join(f"{k}={v}" for k, v in stage["settings"].items())
        shown.append(
            f"finetune stage: {stage['epochs']} x {stage['steps_per_epoch']} steps, lr x {stage['lr_factor']:g}"
            + (f", {settings}" if settings else "")
        )
    return [*plan["overrides"], *shown]


def measure(args: argparse.Namespace) -> dict[str, Any]:
    base_name, base_run = args.baseline
    base = _nested(base_run)
    splits = json.loads((base_run / "splits.json").read_text())
    cases = sorted(base["nested_final"]["per_case_dice"])
    small = sorted(set(base["small_et"]["cases"]) & set(cases))

    def scores(cv: dict[str, Any], ids: list[str], region: str | None) -> np.ndarray:
        rows = cv["nested_final"]["per_case_dice"]
        if region is None:
            return np.array([np.mean([rows[c][r] for r in REGIONS]) for c in ids])
        return np.array([rows[c][region] for c in ids])

    def summary(cv: dict[str, Any]) -> dict[str, Any]:
        return {
            **{r: float(scores(cv, cases, r).mean()) for r in REGIONS},
            "mean": float(scores(cv, cases, None).mean()),
            "small_et": float(scores(cv, small, "ET").mean()),
        }

    out: dict[str, Any] = {
        "cases": len(cases),
        "small_et_cases": len(small),
        "small_et_below": base["small_et"]["voxels_below"],
        "baseline": {"name": base_name, **summary(base), "overrides": _changes(base_run)},
        "variants": [],
    }
    for name, run in args.variant:
        cv = _nested(run)
        if sorted(cv["nested_final"]["per_case_dice"]) != cases:
            raise SystemExit(f"{run}: not the same cases as {base_run}")
        if json.loads((run / "splits.json").read_text()) != splits:
            raise SystemExit(f"{run}: not the same folds as {base_run}")
        diff = {r: paired_bootstrap(scores(cv, cases, r), scores(base, cases, r)) for r in REGIONS}
        diff["mean"] = paired_bootstrap(scores(cv, cases, None), scores(base, cases, None))
        diff["small_et"] = paired_bootstrap(scores(cv, small, "ET"), scores(base, small, "ET"))
        out["variants"].append({"name": name, **summary(cv), "overrides": _changes(run), "minus_baseline": diff})
    return out


def _iv(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def render(d: dict[str, Any]) -> str:
    b = d["baseline"]
    lines = [
        BEGIN,
        f"Recipe changes cross-validated on the same {d['cases']} cases and folds, each case scored *nested* (the "
        "fold model that left it out, at the threshold and with the post-processing the other folds chose), against "
        f"**{b['name']}** (`python scripts/recipe_compare.py`). Variant minus baseline, case by case, with its 95% "
        f"paired bootstrap interval; small-ET: the {d['small_et_cases']} cases under {d['small_et_below']:,} true "
        "ET voxels.",
        "",
        "| recipe | changes (`--set`, fine-tuning stage) | nested WT / TC / ET | mean | ET, small-ET "
        "| minus baseline: WT | TC | ET | mean of 3 (cases ahead / behind) | ET, small-ET |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {b['name']} | {'; '.join(b['overrides']) or '-'} | {b['WT']:.3f} / {b['TC']:.3f} / {b['ET']:.3f} | "
        f"{b['mean']:.3f} | {b['small_et']:.3f} | | | | | |",
    ]
    for v in d["variants"]:
        m = v["minus_baseline"]
        lines.append(
            f"| {v['name']} | {'; '.join(v['overrides']) or '-'} | {v['WT']:.3f} / {v['TC']:.3f} / {v['ET']:.3f} | "
            f"{v['mean']:.3f} | {v['small_et']:.3f} | {_iv(m['WT'])} | {_iv(m['TC'])} | {_iv(m['ET'])} | "
            f"{_iv(m['mean'])} ({m['mean']['ahead']} / {m['mean']['behind']}) | {_iv(m['small_et'])} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=named_path, help="NAME=RUN: the cross-validation run compared against")
    parser.add_argument("--variant", type=named_path, action="append", default=[], help="NAME=RUN (repeatable)")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
