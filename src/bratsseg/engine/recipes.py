"""Training recipes as data: a YAML file of :class:`~bratsseg.engine.config.TrainConfig` settings with a
description, shipped in :mod:`bratsseg.recipes` by name (``brats3d-cpu``: the bundled model's) or given as a file.

A recipe file holds ``description``, ``tested`` (whether and where it was run), ``settings`` (TrainConfig keys, as
``--config`` takes them), ``crossval`` (``mirror_axes``: the accurate mode's test-time mirroring) and, optionally,
``finetune``: a second stage that continues each trained network (every fold model and the all-case model) on the
same training cases, as the bundled networks were made: ``epochs``, ``steps_per_epoch``, ``lr_factor`` (the
stage's learning rate is the recipe's times this) and ``settings`` (further TrainConfig keys for the stage, e.g.
``free_fraction``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bratsseg.errors import BratsSegError

#: the recipe ``bratsseg crossval`` uses when none is named: the bundled model's
DEFAULT_RECIPE = "brats3d-cpu"
_KEYS = {"description", "tested", "settings", "crossval", "finetune"}
_FINETUNE_KEYS = {"epochs", "steps_per_epoch", "lr_factor", "settings"}
#: what a fine-tuning stage sets itself, so its ``settings`` may not
_SET_BY_FINETUNE = {
    "epochs",
    "steps_per_epoch",
    "lr",
    "init_from",
    "fold",
    "folds",
    "seed",
    "split_seed",
    "stratify",
    "strata",
    "train_fraction",
    "model",
    "downsample",
    "patch_size",
}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    tested: str
    settings: dict[str, Any]
    mirror_axes: tuple[int, ...] = ()
    finetune: dict[str, Any] | None = None  # the fine-tuning stage (see the module docstring), or none
    source: str = ""  # the file's text, stored in the run and the card
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tested": self.tested,
            "settings": self.settings,
            "mirror_axes": list(self.mirror_axes),
            **({"finetune": self.finetune} if self.finetune else {}),
        }


def recipe_names() -> list[str]:
    """The recipes shipped with bratsseg."""
    return sorted(
        p.name[: -len(".yaml")] for p in resources.files("bratsseg.recipes").iterdir() if p.name.endswith(".yaml")
    )


def load_recipe(name_or_file: str | Path | None = None) -> Recipe:
    """A shipped recipe by name, or a recipe file; one-line errors for an unknown name or a malformed file."""
    name_or_file = str(name_or_file or DEFAULT_RECIPE)
    path = Path(name_or_file)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise BratsSegError("no such recipe file", path)
        text, name = path.read_text(), path.stem
    else:
        if name_or_file not in recipe_names():
            raise BratsSegError(f"no recipe named {name_or_file!r}; shipped recipes: {', '.join(recipe_names())}")
        text, name = resources.files("bratsseg.recipes").joinpath(f"{name_or_file}.yaml").read_text(), name_or_file
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise BratsSegError(f"recipe is not valid YAML: {err}".replace("\n", " "), path) from err
    if not isinstance(data, dict) or not isinstance(data.get("settings", {}), dict):
        raise BratsSegError("a recipe must be a mapping with a 'settings' mapping", path)
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise BratsSegError(f"unknown recipe keys {unknown} (expected {sorted(_KEYS)})", path)
    cv = data.get("crossval") or {}
    return Recipe(
        finetune=check_finetune(data.get("finetune"), path),
        name=name,
        description=str(data.get("description", "")),
        tested=str(data.get("tested", "unknown")),
        settings=dict(data.get("settings") or {}),
        mirror_axes=tuple(int(a) for a in cv.get("mirror_axes", ())),
        source=text,
    )


def check_finetune(stage: Any, path: str | Path) -> dict[str, Any] | None:
    """A recipe's ``finetune`` mapping (None: no stage), checked and with its defaults (``lr_factor`` 0.5, no further
    settings); ``path`` names the recipe in the errors."""
    if stage is None:
        return None
    if not isinstance(stage, dict):
        raise BratsSegError("a recipe's 'finetune' must be a mapping", path)
    unknown = sorted(set(stage) - _FINETUNE_KEYS)
    if unknown:
        raise BratsSegError(f"unknown finetune keys {unknown} (expected {sorted(_FINETUNE_KEYS)})", path)
    settings = stage.get("settings") or {}
    if not isinstance(settings, dict):
        raise BratsSegError("a recipe's 'finetune.settings' must be a mapping", path)
    fixed = sorted(set(settings) & _SET_BY_FINETUNE)
    if fixed:
        raise BratsSegError(f"finetune.settings may not set {fixed}: the stage sets or keeps them itself", path)
    try:
        epochs, steps, factor = int(stage["epochs"]), int(stage["steps_per_epoch"]), float(stage.get("lr_factor", 0.5))
    except (KeyError, TypeError, ValueError) as err:
        raise BratsSegError(
            f"finetune needs integer epochs and steps_per_epoch, a number lr_factor ({err})", path
        ) from err
    if epochs < 1 or steps < 1 or not factor > 0:
        raise BratsSegError("finetune needs epochs >= 1, steps_per_epoch >= 1 and lr_factor > 0", path)
    return {"epochs": epochs, "steps_per_epoch": steps, "lr_factor": factor, "settings": dict(settings)}
