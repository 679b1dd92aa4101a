"""Which predictor runs a model file: PyTorch for a model folder, ONNX Runtime for an ``.onnx`` file or a folder
that carries one."""

from __future__ import annotations

import dataclasses
from functools import partial
from pathlib import Path

from bratsseg.errors import BratsSegError
from bratsseg.extras import require
from bratsseg.inference.cascade import CascadePredictor
from bratsseg.inference.ensemble import EnsemblePredictor, LazyPredictor
from bratsseg.inference.onnx_predictor import OnnxPredictor
from bratsseg.inference.predictor import Predictor
from bratsseg.models.card import CARD_FILE, FAST, ONNX_FILE, check_cards_agree, read_card

WEIGHTS_FILE = "weights.safetensors"  # as bratsseg.models.files names it (that module needs PyTorch)

ONNX_IN_FOLDER = ONNX_FILE


def load_predictor(
    path: str | Path, device: str = "cpu", threads: int | None = None, backend: str = "auto", mode: str = FAST
) -> Predictor:
    r"""A predictor for a model folder or an ``.onnx`` file, in one of the card's prediction ``mode``\ s.

    ``backend``: ``torch`` (a model folder on PyTorch), ``onnx`` (ONNX Runtime: the ``.onnx`` file or the
    folder's ``model.onnx``), or ``auto``: ONNX Runtime for an ``.onnx`` file or a folder that holds a
    ``model.onnx`` (as the bundled model does) on the CPU, else PyTorch. Exporting a plain folder on the fly
    is :func:`bratsseg.engine.predictors.open_predictor`'s decision, not this module's. A mode with several
    member models (``accurate``: the cross-validation folds) loads each member the same way (a member folder
    without ``model.onnx`` runs on PyTorch under ``auto``) and averages them.
    """
    path = Path(path)
    first = _load_network(path, device, threads, backend)
    spec = first.card.mode(mode)
    base = _with_refinement(first, path, device, threads, backend) if spec.refine else first
    plain = spec.members == (".",) and not spec.thresholds
    if plain and spec.mirror_axes == base.card.inference.mirror_axes:
        return base  # the model alone, as its card says (``fast``)
    root = path.parent if path.suffix == ".onnx" else path

    lazy = device == "cpu" and len(spec.members) > 1  # one network in memory at a time: a device's budget

    def open_member(m: str) -> Predictor:
        return _load_one(root / m, device, threads, "auto" if backend == "onnx" else backend, spec.refine, lazy)

    members = [
        base if m == "." else LazyPredictor(partial(open_member, m)) if lazy else open_member(m) for m in spec.members
    ]
    for member in members:
        set_mirror(member, spec.mirror_axes)
    if len(members) == 1 and not spec.thresholds:
        return members[0]
    card = base.card.replace(thresholds=dict(spec.thresholds or base.card.thresholds))
    return EnsemblePredictor(members, card)


def _load_one(
    path: Path, device: str, threads: int | None, backend: str, refine: bool = True, low_memory: bool = False
) -> Predictor:
    """One model; with its refinement stage (a :class:`CascadePredictor`) when its card has one and ``refine``."""
    first = _load_network(path, device, threads, backend, low_memory)
    return _with_refinement(first, path, device, threads, backend, low_memory) if refine else first


def _with_refinement(
    first: Predictor, path: Path, device: str, threads: int | None, backend: str, low_memory: bool = False
) -> Predictor:
    settings = first.card.refinement
    if settings is None:
        return first
    root = path.parent if path.suffix == ".onnx" else path
    if not (root / settings.model).exists():
        raise BratsSegError(f"the model's refinement stage {settings.model}/ is missing beside it", root)
    stage_backend = "auto" if backend == "onnx" else backend
    refiner = _load_network(root / settings.model, device, threads, stage_backend, low_memory)
    return CascadePredictor(first, refiner, settings)


def _load_network(path: Path, device: str, threads: int | None, backend: str, low_memory: bool = False) -> Predictor:
    if backend not in ("auto", "torch", "onnx"):
        raise BratsSegError(f"backend must be auto, torch or onnx, got {backend!r}")
    if path.suffix == ".onnx" or (backend != "torch" and path.is_dir() and (path / ONNX_IN_FOLDER).is_file()):
        if backend == "torch":
            raise BratsSegError("--backend torch needs a model folder, not an .onnx file", path)
        if device != "cpu" and backend == "auto" and path.is_dir():  # ONNX Runtime here is CPU-only
            return _torch_predictor(path, device, threads)
        if path.suffix == ".onnx" or (not (path / CARD_FILE).exists() and not (path / WEIGHTS_FILE).exists()):
            # an exported file, or a folder holding only one (an export's second stage): the file's card
            return OnnxPredictor(path if path.suffix == ".onnx" else path / ONNX_IN_FOLDER, threads, low_memory)
        folder_card = read_card(path)  # one source of truth: a model folder's card must be there, valid, and agree
        predictor = OnnxPredictor(path / ONNX_IN_FOLDER, threads, low_memory)
        check_cards_agree(folder_card, predictor.card, path)
        return predictor
    if backend == "onnx":
        raise BratsSegError(f"--backend onnx needs an .onnx file or a model folder holding {ONNX_IN_FOLDER}", path)
    return _torch_predictor(path, device, threads)


def _torch_predictor(path: Path, device: str, threads: int | None) -> Predictor:
    require(f"{path}: a model folder without {ONNX_IN_FOLDER} (export one with `bratsseg export`)", "torch")
    import torch

    from bratsseg.inference.torch_predictor import TorchPredictor

    if threads:
        torch.set_num_threads(threads)
    return TorchPredictor.from_dir(path, device)


def set_mirror(predictor: Predictor, axes: tuple[int, ...]) -> None:
    """Test-time mirroring over ``axes`` for a predictor (both stages of a cascade; a lazy member's each time it
    is opened)."""
    if isinstance(predictor, LazyPredictor):
        opened = predictor.load

        def load() -> Predictor:
            loaded = opened()
            set_mirror(loaded, axes)
            return loaded

        predictor.load = load
    stages = [predictor.first, predictor.refiner] if isinstance(predictor, CascadePredictor) else [predictor]
    for p in stages:
        p.card = p.card.replace(inference=dataclasses.replace(p.card.inference, mirror_axes=axes))
