import json

import pytest
import torch

from bratsseg import BratsSegError
from bratsseg.models import UNet, UNetConfig, count_parameters, slicewise_forward
from bratsseg.models.card import ModelCard
from bratsseg.models.files import CONFIG_FILE, WEIGHTS_FILE, clean_state_dict, load_model, save_model

CASES = [
    (3, (4, 8, 16, 32), (1, 4, 19, 22, 13)),
    (3, (4, 8, 16, 32, 64), (2, 4, 17, 33, 20)),
    (2, (4, 8, 16, 32), (3, 4, 27, 45)),
    (2, (4, 8, 16, 32, 64), (2, 4, 50, 31)),
]


@pytest.mark.parametrize(("dims", "widths", "shape"), CASES)
def test_output_shape_any_input_size(dims, widths, shape):
    model = UNet(UNetConfig(spatial_dims=dims, widths=widths))
    for mode in (True, False):
        model.train(mode)
        out = model(torch.randn(shape))
        assert out.shape == (shape[0], 3, *shape[2:])
    assert len(model.encoder) == len(widths) and len(model.decoder) == len(widths) - 1


@pytest.mark.parametrize(("dims", "widths", "shape"), CASES)
def test_every_parameter_gets_a_gradient(dims, widths, shape):
    torch.manual_seed(0)
    model = UNet(UNetConfig(spatial_dims=dims, widths=widths, deep_supervision=True)).train()
    n = 2 * model.config.divisor  # divisible, as training patches are
    outs = model(torch.randn(2, 4, *[n] * dims))
    assert isinstance(outs, list) and len(outs) == len(widths) - 1
    assert [o.shape[2] for o in outs] == [n // 2**i for i in range(len(outs))]
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_mirrored_stages_share_widths():
    model = UNet(UNetConfig(widths=(5, 7, 11, 13)))
    for i in range(3):
        enc_out = model.encoder[i][1][0].out_channels
        assert model.decoder[i].up.out_channels == enc_out == model.decoder[i].convs[1][0].out_channels


def test_config_round_trip_and_errors():
    cfg = UNetConfig(spatial_dims=2, widths=(8, 16, 32, 64, 128), norm="group", deep_supervision=True)
    assert UNetConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    with pytest.raises(BratsSegError, match="spatial_dims"):
        UNetConfig(spatial_dims=4)
    with pytest.raises(BratsSegError, match="levels"):
        UNetConfig(widths=(8,))
    with pytest.raises(BratsSegError, match="unknown model config keys"):
        UNetConfig.from_dict({"width": [1, 2]})
    with pytest.raises(BratsSegError, match=r"expected input \(B, 4, H, W, D\)"):
        UNet(UNetConfig(widths=(4, 8)))(torch.zeros(1, 3, 8, 8, 8))


def test_parameter_count_of_the_study_size():
    # the CS231n 3-D U-Net had widths 18/36/72/144 and about 1.29 M parameters (GroupNorm)
    n = count_parameters(UNet(UNetConfig(widths=(18, 36, 72, 144), norm="group")))
    assert 1.5e6 < n < 1.9e6  # ours has 2 convs per decoder stage plus the transposed conv


def test_slicewise_forward_matches_per_slice():
    model = UNet(UNetConfig(spatial_dims=2, widths=(4, 8, 16))).eval()
    vol = torch.randn(4, 12, 10, 7)
    with torch.no_grad():
        out = slicewise_forward(model, vol, batch_size=3)
        assert out.shape == (3, 12, 10, 7)
        assert torch.allclose(out[..., 5], model(vol[..., 5].unsqueeze(0))[0], atol=1e-5)


def test_model_folder_round_trip(tmp_path):
    torch.manual_seed(1)
    model = UNet(UNetConfig(widths=(4, 8, 16))).eval()
    wrapped = torch.nn.Module()
    wrapped.module = model  # what DDP looks like
    path = save_model(tmp_path / "m", wrapped, ModelCard(thresholds={"WT": 0.4, "TC": 0.5, "ET": 0.6}))
    assert sorted(p.name for p in path.iterdir()) == [CONFIG_FILE, WEIGHTS_FILE]
    assert not any(k.startswith("module.") for k in clean_state_dict(wrapped))
    loaded, card = load_model(path)
    assert card.thresholds["ET"] == 0.6 and card.architecture == model.config  # the weights' own architecture
    x = torch.randn(1, 4, 12, 12, 12)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    # saving again replaces the folder atomically
    save_model(path, model)
    assert load_model(path)[1].thresholds["ET"] == 0.5


def test_bad_model_files(tmp_path):
    with pytest.raises(BratsSegError, match="not a bratsseg model folder"):
        load_model(tmp_path)
    path = save_model(tmp_path / "m", UNet(UNetConfig(widths=(4, 8))))
    (path / WEIGHTS_FILE).write_bytes(b"\x80\x04pickle")
    with pytest.raises(BratsSegError, match=r"cannot read weights\.safetensors"):
        load_model(path)
    path = save_model(tmp_path / "m2", UNet(UNetConfig(widths=(4, 8))))
    meta = json.loads((path / CONFIG_FILE).read_text())
    meta["architecture"]["widths"] = [4, 8, 16]
    (path / CONFIG_FILE).write_text(json.dumps(meta))
    with pytest.raises(BratsSegError, match="do not fit the architecture"):
        load_model(path)


@pytest.mark.parametrize("dims", [2, 3])
def test_cheap_finest_level_options(dims):
    """skip="add" and top_convs=1: same interface, fewer parameters, every parameter trained, round-trips."""
    torch.manual_seed(0)
    base = UNetConfig(spatial_dims=dims, widths=(4, 8, 16))
    cheap = UNetConfig(spatial_dims=dims, widths=(4, 8, 16), skip="add", top_convs=1)
    model = UNet(cheap).train()
    assert count_parameters(model) < count_parameters(UNet(base))
    assert len(model.encoder[0]) == 1 and len(model.decoder[0].convs) == 1 and len(model.encoder[1]) == 2
    assert model.decoder[0].convs[0][0].in_channels == 4  # the skip is added, not concatenated
    out = model(torch.randn(2, 4, *[16] * dims))
    out.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert UNetConfig.from_dict(cheap.to_dict()) == cheap
    with pytest.raises(BratsSegError, match="skip must be one of"):
        UNetConfig(skip="sum")
    with pytest.raises(BratsSegError, match="top_convs must be 1 or 2"):
        UNetConfig(top_convs=3)


def test_channels_last_gives_the_same_logits():
    from bratsseg.inference.torch_predictor import TorchPredictor

    torch.manual_seed(0)
    model = UNet(UNetConfig(widths=(4, 8, 16), skip="add", top_convs=1)).eval()
    x = torch.randn(1, 4, 19, 22, 13)
    with torch.inference_mode():
        expected = model(x)
        predictor = TorchPredictor(model, {}, "cpu")
        assert predictor.memory_format == torch.channels_last_3d
        got = predictor.logits_batch(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
