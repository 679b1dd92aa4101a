"""Which differences between cross-validated models can 22 cases resolve? Each variant against a baseline, case by
case: every case's Dice per region at its fold's nested threshold (as the bundle's cross-validation scores it),
the mean difference and its 95% bootstrap interval over cases (:func:`bratsseg.metrics.paired.paired_bootstrap`),
and on how many cases the variant is ahead or behind by more than 0.005.

The folders are cross-validation work folders whose ``eval/foldK`` hold the out-of-fold probabilities
(``bratsseg crossval ... --no-final``; ``scripts/ensemble_oof.py`` for an average of trainings; the
shipped fold models with one ``--member``), all on the same folds::

    python scripts/paired_oof.py --cache runs/abl-seed/cache --baseline "shipped=runs/abl-one" \\
        --variant "another seed=runs/abl-seed" --variant "the two averaged=runs/abl-ens" \\
        --variant "half the training cases=runs/abl-half"
    python scripts/paired_oof.py --render --write docs/results/accuracy.md      # the block from the JSON
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

from bratsseg.docblocks import named_path
from bratsseg.engine.crossval import OutOfFold, sweep_nested
from bratsseg.labels import REGIONS
from bratsseg.metrics.paired import paired_bootstrap

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "paired_oof.json"
BEGIN = "<!-- paired-oof: begin (scripts/paired_oof.py --render --write docs/results/accuracy.md) -->"
END = "<!-- paired-oof: end -->"
DEFAULT_BLOCK = "paired-oof"


def markers(block: str) -> tuple[str, str]:
    """A block's begin and end markers: ``paired-oof`` (the default) or another study's (``--block KEY``, its JSON
    ``docs/KEY.json`` with dashes as underscores)."""
    if block == DEFAULT_BLOCK:
        return BEGIN, END
    command = f"scripts/paired_oof.py --block {block} --render --write docs/results/accuracy.md"
    return f"<!-- {block}: begin ({command}) -->", f"<!-- {block}: end -->"


def nested_by_case(folder: Path, cache: Path) -> dict[str, np.ndarray]:
    """Each case's Dice per region at its fold's nested threshold, by case id."""
    oof = OutOfFold(folder / "eval", cache)
    _, _, nested = sweep_nested(oof)
    return {c.case_id: nested[i] for i, c in enumerate(oof.cases)}


def measure(args: argparse.Namespace) -> dict[str, Any]:
    if args.cache is None or args.baseline is None or not args.variant:
        raise SystemExit("give --cache, --baseline and --variant (or --render)")
    base_name, base_folder = args.baseline
    base = nested_by_case(base_folder, args.cache)
    ids = sorted(base)
    b = np.array([base[i] for i in ids])
    rows = []
    for name, folder in args.variant:
        scores = nested_by_case(folder, args.cache)
        if sorted(scores) != ids:
            raise SystemExit(f"{folder}: not the baseline's cases")
        a = np.array([scores[i] for i in ids])
        diff = {g: paired_bootstrap(a[:, r], b[:, r], args.resamples) for r, g in enumerate(REGIONS)}
        diff["mean"] = paired_bootstrap(a.mean(axis=1), b.mean(axis=1), args.resamples)
        rows.append({"name": name, "nested": {g: float(a[:, r].mean()) for r, g in enumerate(REGIONS)}, "diff": diff})
        print(f"{name}: {diff['mean']}", file=sys.stderr)
    return {
        "block": args.block,
        "baseline": base_name,
        "baseline_nested": {g: float(b[:, r].mean()) for r, g in enumerate(REGIONS)},
        "cases": len(ids),
        "resamples": args.resamples,
        "rows": rows,
    }


def _cell(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"


def render(result: dict[str, Any]) -> str:
    begin, end = markers(result.get("block", DEFAULT_BLOCK))
    lines = [
        begin,
        f"Each variant minus **{result['baseline']}**, case by case on the same {result['cases']} cases, every case "
        "at its fold's nested threshold: the mean difference in Dice and its 95% bootstrap interval over cases "
        f"({result['resamples']} resamples; `python scripts/paired_oof.py`). An interval that holds 0 is a difference "
        "these cases cannot tell from none.",
        "",
        "| variant | WT | TC | ET | mean of the three | cases ahead / behind (mean, by > 0.005) |",
        "|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        d = row["diff"]
        cells = " | ".join(_cell(d[k]) for k in (*REGIONS, "mean"))
        lines.append(f"| {row['name']} | {cells} | {d['mean']['ahead']} / {d['mean']['behind']} |")
    lines.append(end)
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="the cases, preprocessed")
    parser.add_argument("--baseline", type=named_path, help="NAME=FOLDER")
    parser.add_argument("--variant", type=named_path, action="append", default=[], help="NAME=FOLDER (repeat)")
    parser.add_argument("--resamples", type=int, default=10000)
    from bratsseg.docblocks import measured_block_main

    parser.add_argument("--block", default=DEFAULT_BLOCK, help="the block's key (default paired-oof)")
    block = parser.parse_known_args()[0].block
    json_out = JSON_OUT if block == DEFAULT_BLOCK else ROOT / "docs" / f"{block.replace('-', '_')}.json"
    return measured_block_main(parser, measure, render, json_out, *markers(block))


if __name__ == "__main__":
    sys.exit(main())
