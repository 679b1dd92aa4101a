"""Training recipes as data: a YAML file of :class:`~bratsseg.engine.config.TrainConfig` settings with a
description, shipped in :mod:`bratsseg.recipes` by name (``brats3d-cpu``: the bundled model's) or given as a file.

A recipe file holds ``description``, ``tested`` (whether and where it was run), ``settings`` (TrainConfig keys, as
``--config`` takes them) and ``crossval`` (``mirror_axes``: the accurate mode's test-time mirroring).
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
_KEYS = {"description", "tested", "settings", "crossval"}


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    tested: str
    settings: dict[str, Any]
    mirror_axes: tuple[int, ...] = ()
    source: str = ""  # the file's text, stored in the run and the card
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "tested": self.tested,
            "settings": self.settings,
            "mirror_axes": list(self.mirror_axes),
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
        name=name,
        description=str(data.get("description", "")),
        tested=str(data.get("tested", "unknown")),
        settings=dict(data.get("settings") or {}),
        mirror_axes=tuple(int(a) for a in cv.get("mirror_axes", ())),
        source=text,
    )
