"""Compression: global and pair pruning, FLOPs, fp16, int8, and the study on a tiny trained model."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from bratsseg.compress.prune import (
    conv_flops,
    conv_sparsity,
    conv_weights,
    global_magnitude_prune,
    pair_plan,
    pair_prune,
    pair_prune_refusal,
)
from bratsseg.errors import BratsSegError
from bratsseg.models.files import load_model, save_model
from bratsseg.models.unet import UNet, UNetConfig, count_parameters


def _model(**kw):
    torch.manual_seed(0)
    model = UNet(UNetConfig(widths=(8, 16, 32), **kw)).eval()
    for m in model.modules():  # trained-looking normalisation scales
        if isinstance(m, torch.nn.InstanceNorm3d):
            m.weight.data.uniform_(0.1, 2.0)
            m.bias.data.uniform_(-0.5, 0.5)
    return model


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 0.9])
def test_global_pruning_hits_the_sparsity_exactly(p):
    model = _model()
    pruned = global_magnitude_prune(model, p)
    total = sum(m.weight.numel() for m, _ in conv_weights(model))
    zeros = sum(int((m.weight == 0).sum()) for m, _ in conv_weights(pruned))
    assert zeros == round(p * total)
    assert conv_sparsity(pruned) == pytest.approx(p, abs=1 / total)
    assert not any(hasattr(m, "weight_orig") for m, _ in conv_weights(pruned))  # permanent
    assert conv_sparsity(model) == 0  # the original is untouched
    kept = [m.weight[m.weight != 0].abs().min() for m, _ in conv_weights(pruned)]
    dropped = [(mo.weight[mp.weight == 0]).abs().max() for (mo, _), (mp, _) in zip(conv_weights(model),
               conv_weights(pruned), strict=True) if (mp.weight == 0).any()]  # fmt: skip
    if dropped:
        assert max(dropped) <= min(kept)  # ranked jointly across layers


def test_global_pruning_at_zero_changes_nothing():
    model = _model()
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), global_magnitude_prune(model, 0.0)(x))
    with pytest.raises(BratsSegError):
        global_magnitude_prune(model, 1.0)


def test_global_pruning_of_a_channels_last_model():
    model = _model(skip="add", top_convs=1).to(memory_format=torch.channels_last_3d)
    assert conv_sparsity(global_magnitude_prune(model, 0.5)) == pytest.approx(0.5, abs=1e-3)


LAYOUTS = [
    {},
    {"skip": "add"},
    {"top_convs": 1},
    {"skip": "add", "top_convs": 1, "deep_supervision": True},  # the bundled model's layout
]


def test_pair_pruning_refuses_group_norm_only():
    for layout in LAYOUTS:
        assert pair_prune_refusal(UNetConfig(**layout)) is None
    with pytest.raises(BratsSegError, match="group norm"):
        pair_prune(_model(norm="group"), 0.25)


def _masked(model, plan):
    """The original network with every removed channel forced to zero (normalisation scale and shift 0; for
    an upsampling, its filter 0), the head biases as pruning compensates them."""
    masked = copy.deepcopy(model)

    def drop(block, kept):
        gone = torch.ones(block[1].weight.shape[0], dtype=torch.bool)
        gone[kept] = False
        block[1].weight.data[gone] = 0
        block[1].bias.data[gone] = 0

    for i, groups in enumerate(plan.encoder):
        for j, kept in enumerate(groups):
            drop(masked.encoder[i][j], kept)
    for i, groups in enumerate(plan.decoder):
        for j, kept in enumerate(groups):
            drop(masked.decoder[i].convs[j], kept)
        up = masked.decoder[i].up.weight.data  # (in, out, *k)
        gone = torch.ones(up.shape[1], dtype=torch.bool)
        gone[plan.up[i]] = False
        up[:, gone] = 0
    return masked


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()) or "classic")
def test_pair_pruning_equals_the_original_with_removed_channels_masked(layout, tmp_path):
    model = _model(**layout)
    ratios = [0.5, 0.25, 0.5]
    plan = pair_plan(model, ratios)
    small = pair_prune(model, ratios).eval()
    assert small.config.widths == (4, 12, 16) and small.config.skip == model.config.skip
    assert small.config.top_convs == model.config.top_convs
    if model.config.skip == "add":
        assert all(torch.equal(u, e[-1]) for u, e in zip(plan.up, plan.encoder, strict=False))
    masked = _masked(model, plan)
    masked.head.bias.data.copy_(small.head.bias.data)  # the mean of the removed channels, folded in
    for aux, small_aux in zip(masked.aux_heads, small.aux_heads, strict=True):
        aux.bias.data.copy_(small_aux.bias.data)
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        out = small(x)
        torch.testing.assert_close(out, masked(x), rtol=1e-4, atol=1e-4)
        assert (model(x) - out).abs().max() > 1e-2  # removing the channels did change the network
    shape = (1, 4, 32, 32, 32)
    assert count_parameters(small) < count_parameters(model)
    assert conv_flops(small, shape) < 0.75 * conv_flops(model, shape)
    again, _ = load_model(save_model(tmp_path / "small", small))
    with torch.no_grad():
        assert torch.equal(again.eval()(x), out)


@pytest.mark.parametrize("layout", LAYOUTS[::3])
def test_pair_pruning_at_zero_is_the_same_network(layout):
    model = _model(**{"deep_supervision": True, **layout})
    x = torch.randn(1, 4, 16, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(pair_prune(model, 0.0)(x), model(x))


def test_pair_pruned_model_is_smaller_reloads_and_trains(tmp_path):
    model = _model(deep_supervision=True)
    small = pair_prune(model, [0.5, 0.25, 0.5])
    assert small.config.widths == (4, 12, 16)
    assert count_parameters(small) < count_parameters(model)
    shape = (1, 4, 32, 32, 32)
    assert conv_flops(small, shape) < conv_flops(model, shape)
    x = torch.randn(*shape)
    small.eval()
    with torch.no_grad():
        out = small(x)
    assert out.shape == (1, 3, 32, 32, 32) and torch.isfinite(out).all()
    folder = save_model(tmp_path / "small", small)
    again, card = load_model(folder)
    assert card.architecture.widths == (4, 12, 16)
    with torch.no_grad():
        assert torch.equal(again(x), out)
    small.train()
    outs = small(x)
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in small.parameters())


def test_pair_pruning_keeps_the_important_channels():
    """A skip channel the decoder reads strongly survives even when its encoder filter is small."""
    model = _model()
    enc_conv, enc_norm = model.encoder[0][1][0], model.encoder[0][1][1]
    dec_conv = model.decoder[0].convs[0][0]
    with torch.no_grad():
        enc_norm.weight[:] = 1.0
        dec_conv.weight[:, 8:] *= 0.01
        dec_conv.weight[:, 8 + 3] *= 1000  # skip channel 3 is read strongly by the decoder
        model.encoder[1][0][0].weight[:, 3] *= 0.01
    small = pair_prune(model, 0.75)  # keeps 2 of 8 channels of stage 0
    others = dec_conv.weight[:, [8, 9, 10, 12, 13, 14, 15]].abs().max()
    assert small.decoder[0].convs[0][0].weight[:, 2:].abs().max() > 10 * others  # the strong column survived
    assert enc_conv.weight.shape[0] == 8 and small.encoder[0][1][0].weight.shape[0] == 2


def test_pair_pruning_errors():
    with pytest.raises(BratsSegError):
        pair_prune(_model(), [0.5, 0.5])
    with pytest.raises(BratsSegError):
        pair_prune(_model(), 1.0)


def test_flops_of_a_single_convolution():
    net = torch.nn.Sequential(torch.nn.Conv3d(2, 5, 3, padding=1, bias=False))
    assert conv_flops(net, (1, 2, 4, 4, 4)) == 2 * 5 * 64 * 2 * 27


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    """A tiny 3-D model trained briefly on synthetic cases (enough to segment them roughly)."""
    from bratsseg.data.preprocess import preprocess_dataset
    from bratsseg.engine.config import load_train_config
    from bratsseg.engine.trainer import train

    root = tmp_path_factory.mktemp("compress")
    cache = root / "cache"
    preprocess_dataset(synthetic_root, cache)
    config = load_train_config(
        None,
        [
            "model.widths=[4,8,16]",
            "patch_size=[32,32,32]",
            "epochs=6",
            "steps_per_epoch=10",
            "folds=2",
            "warmup_steps=2",
            "lr=0.01",
            "num_workers=0",
        ],
    )
    train(cache, root / "run", config, device="cpu")
    return cache, root / "run" / "last"


def test_int8_agrees_with_fp32_on_a_synthetic_case(trained, tmp_path):
    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.compress.quantize import int8_operators, quantize_int8
    from bratsseg.data.cache import open_cache
    from bratsseg.inference.loading import load_predictor
    from bratsseg.inference.predictor import binarize
    from bratsseg.metrics.overlap import dice

    cache, model = trained
    cases = open_cache(cache)
    fp32 = export_onnx(model, tmp_path / "m.onnx")
    int8 = quantize_int8(fp32, tmp_path / "m8.onnx", cases[:2])
    ops = int8_operators(int8)
    assert ops["int8"].get("QLinearConv", 0) > 0
    import onnx

    # a whole-case graph: the network in int8, the pooling, upsampling and brain mask around it left in float
    nodes = onnx.load(str(int8)).graph.node
    producers = {out: n.op_type for n in nodes for out in n.output}
    for n in nodes:
        if n.op_type in ("AveragePool", "Resize", "ReduceL1"):
            assert producers.get(n.input[0], "graph input") != "DequantizeLinear", n.op_type
    a, b = load_predictor(fp32, threads=1), load_predictor(int8, threads=1)
    assert a.whole_case and b.whole_case
    assert b.card.architecture == a.card.architecture
    assert [s.method for s in b.card.compression] == ["onnx", "int8"]
    assert b.card.compression[-1].settings["calibration_cases"] == [c.case_id for c in cases[:2]]
    case = cases[-1]
    pa, pb = a.probabilities(case.image), b.probabilities(case.image)
    ma, mb = binarize(pa, a.thresholds), binarize(pb, b.thresholds)
    assert ma[0].sum() > 0  # the model finds tumour at all
    assert dice(ma[0], mb[0]) > 0.95
    assert np.abs(pa - pb).mean() < 0.05


def test_study_writes_one_table(trained, tmp_path):
    from bratsseg.engine.compress_study import StudyConfig, compress_study

    cache, model = trained
    config = StudyConfig(sparsities=(0.5,), ratios=(0.5,), finetune_epochs=1, finetune_steps=2, latency_repeats=1)
    rows = compress_study(model, cache, tmp_path / "study", config)
    names = [r["variant"] for r in rows]
    assert names[0] == "base" and "global-0.5" in names and "pair-0.5" in names and "pair-0.5+ft int8" in names
    by = {r["variant"]: r for r in rows}
    assert by["global-0.5"]["nonzero_parameters"] < 0.6 * by["base"]["parameters"]
    assert by["global-0.5"]["compressed_mb"] < by["base"]["compressed_mb"]
    assert by["pair-0.5"]["parameters"] < by["base"]["parameters"] and by["pair-0.5"]["gflops"] < by["base"]["gflops"]
    assert by["base fp16"]["file_mb"] < 0.6 * by["base"]["file_mb"]
    assert by["base onnx"]["dice_WT"] == pytest.approx(by["base"]["dice_WT"], abs=0.01)
    for f in ("compress.csv", "compress.md", "compress.json", "pareto.png"):
        assert (tmp_path / "study" / f).is_file()
    info = json.loads((tmp_path / "study" / "compress.json").read_text())
    assert "QLinearConv" in info["int8_operators"]["base"]["int8"]


def test_cli_prune_export_quantize(trained, tmp_path, capsys):
    from bratsseg.cli.main import main

    cache, model = trained
    small = tmp_path / "small"
    assert main(["prune", str(model), "-o", str(small), "--ratio", "0.5", "--fp16"]) == 0
    assert "widths [2, 4, 8]" in capsys.readouterr().out
    assert load_model(small)[1].weights_dtype == "float16"
    tuned = tmp_path / "tuned"
    args = ["prune", str(model), "-o", str(tuned), "--ratio", "0.5", "--finetune-epochs", "1", "--finetune-steps", "2"]
    assert main([*args, "--data", str(cache)]) == 0
    tuned_card, source_card = load_model(tuned)[1], load_model(model)[1]
    assert [(s.method, s.settings) for s in tuned_card.compression] == [
        ("pair", {"ratio": [0.5]}),
        ("finetune", {"epochs": 1, "steps_per_epoch": 2, "distill_weight": 0.5}),
    ]
    assert tuned_card.thresholds == source_card.thresholds and tuned_card.training == source_card.training
    assert main(["prune", str(model), "-o", str(tmp_path / "g"), "--sparsity", "0.7"]) == 0
    assert "conv sparsity 70.0%" in capsys.readouterr().out
    assert main(["prune", str(model), "-o", str(tmp_path / "x")]) == 1  # neither --sparsity nor --ratio
    assert main(["export", str(small), "-o", str(tmp_path / "s.onnx")]) == 0
    assert main(["quantize", str(tmp_path / "s.onnx"), "--data", str(cache), "-o", str(tmp_path / "s8.onnx")]) == 0
    assert "runs in int8: " in capsys.readouterr().out
