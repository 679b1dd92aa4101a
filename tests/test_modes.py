"""Prediction modes: ``fast`` (one network) and an ensemble mode (member models averaged, mirrored)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from bratsseg.data.preprocess import crop_and_normalise
from bratsseg.engine.predict import predict
from bratsseg.errors import BratsSegError
from bratsseg.inference.ensemble import EnsemblePredictor, LazyPredictor
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case
from bratsseg.models.card import InferenceSettings, Mode, ModelCard, read_card
from bratsseg.models.files import save_model
from bratsseg.models.unet import UNet, UNetConfig

CONFIG = UNetConfig(widths=(4, 8, 16))


@pytest.fixture(scope="module")
def with_modes(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes") / "model"
    card = ModelCard(architecture=CONFIG, inference=InferenceSettings(downsample=2))
    torch.manual_seed(0)
    accurate = Mode(members=("folds/fold0", "folds/fold1"), mirror_axes=(0, 2), description="2 folds, mirrored")
    save_model(root, UNet(CONFIG), card.replace(modes={"accurate": accurate}))  # replaces the folder: first
    for i, folder in enumerate((root / "folds" / "fold0", root / "folds" / "fold1")):
        torch.manual_seed(10 + i)
        save_model(folder, UNet(CONFIG), card)
    return root


def _image(case_dir):
    return crop_and_normalise(load_case(find_case(case_dir), load_seg=False).image, 2).image


def test_an_ensemble_of_one_model_is_that_model(case_dir, with_modes):
    single = load_predictor(with_modes)
    image = _image(case_dir)
    np.testing.assert_array_equal(
        EnsemblePredictor([single], single.card).probabilities(image), single.probabilities(image)
    )


def test_accurate_mode_averages_its_mirrored_members(case_dir, with_modes, tmp_path):
    image = _image(case_dir)
    accurate = load_predictor(with_modes, mode="accurate")
    assert isinstance(accurate, EnsemblePredictor) and len(accurate.members) == 2
    # on the CPU one member in memory at a time: each is opened for a case and dropped after it
    assert all(isinstance(m, LazyPredictor) and not hasattr(m, "model") for m in accurate.members)
    expected = []
    for fold in ("fold0", "fold1"):
        member = TorchPredictor.from_dir(with_modes / "folds" / fold)
        member.card = member.card.replace(inference=dataclasses.replace(member.card.inference, mirror_axes=(0, 2)))
        expected.append(member.probabilities(image))
    np.testing.assert_allclose(accurate.probabilities(image), (expected[0] + expected[1]) / 2, atol=1e-6)
    fast = load_predictor(with_modes)
    assert isinstance(fast, TorchPredictor) and fast.card.inference.mirror_axes == ()
    # both modes run end to end, and the card says what each runs
    for mode in ("fast", "accurate"):
        report = predict([case_dir], tmp_path / mode, with_modes, mode=mode)
        assert report.ok and len(report.written) == 1
    assert read_card(with_modes).mode("accurate").members == ("folds/fold0", "folds/fold1")
    with pytest.raises(BratsSegError, match=r"no mode 'best'.*'accurate', 'fast'"):
        load_predictor(with_modes, mode="best")


def test_accurate_mode_on_onnx_runtime_opens_members_without_a_memory_arena(case_dir, with_modes, tmp_path):
    """An output of an arena-backed session keeps the arena's whole block alive: a member opened per case runs
    without one, and gives what the PyTorch members give."""
    import shutil

    from bratsseg.compress.onnx_export import export_model_folder
    from bratsseg.inference.onnx_predictor import OnnxPredictor

    root = tmp_path / "model"
    shutil.copytree(with_modes, root)
    export_model_folder(root, weights_dtype="float32")
    accurate = load_predictor(root, mode="accurate")
    opened = accurate.members[0].load()
    assert isinstance(opened, OnnxPredictor) and not opened.session.get_session_options().enable_cpu_mem_arena
    assert opened.card.inference.mirror_axes == (0, 2)
    fast = load_predictor(root)
    assert isinstance(fast, OnnxPredictor) and fast.session.get_session_options().enable_cpu_mem_arena
    image = _image(case_dir)
    expected = load_predictor(root, mode="accurate", backend="torch").probabilities(image)
    np.testing.assert_allclose(accurate.probabilities(image), expected, atol=1e-4)
