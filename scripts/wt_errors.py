"""Where the whole tumour is lost on cases a model never saw: under- or over-segmented, at the border or whole
lobes, and how the missed and the extra voxels look in each modality (issue 31).

    python scripts/wt_errors.py --label NAME --model MODEL --cache CACHE [--cases id1,id2,...]
    python scripts/wt_errors.py --label NAME --run RUN [--cases id1,id2,...]
    python scripts/wt_errors.py --render --write docs/results/accuracy.md

A *source* is a model (``--model``: it runs as ``predict`` does, its threshold and post-processing, on the cached
z-scored image of each case it did not train on) or a cross-validation run (``--run``: each case's out-of-fold
probabilities, ``RUN/eval/foldK/probabilities``, at the threshold and with the post-processing its bundle would ship,
``RUN/bundle_choices.json``). Each is stored under its ``--label`` in ``docs/wt_errors.json``. For every case: true and
predicted WT volume (cm^3), the false-negative and false-positive volumes, the share of each within 2 voxels of the
other mask's border (a boundary disagreement) against farther away (a lobe missed or invented), and the mean z-scored
intensity of FLAIR, T1, T1ce and T2 over the true positives, the false negatives and the false positives.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from bratsseg.labels import MODALITIES

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "wt_errors.json"
BEGIN = "<!-- wt-errors: begin (scripts/wt_errors.py --render --write docs/results/accuracy.md) -->"
END = "<!-- wt-errors: end -->"


def near(mask: np.ndarray, other: np.ndarray, voxels: int = 2) -> np.ndarray:
    """Voxels of ``mask`` within ``voxels`` of ``other`` (``other`` dilated)."""
    return mask & ndimage.binary_dilation(other, iterations=voxels)


def case_row(case_id: str, image: np.ndarray, pred: np.ndarray, truth: np.ndarray, spacing: Any) -> dict[str, Any]:
    """One case's WT errors: ``pred`` and ``truth`` the WT masks on the grid of the z-scored ``image``."""
    voxel = float(np.prod(spacing)) / 1000
    tp, fn, fp = truth & pred, truth & ~pred, pred & ~truth
    return {
        "case": case_id,
        "true_cm3": float(truth.sum()) * voxel,
        "pred_cm3": float(pred.sum()) * voxel,
        "fn_cm3": float(fn.sum()) * voxel,
        "fp_cm3": float(fp.sum()) * voxel,
        "fn_at_border": float(near(fn, pred).sum() / max(fn.sum(), 1)),
        "fp_at_border": float(near(fp, truth).sum() / max(fp.sum(), 1)),
        "dice": float(2 * tp.sum() / max(truth.sum() + pred.sum(), 1)),
        "intensity": {
            part: {m: float(image[i][mask].mean()) if mask.any() else None for i, m in enumerate(MODALITIES)}
            for part, mask in (("tp", tp), ("fn", fn), ("fp", fp))
        },
    }


def _from_model(model: Path, cache: Path, wanted: set[str] | None, threads: int) -> Iterator[tuple[Any, ...]]:
    from bratsseg.data.cache import open_cache
    from bratsseg.inference.loading import load_predictor
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.inference.predictor import binarize

    predictor = load_predictor(model, threads=threads)
    seen = set(predictor.card.training.train_cases)
    for case in open_cache(cache):
        if (wanted is not None and case.case_id not in wanted) or (wanted is None and case.case_id in seen):
            continue
        image = np.asarray(case.image, dtype=np.float32)
        probs = predictor.probabilities(image)
        post = postprocess_regions(binarize(probs, predictor.thresholds), case.spacing, predictor.card.postprocessing,
                                   image)  # fmt: skip
        yield case, image, post[0]


