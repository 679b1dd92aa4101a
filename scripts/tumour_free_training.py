"""Teaching the bundled model that a brain may hold no tumour (issue 32.7), measured out of fold.

    python scripts/tumour_free_training.py train --cache CACHE [--out runs/tumour_free] [--free 0.2]
    python scripts/tumour_free_training.py measure [--out runs/tumour_free] [--data DIR ...]
    python scripts/tumour_free_training.py ship [--out runs/tumour_free]    # when the verdict says it ships
    python scripts/tumour_free_training.py --render --write docs/results/robustness.md   # the block from the JSON

``train`` fine-tunes each of the bundled model's six networks (the five cross-validation fold models and the
all-case model) on its own training cases for ``--epochs`` x ``--steps`` steps at half the recipe's learning rate,
twice: with a fraction ``--free`` of the samples drawn from tumour-free brains made from those cases
(:mod:`bratsseg.data.healthy`: the tumour replaced by the mirrored other hemisphere; empty targets), and, as the
control that separates the tumour-free samples from the extra steps, with none. ``CACHE`` is a training cache
holding the 22 shared cases (``bratsseg preprocess ../shared/data/brats -o CACHE``).

``measure`` scores the three fold-model sets (shipped, control, tumour-free) out of fold: each shared case by the
fold model that left it out, each case of the other ``--data`` folders (none of the models trained on them) by
fold model ``i mod 5``. Per case: the real scan (Dice per region, the bundle's threshold and post-processing), the
tumour-free brain made the training's way (healed; for the shared cases the folds' own training never saw theirs,
but the construction is the one trained on) and one made another way (the tumour-free hemisphere mirrored onto the
whole brain, ``scripts/tumour_free.py``'s input): whole tumour found in cm^3 and ET voxels. Resumable: each
case's scores are kept in ``OUT/scores.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "src" / "bratsseg" / "models" / "bundled" / "brats3d"
JSON_OUT = ROOT / "docs" / "tumour_free_training.json"
BEGIN = (
    "<!-- tumour-free-training: begin (scripts/tumour_free_training.py --render --write docs/results/robustness.md) -->"
)
END = "<!-- tumour-free-training: end -->"
REGIONS = ("WT", "TC", "ET")
MODELS = ("fold0", "fold1", "fold2", "fold3", "fold4", "all")
VARIANTS = ("shipped", "control", "free")


def source_of(model: str) -> Path:
    return BUNDLED if model == "all" else BUNDLED / "folds" / model


def model_dir(out: Path, variant: str, model: str) -> Path:
    return source_of(model) if variant == "shipped" else out / variant / model / "last"


def train(args: argparse.Namespace) -> None:
    import torch

    from bratsseg.engine.pruning import finetune

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    for variant in args.variants:
        free = args.free if variant == "free" else 0.0
        for model in args.models:
            if (out / variant / model / "done").is_file():
                continue
            t0 = time.monotonic()
            src = source_of(model)
            finetune(src, args.cache, out / variant / model, args.epochs, args.steps, src,
                     changes={"free_fraction": free})  # fmt: skip
            (out / variant / model / "done").write_text("")
            print(f"{variant} {model}: fine-tuned in {(time.monotonic() - t0) / 60:.1f} min", flush=True)


def ship(args: argparse.Namespace) -> None:
    """Replace the bundled model's six networks by the ``--variant`` ones (float16, as shipped), each card the
    shipped one with a ``finetune`` step recording the fine-tuning, and export the ONNX files again."""
    import shutil

    import yaml

    from bratsseg.compress.onnx_export import export_model_folder
    from bratsseg.models.card import read_card
    from bratsseg.models.files import load_model, save_model

    out = Path(args.out)
    for model in MODELS:
        run = out / args.variant / model
        if not (run / "done").is_file():
            raise SystemExit(f"{run}: the fine-tuning has not finished (run the train step)")
        tuned, _ = load_model(run / "last")
        config = yaml.safe_load((run / "config.yaml").read_text())
        card = read_card(source_of(model)).with_step(
            "finetune",
            epochs=config["epochs"],
            steps_per_epoch=config["steps_per_epoch"],
            lr=config["lr"],
            free_fraction=config["free_fraction"],
            why="tumour-free samples: a brain may hold no tumour (scripts/tumour_free_training.py)",
        )
        # a model folder is written whole (renamed into place): stage it, then copy its files over the shipped
        # ones, since the all-case model's folder holds the fold models' folders too
        staged = save_model(out / "staged" / model, tuned, card, weights_dtype="float16")
        for name in ("model.json", "weights.safetensors"):
            shutil.copyfile(staged / name, source_of(model) / name)
        print(f"{source_of(model).relative_to(ROOT)}: {args.variant} weights", flush=True)
    for path in export_model_folder(BUNDLED):
        print(f"{path.relative_to(ROOT)}: {path.stat().st_size / 1e6:.2f} MB", flush=True)


def flags(args: argparse.Namespace) -> None:
    """What ``bratsseg predict`` itself says (``<case>.json``'s flag) in both modes of the bundled model as it is
    now, on the real scans of ``--data`` and on the tumour-free brains made from them (healed and mirrored),
    written as NIfTI files with the cases' own headers: ``OUT/flags-LABEL.json``."""
    import tempfile

    from bratsseg.engine.predict import predict
    from bratsseg.io.discovery import discover_cases
    from bratsseg.io.nifti import load_raw_case, open_nifti, read_array, save_nifti
    from bratsseg.labels import labels_to_regions

    sys.path.insert(0, str(ROOT / "scripts"))
    from tumour_free import mirrored_healthy

    suffixes = ("flair", "t1", "t1ce", "t2")
    kinds: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "inputs"
        for data in args.data:
            for case in discover_cases(data).cases:
                raw = load_raw_case(case)
                seg = np.asarray(read_array(open_nifti(case.seg), case.seg)).astype(np.uint8)
                wt = labels_to_regions(seg, case.convention)[0]
                channels = [np.asarray(c) for c in raw.channels]
                made = {
                    "real": channels,
                    "healed": healed_input(channels, wt),
                    "mirrored": mirrored_healthy(channels, wt),
                }
                for kind, image in made.items():
                    if image is None:
                        continue
                    name = f"{kind.capitalize()}{len(kinds):03d}"
                    kinds[name] = kind
                    for values, suffix in zip(image, suffixes, strict=True):
                        save_nifti(values, raw.header, root / name / f"{name}_{suffix}.nii.gz", template=raw.template)
                print(f"{case.case_id}: inputs written ({len(kinds)} in all)", file=sys.stderr, flush=True)
        result: dict[str, Any] = {}
        for mode in ("fast", "accurate"):
            out = Path(tmp) / mode
            report = predict([root], out, mode=mode, threads=args.threads)
            if report.failed:
                raise SystemExit(f"predict failed: {report.failed}")
            per_kind: dict[str, dict[str, Any]] = {}
            for name, kind in kinds.items():
                finding = json.loads((out / f"{name}.json").read_text())
                row = per_kind.setdefault(kind, {"flags": {}, "wt_cm3": []})
                row["flags"][finding["flag"]] = row["flags"].get(finding["flag"], 0) + 1
                row["wt_cm3"].append(finding["volume_cm3"]["WT"])
            result[mode] = per_kind
            print(mode, per_kind, file=sys.stderr, flush=True)
    path = Path(args.out) / f"flags-{args.label}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"label": args.label, "data": [str(d) for d in args.data], **result}, indent=1))


def healed_input(channels: list[np.ndarray], wt: np.ndarray) -> list[np.ndarray] | None:
    """The training's construction on a raw case: healed inside the brain's bounding box (mirrored about its
    centre, as the cache's brain-cropped arrays are)."""
    from bratsseg.data.geometry import box_around
    from bratsseg.data.healthy import heal
    from bratsseg.data.preprocess import brain_mask

    box = box_around(brain_mask(channels), 0)
    assert box is not None  # a readable case has a brain
    image = np.stack([np.asarray(c)[box] for c in channels])
    healed = heal(image, wt[box])
    if healed is None:
        return None
    out = [np.array(c) for c in channels]
    for c, h in zip(out, healed, strict=True):
        c[box] = h
    return out


def score_inputs(
    predictor: Any, choices: Any, inputs: dict[str, list[np.ndarray] | None], zooms: Any, truth: np.ndarray
) -> dict[str, Any]:
    """Each input (real, healed, mirrored; None: not made) as ``predict`` segments it at ``choices``' threshold and
    post-processing: the volume found per region (cm^3), and on the real scan the Dice against ``truth``."""
    from bratsseg.data.geometry import crop
    from bratsseg.metrics.overlap import dice_per_region

    sys.path.insert(0, str(ROOT / "scripts"))
    from tumour_free import run_case

    found: dict[str, Any] = {}
    for name, image in inputs.items():
        if image is None:
            continue
        done = run_case(predictor, choices, image, zooms)
        found[name] = {"cm3": done["volume_cm3"]}
        if name == "real":
            found[name]["dice"] = dice_per_region(done["regions"], crop(truth, done["box"]))
    return found


def measure(args: argparse.Namespace) -> dict[str, Any]:
    from bratsseg.engine.cascade import fold_of_cases
    from bratsseg.inference.loading import load_predictor
    from bratsseg.io.discovery import discover_cases
    from bratsseg.io.nifti import load_raw_case, open_nifti, read_array
    from bratsseg.labels import labels_to_regions
    from bratsseg.models.card import read_card

    sys.path.insert(0, str(ROOT / "scripts"))
    from tumour_free import mirrored_healthy

    out = Path(args.out)
    shipped = read_card(BUNDLED)
    fold_of = {c: p.name for c, p in fold_of_cases(sorted((BUNDLED / "folds").iterdir())).items()}
    scores_file = out / "scores.json"
    scores: dict[str, Any] = json.loads(scores_file.read_text()) if scores_file.exists() else {}
    predictors: dict[tuple[str, str], Any] = {}
    folds = [m for m in MODELS if m != "all"]
    unseen = 0
    t0 = time.monotonic()
    for data in args.data:
        for case in discover_cases(data).cases:
            if case.case_id in fold_of:
                fold, source = fold_of[case.case_id], "shared (out of fold)"
            else:
                fold, source = folds[unseen % len(folds)], "unseen"
                unseen += 1
            if case.case_id in scores:
                continue
            raw = load_raw_case(case)
            zooms = raw.header["zooms"]
            truth = labels_to_regions(np.asarray(read_array(open_nifti(case.seg), case.seg)).astype(np.uint8),
                                      case.convention)  # fmt: skip
            channels = [np.asarray(c) for c in raw.channels]
            inputs = {"real": channels, "healed": healed_input(channels, truth[0]),
                      "mirrored": mirrored_healthy(channels, truth[0])}  # fmt: skip
            row: dict[str, Any] = {"fold": fold, "source": source}
            for variant in VARIANTS:
                key = (variant, fold)
                if key not in predictors:
                    predictors[key] = load_predictor(model_dir(out, variant, fold), threads=args.threads,
                                                     backend="torch")  # fmt: skip
                row[variant] = score_inputs(predictors[key], shipped, inputs, zooms, truth)
            scores[case.case_id] = row
            scores_file.write_text(json.dumps(scores, indent=1))
            print(f"{case.case_id} ({source}, {fold}): " + "; ".join(
                f"{v} mean Dice {np.mean(list(row[v]['real']['dice'].values())):.3f}, healed "
                f"{row[v].get('healed', {}).get('cm3', {}).get('WT', float('nan')):.1f} cm3, mirrored "
                f"{row[v].get('mirrored', {}).get('cm3', {}).get('WT', float('nan')):.1f} cm3" for v in VARIANTS)
                + f" ({(time.monotonic() - t0) / 60:.1f} min)", file=sys.stderr, flush=True)  # fmt: skip
    flag_runs = {}
    for path in sorted(out.glob("flags-*.json")):
        run = json.loads(path.read_text())
        flag_runs[run["label"]] = run
    return {"command": "python scripts/tumour_free_training.py measure", "date": time.strftime("%Y-%m-%d"),
            "flags": flag_runs,
            "training": _training_settings(out), "cases": scores}  # fmt: skip


def _training_settings(out: Path) -> dict[str, Any]:
    import yaml

    config = yaml.safe_load((out / "free" / "fold0" / "config.yaml").read_text())
    return {k: config[k] for k in ("epochs", "steps_per_epoch", "lr", "free_fraction", "batch_size")}


LABELS = {
    "shipped": "fold models as the recipe trained them (shipped before)",
    "control": "+ fine-tuned, no tumour-free samples (control)",
    "free": "+ fine-tuned with tumour-free samples (**shipped now**)",
}
#: the bar for shipping, fixed before the measurement: real-scan Dice (mean of the regions, all cases) within
#: 0.005 of the shipped models on average and no worse than -0.02 at the 95% interval's low end, and the whole
#: tumour found in the tumour-free brains made another way than the training's at most half of the shipped one's
SHIP_MEAN, SHIP_LOW, SHIP_FREE = -0.005, -0.02, 0.5


def summary(result: dict[str, Any]) -> dict[str, Any]:
    from bratsseg.metrics.paired import paired_bootstrap

    cases = result["cases"]
    ids = sorted(cases)
    out: dict[str, Any] = {"free": {}, "real": {}, "paired": {}}
    for kind in ("healed", "mirrored"):
        with_kind = [c for c in ids if kind in cases[c]["shipped"]]
        for v in VARIANTS:
            wt = np.array([cases[c][v][kind]["cm3"]["WT"] for c in with_kind])
            et = np.array([cases[c][v][kind]["cm3"]["ET"] for c in with_kind])
            out["free"][f"{kind}/{v}"] = {"n": len(wt), "wt_mean": float(wt.mean()), "wt_max": float(wt.max()),
                                          "none_found": int((wt == 0).sum()), "et_mean": float(et.mean())}  # fmt: skip
    for source in sorted({cases[c]["source"] for c in ids}):
        sel = [c for c in ids if cases[c]["source"] == source]
        for v in VARIANTS:
            out["real"][f"{source}/{v}"] = {
                "n": len(sel),
                **{g: float(np.mean([cases[c][v]["real"]["dice"][g] for c in sel])) for g in REGIONS},
            }

    def mean3(v: str) -> np.ndarray:
        return np.array([np.mean([cases[c][v]["real"]["dice"][g] for g in REGIONS]) for c in ids])

    out["paired"]["free-shipped"] = paired_bootstrap(mean3("free"), mean3("shipped"))
    out["paired"]["free-control"] = paired_bootstrap(mean3("free"), mean3("control"))
    out["paired"]["control-shipped"] = paired_bootstrap(mean3("control"), mean3("shipped"))
    d = out["paired"]["free-shipped"]
    ratio = out["free"]["mirrored/free"]["wt_mean"] / max(out["free"]["mirrored/shipped"]["wt_mean"], 1e-9)
    out["ships"] = bool(d["mean"] >= SHIP_MEAN and d["low"] >= SHIP_LOW and ratio <= SHIP_FREE)
    out["free_ratio"] = float(ratio)
    return out


def render(result: dict[str, Any]) -> str:
    s = summary(result)
    t = result["training"]
    n_shared = sum(1 for c in result["cases"].values() if c["source"].startswith("shared"))
    n_unseen = len(result["cases"]) - n_shared
    lines = [
        BEGIN,
        f"The bundled model's networks fine-tuned for {t['epochs']} x {t['steps_per_epoch']} steps (learning rate "
        f"{t['lr']:g}) on their own training cases, with {t['free_fraction']:.0%} of the samples from tumour-free "
        "brains made from those cases (the tumour replaced by the mirrored other hemisphere; `bratsseg.data.healthy`, "
        "`free_fraction`), against the networks as trained (shipped before) and a control fine-tuned the same way "
        "without them "
        f"(`python scripts/tumour_free_training.py`). Scored out of fold on the {n_shared} shared cases (each by the "
        f"fold model that left it out) and on {n_unseen} cases none of them trained on, at the bundle's threshold "
        "and post-processing. Tumour-free inputs made two ways: *healed* as in the training (the training never saw "
        "these cases' own), and *mirrored*, the tumour-free hemisphere copied over the whole brain, a construction "
        "the training never used.",
        "",
        "| tumour-free inputs | networks | inputs | whole tumour found, mean cm^3 | max cm^3 | nothing found "
        "| ET found, mean cm^3 |",
        "|---|---|---|---|---|---|---|",
    ]
    for kind in ("healed", "mirrored"):
        for v in VARIANTS:
            r = s["free"][f"{kind}/{v}"]
            lines.append(f"| {kind} | {LABELS[v]} | {r['n']} | {r['wt_mean']:.1f} | {r['wt_max']:.1f} | "
                         f"{r['none_found']} | {r['et_mean']:.1f} |")  # fmt: skip
    lines += ["", "| real scans | networks | cases | Dice WT / TC / ET |", "|---|---|---|---|"]
    for key, r in s["real"].items():
        source, v = key.split("/")
        lines.append(f"| {source} | {LABELS[v]} | {r['n']} | " + " / ".join(f"{r[g]:.3f}" for g in REGIONS) + " |")
    lines.append("")
    for key, label in (("free-shipped", "tumour-free samples - shipped"), ("control-shipped", "control - shipped"),
                       ("free-control", "tumour-free samples - control")):  # fmt: skip
        d = s["paired"][key]
        lines.append(f"- {label}, mean Dice of the three regions on all {d['cases']} real scans: "
                     f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}] (95% paired bootstrap), "
                     f"{d['ahead']} cases ahead, {d['behind']} behind")  # fmt: skip
    verdict = "**ships**" if s["ships"] else "**does not ship**"
    lines += [
        "",
        f"Verdict, by the bar fixed before measuring (real-scan Dice within {-SHIP_MEAN:g} on average, no worse than "
        f"{SHIP_LOW:g} at the interval's low end; on the mirrored inputs at most {SHIP_FREE:.0%} of the whole "
        f"tumour the networks found before; found: {s['free_ratio']:.0%}): {verdict}.",
    ]
    if result.get("flags"):
        lines += ["", *render_flags(result["flags"])]
    lines.append(END)
    return "\n".join(lines)


