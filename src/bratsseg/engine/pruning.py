"""`bratsseg prune`: a model folder in, a pruned (optionally fine-tuned) folder out. The transforms are
:mod:`bratsseg.compress.prune`'s; the fine-tuning trains, so it lives with the engine."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from bratsseg.compress.prune import global_magnitude_prune, pair_prune
from bratsseg.errors import BratsSegError
from bratsseg.models.unet import UNet


def finetune(
    pruned_dir: Path,
    cache: str | Path,
    run_dir: Path,
    epochs: int,
    steps: int,
    source_dir: Path,
    distill_weight: float = 0.0,
    lr_factor: float = 0.5,
    changes: dict[str, Any] | None = None,
) -> Path:
    """Fine-tune a pruned model folder with the training loop on the training cases of the model it was pruned
    from (``source_dir``: its card's training settings, or its run's ``config.yaml``, supply the others); with
    ``distill_weight`` > 0 the unpruned model's probabilities are a second target (knowledge distillation);
    ``changes`` are further training settings (e.g. ``{"free_fraction": 0.2}``). Returns the fine-tuned model
    folder (``run_dir/last``)."""
    from bratsseg.atomic import write_json_atomic
    from bratsseg.engine.config import TrainConfig, finetune_config, from_dict, load_train_config
    from bratsseg.engine.trainer import train
    from bratsseg.models.card import read_card
    from bratsseg.models.files import load_model

    model, _ = load_model(pruned_dir)
    source = read_card(source_dir)
    run_config = Path(source_dir).resolve().parent / "config.yaml"
    if source.training.config:
        base = from_dict(TrainConfig, {**source.training.config, "init_from": None, "teacher": None})
    elif run_config.is_file():
        base = load_train_config(run_config)
    else:
        base = TrainConfig(model=model.config)
    config = finetune_config(
        replace(
            base,
            model=model.config,
            downsample=source.inference.downsample,
            teacher=str(source_dir) if distill_weight > 0 else None,
            distill_weight=distill_weight,
        ),
        pruned_dir,
        epochs,
        steps,
        lr_factor,
        changes,
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if source.training.train_cases:
        split = {"train": list(source.training.train_cases), "val": list(source.training.val_cases)}
        write_json_atomic(run_dir / "split.json", {**split, "folds": base.folds, "fold": base.fold})
    train(cache, run_dir, config, resume=(run_dir / "checkpoint.pt").exists(), device="cpu")
    return run_dir / "last"


def prune_model(
    model_dir: str | Path,
    out: str | Path,
    sparsity: float | None = None,
    ratio: float | Sequence[float] | None = None,
    weights_dtype: str = "float32",
    finetune_epochs: int = 0,
    finetune_steps: int = 50,
    data: str | Path | None = None,
    distill_weight: float = 0.5,
) -> tuple[Path, UNet]:
    """`bratsseg prune`: one pruned model folder (global magnitude ``sparsity`` or pair ``ratio``), optionally
    fine-tuned on ``data`` (distilled from the unpruned model with ``distill_weight``) and stored in float16;
    returns the folder and the model. The card keeps the source's
    thresholds and settings and records each step in its compression history."""
    from bratsseg.models.files import load_model, save_model

    if (sparsity is None) == (ratio is None):
        raise BratsSegError("give exactly one of a global sparsity or a pair-pruning ratio")
    model, card = load_model(model_dir)
    if sparsity is not None:
        pruned = global_magnitude_prune(model, sparsity)
        card = card.with_step("global_magnitude", sparsity=float(sparsity))
    else:
        assert ratio is not None
        ratios = [float(ratio)] if isinstance(ratio, (int, float)) else [float(r) for r in ratio]
        pruned = pair_prune(model, ratios[0] if len(ratios) == 1 else ratios)
        card = card.with_step("pair", ratio=ratios)
    folder = save_model(out, pruned, card, weights_dtype=weights_dtype)
    if finetune_epochs:
        if data is None:
            raise BratsSegError("fine-tuning needs the training cache (--data)")
        run_dir = Path(f"{out}-finetune-run")
        run = finetune(folder, data, run_dir, finetune_epochs, finetune_steps, Path(model_dir), distill_weight)
        tuned, _ = load_model(run)
        card = card.with_step(
            "finetune", epochs=finetune_epochs, steps_per_epoch=finetune_steps, distill_weight=distill_weight
        )
        folder = save_model(out, tuned, card, weights_dtype=weights_dtype)
        pruned = tuned
    return folder, pruned