def _from_run(run: Path, wanted: set[str] | None) -> Iterator[tuple[Any, ...]]:
    from bratsseg.engine.crossval import OutOfFold
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.inference.predictor import binarize

    sys.path.insert(0, str(ROOT / "scripts"))
    from tumour_free_cv import shipped_choices

    choices = shipped_choices(run)
    oof = OutOfFold(run / "eval", run / "cache")
    for i, case in enumerate(oof.cases):
        if wanted is not None and case.case_id not in wanted:
            continue
        image = np.asarray(case.image, dtype=np.float32)
        binary = binarize(oof.probabilities(i), choices.thresholds)
        yield case, image, postprocess_regions(binary, case.spacing, choices.postprocessing, image)[0]


def summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "cases": len(rows),
        "dice": float(np.mean([r["dice"] for r in rows])),
        "true_cm3": float(np.mean([r["true_cm3"] for r in rows])),
        "pred_cm3": float(np.mean([r["pred_cm3"] for r in rows])),
        "fn_cm3": float(np.mean([r["fn_cm3"] for r in rows])),
        "fp_cm3": float(np.mean([r["fp_cm3"] for r in rows])),
        "fn_at_border": float(np.mean([r["fn_at_border"] for r in rows])),
        "fp_at_border": float(np.mean([r["fp_at_border"] for r in rows])),
        "under_segmented_cases": sum(r["pred_cm3"] < r["true_cm3"] for r in rows),
        "fn_flair_minus_tp_flair": float(np.nanmean([
            r["intensity"]["fn"]["flair"] - r["intensity"]["tp"]["flair"] for r in rows
            if r["intensity"]["fn"]["flair"] is not None and r["intensity"]["tp"]["flair"] is not None])),
    }  # fmt: skip


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if not args.label or (args.model is None) == (args.run is None) or (args.model is not None and not args.cache):
        raise SystemExit("give --label and either --model with --cache, or --run")
    wanted = set(args.cases.split(",")) if args.cases else None
    source = _from_model(args.model, args.cache, wanted, args.threads) if args.model else _from_run(args.run, wanted)
    rows = []
    for case, image, pred in source:
        rows.append(case_row(case.case_id, image, pred, case.regions()[0], case.spacing))
        r = rows[-1]
        print(f"{case.case_id}: WT Dice {r['dice']:.3f}, true {r['true_cm3']:.0f} cm3, missed {r['fn_cm3']:.0f} "
              f"({r['fn_at_border']:.0%} at the border), extra {r['fp_cm3']:.0f} ({r['fp_at_border']:.0%})",
              file=sys.stderr)  # fmt: skip
    stored = json.loads(args.json.read_text()) if args.json.is_file() else {"sources": {}}
    what = f"model {args.model}" if args.model else f"cross-validation run {args.run}, out of fold"
    stored["sources"][args.label] = {"source": what, "summary": summary(rows), "cases": rows}
    return stored


def render(d: dict[str, Any]) -> str:
    lines = [
        BEGIN,
        "Where the whole tumour (WT) is lost on cases the model did not see (`python scripts/wt_errors.py`): mean "
        "per case; *missed* and *extra* are the false-negative and false-positive volumes, *at the border* the share "
        "of them within 2 voxels of the other mask (a boundary disagreement rather than a lobe missed or invented); "
        "FLAIR of the missed voxels minus that of the found ones, in z-scored units.",
        "",
        "| model, cases | n | WT Dice | true / predicted cm^3 | missed cm^3 (at the border) | extra cm^3 (at the "
        "border) | under-segmented cases | FLAIR, missed - found |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, src in d["sources"].items():
        s = src["summary"]
        lines.append(
            f"| {label} | {s['cases']} | {s['dice']:.3f} | {s['true_cm3']:.0f} / {s['pred_cm3']:.0f} | "
            f"{s['fn_cm3']:.1f} ({s['fn_at_border']:.0%}) | {s['fp_cm3']:.1f} ({s['fp_at_border']:.0%}) | "
            f"{s['under_segmented_cases']} of {s['cases']} | {s['fn_flair_minus_tp_flair']:+.2f} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--label", help="the source's name in the table")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--run", type=Path)
    parser.add_argument("--cases", help="comma-separated case ids (default: every case the model did not train on)")
    parser.add_argument("--threads", type=int, default=2)
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
