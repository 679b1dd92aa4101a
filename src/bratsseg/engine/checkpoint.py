"""Atomic writes of training checkpoints (resume state) and safe loading (no arbitrary unpickling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from bratsseg.atomic import atomic_path, remove_stale_temporaries
from bratsseg.errors import BratsSegError

__all__ = ["load_checkpoint", "remove_stale_temporaries", "save_checkpoint"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename over ``path``: a reader (or a resume after
    SIGKILL at any moment) sees either the previous complete checkpoint or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``: tensors and plain containers only, no code."""
    path = Path(path)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise BratsSegError("no such checkpoint", path) from None
    except Exception as err:
        raise BratsSegError(f"cannot load checkpoint ({type(err).__name__}: {err})", path) from err
    if not isinstance(state, dict) or "model" not in state:
        raise BratsSegError("not a bratsseg training checkpoint", path)
    return state
