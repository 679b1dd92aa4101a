"""The README's headline table, rendered from the measurements' JSON files and the shipped model files: never a
number typed by hand.

    python scripts/headline.py --write README.md     # replace the block between the markers
    python scripts/headline.py                       # print it

Accuracy: the bundled model's nested out-of-fold Dice on the 22 shared cases (``docs/component_filter.json``, the
last nested row of the cross-validation page) and its fast mode on 22 further real cases no training saw
(``docs/retrain44.json``). Tumour-free brains: ``docs/tumour_free_training.json``. Speed and memory:
``docs/runtime_bench.json``. Size: the shipped files themselves.
``tests/test_docs.py`` checks that the README's block is what this renders.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BEGIN = "<!-- headline: begin (scripts/headline.py --write README.md) -->"
END = "<!-- headline: end -->"
BUNDLED = ROOT / "src" / "bratsseg" / "models" / "bundled" / "brats3d"
REGIONS = ("WT", "TC", "ET")
SITE = "docs"  # the README links into docs/; the same pages build the site


def _dice(values: dict[str, float]) -> str:
    return " / ".join(f"{values[g]:.3f}" for g in REGIONS)


def _tumour_free_wt(free: dict[str, Any], variant: str) -> tuple[int, float]:
    """Inputs and mean whole tumour found (cm^3) in the tumour-free brains made another way than the training's."""
    wt = [c[variant]["mirrored"]["cm3"]["WT"] for c in free["cases"].values() if "mirrored" in c[variant]]
    return len(wt), sum(wt) / len(wt)


def render(components: dict[str, Any], retrain: dict[str, Any], runtime: dict[str, Any], fast_mb: float,
           all_mb: float, free: dict[str, Any] | None = None) -> str:  # fmt: skip
    nested = {g: components["holes"]["nested"]["per_region"][g]["dice"] for g in REGIONS}
    unseen = next(iter(retrain["variants"].values()))["groups"]["new to the old bundle"]  # the shipped bundle: "old"
    rows = {r["row"]: r for r in runtime["rows"]}
    ours = next(r for name, r in rows.items() if name.startswith("bratsseg, runtime install (ONNX"))
    accurate = next((r for name, r in rows.items() if "--mode accurate" in name), None)
    seg = next(r for name, r in rows.items() if name.startswith("MONAI SegResNet"))
    lines = [
        BEGIN,
        "| what | measured | where |",
        "|---|---|---|",
        f"| Dice WT / TC / ET, 22 cases, nested out of fold | {_dice(nested)} | "
        f"[accuracy]({SITE}/results/accuracy.md) |",
        f"| Dice WT / TC / ET, {unseen['cases']} further real cases no training saw (fast mode) | "
        f"{_dice(unseen['old'])} | "
        f"[accuracy]({SITE}/results/accuracy.md#twice-the-data) |",
        f"| one case, whole `predict` process, 2 CPU threads (runtime install) | {ours['process_s']:.2f} s, "
        f"{ours['peak_rss_mb']:.0f} MB peak; {seg['process_s'] / ours['process_s']:.0f}x less time than a process "
        f"running MONAI SegResNet's forward | [speed]({SITE}/results/speed.md) |",
    ]
    if free is not None:
        n, now = _tumour_free_wt(free, "free")
        _, before = _tumour_free_wt(free, "shipped")
        lines.insert(  # after the accuracy rows
            5,
            f"| tumour found in a tumour-free brain ({n} made from real cases; out of fold) | {now:.1f} cm^3 on "
            f"average (was {before:.1f} before the networks learnt from tumour-free brains) | "
            f"[robustness]({SITE}/results/robustness.md#tumour-free-brains) |",
        )
    if accurate is not None:
        lines.append(
            f"| one case, `--mode accurate` (5 fold models, mirrored) | {accurate['process_s']:.1f} s, "
            f"{accurate['peak_rss_mb']:.0f} MB peak | [speed]({SITE}/results/speed.md) |"
        )
    lines += [
        f"| model files: fast mode / both modes; runtime install | {fast_mb:.1f} MB / {all_mb:.1f} MB; "
        f"{ours['installed_mb']:.0f} MB installed, no PyTorch | [runtime]({SITE}/how-to/runtime.md) |",
        "",
        f"Measured on {runtime['date']} ({runtime['machine']}); every number is rendered from the JSON its "
        "measurement wrote (`python scripts/headline.py --write README.md`).",
        END,
    ]
    return "\n".join(lines)


def current() -> str:
    fast = [BUNDLED / "model.onnx", BUNDLED / "model.json"]
    every = [f for f in BUNDLED.rglob("*") if f.is_file() and f.suffix in (".onnx", ".json", ".safetensors")]
    return render(
        json.loads((ROOT / "docs" / "component_filter.json").read_text()),
        json.loads((ROOT / "docs" / "retrain44.json").read_text()),
        json.loads((ROOT / "docs" / "runtime_bench.json").read_text()),
        sum(f.stat().st_size for f in fast) / 1e6,
        sum(f.stat().st_size for f in every) / 1e6,
        json.loads((ROOT / "docs" / "tumour_free_training.json").read_text()),
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--write", type=Path)
    args = p.parse_args()
    block = current()
    if args.write is None:
        print(block)
        return 0
    from bratsseg.docblocks import replace_block

    args.write.write_text(replace_block(args.write.read_text(), block, BEGIN, END))
    return 0


if __name__ == "__main__":
    sys.exit(main())
