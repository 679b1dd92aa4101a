import numpy as np
import pytest
import torch

from bratsseg import BratsSegError
from bratsseg.inference.predictor import binarize
from bratsseg.inference.sliding import predict_logits, predict_probabilities
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.models import UNet, UNetConfig


def test_sliding_window_oracle():
    """A predictor x + 1 through overlapping Gaussian-blended windows gives input + 1."""
    torch.manual_seed(0)
    image = torch.randn(2, 37, 29, 23)
    out = predict_logits(lambda x: x + 1, image, spatial_dims=3, roi_size=(16, 16, 16), overlap=0.5)
    assert out.shape == image.shape
    assert torch.allclose(out, image + 1, atol=1e-5)
    whole = predict_logits(lambda x: x + 1, image, spatial_dims=3, roi_size=None)
    assert torch.equal(whole, image + 1)


def test_slicewise_oracle():
    image = torch.randn(2, 9, 8, 11)
    calls = []

    def pred(x):
        calls.append(x.shape[0])
        return x * 2

    out = predict_logits(pred, image, spatial_dims=2, slice_batch_size=4)
    assert torch.equal(out, image * 2) and calls == [4, 4, 3]
    with pytest.raises(BratsSegError):
        predict_logits(pred, image[0], spatial_dims=2)


def test_probabilities_are_zero_outside_the_brain():
    image = torch.zeros(4, 16, 16, 16)
    image[:, 4:12, 4:12, 4:12] = torch.randn(4, 8, 8, 8)
    probs = predict_probabilities(lambda x: x[:, :3] * 0 + 3.0, image, 3)
    assert probs[:, 0, 0, 0].sum() == 0 and torch.allclose(probs[:, 8, 8, 8], torch.sigmoid(torch.tensor(3.0)))


def test_predictor_and_binarize(tmp_path):
    from bratsseg.models.card import ModelCard
    from bratsseg.models.files import save_model

    card = ModelCard(thresholds={"WT": 0.1, "TC": 0.5, "ET": 0.9})
    path = save_model(tmp_path / "m", UNet(UNetConfig(widths=(4, 8, 16))), card)
    pred = TorchPredictor.from_dir(path)
    assert pred.thresholds == {"WT": 0.1, "TC": 0.5, "ET": 0.9}
    probs = pred.probabilities(np.random.default_rng(0).normal(size=(4, 10, 12, 9)).astype(np.float16))
    assert probs.shape == (3, 10, 12, 9) and probs.dtype == np.float32
    masks = binarize(np.full((3, 2, 2, 2), 0.5), pred.thresholds)
    assert masks[0].all() and not masks[1].any() and not masks[2].any()


def test_probabilities_on_original_grid(synthetic_root, tmp_path):
    from bratsseg.data.cache import CachedCase
    from bratsseg.data.preprocess import preprocess_case
    from bratsseg.inference.predictor import probabilities_on_original_grid
    from bratsseg.io.discovery import find_case
    from bratsseg.models.files import save_model

    case = CachedCase.open(preprocess_case(find_case(synthetic_root / "Synth_000"), tmp_path / "c"))
    pred = TorchPredictor.from_dir(save_model(tmp_path / "m", UNet(UNetConfig(widths=(4, 8, 16)))))
    full = probabilities_on_original_grid(pred, case)
    assert full.shape == (3, *case.original_shape)
    (x0, x1), (y0, y1), (z0, z1) = case.bbox
    assert np.array_equal(full[:, x0:x1, y0:y1, z0:z1], pred.probabilities(case.image))
    assert full.sum() == full[:, x0:x1, y0:y1, z0:z1].sum()


def test_coarse_grid_inference_pools_and_resamples_exactly():
    from bratsseg.data.resample import pool, pool_regions, upsample

    x = torch.rand(1, 4, 9, 10, 7)
    p = pool(x, 2)
    assert p.shape == (1, 4, 5, 5, 4)
    assert torch.allclose(p[0, :, 0, 0, 0], x[0, :, :2, :2, :2].mean(dim=(1, 2, 3)))
    assert torch.allclose(p[0, :, 4, 4, 3], x[0, :, 8:, 8:, 6:].sum(dim=(1, 2, 3)) / 8)  # padding counts as 0
    r = torch.zeros(1, 3, 4, 4, 4)
    r[0, 0, :2, :2, :1] = 1  # 4 of 8 fine voxels: in
    r[0, 1, :2, :2, :1] = 1
    r[0, 1, 0, 0, 0] = 0  # 3 of 8: out
    assert pool_regions(r, 2)[0, :, 0, 0, 0].tolist() == [1, 0, 0]
    assert upsample(p, (9, 10, 7), 2).shape == (1, 4, 9, 10, 7)
    # a constant field survives the round trip; the network sees the pooled image
    seen = []

    def net(t):
        seen.append(t.shape)
        return torch.ones(t.shape[0], 3, *t.shape[2:])

    logits = predict_logits(net, torch.rand(4, 9, 10, 7), 3, downsample=2)
    assert seen == [(1, 4, 5, 5, 4)] and logits.shape == (3, 9, 10, 7) and torch.allclose(logits, torch.ones(()))


