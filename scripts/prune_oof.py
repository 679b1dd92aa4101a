"""Pair pruning of the shipped model, measured out of fold (issue 34).

    python scripts/prune_oof.py --cache CACHE [--out runs/prune_oof] [--ratios 0.25 0.5 0.75] [--epochs 4]
        [--steps 100] [--distill 0.5] [--folds 0 1 2 3 4]
    python scripts/prune_oof.py --render --write docs/results/compression.md     # the block from docs/prune_oof.json

For each of the bundled model's five cross-validation fold models (each trained on 17-18 of the 22 shared cases):
encoder-decoder pair pruning at each ratio, alone and fine-tuned (the fold's own training cases,
``--epochs`` x ``--steps`` steps at half the recipe's learning rate, distilled from the unpruned fold model's
probabilities with weight ``--distill``), and the fine-tuned one in float16. Every variant is scored on its fold's
own held-out cases (the 22 cases, each once), at the fold model's threshold without post-processing, and compared
case by case with the unpruned fold model (mean Dice difference, 95% bootstrap interval over the 22 cases).
Then the costs of each variant of fold 0: parameters, weights file, GFLOPs of one network pass on a typical case,
the ONNX Runtime whole-case graph's seconds on one case (2 threads, median of 9, every variant in the same process)
and the whole ``bratsseg predict`` process on one case (median of 7, the variants' processes interleaved).
``CACHE`` is a training cache holding the 22 shared cases (``bratsseg preprocess ../shared/data/brats -o CACHE``).
Interrupted, it resumes: each scored variant is kept in ``OUT/scores.json`` and a fine-tuning run resumes from its
checkpoint; run again when it has finished, it reads every score back and measures only the costs again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
JSON_OUT = ROOT / "docs" / "prune_oof.json"
BUNDLED = ROOT / "src" / "bratsseg" / "models" / "bundled" / "brats3d"
BEGIN = "<!-- prune-oof: begin (scripts/prune_oof.py --render --write docs/results/compression.md) -->"
END = "<!-- prune-oof: end -->"
REGIONS = ("WT", "TC", "ET")
KEEP_WITHIN = 0.01  # the bar: mean Dice within 0.01 of the unpruned model
SPEED_BAR = 0.30  # ... and at least 30% less network time, to ship


def variant_names(ratios: list[float]) -> list[str]:
    names = ["base"]  # the shipped fold models' weights are float16 already
    for r in ratios:
        names += [f"pair {r:g}", f"pair {r:g} + ft", f"pair {r:g} + ft fp16"]
    return names


def build_variant(name: str, fold: int, work: Path, args: argparse.Namespace) -> Path:
    """The model folder of one variant of one fold (built once, kept in ``work``)."""
    from bratsseg.compress.prune import pair_prune
    from bratsseg.engine.pruning import finetune
    from bratsseg.models.files import load_model, save_model

    source = BUNDLED / "folds" / f"fold{fold}"
    folder = work / f"fold{fold}" / name.replace(" ", "").replace("+", "-")
    if name == "base":
        return source
    if (folder / "model.json").is_file():
        return folder
    base, card = load_model(source)
    ratio = float(name.split()[1])
    pruned_dir = work / f"fold{fold}" / f"pair{ratio:g}"
    if not (pruned_dir / "model.json").is_file():
        save_model(pruned_dir, pair_prune(base, ratio), card.with_step("pair", ratio=[ratio]))
    if name == f"pair {ratio:g}":
        return pruned_dir
    tuned_dir = work / f"fold{fold}" / f"pair{ratio:g}-ft"
    if not (tuned_dir / "model.json").is_file():
        run = finetune(pruned_dir, args.cache, work / f"fold{fold}" / f"pair{ratio:g}-ft-run", args.epochs, args.steps,
                       source, distill_weight=args.distill)  # fmt: skip
        tuned, _ = load_model(run)
        step = card.with_step("pair", ratio=[ratio]).with_step(
            "finetune", epochs=args.epochs, steps_per_epoch=args.steps, distill_weight=args.distill
        )
        save_model(tuned_dir, tuned, step)
    if name.endswith("fp16"):
        tuned, step = load_model(tuned_dir)
        return save_model(folder, tuned, step, weights_dtype="float16")
    return tuned_dir


def score(folder: Path, cases: list[Any]) -> dict[str, dict[str, float]]:
    """Dice per case and region of one model folder (PyTorch, the folder's threshold, no post-processing)."""
    from bratsseg.engine.evaluate import evaluate_predictor
    from bratsseg.inference.torch_predictor import TorchPredictor

    rows = evaluate_predictor(TorchPredictor.from_dir(folder), cases, None, with_hd95=False, lesion=None).rows
    out: dict[str, dict[str, float]] = {}
    for row in rows:
        out.setdefault(row["case_id"], {})[row["region"]] = float(row["dice"])
    return out


def onnx_seconds(folder: Path, case: Any, repeats: int = 9) -> float:
    """Median seconds of the whole-case ONNX graph (float16 weights, as the bundle ships) on one cached case."""
    from bratsseg.compress.onnx_export import export_model_folder
    from bratsseg.engine.compress_study import measure_latency
    from bratsseg.inference.onnx_predictor import OnnxPredictor

    if not (folder / "model.onnx").is_file():
        export_model_folder(folder)
    return measure_latency(OnnxPredictor(folder / "model.onnx", threads=2), case, repeats)


def process_seconds(folders: list[Path], case_dir: Path, repeats: int = 7) -> list[tuple[float, float]]:
    """Median wall seconds and peak RSS (MB) of a whole ``bratsseg predict`` process on one case with each model
    folder, the folders' processes interleaved round by round (benchmarks/common.py), so that a machine that
    slows down weighs on every variant alike."""
    import os

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from common import median_processes

    with tempfile.TemporaryDirectory() as tmp:
        cmds = [[sys.executable, "-m", "bratsseg.cli.main", "predict", str(case_dir), "-o", f"{tmp}/{i}", "--model",
                 str(folder), "--threads", "2", "--overwrite"] for i, folder in enumerate(folders)]  # fmt: skip
        return median_processes(cmds, dict(os.environ), repeats)


def costs(names: list[str], work: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Size, FLOPs and seconds of each variant of fold 0 (every fold's variants have the same widths)."""
    import torch

    from bratsseg.compress.prune import conv_flops
    from bratsseg.data.cache import open_cache
    from bratsseg.engine.compress_study import file_sizes, network_input_shape
    from bratsseg.models.files import load_model
    from bratsseg.models.unet import count_parameters

    torch.set_num_threads(2)
    case = next(c for c in open_cache(args.cache) if c.case_id == args.timing_case)
    case_dir = Path(args.data) / args.timing_case
    out: dict[str, dict[str, float]] = {}
    for name in names:
        folder = build_variant(name, 0, work, args)
        net, card = load_model(folder)
        raw, _ = file_sizes(folder)
        out[name] = {
            "widths": "-".join(str(w) for w in net.config.widths),
            "parameters": count_parameters(net),
            "weights_mb": raw / 1e6,
            "gflops": conv_flops(net, network_input_shape(case, card)) / 1e9,
        }
    folders = [build_variant(name, 0, work, args) for name in names]
    for name, folder in zip(names, folders, strict=True):  # the timings after every build: nothing else competes
        out[name]["onnx_s"] = onnx_seconds(folder, case)
        out[name]["onnx_mb"] = (folder / "model.onnx").stat().st_size / 1e6
    for name, (wall, rss) in zip(names, process_seconds(folders, case_dir), strict=True):
        out[name]["process_s"], out[name]["process_peak_mb"] = wall, rss
        print(f"timed {name}: {out[name]}", flush=True)
    return out


def run(args: argparse.Namespace) -> None:
    import torch

    from bratsseg.data.cache import open_cache
    from bratsseg.metrics.paired import paired_bootstrap
    from bratsseg.models.card import read_card

    torch.set_num_threads(2)
    work = Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    scores_file = work / "scores.json"
    scores: dict[str, dict[str, dict[str, float]]] = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    names = variant_names(args.ratios)
    cache = list(open_cache(args.cache))
    t_start = time.monotonic()
    for fold in args.folds:
        val_ids = set(read_card(BUNDLED / "folds" / f"fold{fold}").training.val_cases)
        cases = [c for c in cache if c.case_id in val_ids]
        if len(cases) != len(val_ids):
            raise SystemExit(f"{args.cache}: the cache lacks fold {fold}'s cases {sorted(val_ids)}")
        for name in names:
            key = f"{fold}/{name}"
            if key in scores:
                continue
            t0 = time.monotonic()
            folder = build_variant(name, fold, work, args)
            scores[key] = score(folder, cases)
            scores_file.write_text(json.dumps(scores, indent=1))
            mean = np.mean([np.mean(list(v.values())) for v in scores[key].values()])
            print(f"fold {fold} {name}: mean Dice {mean:.3f} on {len(cases)} cases ({time.monotonic() - t0:.0f} s, "
                  f"{(time.monotonic() - t_start) / 60:.1f} min so far)", flush=True)  # fmt: skip

    rows = []
    base = {c: v for f in args.folds for c, v in scores[f"{f}/base"].items()}
    cases_all = sorted(base)
    cost = costs(names, work, args) if not args.no_timing else {}
    for name in names:
        per_case = {c: v for f in args.folds for c, v in scores[f"{f}/{name}"].items()}
        row: dict[str, Any] = {"variant": name, **cost.get(name, {})}
        for g in [*REGIONS, "mean"]:
            a = np.array([np.mean(list(per_case[c].values())) if g == "mean" else per_case[c][g] for c in cases_all])
            b = np.array([np.mean(list(base[c].values())) if g == "mean" else base[c][g] for c in cases_all])
            row[f"dice_{g}"] = float(a.mean())
            row[f"diff_{g}"] = paired_bootstrap(a, b) if name != "base" else None
        rows.append(row)
    result = {
        "what": "the bundled model's 5 fold models, pair-pruned, scored on their own held-out cases (22 cases)",
        "command": "python scripts/prune_oof.py " + " ".join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d"),
        "settings": {
            "ratios": args.ratios,
            "epochs": args.epochs,
            "steps": args.steps,
            "distill": args.distill,
            "folds": args.folds,
            "timing_case": args.timing_case,
            "threads": 2,
        },
        "cases": cases_all,
        "rows": rows,
    }
    Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    print(render(result))


def verdict(result: dict[str, Any]) -> str:
    """Which fine-tuned ratio pays (mean Dice within 0.01, network time -30%), from the JSON alone. A ratio's network
    time is the faster of its two identical graphs' measurements (the fine-tuned model and its float16 copy export
    the same float16-weight graph): timing noise only ever adds."""
    rows = {r["variant"]: r for r in result["rows"]}
    base_s = rows["base"].get("onnx_s")
    lines = []
    for r in result["settings"]["ratios"]:
        row = rows[f"pair {r:g} + ft"]
        d = row["diff_mean"]
        kept = d["mean"] >= -KEEP_WITHIN
        seconds = [x["onnx_s"] for x in (row, rows.get(f"pair {r:g} + ft fp16", {})) if "onnx_s" in x]
        faster = base_s is not None and bool(seconds) and min(seconds) <= (1 - SPEED_BAR) * base_s
        cut = f", network time {min(seconds) / base_s - 1:+.0%}" if base_s and seconds else ""
        lines.append(
            f"pair {r * 100:g}% + fine-tuning: mean Dice {d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] "
            f"against the unpruned fold models{cut}: {'within' if kept else 'not within'} {KEEP_WITHIN} of them"
            + ("" if not kept else (", and fast enough to ship" if faster else ", but not 30% faster"))
        )
    return "\n".join(f"- {line}" for line in lines)


def render(result: dict[str, Any]) -> str:
    head = ["variant", "widths", "parameters", "weights MB", "ONNX MB", "GFLOPs", "network s", "predict s", "peak MB",
            "Dice WT", "TC", "ET", "mean", "mean Dice vs unpruned [95% CI]"]  # fmt: skip
    intro = (f"Measured {result['date']} with `{result['command']}`; {len(result['cases'])} cases, each scored by "
             "the fold model that did not train on it; seconds on 2 threads of this machine.")  # fmt: skip
    lines = [BEGIN, "", intro, "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def num(row: dict[str, Any], key: str, fmt: str) -> str:
        return format(row[key], fmt) if key in row else "-"

    for row in result["rows"]:
        d = row["diff_mean"]
        diff = "-" if d is None else f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        params = f"{row['parameters'] / 1e6:.2f} M" if "parameters" in row else "-"
        cells = [row["variant"], row.get("widths", "-"), params, num(row, "weights_mb", ".2f"),
                 num(row, "onnx_mb", ".2f"), num(row, "gflops", ".1f"), num(row, "onnx_s", ".3f"),
                 num(row, "process_s", ".2f"), num(row, "process_peak_mb", ".0f"),
                 *(f"{row[f'dice_{g}']:.3f}" for g in REGIONS), f"{row['dice_mean']:.3f}", diff]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    rows = {r["variant"]: r for r in result["rows"]}
    twins = [(f"pair {r:g} + ft", f"pair {r:g} + ft fp16") for r in result["settings"]["ratios"]]
    gaps = [abs(rows[a]["process_s"] - rows[b]["process_s"]) for a, b in twins if "process_s" in rows.get(a, {})]
    if gaps:
        lines += ["", f"`network s`: the whole-case ONNX graph alone, median of 9 in one process: the comparison. "
                  f"`predict s`: whole `bratsseg predict` processes (reading, preprocessing and writing included; "
                  f"interleaved, median of 7); on this shared machine their run-to-run noise is larger than the "
                  f"rows' differences: a fine-tuned model and its float16 copy, the same ONNX graph, came out up to "
                  f"{max(gaps):.2f} s apart."]  # fmt: skip
    lines += ["", verdict(result), "", END]
    return "\n".join(lines)


FIGURE = ROOT / "docs" / "figures" / "prune_oof_pareto.png"


def figure(result: dict[str, Any], path: Path = FIGURE) -> Path:
    """Mean Dice (out of fold) against the ONNX graph's seconds and file size, one point per timed variant."""
    from bratsseg.viz.figures import pareto

    rows = [
        {"variant": r["variant"], "precision": "fp16" if "fp16" in r["variant"] else "fp32",
         "latency_s": r["onnx_s"], "file_mb": r["onnx_mb"], "mean_dice": r["dice_mean"]}
        for r in result["rows"] if "onnx_s" in r
    ]  # fmt: skip
    fig = pareto(rows)
    fig.suptitle("Pair pruning of the bundled fold models, out of fold (22 cases; ONNX graph, 2 threads)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "brats"))
    p.add_argument("--out", default="runs/prune_oof")
    p.add_argument("--ratios", type=float, nargs="+", default=[0.25, 0.5, 0.75])
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--distill", type=float, default=0.5)
    p.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--timing-case", default="BraTS2021_00000")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--json", default=str(JSON_OUT))
    p.add_argument("--render", action="store_true")
    p.add_argument("--write", type=Path)
    args = p.parse_args()
    if args.render:
        result = json.loads(Path(args.json).read_text())
        block = render(result)
        if args.write:
            from bratsseg.docblocks import replace_block

            args.write.write_text(replace_block(args.write.read_text(), block, BEGIN, END))
            figure(result)
        else:
            print(block)
        return
    if not args.cache:
        p.error("--cache is required (a training cache holding the 22 shared cases)")
    run(args)


if __name__ == "__main__":
    main()
