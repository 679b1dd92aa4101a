"""`bratsseg bundle`: a model folder like the bundled one, from a finished `bratsseg crossval` run.

From the out-of-fold probabilities (``RUN/eval``; ``RUN/eval-mirror`` for the accurate mode) it chooses, as the
bundled model's were chosen:

1. the global threshold: the pooled out-of-fold sweep's best (its nested estimate, each fold at the threshold the
   other folds chose, is the honest row beside it);
2. regions nested (what ``predict`` writes) and nnU-Net's small-ET rule, each kept only if its nested row beats
   the row without it;
3. the connected-component rule per region, the enhancing tumour redrawn from T1ce and hole filling
   (:mod:`bratsseg.engine.postchoice`), nested per fold, shipped as chosen on every case.

Then it writes ``MODEL``: the all-case model (``fast`` mode) in float16, the fold models under ``folds/`` (the
``accurate`` mode: averaged, mirrored along the recipe's axes, at the mirrored sweep's threshold), a whole-case
``model.onnx`` for each (the runtime install runs them without PyTorch), and ``model.json`` whose ``bundle``
holds the cross-validation tables (pooled, nested, per fold, per case, small-ET, HD95 of what ships, the
post-processing study) and the recipe.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bratsseg.atomic import write_json_atomic
from bratsseg.dataclass_io import from_dict
from bratsseg.engine.crossval import OutOfFold, choose_volume, cross_validate, shipped_hd95
from bratsseg.engine.workflow import CrossvalPlan, final_done, finetune_stage_config, fold_done, read_plan, stage_dir
from bratsseg.errors import BratsSegError
from bratsseg.labels import REGIONS
from bratsseg.models.card import Mode, ModelCard, Postprocessing, read_card


@dataclass(frozen=True)
class BundleResult:
    """What ``bratsseg bundle`` wrote and the numbers a user reads first."""

    output: Path
    threshold: float
    accurate_threshold: float | None
    postprocessing: Postprocessing
    pooled: dict[str, float]  # Dice at 0.5, per region
    nested: dict[str, float]  # the final nested row (threshold and every rule chosen on the other folds)
    size_mb: float

    def summary_line(self) -> str:
        nested = ", ".join(f"{g} {self.nested[g]:.3f}" for g in REGIONS)
        return (
            f"{self.output}: {self.size_mb:.1f} MB; threshold {self.threshold:g}"
            + (f" (accurate mode {self.accurate_threshold:g})" if self.accurate_threshold is not None else "")
            + f"; out of fold, nested (nothing chosen on the cases it scores): {nested}"
        )


#: the out-of-fold choices of ``bundle``, kept in the run so that a second call (after the all-case model
#: finished, or with another output folder) does not redo them
CHOICES_FILE = "bundle_choices.json"


def _folds_done(run: Path) -> Any:
    plan = read_plan(run)
    missing = [k for k in range(plan.folds) if not fold_done(run, k, plan.mirror_axes)]
    if missing:
        raise BratsSegError(f"the cross-validation is not finished (folds {missing}); rerun `bratsseg crossval`", run)
    return plan


def _evaluations_stamp(run: Path) -> list[list[Any]]:
    """What the choices were made from: each fold's out-of-fold results file and its modification time."""
    files = sorted([*run.glob("eval/fold*/per_case.csv"), *run.glob("eval-mirror/fold*/per_case.csv")])
    return [[str(f.relative_to(run)), f.stat().st_mtime_ns] for f in files]


