"""Training a refinement stage (cascade): the first stage's out-of-fold probabilities as its input, and a model
folder that runs both stages.

As nnU-Net trains its ``3d_cascade``: the second stage learns from first-stage probabilities of cases that the
first stage did not train on (each case predicted by the cross-validation fold model that validated on it), so
that what it sees in training looks like what it will see on new cases. ::

    write_priors(cache, [fold0, ..., fold4], "priors")       # each case by the fold model that left it out
    bratsseg train --set prior=priors --set model.in_channels=7 --set model.prior_channels=3 ...
    attach_refinement(first_stage, refine_run / "last", "cascade")   # one folder: predict / evaluate run both
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from bratsseg.atomic import atomic_dir, write_json_atomic
from bratsseg.data.cache import open_cache
from bratsseg.data.priors import PRIORS_INDEX, prior_file, write_prior
from bratsseg.errors import BratsSegError
from bratsseg.inference.loading import load_predictor
from bratsseg.models.card import ModelCard, Refinement, read_card, write_card


def fold_of_cases(fold_models: Sequence[str | Path]) -> dict[str, Path]:
    """Case id -> the fold model whose card lists it among its validation cases (each case once)."""
    owner: dict[str, Path] = {}
    for folder in map(Path, fold_models):
        for case_id in read_card(folder).training.val_cases:
            if case_id in owner:
                raise BratsSegError(f"case {case_id} is a validation case of both {owner[case_id]} and", folder)
            owner[case_id] = folder
    return owner


def write_priors(
    cache: str | Path,
    fold_models: Sequence[str | Path],
    out: str | Path,
    threads: int | None = None,
) -> list[Path]:
    """``out/<case_id>.npy``: every cached case's first-stage probabilities, from the fold model that validated
    on it (its card's ``training.val_cases``); ``out/priors.json`` records which. Cases already written are kept
    (an interrupted run resumes). A cached case that no fold model left out is an error: its probabilities would
    come from a model that trained on it."""
    cases = open_cache(cache)
    owner = fold_of_cases(fold_models)
    missing = [c.case_id for c in cases if c.case_id not in owner]
    if missing:
        raise BratsSegError(f"no fold model validated on cases {missing}: their priors would not be out of fold", cache)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    predictors = {}
    written = []
    for case in cases:
        path = prior_file(out, case.case_id)
        if not path.is_file():
            folder = owner[case.case_id]
            if folder not in predictors:
                predictors[folder] = load_predictor(folder, threads=threads)
            written.append(write_prior(out, case.case_id, predictors[folder].probabilities(case.image)))
    index = {
        "source": "out-of-fold first-stage probabilities",
        "cases": {c.case_id: str(owner[c.case_id]) for c in cases},
    }
    write_json_atomic(out / PRIORS_INDEX, index)
    return written


def attach_refinement(
    first: str | Path, refiner: str | Path, out: str | Path, settings: Refinement | None = None
) -> Path:
    """A model folder ``out`` that runs ``first`` and then ``refiner`` around the tumour: a copy of ``first``
    with the refinement's folder inside it (``out/refine``) and ``refinement`` set in its card. The card's
    thresholds stay the first stage's until chosen on the cascade's own out-of-fold probabilities."""
    first, refiner = Path(first), Path(refiner)
    card = read_card(first)
    stage2 = read_card(refiner)
    if not stage2.architecture.prior_channels:
        raise BratsSegError("not a refinement model (its architecture has no prior_channels)", refiner)
    settings = settings or Refinement()
    with atomic_dir(out) as tmp:
        for item in first.iterdir():
            if item.is_file():
                shutil.copy2(item, tmp / item.name)
        shutil.copytree(refiner, tmp / settings.model, ignore=shutil.ignore_patterns(".*"))
        write_card(tmp, card.replace(refinement=settings))
        _refresh_onnx_card(tmp, card.replace(refinement=settings))
    return Path(out)


def _refresh_onnx_card(folder: Path, card: ModelCard) -> None:
    """Give a copied ``model.onnx`` the folder's new card (ONNX Runtime reads the card from the file)."""
    onnx_path = folder / "model.onnx"
    if not onnx_path.is_file():
        return
    import onnx

    from bratsseg.models.onnx_format import read_onnx_card, set_onnx_card

    proto = onnx.load(str(onnx_path))
    old = read_onnx_card(onnx_path)
    set_onnx_card(proto, card.replace(compression=old.compression, weights_dtype=old.weights_dtype))
    onnx.save(proto, str(onnx_path))
