"""Inference variants of the bundled model's cross-validation fold models, each scored out of fold with the
nested threshold.

    python scripts/cv_ablation.py --cache CACHE -o docs/ablation.json [--bundle DIR] [--work runs/ablation]

Each fold model shipped in the bundle (``folds/foldK``) predicts its own validation cases in every variant
(written under ``WORK/<variant>/foldK``), and :func:`bratsseg.engine.crossval.cross_validate` pools them exactly
as for the bundled model. The variants change only how the trained networks are run (the refinement stage on or
off, mirroring), so they cost no training; the seconds are both stages' network time per case on this machine's
CPU threads. The JSON is what ``scripts/cv_tables.py`` renders into docs/results/accuracy.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from bratsseg.data.cache import open_cache
from bratsseg.engine.crossval import OutOfFold, cross_validate
from bratsseg.engine.evaluate import evaluate_predictor
from bratsseg.inference.cascade import CascadePredictor
from bratsseg.inference.loading import load_predictor, set_mirror
from bratsseg.models.bundled import default_model_path
from bratsseg.models.card import read_card

#: name -> (refinement stage on, mirror axes)
VARIANTS = {
    "first stage alone (1 pass, the `coarse` mode)": (False, ()),
    "as trained (1 pass)": (True, ()),
    "mirroring, left-right only (2 passes)": (True, (0,)),
    "mirroring, all 3 axes (8 passes, as nnU-Net)": (True, (0, 1, 2)),
}


def time_modes(case_dir: Path, threads: int, repeats: int) -> dict[str, object]:
    """Median seconds of ``predict_case`` (NIfTI in, NIfTI out) for each mode of the bundled model."""
    import statistics
    import tempfile

    from bratsseg.engine.predict import predict_case
    from bratsseg.inference.loading import load_predictor
    from bratsseg.io.discovery import find_case
    from bratsseg.models.bundled import default_model_path
    from bratsseg.models.card import read_card

    case = find_case(case_dir)
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("fast", *read_card(default_model_path()).modes):
            predictor = load_predictor(default_model_path(), threads=threads, mode=mode)
            predict_case(predictor, case, tmp)  # warm-up
            seconds[mode] = statistics.median(predict_case(predictor, case, tmp)[1]["total"] for _ in range(repeats))
    return {"case": case.case_id, "threads": threads, "repeats": repeats, "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=default_model_path(), help="a model with folds/fold0..K")
    parser.add_argument("--work", type=Path, default=Path("runs/ablation"), help="where the evaluations go")
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--case", type=Path, help="a raw case folder: time the bundled model's modes end to end")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--timing-only", action="store_true", help="keep the variants already in --output; only time the modes"
    )
    args = parser.parse_args()
    if args.timing_only:
        out = json.loads(args.output.read_text())
        out["modes_end_to_end"] = time_modes(args.case, args.threads, args.repeats)
        args.output.write_text(json.dumps(out, indent=1))
        return 0
    by_id = {c.case_id: c for c in open_cache(args.cache)}
    folds = sorted(p for p in (args.bundle / "folds").glob("fold*") if p.is_dir())
    refined = any(read_card(f).refinement is not None for f in folds)
    results = {}
    for name, (refine, axes) in VARIANTS.items():
        if not refined and not refine:
            continue  # a bundle without a refinement stage: its models are the first stage
        slug = ("mirror-" + "".join(map(str, axes)) if axes else "plain") + ("" if refine else "-first")
        seconds = []
        for fold in folds:
            predictor = load_predictor(fold, threads=args.threads)
            if not refine and isinstance(predictor, CascadePredictor):
                predictor = predictor.first
            set_mirror(predictor, axes)
            cases = [by_id[i] for i in predictor.card.training.val_cases]
            summary = evaluate_predictor(predictor, cases, args.work / slug / fold.name, save_probabilities=True)
            seconds.append((len(cases), summary.info["network_seconds_per_case"]))
        cv = cross_validate(OutOfFold(args.work / slug, args.cache))
        n = sum(s[0] for s in seconds)
        results[name] = {
            "refinement": refine and refined,
            "mirror_axes": list(axes),
            "pooled_at_0.5": {g: v["dice_mean"] for g, v in cv["pooled"].items()},
            "hd95_at_0.5": {g: v["hd95_mean"] for g, v in cv["pooled"].items()},
            "nested": cv["nested_threshold"],
            "small_et_cases": cv["small_et"]["cases"],
            "small_et_dice_nested": cv["postprocessing"]["rows"]["nested threshold"]["small_et_dice"],
            "network_seconds_per_case": sum(count * s for count, s in seconds) / n,
            "threads": args.threads,
        }
        print(
            name,
            json.dumps(results[name]["nested"]["per_region"]),
            f"{results[name]['network_seconds_per_case']:.2f} s",
        )
    out = {"cases": len(by_id), "folds": len(folds), "threads": args.threads, "variants": results}
    if args.case:
        out["modes_end_to_end"] = time_modes(args.case, args.threads, args.repeats)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