def choose(run_dir: str | Path, say: Callable[[str], None] = print) -> dict[str, Any]:
    """The out-of-fold choices of a cross-validation run (every fold evaluated; the all-case model may still be
    training): the cross-validation tables, the threshold, the post-processing and the accurate mode's threshold.
    Saved as ``RUN/bundle_choices.json`` and reused while the evaluations are unchanged."""
    from bratsseg.engine.postchoice import choose_postprocessing, oof_cases

    run = Path(run_dir)
    plan = _folds_done(run)
    saved = run / CHOICES_FILE
    stamp = _evaluations_stamp(run)
    if saved.is_file():
        try:
            previous = json.loads(saved.read_text())
            if previous.get("stamp") == stamp:
                say(f"reusing the out-of-fold choices in {saved}")
                return dict(previous["choices"])
        except (ValueError, KeyError):
            pass
    oof = OutOfFold(run / "eval", run / "cache")
    say(f"scoring {len(oof.cases)} cases out of fold ({len(oof.folds)} folds)")
    cv = cross_validate(oof)
    threshold = float(cv["sweep_best_global"]["threshold"])
    rows = cv["postprocessing"]["rows"]
    post = Postprocessing()
    if rows["+ nested regions"]["mean_dice"] >= rows["nested threshold"]["mean_dice"]:
        post = Postprocessing(nested_regions=True)
        if rows["+ small-ET rule"]["mean_dice"] > rows["+ nested regions"]["mean_dice"]:
            post = Postprocessing(nested_regions=True, et_min_volume_mm3=choose_volume(oof, threshold))
    say("choosing the component, enhancing-tumour and hole-filling rules out of fold")
    rules = choose_postprocessing(
        oof_cases(oof, cv["nested_threshold"]["thresholds"], post), post, hd95_everywhere=False
    )
    shipped = rules["shipped_postprocessing"]
    post = dataclasses.replace(
        post,
        min_component_mm3=dict(shipped["min_component_mm3"]),
        largest_component_only=tuple(shipped["largest_component_only"]),
        fill_holes=tuple(shipped["fill_holes"]),
        et_t1ce_threshold=shipped["et_t1ce_threshold"],
    )
    final_nested = rules["holes"]["nested"]["per_region"]
    cv["nested_final"] = {
        "description": "each fold at the threshold and with every post-processing rule the other folds chose",
        "per_region": final_nested,
        "mean_dice": sum(final_nested[g]["dice"] for g in REGIONS) / len(REGIONS),
        "small_et_dice": rules["holes"]["nested"]["small_et_dice"],
        "per_case_dice": rules["holes"]["nested"]["per_case_dice"],
    }
    cv["postprocessing_rules"] = _without_per_case({k: v for k, v in rules.items() if k != "shipped_postprocessing"})
    cv["shipped"] = {
        "threshold": threshold,
        "postprocessing": dataclasses.asdict(post),
        "hd95_pooled": shipped_hd95(oof, threshold, post),
        "note": "chosen on every case: the pooled rows are optimistic, the nested rows are the estimate",
    }
    accurate_threshold = None
    if plan.mirror_axes:
        acc = cross_validate(OutOfFold(run / "eval-mirror", run / "cache"))
        accurate_threshold = float(acc["sweep_best_global"]["threshold"])
        cv["accurate_mode_threshold"] = {
            "threshold": accurate_threshold,
            "chosen_by": "pooled out-of-fold sweep, mirrored",
        }
        cv["accurate_mode"] = {
            "threshold": accurate_threshold,
            "mirror_axes": list(plan.mirror_axes),
            "chosen_by": "pooled out-of-fold sweep, mirrored",
            "nested_threshold": acc["nested_threshold"],
            "pooled": acc["pooled"],
        }
    choices = {"cv": cv, "threshold": threshold, "accurate_threshold": accurate_threshold}
    write_json_atomic(saved, {"stamp": stamp, "choices": choices})
    return choices


def shipped_settings(choices: dict[str, Any]) -> tuple[float, Postprocessing]:
    """The threshold and the post-processing that a bundle made from these :func:`choose` choices ships."""
    post: Postprocessing = from_dict(Postprocessing, choices["cv"]["shipped"]["postprocessing"])
    return float(choices["threshold"]), post


