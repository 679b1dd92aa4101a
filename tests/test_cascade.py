"""The refinement stage (cascade): crop and paste-back are exact, a refinement that returns its input changes
nothing, the prior channels travel through sampling untouched by intensity augmentation, and the whole chain
(out-of-fold priors -> training -> one model folder -> predict on PyTorch and ONNX Runtime) runs."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from bratsseg.cli.main import main
from bratsseg.data.cache import open_cache
from bratsseg.data.preprocess import crop_and_normalise, preprocess_dataset
from bratsseg.data.priors import load_prior, write_prior
from bratsseg.data.sampling import AugmentConfig, PatchDataset
from bratsseg.engine.cascade import attach_refinement, write_priors
from bratsseg.engine.config import load_train_config
from bratsseg.engine.predict import predict
from bratsseg.engine.trainer import train
from bratsseg.errors import BratsSegError
from bratsseg.inference.cascade import CascadePredictor, refine_box, refine_in_box
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.predictor import binarize
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case
from bratsseg.models.card import Mode, ModelCard, Refinement, read_card, write_card
from bratsseg.models.unet import UNet, UNetConfig

REFINER = UNetConfig(widths=(4, 8), in_channels=7, prior_channels=3)
TINY = ["model.widths=[4,8,16]", "patch_size=[16,16,16]", "epochs=1", "steps_per_epoch=2", "warmup_steps=1"]
TINY += ["num_workers=0", "folds=2"]


def _prior(shape, seed=0):
    """Smooth probabilities with a blob of tumour in the middle, zero outside a 'brain' that fills the array."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid**2).sum(0))
    base = np.clip(1.2 - 2.0 * r, 0, 1).astype(np.float32)
    return np.stack([base, base * 0.8, base * 0.6]) + rng.uniform(0, 0.01, (3, *shape)).astype(np.float32)


def test_refine_box_is_the_mask_box_plus_margin_clipped():
    mask = np.zeros((20, 30, 10), bool)
    mask[5:8, 2:4, 7:9] = True
    assert refine_box(mask, 3) == (slice(2, 11), slice(0, 7), slice(4, 10))
    assert refine_box(np.zeros((4, 4, 4), bool), 3) is None


def test_identity_refinement_pastes_back_exactly():
    image = np.random.default_rng(1).normal(size=(4, 24, 20, 16)).astype(np.float32)
    prior = _prior((24, 20, 16))
    seen = []

    def identity(x):
        seen.append(x.shape)
        return x[4:].copy()  # the refinement returns its input: the first stage's probabilities

    out = refine_in_box(identity, image, prior.copy(), Refinement(margin=2, box_threshold=0.5))
    np.testing.assert_array_equal(out, prior)
    box = refine_box(prior[0] > 0.5, 2)
    assert seen == [(7, *[s.stop - s.start for s in box])]
    assert all(s.stop - s.start < n for s, n in zip(box, prior.shape[1:], strict=True))  # a crop, not the case
    empty = np.zeros_like(prior)
    assert refine_in_box(identity, image, empty, Refinement()) is empty and len(seen) == 1  # no tumour: no pass


def test_untrained_refinement_network_leaves_the_labels_unchanged():
    """A refinement network starts with a zero head: its probabilities are its prior's (clipped to 1e-4)."""
    torch.manual_seed(0)
    net = UNet(REFINER).eval()
    image = np.random.default_rng(2).normal(size=(4, 20, 18, 14)).astype(np.float32)
    prior = _prior((20, 18, 14))
    refiner = TorchPredictor(net, ModelCard(architecture=REFINER))
    first = _Fixed(prior)
    cascade = CascadePredictor(first, refiner, Refinement(margin=1))
    refined = cascade.probabilities(image)
    np.testing.assert_allclose(refined, prior, atol=1.01e-4, rtol=0)  # clipped to [1e-4, 1 - 1e-4] in the box
    thresholds = {"WT": 0.5, "TC": 0.5, "ET": 0.5}
    np.testing.assert_array_equal(binarize(refined, thresholds), binarize(prior, thresholds))


class _Fixed:
    """A first stage that returns given probabilities (a fresh copy each time, as real predictors do)."""

    backend = "torch"
    device = "cpu"

    def __init__(self, probs):
        self.probs = probs
        self.card = ModelCard()

    def probabilities(self, image):
        return self.probs.copy()


