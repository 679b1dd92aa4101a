"""Does centring more patches on the enhancing tumour show the network more of it? (issue 31: small ET)

The recipe centres half its patches (``fg_fraction`` 0.5) on a voxel of a region chosen uniformly among WT, TC
and ET; ``fg_region_weights`` weights that choice. Its patches are 64^3 on a grid 2x coarser than the images, so
each is cut from a 128^3 window of the full-resolution case. This script draws the windows a training run draws
(``PatchDataset.window``: the sampler's own draws, 20 epochs x 200 samples, no cutting) from every cached case,
for the recipe's weights and for ET-weighted ones, and counts the enhancing tumour inside them: the share of
windows holding any ET, the share of its case's ET a window holds (how much of the enhancing tumour one sample
shows), and the mean share of ET voxels in a window (how much of the loss ET is). Small-ET cases (under 5,000
true ET voxels, the issue's) apart.

    python scripts/et_sampling.py --cache RUN/cache [--write docs/results/accuracy.md]
    python scripts/et_sampling.py --render --write docs/results/accuracy.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "et_sampling.json"
BEGIN = "<!-- et-sampling: begin (scripts/et_sampling.py --render --write docs/results/accuracy.md) -->"
END = "<!-- et-sampling: end -->"
SMALL_ET = 5000
VARIANTS = {
    "the recipe (WT, TC, ET chosen uniformly)": (1.0, 1.0, 1.0),
    "ET weighted 2 (WT 1, TC 1)": (1.0, 1.0, 2.0),
    "ET only": (0.0, 0.0, 1.0),
}


def _integral(mask: np.ndarray) -> np.ndarray:
    """A summed-volume table with a zero border: the count in any box from 8 lookups."""
    out = np.zeros(tuple(n + 1 for n in mask.shape), dtype=np.int64)
    out[1:, 1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1).cumsum(2)
    return out


def _box_count(table: np.ndarray, lo: list[int], size: tuple[int, ...]) -> int:
    a = [min(max(v, 0), n - 1) for v, n in zip(lo, table.shape, strict=True)]
    b = [min(max(v + s, 0), n - 1) for v, s, n in zip(lo, size, table.shape, strict=True)]
    (x0, y0, z0), (x1, y1, z1) = a, b
    return int(
        table[x1, y1, z1] - table[x0, y1, z1] - table[x1, y0, z1] - table[x1, y1, z0]
        + table[x0, y0, z1] + table[x0, y1, z0] + table[x1, y0, z0] - table[x0, y0, z0]
    )  # fmt: skip


def _covered(shape: tuple[int, ...], patch: tuple[int, ...], down: int) -> float:
    return float(np.prod(np.minimum(shape, [p * down for p in patch])) / np.prod(shape))


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bratsseg.data.cache import open_cache
    from bratsseg.data.sampling import PatchDataset
    from bratsseg.engine.config import TrainConfig
    from bratsseg.engine.recipes import load_recipe

    settings = load_recipe("brats3d-cpu").settings
    patch, down = tuple(settings["patch_size"]), int(settings["downsample"])
    cases = [c for c in open_cache(args.cache) if c.has_seg]
    tables = [_integral(np.asarray(c.packed_regions) >> 2 & 1) for c in cases]
    totals = [int(t[-1, -1, -1]) for t in tables]
    small = [0 < n < SMALL_ET for n in totals]
    out: dict[str, Any] = {
        "cases": len(cases),
        "small_et_cases": int(sum(small)),
        "window": [p * down for p in patch],
        "samples": args.epochs * args.samples,
        # how much of a case one window covers: the cache holds each case cropped to its brain
        "window_share_of_case": float(
            np.mean(
                [np.prod(np.minimum(c.image.shape[1:], patch[0] * down)) / np.prod(c.image.shape[1:]) for c in cases]
            )
        ),
        "variants": {},
    }
    for name, weights in VARIANTS.items():
        ds = PatchDataset(
            cases,
            patch,
            args.samples,
            fg_fraction=TrainConfig().fg_fraction,
            seed=0,
            downsample=down,
            region_weights=weights,
        )
        rows: dict[str, list[tuple[bool, float, float]]] = {"all": [], "small": []}
        for epoch in range(args.epochs):
            ds.set_epoch(epoch)
            for i in range(args.samples):
                k, lo, size, _ = ds.window(i)
                if not totals[k]:
                    continue
                inside = _box_count(tables[k], lo, size)
                row = (inside > 0, inside / totals[k], inside / float(np.prod(size)))
                rows["all"].append(row)
                if small[k]:
                    rows["small"].append(row)
        out["variants"][name] = {
            "weights": list(weights),
            **{
                group: {
                    "windows": len(r),
                    "with_et": float(np.mean([a for a, _, _ in r])),
                    "share_of_case_et": float(np.mean([b for _, b, _ in r])),
                    "et_share_of_window": float(np.mean([c for _, _, c in r])),
                }
                for group, r in rows.items()
            },
        }
        print(name, out["variants"][name], file=sys.stderr)
    return out


def render(d: dict[str, Any]) -> str:
    w = d["window"]
    lines = [
        BEGIN,
        f"What the recipe's training samples hold of the enhancing tumour: the windows a training run draws "
        f"({d['samples']:,} per variant, the sampler's own draws; each patch is cut from a "
        f"{w[0]} x {w[1]} x {w[2]} window of the full-resolution case and pooled 2x) on the {d['cases']} cases, "
        f"{d['small_et_cases']} of them small-ET (under {SMALL_ET:,} true ET voxels); one window covers "
        f"{d['window_share_of_case']:.0%} of a case's brain box on average "
        "(`python scripts/et_sampling.py --cache RUN/cache`):",
        "",
        "| foreground patches centred on | windows with ET: all / small-ET cases | share of its case's ET in a window: "
        "all / small-ET | ET voxels in a window: all / small-ET |",
        "|---|---|---|---|",
    ]
    for name, v in d["variants"].items():
        a, s = v["all"], v["small"]
        lines.append(
            f"| {name} | {a['with_et']:.0%} / {s['with_et']:.0%} | {a['share_of_case_et']:.0%} / "
            f"{s['share_of_case_et']:.0%} | {a['et_share_of_window']:.2%} / {s['et_share_of_window']:.3%} |"
        )
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    from bratsseg.docblocks import measured_block_main

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=Path, help="a cache of labelled cases (e.g. a crossval run's RUN/cache)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=200, help="samples per epoch (steps x batch)")
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
