"""Does a threshold per region pay? One binarisation threshold for all three regions (what the bundle ships)
against one per region (WT, TC, ET), each chosen on the other folds' cases and scored on the fold's own: out of
fold, on the shipped fold models' probabilities, after the shipped post-processing.

The regions interact after binarisation (the written label map nests ET in TC in WT; the enhancing tumour is
redrawn from T1ce inside the predicted core, so TC's and ET's thresholds both move ET; the component rules and
hole filling see the binarised regions), so every candidate is scored on the post-processed label map, and the
per-region choice is a coordinate ascent from the best single threshold (each region's threshold in turn, the
others held, until nothing changes): it never scores lower than the single threshold on the cases that choose it.
The objective is the bundle's: mean Dice over the three regions. The same is done with no post-processing but
the nesting (what ``bratsseg sweep --apply per-region`` offers), for comparison.

The out-of-fold probabilities are what ``bratsseg evaluate --split val --save-probabilities`` writes for each fold
model (as ``bratsseg crossval`` does; for the shipped fold models:
``bratsseg evaluate --model src/bratsseg/models/bundled/brats3d/folds/foldK --data CACHE --split val
--save-probabilities -o runs/oof/eval/foldK``, K = 0..4)::

    python scripts/region_thresholds_oof.py --cv-eval runs/oof/eval --cache CACHE
    python scripts/region_thresholds_oof.py --render --write docs/results/postprocessing.md   # the block from the JSON
"""

from __future__ import annotations

import argparse
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.engine.crossval import SMALL_ET_VOXELS, OutOfFold
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.labels import REGIONS
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import Postprocessing, read_card

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "region_thresholds.json"
BEGIN = (
    "<!-- region-thresholds: begin "
    "(scripts/region_thresholds_oof.py --render --write docs/results/postprocessing.md) -->"
)
END = "<!-- region-thresholds: end -->"
GRID = tuple(round(0.30 + 0.05 * k, 2) for k in range(14))  # 0.30 ... 0.95

Triple = tuple[float, float, float]

# the worker processes' state: the out-of-fold cases and the post-processing under study
_OOF: OutOfFold | None = None
_POST: Postprocessing | None = None


def _init(cv_eval: Path, cache: Path, post: Postprocessing) -> None:
    global _OOF, _POST
    _OOF, _POST = OutOfFold(cv_eval, cache), post


def _score_case(job: tuple[int, list[Triple]]) -> list[tuple[float, float, float]]:
    """Dice per region of case ``i`` binarised at each of ``triples`` (WT, TC, ET thresholds) and post-processed."""
    i, triples = job
    assert _OOF is not None and _POST is not None
    probs, case = _OOF.probabilities(i), _OOF.cases[i]
    out = []
    for t in triples:
        pred = probs > np.array(t, dtype=np.float32)[:, None, None, None]
        d = dice_per_region(postprocess_regions(pred, case.spacing, _POST, case.image), _OOF.truth[i])
        out.append((d["WT"], d["TC"], d["ET"]))
    return out


class Scores:
    """Each case's Dice per region at a threshold triple, computed once (in ``pool``) and remembered."""

    def __init__(self, pool: ProcessPoolExecutor, n: int) -> None:
        self.pool, self.n = pool, n
        self.memo: list[dict[Triple, tuple[float, float, float]]] = [{} for _ in range(n)]

    def fill(self, ids: list[int], triples: list[Triple]) -> None:
        jobs = [(i, [t for t in triples if t not in self.memo[i]]) for i in ids]
        jobs = [j for j in jobs if j[1]]
        for (i, todo), result in zip(jobs, self.pool.map(_score_case, jobs), strict=True):
            self.memo[i].update(zip(todo, result, strict=True))

    def objective(self, ids: list[int], t: Triple) -> float:
        return float(np.mean([self.memo[i][t] for i in ids]))

    def choose_single(self, ids: list[int]) -> Triple:
        triples = [(t, t, t) for t in GRID]
        self.fill(ids, triples)
        return max(triples, key=lambda t: round(self.objective(ids, t), 12))  # ties: the lower threshold

    def choose_per_region(self, ids: list[int]) -> Triple:
        best = self.choose_single(ids)
        changed = True
        while changed:
            changed = False
            for r in range(3):
                cands = [tuple(c if k == r else best[k] for k in range(3)) for c in GRID]
                self.fill(ids, cands)  # type: ignore[arg-type]
                top = max(cands, key=lambda t: round(self.objective(ids, t), 12))  # type: ignore[arg-type]
                if round(self.objective(ids, top), 12) > round(self.objective(ids, best), 12):  # type: ignore[arg-type]
                    best, changed = top, True  # type: ignore[assignment]
        return best


