"""Time to read one real case raw (four NIfTI .nii.gz + segmentation) versus from the bratsseg cache.

    python benchmarks/io_bench.py [CASE_FOLDER] [--repeats 5]

Prints median seconds for: the raw read (decompress and validate, as training would without a cache),
opening the cached case memory-mapped, and reading the whole cached case into memory, and the ratios.
The cached full read should be at least 20x faster than the raw read.

Then what ``predict`` does before the network, two ways, interleaved in one process: the four modalities read as
float32 whole volumes then cropped and z-scored (the previous path, still the cache's), against the same read in
their on-disk dtype with only the brain's box converted (``load_raw_case``, what ``predict`` runs now).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
from common import DEFAULT_CASE, median_time

from bratsseg.data.cache import CachedCase
from bratsseg.data.preprocess import crop_and_normalise, preprocess_case
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case, load_raw_case


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", nargs="?", type=Path, default=DEFAULT_CASE)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if not args.case.is_dir():
        print(f"no case folder at {args.case}; pass one", file=sys.stderr)
        return 2
    case = find_case(args.case)
    with tempfile.TemporaryDirectory() as tmp:
        cached_dir = preprocess_case(case, tmp)

        def raw_read() -> None:
            loaded = load_case(case)
            assert loaded.regions is not None

        def cached_open() -> None:
            c = CachedCase.open(cached_dir)
            _ = c.image.shape, c.packed_regions.shape

        def cached_read() -> None:
            c = CachedCase.open(cached_dir)
            image = np.array(c.image)  # every byte read into memory
            regions = c.regions()
            assert image.shape[1:] == regions.shape[1:]

        t_raw = median_time(raw_read, args.repeats)
        t_open = median_time(cached_open, args.repeats * 4)
        t_read = median_time(cached_read, args.repeats * 4)
        size = sum(p.stat().st_size for p in Path(cached_dir).iterdir())
    raw_size = sum(p.stat().st_size for p in case.files)
    print(f"case {case.case_id}: raw files {raw_size / 1e6:.1f} MB (gzip), cache {size / 1e6:.1f} MB (uncompressed)")
    print(f"{'read':<34}{'seconds':>10}{'speed-up':>10}")
    print(f"{'raw NIfTI (4 modalities + seg)':<34}{t_raw:>10.4f}{1.0:>9.1f}x")
    print(f"{'cache, full read into memory':<34}{t_read:>10.4f}{t_raw / t_read:>9.1f}x")
    print(f"{'cache, memory-mapped open':<34}{t_open:>10.4f}{t_raw / t_open:>9.1f}x")
    ok = t_raw / t_read >= 20
    print(f"target: cached full read >= 20x faster than raw: {'met' if ok else 'NOT met'}")

    def whole_float() -> None:
        crop_and_normalise(load_case(case, load_seg=False).image, 2)

    def box_only() -> None:
        crop_and_normalise(load_raw_case(case).channels, 2)

    t_float, t_box = [], []
    for _ in range(args.repeats):  # interleaved, so that a busy machine slows both alike
        t_float.append(median_time(whole_float, 1))
        t_box.append(median_time(box_only, 1))
    m_float, m_box = float(np.median(t_float)), float(np.median(t_box))
    print(f"{'predict: read + crop + z-score':<34}{'seconds':>10}{'speed-up':>10}")
    print(f"{'  whole volumes as float32':<34}{m_float:>10.4f}{1.0:>9.1f}x")
    print(f"{'  on-disk dtype, box converted':<34}{m_box:>10.4f}{m_float / m_box:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
