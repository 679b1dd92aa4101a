"""ET where it is small (issue 31): each out-of-fold case with fewer than 5,000 true ET voxels, its ET as a bundle
made by ``bratsseg bundle`` writes it (each fold at its nested threshold, with the shipped post-processing), the
true and predicted ET volumes, and the failure kind: ``missed`` (no ET predicted), ``over`` (more than twice the true
volume), ``under`` (less than half), else ``close``.

    python scripts/small_et.py --run RUN --model MODEL|RUN/bundle_choices.json [-o docs/small_et44.json]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from bratsseg.engine.crossval import SMALL_ET_VOXELS, OutOfFold
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.metrics.overlap import dice_per_region
from bratsseg.models.card import read_card


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("-o", "--output", type=Path, default=Path("docs/small_et44.json"))
    args = parser.parse_args()
    if args.model.suffix == ".json":  # a run's bundle_choices.json (before the all-case model is done)
        from bratsseg.dataclass_io import from_dict
        from bratsseg.models.card import Postprocessing

        cv = json.loads(args.model.read_text())["choices"]["cv"]
        post = from_dict(Postprocessing, cv["shipped"]["postprocessing"])
    else:
        cv = read_card(args.model).bundle["cross_validation"]
        post = read_card(args.model).postprocessing
    nested = cv["nested_threshold"]["thresholds"]
    oof = OutOfFold(args.run / "eval", args.run / "cache")
    rows = []
    for i, case in enumerate(oof.cases):
        true_et = oof.et_voxels[i]
        if true_et >= SMALL_ET_VOXELS:
            continue
        probs = oof.probabilities(i)
        image = np.asarray(case.image, dtype=np.float32)
        pred = postprocess_regions(probs > nested[oof.fold_of[i]], case.spacing, post, image)
        got = int(pred[2].sum())
        kind = (
            "missed"
            if got == 0 and true_et
            else "over"
            if got > 2 * true_et
            else "under"
            if got < true_et / 2
            else "close"
        )
        rows.append({"case": case.case_id, "true_et_voxels": true_et, "pred_et_voxels": got, "kind": kind,
                     "dice": dice_per_region(pred, oof.truth[i])})  # fmt: skip
        print(rows[-1], file=sys.stderr)
    kinds = {k: sum(r["kind"] == k for r in rows) for k in ("missed", "over", "under", "close")}
    out = {"cases": len(rows), "kinds": kinds, "et_dice": float(np.mean([r["dice"]["ET"] for r in rows])), "rows": rows}
    args.output.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps({k: v for k, v in out.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