@pytest.mark.parametrize("size", [(9, 10, 7), (20, 5, 14), (4, 4, 4), (1, 30, 8)])
def test_numpy_resampling_equals_pytorch(size):
    """The torch-free resize, pool and upsample that the runtime install predicts with are PyTorch's."""
    import torch.nn.functional as F

    from bratsseg.data.resample import pool, pool_array, resize, upsample, upsample_array

    x = torch.rand(3, 11, 8, 13)
    ours = resize(x.numpy(), size)
    ref = F.interpolate(x[None], size=size, mode="trilinear", align_corners=False)[0]
    assert ours.shape == (3, *size) and np.abs(ours - ref.numpy()).max() < 1e-5
    batch = x[None]
    assert np.abs(pool_array(batch.numpy(), 2) - pool(batch, 2).numpy()).max() < 1e-6
    coarse = pool(batch, 2)
    assert (
        np.abs(upsample_array(coarse.numpy(), (11, 8, 13), 2) - upsample(coarse, (11, 8, 13), 2).numpy()).max() < 1e-5
    )


def test_fp16_model_files_are_half_the_size_and_load_as_float32(tmp_path):
    from bratsseg.models.files import load_model, save_model

    model = UNet(UNetConfig(widths=(4, 8, 16))).eval()
    a = save_model(tmp_path / "a", model)
    b = save_model(tmp_path / "b", model, weights_dtype="float16")
    size = lambda p: (p / "weights.safetensors").stat().st_size  # noqa: E731
    assert size(b) < 0.6 * size(a)
    half, card = load_model(b)
    assert card.weights_dtype == "float16" and load_model(a)[1].weights_dtype == "float32"
    assert all(p.dtype == torch.float32 for p in half.parameters())
    x = torch.rand(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(model(x), half(x), atol=2e-2)


def test_postprocessing_nests_regions_and_relabels_small_enhancing_tumour():
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.models.card import Postprocessing

    regions = np.zeros((3, 6, 6, 6), dtype=bool)
    regions[0, :2] = True  # WT
    regions[2, 4, 4, :2] = True  # 2 ET voxels outside WT and TC (inconsistent on purpose)
    same = postprocess_regions(regions, (1.0, 1.0, 1.0), Postprocessing())
    assert same is regions  # the defaults change nothing
    nested = postprocess_regions(regions, (1.0, 1.0, 1.0), Postprocessing(nested_regions=True))
    assert nested[1].sum() == 2 and nested[0].sum() == regions[0].sum() + 2 and not regions[1].any()
    # 2 voxels of 2 x 2 x 2 mm = 16 mm^3: below 20 mm^3 they become necrosis, at 16 mm^3 or less they stay
    small = postprocess_regions(regions, (2.0, 2.0, 2.0), Postprocessing(et_min_volume_mm3=20))
    assert not small[2].any() and small[1].sum() == 2 and regions[2].sum() == 2
    kept = postprocess_regions(regions, (2.0, 2.0, 2.0), Postprocessing(et_min_volume_mm3=16))
    assert np.array_equal(kept, regions)


def test_mirroring_averages_over_every_flip():
    from bratsseg.inference.sliding import predict_probabilities

    image = torch.ones(4, 6, 5, 4)

    def ramp(x):  # position-dependent logits: 0, 1, 2, ... along the first spatial axis
        idx = torch.arange(x.shape[2], dtype=torch.float32).view(1, 1, -1, 1, 1)
        return idx.expand(x.shape[0], 3, *x.shape[2:]).clone()

    plain = predict_probabilities(ramp, image, 3)
    mirrored = predict_probabilities(ramp, image, 3, mirror_axes=(0,))
    assert torch.allclose(mirrored, (plain + plain.flip(1)) / 2)
    # flips along axes the logits do not depend on change nothing; 2**3 passes for three axes
    calls = []
    both = predict_probabilities(lambda x: calls.append(1) or ramp(x), image, 3, mirror_axes=(0, 1, 2))
    assert len(calls) == 8 and torch.allclose(both, mirrored)