def make_bundle(
    run_dir: str | Path,
    output: str | Path,
    threads: int | None = 2,
    overwrite: bool = False,
    say: Callable[[str], None] = print,
) -> BundleResult:
    """Choose the threshold and post-processing out of fold (:func:`choose`, reused when saved) and write the
    model folder ``output``. The choices can be made while the all-case model still trains; the folder is written
    once it has finished."""
    import torch

    from bratsseg.compress.onnx_export import export_model_folder
    from bratsseg.models.files import save_model

    if threads:
        torch.set_num_threads(threads)
    run, out = Path(run_dir), Path(output)
    plan = _folds_done(run)
    if out.exists() and not overwrite:
        raise BratsSegError("already exists; pass --overwrite to replace it", out)
    choices = choose(run, say)
    if not final_done(run, plan):
        raise BratsSegError(
            f"the all-case model is not finished; the out-of-fold choices are saved ({CHOICES_FILE}): rerun "
            "`bratsseg crossval` on it, then this command",
            run,
        )
    cv, accurate_threshold = choices["cv"], choices["accurate_threshold"]
    threshold, post = shipped_settings(choices)
    final_nested = cv["nested_final"]["per_region"]

    model, card = load_stage_model(run, plan, -1)
    card = card.replace(
        thresholds=dict.fromkeys(REGIONS, threshold),
        threshold_source={"chosen_by": "pooled out-of-fold sweep (global, Dice)", "cases": cv["n_cases"]},
        postprocessing=post,
    )
    axes = plan.mirror_axes
    card = card.replace(
        modes={
            "accurate": Mode(
                members=tuple(f"folds/fold{k}" for k in range(plan.folds)),
                mirror_axes=tuple(axes),
                thresholds=dict.fromkeys(REGIONS, accurate_threshold if accurate_threshold is not None else threshold),
                description=f"the {plan.folds} cross-validation fold models averaged"
                + (f", each mirrored along axes {''.join(map(str, axes))}" if axes else "")
                + f" ({plan.folds * 2 ** len(axes)} network passes)",
            )
        },
        bundle=_bundle_section(card, cv, plan, run),
    )
    say(f"writing {out}")
    save_model(out, model, card, weights_dtype="float16")
    for k in range(plan.folds):
        fold_model, fold_card = load_stage_model(run, plan, k)
        save_model(out / "folds" / f"fold{k}", fold_model, fold_card, weights_dtype="float16")
    say("exporting the whole-case ONNX graphs")
    export_model_folder(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    return BundleResult(
        out,
        threshold,
        accurate_threshold,
        post,
        {g: v["dice_mean"] for g, v in cv["pooled"].items()},
        {g: final_nested[g]["dice"] for g in REGIONS},
        size,
    )


def load_stage_model(run: Path, plan: CrossvalPlan, fold: int) -> tuple[Any, ModelCard]:
    """Fold ``fold``'s network as the run made it (-1: the all-case model's): the recipe's last stage. After a
    fine-tuning stage, the card is the first stage's (its training settings are the recipe's) with a ``finetune``
    step recording the stage, as the bundled networks' cards record theirs."""
    from bratsseg.models.files import load_model

    model, card = load_model(stage_dir(run, plan, fold) / "last")
    stage = plan.finetune
    if not stage:
        return model, card
    first = read_card(stage_dir(run, plan, fold, final=False) / "last")
    tuned = finetune_stage_config(plan, fold, "-")
    step = first.with_step(
        "finetune",
        epochs=tuned.epochs,
        steps_per_epoch=tuned.steps_per_epoch,
        lr=tuned.lr,
        **stage["settings"],
        why=f"the recipe's fine-tuning stage ({plan.recipe['name']})",
    )
    return model, step


def _without_per_case(tables: Any) -> Any:
    """The post-processing study's tables without their per-case columns (the card keeps those of the final nested
    row only)."""
    if isinstance(tables, dict):
        return {k: _without_per_case(v) for k, v in tables.items() if k != "per_case_dice"}
    return tables


def _bundle_section(card: ModelCard, cv: dict[str, Any], plan: Any, run: Path) -> dict[str, Any]:
    n = len(card.training.train_cases)
    sets = " ".join(f"--set {shlex.quote(o)}" for o in plan.overrides)
    data = " ".join(shlex.quote(d) for d in plan.data)
    return {
        "description": f"a bratsseg 3-D U-Net made by `bratsseg crossval` + `bratsseg bundle` with recipe "
        f"{plan.recipe['name']!r}: BraTS-format MRI in, WT/TC/ET regions out",
        "trained_on": list(card.training.train_cases),
        "cross_validation": cv,
        "recipe": {
            **plan.recipe,
            "overrides": list(plan.overrides),
            "strata": plan.strata_source,
            "commands": [
                f"bratsseg crossval {data} -o {run} --recipe {plan.recipe['name']} {sets}".strip(),
                f"bratsseg bundle {run} -o MODEL",
            ],
        },
        "caveat": f"trained on {n} cases; cross-validated on the same {n}; not a medical device",
    }
