"""`bratsseg info`, `preprocess` and `synth`: look at data, cache it, make synthetic cases."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from bratsseg.cli.common import add_naming_args
from bratsseg.cli.common import progress as _progress
from bratsseg.errors import BratsSegError


def _spacing(values: list[float] | None) -> tuple[float, float, float] | None:
    """``--spacing``: one size (isotropic) or three, in mm."""
    if values is None:
        return None
    if len(values) not in (1, 3):
        raise BratsSegError(f"--spacing takes one or three sizes in mm, got {len(values)}")
    x, y, z = values * 3 if len(values) == 1 else values
    return float(x), float(y), float(z)


def cmd_info(args: argparse.Namespace) -> int:
    from bratsseg.data.info import describe
    from bratsseg.io.info import format_description

    info = describe(args.path, check=args.check)
    print(json.dumps(info, indent=1) if args.json else format_description(info))
    return 1 if info["problems"] else 0


def cmd_preprocess(args: argparse.Namespace) -> int:
    from bratsseg.data.preprocess import PreprocessConfig, preprocess_dataset
    from bratsseg.io.discovery import discover_cases

    n_cases = len(discover_cases(args.raw, args.convention, args.naming).cases)
    bar = _progress("preprocess", n_cases)
    try:
        report = preprocess_dataset(
            raw=args.raw,
            cache_root=args.output,
            config=PreprocessConfig(margin=args.margin, spacing=_spacing(args.spacing)),
            workers=args.workers,
            convention=args.convention,
            overwrite=args.overwrite,
            progress=bar.update,
            naming=args.naming,
        )
    finally:
        bar.close()
    print(
        f"{args.output}: {len(report.written)} case(s) written, {len(report.skipped)} already cached, "
        f"{len(report.failed)} failed"
    )
    for message in report.failed:
        print(f"failed: {message}", file=sys.stderr)
    return 0 if report.ok else 1


def cmd_synth(args: argparse.Namespace) -> int:
    from bratsseg.data.synthetic import make_synthetic_dataset

    cases = make_synthetic_dataset(args.output, args.n, naming=args.naming, size=args.size, seed=args.seed)
    print(f"{args.output}: wrote {len(cases)} synthetic case(s) in {args.naming} naming ({args.size})")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser("info", help="describe the cases in a case folder, dataset root or cache")
    p.add_argument("path", type=Path)
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument(
        "--check", action="store_true", help="read every voxel: find truncated files, NaN, empty images (slower)"
    )
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("preprocess", help="crop, z-score and cache a BraTS dataset for training and evaluation")
    p.add_argument("raw", type=Path, help="a case folder or a dataset root of case folders")
    p.add_argument("-o", "--output", type=Path, required=True, help="cache folder")
    p.add_argument("--workers", type=int, default=1, help="processes (default 1)")
    p.add_argument("--margin", type=int, default=2, help="voxels kept around the brain box (default 2)")
    p.add_argument(
        "--spacing",
        type=float,
        nargs="+",
        metavar="MM",
        help="resample every case to this voxel size first: one value (isotropic) or three (default: each case's "
        "own grid; give it when the cases' spacings differ, as nnU-Net does)",
    )
    add_naming_args(p)
    p.add_argument("--overwrite", action="store_true", help="redo cases already cached")
    p.set_defaults(func=cmd_preprocess)

    p = sub.add_parser("synth", help="write synthetic BraTS-layout cases (for trying bratsseg without data)")
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("-n", type=int, default=4, help="number of cases (default 4)")
    p.add_argument("--naming", choices=["brats2021", "brats2023"], default="brats2021")
    p.add_argument("--size", choices=["tiny", "small", "full"], default="small")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_synth)