FLAG_LABELS = {"before": "before (networks trained on tumour cases only)", "after": "shipped now"}


def render_flags(runs: dict[str, Any]) -> list[str]:
    """What ``predict`` wrote in each case's report, per model, mode and input kind."""
    first = next(iter(runs.values()))
    n_cases = sum(first["fast"]["real"]["flags"].values())
    lines = [
        f"What `bratsseg predict` itself writes in each case's report (`<case>.json`'s flag; `python "
        f"scripts/tumour_free_training.py flags`) on {n_cases} cases none of the networks trained on and the "
        "tumour-free brains made from them, the bundled model before and after the fine-tuning, both modes:",
        "",
        "| model | mode | input | inputs | no tumour found | unsure | finding | whole tumour, mean cm^3 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label in [k for k in FLAG_LABELS if k in runs] + [k for k in runs if k not in FLAG_LABELS]:
        for mode in ("fast", "accurate"):
            for kind in ("real", "healed", "mirrored"):
                r = runs[label][mode].get(kind)
                if r is None:
                    continue
                f = r["flags"]
                lines.append(
                    f"| {FLAG_LABELS.get(label, label)} | {mode} | {kind} | {len(r['wt_cm3'])} | "
                    f"{f.get('no tumour found', 0)} | {f.get('unsure', 0)} | {f.get('finding', 0)} | "
                    f"{np.mean(r['wt_cm3']):.1f} |"
                )
    return lines


def _parser(command: str, description: str, **kwargs: Any) -> argparse.ArgumentParser:
    """A step's command line: the step's name, then ``--out`` (the study's folder) and ``--threads``."""
    parser = argparse.ArgumentParser(description=description, **kwargs)
    parser.add_argument(
        "command", choices=[command], **({"nargs": "?", "default": command} if command == "measure" else {})
    )
    parser.add_argument("--out", default=str(ROOT / "runs" / "tumour_free"))
    parser.add_argument("--threads", type=int, default=2)
    return parser


def main() -> int:
    step = sys.argv[1] if len(sys.argv) > 1 else "measure"
    if step == "train":
        parser = _parser("train", "fine-tune the bundled model's networks (see the module)")
        parser.add_argument("--cache", required=True)
        parser.add_argument("--free", type=float, default=0.2)
        parser.add_argument("--epochs", type=int, default=6)
        parser.add_argument("--steps", type=int, default=100)
        parser.add_argument("--variants", nargs="+", default=["free", "control"], choices=["free", "control"])
        parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
        train(parser.parse_args())
        return 0
    if step == "flags":
        parser = _parser("flags", "the flags predict writes, both modes (see flags())")
        parser.add_argument("--data", nargs="+", type=Path, required=True)
        parser.add_argument("--label", required=True, help="e.g. before / after: OUT/flags-LABEL.json")
        flags(parser.parse_args())
        return 0
    if step == "ship":
        parser = _parser("ship", "replace the bundled networks by fine-tuned ones")
        parser.add_argument("--variant", default="free", choices=["free", "control"])
        ship(parser.parse_args())
        return 0
    from bratsseg.docblocks import measured_block_main

    parser = _parser("measure", __doc__ or "", formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", type=Path, default=[ROOT.parent / "shared" / "data" / "brats"])
    return measured_block_main(parser, measure, render, JSON_OUT, BEGIN, END)


if __name__ == "__main__":
    sys.exit(main())
