"""Cost of the 101-threshold sweep against one single-threshold evaluation, on one real case.

    python benchmarks/eval_bench.py [CASE_FOLDER] [--repeats 5]

The network is not timed: both start from the same region probabilities (a smooth random field with the
case's tumour shape, so that the numbers do not depend on a trained model). "One evaluation" is what
`bratsseg evaluate` does per case at one threshold: confusion counts, Dice, IoU, sensitivity, specificity
and HD95 for WT, TC and ET; the overlap-only part is timed too. Target: sweep <= 3x one evaluation.
The BraTS 2023+ lesion-wise metrics (components, dilation, matching, per-lesion Dice and HD95; on by default in
`bratsseg evaluate`) are timed on top of one evaluation, on the same probabilities binarised at 0.5.
Last, the worst case of HD95 that once cost 50 s of CPU per case (a raw network output with ~170 scattered
false-positive voxels across the brain): one evaluation of the truth plus 170 scattered voxels, with SciPy (HD95 by
a k-d tree of the surfaces) and with the numpy distance transform of the runtime install, against one evaluation of
the smooth prediction.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import DEFAULT_CASE, median_time
from scipy import ndimage

from bratsseg.data.cache import CachedCase
from bratsseg.data.preprocess import preprocess_case
from bratsseg.inference.predictor import binarize
from bratsseg.io.discovery import find_case
from bratsseg.metrics.lesion import PRESETS
from bratsseg.metrics.sweep import SweepAccumulator
from bratsseg.metrics.tables import case_rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", nargs="?", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.case.is_dir():
        print(f"no case folder at {args.case}; pass one", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        cached = CachedCase.open(preprocess_case(find_case(args.case), tmp))
        truth = cached.regions()
        rng = np.random.default_rng(0)
        blurred = ndimage.gaussian_filter(truth.astype(np.float32), (0, 2, 2, 2))
        noise = ndimage.gaussian_filter(rng.normal(size=truth.shape).astype(np.float32), (0, 3, 3, 3))
        probs = np.clip(blurred + 2 * noise, 0, 1).astype(np.float32)
        brain = np.flatnonzero(np.asarray(cached.image[0]) != 0)
    thresholds = {"WT": 0.5, "TC": 0.5, "ET": 0.5}
    total = int(np.prod(cached.original_shape))

    def one_evaluation() -> None:
        case_rows("c", binarize(probs, thresholds), truth, cached.spacing, total, thresholds=thresholds)

    def with_lesions() -> None:
        case_rows(
            "c", binarize(probs, thresholds), truth, cached.spacing, total, thresholds=thresholds,
            lesion=PRESETS["BraTS-GLI"],
        )  # fmt: skip

    def overlap_only() -> None:
        case_rows(
            "c", binarize(probs, thresholds), truth, cached.spacing, total, thresholds=thresholds, with_hd95=False
        )

    def sweep() -> None:
        acc = SweepAccumulator()
        acc.add("c", probs, truth)
        acc.result()

    scattered = truth.copy()
    scattered.reshape(3, -1)[:, rng.choice(brain, min(170, brain.size), replace=False)] = True

    def noisy_evaluation() -> None:
        case_rows("c", scattered, truth, cached.spacing, total, thresholds=thresholds)

    import bratsseg.metrics.distance as distance_module

    t_noisy = median_time(noisy_evaluation, args.repeats)
    with_scipy = distance_module.distance_to, distance_module._kd_tree
    distance_module.distance_to = distance_module.distance_to_numpy  # the runtime install's: no SciPy
    distance_module._kd_tree = lambda: None
    try:
        t_noisy_numpy = median_time(noisy_evaluation, args.repeats)
    finally:
        distance_module.distance_to, distance_module._kd_tree = with_scipy
    t_eval = median_time(one_evaluation, args.repeats)
    t_overlap = median_time(overlap_only, args.repeats)
    t_lesion = median_time(with_lesions, args.repeats)
    t_sweep = median_time(sweep, args.repeats)
    print(f"case {cached.case_id}: cropped grid {truth.shape[1:]} ({truth[0].size:,} voxels), 3 regions")
    print(f"{'task':<44}{'seconds':>9}{'sweep / task':>14}")
    print(f"{'one evaluation at one threshold (with HD95)':<44}{t_eval:>9.4f}{t_sweep / t_eval:>13.2f}x")
    print(f"{'  overlap metrics only (no HD95)':<44}{t_overlap:>9.4f}{t_sweep / t_overlap:>13.2f}x")
    print(f"{'one evaluation + lesion-wise metrics':<44}{t_lesion:>9.4f}{t_sweep / t_lesion:>13.2f}x")
    print(f"{'sweep: Dice + IoU at 101 thresholds':<44}{t_sweep:>9.4f}{1.0:>13.2f}x")
    verdict = "met" if t_sweep <= 3 * t_eval else "NOT met (HD95 got cheaper: compare with brute force)"
    print(f"target: sweep <= 3x one evaluation: {verdict}")
    print(f"sweep / brute force (101 overlap-only evaluations): {t_sweep / (101 * t_overlap):.3f}")
    print(f"the lesion-wise metrics cost {t_lesion - t_eval:.3f} s per case ({t_lesion / t_eval:.1f}x one evaluation)")
    print(
        f"170 scattered false positives: one evaluation {t_noisy:.3f} s with SciPy ({t_noisy / t_eval:.1f}x the smooth "
        f"one), {t_noisy_numpy:.3f} s with numpy alone ({t_noisy_numpy / t_eval:.1f}x)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