def test_refinement_config_is_checked():
    with pytest.raises(BratsSegError, match="prior_channels"):
        UNetConfig(in_channels=3, prior_channels=3)
    with pytest.raises(BratsSegError, match="prior_channels"):
        UNetConfig(in_channels=7, prior_channels=2)
    with pytest.raises(BratsSegError, match="refinement stage needs both"):
        load_train_config(None, ["prior=somewhere"])
    with pytest.raises(BratsSegError, match="refinement stage needs both"):
        load_train_config(None, ["model.in_channels=7", "model.prior_channels=3"])
    with pytest.raises(BratsSegError, match="full resolution"):
        load_train_config(None, ["prior=p", "model.in_channels=7", "model.prior_channels=3", "downsample=2"])
    with pytest.raises(BratsSegError, match="box_threshold"):
        Refinement(box_threshold=1.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp("cache")
    assert preprocess_dataset(synthetic_root, root).ok
    return root


def test_patches_carry_the_prior_untouched_by_intensity_augmentation(cache, tmp_path):
    cases = [c for c in open_cache(cache) if c.has_seg]
    for c in cases:
        write_prior(tmp_path, c.case_id, _prior(c.image.shape[1:], seed=3))
    strong = AugmentConfig(flip_prob=0, spatial_prob=0, intensity_prob=1, gamma_prob=1, bias_prob=1, noise_prob=1)
    plain = PatchDataset(cases, (16, 16, 16), 4, 1.0, None, seed=5, priors=tmp_path)
    augmented = PatchDataset(cases, (16, 16, 16), 4, 1.0, strong, seed=5, priors=tmp_path)
    for i in range(4):
        (x, y), (xa, ya) = plain[i], augmented[i]
        assert x.shape == (7, 16, 16, 16)
        torch.testing.assert_close(xa[4:], x[4:], rtol=0, atol=0)  # the prior channels: exactly as stored
        assert not torch.equal(xa[:4], x[:4])  # the modalities were changed
        torch.testing.assert_close(ya, y)
    flips = AugmentConfig(flip_prob=1, spatial_prob=0, intensity_prob=0, gamma_prob=0, bias_prob=0, noise_prob=0)
    flipped = PatchDataset(cases, (16, 16, 16), 2, 1.0, flips, seed=5, priors=tmp_path)
    x, _ = plain[0]
    xf, _ = flipped[0]
    torch.testing.assert_close(xf, x.flip([1, 2, 3]))  # spatial changes move the prior with the image


def test_a_prior_on_another_grid_is_refused(cache, tmp_path):
    case = open_cache(cache)[0]
    write_prior(tmp_path, case.case_id, np.zeros((3, 5, 5, 5)))
    with pytest.raises(BratsSegError, match="shape"):
        load_prior(tmp_path, case)
    with pytest.raises(BratsSegError, match="no prior probabilities"):
        load_prior(tmp_path / "none", case)


def test_cascade_trained_end_to_end_predicts_on_both_backends(cache, synthetic_root, tmp_path):
    """2 first-stage folds -> out-of-fold priors -> a refinement -> one folder -> predict (torch and ONNX)."""
    folds = []
    for k in range(2):
        run = train(cache, tmp_path / f"fold{k}", load_train_config(None, [*TINY, f"fold={k}"]))
        folds.append(run.run_dir / "last")
    with pytest.raises(BratsSegError, match="out of fold"):
        write_priors(cache, folds[:1], tmp_path / "priors")  # fold 1's cases: no model left them out
    write_priors(cache, folds, tmp_path / "priors")
    index = json.loads((tmp_path / "priors" / "priors.json").read_text())
    for case_id, source in index["cases"].items():  # every prior comes from the fold that left the case out
        assert case_id in read_card(source).training.val_cases
    refine_cfg = [*TINY, "model.widths=[4,8]", "model.in_channels=7", "model.prior_channels=3"]
    refine_cfg += [f"prior={tmp_path / 'priors'}", "fold=-1"]
    refined = train(cache, tmp_path / "refine", load_train_config(None, refine_cfg))
    assert refined.finished
    out = attach_refinement(folds[0], refined.run_dir / "last", tmp_path / "cascade", Refinement(margin=2))
    card = read_card(out)
    assert card.refinement == Refinement(margin=2) and (out / "refine" / "weights.safetensors").is_file()
    predictor = load_predictor(out)
    assert isinstance(predictor, CascadePredictor)
    case = find_case(synthetic_root / open_cache(cache)[0].case_id)
    image = crop_and_normalise(load_case(case, load_seg=False).image, 2).image
    probs = predictor.probabilities(image)
    assert probs.shape == (3, *image.shape[1:]) and probs.min() >= 0 and probs.max() <= 1

    from bratsseg.compress.onnx_export import export_model_folder

    export_model_folder(out, weights_dtype="float32")  # the weights as PyTorch has them: parity
    assert (out / "refine" / "model.onnx").is_file()
    on_ort = load_predictor(out, backend="onnx")
    assert isinstance(on_ort, CascadePredictor) and on_ort.refiner.backend == "onnxruntime"
    np.testing.assert_allclose(on_ort.probabilities(image), probs, atol=2e-4)  # float32: ORT and PyTorch kernels
    # a mode may leave the refinement out
    write_card(out, card.replace(modes={"coarse": Mode(refine=False)}))
    assert not isinstance(load_predictor(out, mode="coarse", backend="torch"), CascadePredictor)
    # `bratsseg export` of a cascade writes its second stage beside the file, where loading looks for it
    assert main(["export", str(out), "-o", str(tmp_path / "exported" / "model.onnx")]) == 0
    from_file = load_predictor(tmp_path / "exported" / "model.onnx")
    assert isinstance(from_file, CascadePredictor) and from_file.refiner.backend == "onnxruntime"
    np.testing.assert_allclose(from_file.probabilities(image), probs, atol=2e-4)
    report = predict([case.folder], tmp_path / "pred", model=out, backend="torch")
    assert report.ok, report.failed
    assert nib.load(report.written[0]).shape == nib.load(case.images[0]).shape
