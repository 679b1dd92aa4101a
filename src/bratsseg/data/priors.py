"""A previous stage's region probabilities for each cached case: what a refinement stage (cascade) trains on.

A priors folder holds ``<case_id>.npy``, ``(3, x, y, z)`` float16 WT/TC/ET probabilities on the case's cached
(cropped) grid, written by :func:`bratsseg.engine.cascade.write_priors` from models that did not train on the
case (out-of-fold, as nnU-Net trains its cascade), and ``priors.json``, which says which model gave each case.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.atomic import atomic_path
from bratsseg.data.cache import CachedCase
from bratsseg.errors import BratsSegError

PRIORS_INDEX = "priors.json"


def prior_file(folder: str | Path, case_id: str) -> Path:
    return Path(folder) / f"{case_id}.npy"


def load_prior(folder: str | Path, case: CachedCase) -> NDArray[np.float16]:
    """The case's prior probabilities, memory-mapped; a clear error when missing or on another grid."""
    path = prior_file(folder, case.case_id)
    try:
        prior = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise BratsSegError(f"no prior probabilities for case {case.case_id}", path) from None
    except (OSError, ValueError) as err:
        raise BratsSegError(f"cannot read prior probabilities ({err})", path) from err
    expected = (3, *case.image.shape[1:])
    if prior.shape != expected:
        raise BratsSegError(f"prior probabilities have shape {prior.shape}, the cached case {expected}", path)
    return prior


def write_prior(folder: str | Path, case_id: str, probabilities: NDArray[Any]) -> Path:
    """Store ``(3, x, y, z)`` probabilities as float16, atomically."""
    path = prior_file(folder, case_id)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npy") as tmp, open(tmp, "wb") as f:
        np.save(f, np.asarray(probabilities, dtype=np.float16))
    return path