def study(oof: OutOfFold, scores: Scores) -> dict[str, Any]:
    """Single vs per-region thresholds: chosen on all cases (pooled) and nested (each fold on the others)."""
    n = len(oof.cases)
    everyone = list(range(n))
    small = [i for i in everyone if oof.et_voxels[i] < SMALL_ET_VOXELS]
    out: dict[str, Any] = {}
    for name, choose in (("single", scores.choose_single), ("per_region", scores.choose_per_region)):
        chosen = {f.name: choose([i for i in everyone if not oof.inside(f.name)[i]]) for f in oof.folds}
        for f in oof.folds:  # each fold's own cases at the thresholds the others chose
            scores.fill([i for i in everyone if oof.inside(f.name)[i]], [chosen[f.name]])
        nested = np.array([scores.memo[i][chosen[oof.fold_of[i]]] for i in everyone])
        pooled_t = choose(everyone)
        pooled = np.array([scores.memo[i][pooled_t] for i in everyone])
        out[name] = {
            "nested": {
                "chosen": {f: dict(zip(REGIONS, t, strict=True)) for f, t in chosen.items()},
                "per_region": dict(zip(REGIONS, map(float, nested.mean(axis=0)), strict=True)),
                "mean_dice": float(nested.mean()),
                "small_et_dice": float(nested[small, 2].mean()) if small else None,
                "per_case": {oof.cases[i].case_id: list(map(float, nested[i])) for i in everyone},
            },
            "pooled": {
                "chosen": dict(zip(REGIONS, pooled_t, strict=True)),
                "per_region": dict(zip(REGIONS, map(float, pooled.mean(axis=0)), strict=True)),
                "mean_dice": float(pooled.mean()),
            },
        }
    gain = [np.mean(out["per_region"]["nested"]["per_case"][c]) - np.mean(out["single"]["nested"]["per_case"][c])
            for c in out["single"]["nested"]["per_case"]]  # fmt: skip
    out["nested_gain"] = {"up": int(np.sum(np.array(gain) > 1e-9)), "down": int(np.sum(np.array(gain) < -1e-9))}
    return out


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cv_eval is None or args.cache is None:
        raise SystemExit("give --cv-eval and --cache (or --render)")
    card = read_card(default_model_path())
    oof = OutOfFold(args.cv_eval, args.cache)
    result: dict[str, Any] = {"cases": len(oof.cases), "folds": len(oof.folds), "grid": list(GRID), "stages": {}}
    for stage, post in (("nested regions only", Postprocessing(nested_regions=True)),
                        ("the shipped post-processing", card.postprocessing)):  # fmt: skip
        with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(args.cv_eval, args.cache, post)) as pool:
            result["stages"][stage] = study(oof, Scores(pool, len(oof.cases)))
        s = result["stages"][stage]
        print(f"{stage}: single {s['single']['nested']['per_region']}, "
              f"per region {s['per_region']['nested']['per_region']}", file=sys.stderr)  # fmt: skip
    return result


def _row(label: str, m: dict[str, Any]) -> str:
    d = m["per_region"]
    small = "" if m.get("small_et_dice") is None else f" | {m['small_et_dice']:.3f}"
    return f"| {label} | {d['WT']:.3f} / {d['TC']:.3f} / {d['ET']:.3f} | {m['mean_dice']:.3f}{small} |"


def _thresholds(chosen: dict[str, dict[str, float]]) -> str:
    return "; ".join(f"{f}: " + "/".join(f"{t[g]:.2f}" for g in REGIONS) for f, t in chosen.items())


def render(result: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        f"One binarisation threshold for all regions or one per region, each chosen on the other folds' cases "
        f"(out of fold, {result['cases']} cases, the shipped fold models; candidates "
        f"{result['grid'][0]:.2f} to {result['grid'][-1]:.2f} in steps of 0.05; "
        "`python scripts/region_thresholds_oof.py`):",
        "",
        "| post-processing, thresholds | **nested** Dice WT / TC / ET | mean | ET, small-ET cases |",
        "|---|---|---|---|",
    ]
    for stage, s in result["stages"].items():
        lines.append(_row(f"{stage}, one threshold", s["single"]["nested"]))
        lines.append(_row(f"{stage}, one per region", s["per_region"]["nested"]))
    lines += ["", "The thresholds each fold chose (WT/TC/ET) and the cases the per-region choice moved:", ""]
    for stage, s in result["stages"].items():
        lines.append(
            f"- {stage}: one threshold {_thresholds(s['single']['nested']['chosen'])}; per region "
            f"{_thresholds(s['per_region']['nested']['chosen'])}; mean Dice up on {s['nested_gain']['up']} cases, "
            f"down on {s['nested_gain']['down']}."
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cv-eval", type=Path, help="the folds' evaluation folders (foldK/probabilities)")
    parser.add_argument("--cache", type=Path, help="the cases, preprocessed")
    parser.add_argument("--workers", type=int, default=2)
    from bratsseg.docblocks import measured_block_main

    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
