import numpy as np
import pytest
import torch

from bratsseg import BratsSegError
from bratsseg.cli.main import main
from bratsseg.compress.onnx_export import export_onnx, onnx_parity
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.onnx_predictor import OnnxPredictor
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.models import UNet, UNetConfig
from bratsseg.models.card import InferenceSettings, ModelCard, read_card
from bratsseg.models.files import save_model
from bratsseg.models.onnx_format import read_onnx_card


@pytest.mark.parametrize("layout", [{}, {"skip": "add", "top_convs": 1}])
@pytest.mark.parametrize(("dims", "shapes"), [(3, [(1, 4, 19, 22, 13), (2, 4, 32, 16, 24)]), (2, [(3, 4, 27, 45)])])
def test_onnx_parity_with_pytorch(tmp_path, dims, shapes, layout):
    torch.manual_seed(0)
    model = UNet(UNetConfig(spatial_dims=dims, widths=(4, 8, 16, 32), **layout)).eval()
    card = ModelCard(architecture=model.config, thresholds={"WT": 0.3, "TC": 0.4, "ET": 0.5})
    path = export_onnx(model, tmp_path / "m.onnx", card)
    assert onnx_parity(model, path, shapes) < 1e-4
    inside = read_onnx_card(path)
    assert inside.architecture == model.config and inside.thresholds["WT"] == 0.3
    graph = "whole-case" if dims == 3 else "network"  # a 3-D model that runs in one pass: the whole inference
    assert inside == card.with_step("onnx", weights_dtype="float32", opset=17, graph=graph)
    assert OnnxPredictor(path).whole_case == (dims == 3)


@pytest.mark.parametrize(
    ("downsample", "whole_case", "mirror"), [(2, True, ()), (1, True, ()), (2, False, ()), (2, True, (0, 2))]
)
def test_onnx_predictor_matches_torch_predictor(tmp_path, downsample, whole_case, mirror):
    """The whole-case graph (pooling, padding, network, upsampling, sigmoid, brain mask all in ONNX) and the
    network graph with numpy around it give the PyTorch path's probabilities, mirrored or not, at odd sizes."""
    torch.manual_seed(1)
    card = ModelCard(inference=InferenceSettings(downsample=downsample, mirror_axes=mirror))
    folder = save_model(tmp_path / "m", UNet(UNetConfig(widths=(4, 8, 16))), card)
    onnx_path = export_onnx(folder, tmp_path / "m.onnx", whole_case=whole_case)
    image = np.random.default_rng(0).normal(size=(4, 21, 18, 11)).astype(np.float16)
    image[:, :3] = 0  # some background
    a = TorchPredictor.from_dir(folder).probabilities(image)
    predictor = load_predictor(onnx_path, threads=1)
    assert isinstance(predictor, OnnxPredictor) and predictor.whole_case == whole_case
    b = predictor.probabilities(image)
    assert b.shape == a.shape == (3, 21, 18, 11) and b.dtype == np.float32
    assert np.abs(a - b).max() < 1e-5 and not b[:, :3].any()


def test_two_d_and_windowed_models_run_on_the_network_graph(tmp_path):
    torch.manual_seed(2)
    image = np.random.default_rng(1).normal(size=(4, 20, 17, 9)).astype(np.float32)
    two_d = save_model(tmp_path / "2d", UNet(UNetConfig(spatial_dims=2, widths=(4, 8, 16))))
    windowed_card = ModelCard(inference=InferenceSettings(roi_size=(8, 8, 8), downsample=1))
    windowed = save_model(tmp_path / "win", UNet(UNetConfig(widths=(4, 8, 16))), windowed_card)
    for folder in (two_d, windowed):
        path = export_onnx(folder, tmp_path / f"{folder.name}.onnx")
        onnx_predictor = OnnxPredictor(path)
        assert not onnx_predictor.whole_case
        a = TorchPredictor.from_dir(folder).probabilities(image)
        assert np.abs(onnx_predictor.probabilities(image) - a).max() < 1e-5
    with pytest.raises(BratsSegError, match="one pass"):
        export_onnx(windowed, tmp_path / "w2.onnx", whole_case=True)


def test_export_command_and_bad_files(tmp_path, capsys):
    folder = save_model(tmp_path / "m", UNet(UNetConfig(widths=(4, 8, 16))))
    assert main(["export", str(folder), "-o", str(tmp_path / "m.onnx")]) == 0
    printed = capsys.readouterr().out
    diff = float(printed.rsplit("= ", 1)[1])  # the measured max |ONNX - PyTorch|, printed
    assert 0 <= diff < 1e-4
    assert read_onnx_card(tmp_path / "m.onnx").replace(compression=()) == read_card(folder)
    # a tolerance the export cannot meet fails, naming the file
    assert main(["export", str(folder), "-o", str(tmp_path / "m2.onnx"), "--tolerance", "-1"]) == 1
    assert "m2.onnx" in capsys.readouterr().err
    (tmp_path / "bad.onnx").write_bytes(b"not onnx")
    with pytest.raises(BratsSegError, match=r"bad\.onnx"):
        OnnxPredictor(tmp_path / "bad.onnx")


def test_fp16_onnx_is_half_the_file_and_computes_in_float32(tmp_path):
    import torch

    from bratsseg.compress.onnx_export import export_onnx, onnx_parity
    from bratsseg.models.files import save_model
    from bratsseg.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    model = UNet(UNetConfig(widths=(8, 16, 32))).eval()
    folder = save_model(tmp_path / "m", model)
    full = export_onnx(folder, tmp_path / "m32.onnx")
    half = export_onnx(folder, tmp_path / "m16.onnx", weights_dtype="float16")
    assert half.stat().st_size < 0.6 * full.stat().st_size
    assert onnx_parity(model, half, [(1, 4, 20, 24, 16)]) < 0.05  # fp16 rounding of the weights only
    import onnx

    assert onnx.load(str(half)).graph.node[0].op_type == "Cast"


@pytest.fixture
def folder_with_onnx(model_dir, tmp_path):
    import shutil

    from bratsseg.compress.onnx_export import export_model_folder

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    export_model_folder(folder, weights_dtype="float32")
    return folder


def test_model_json_and_model_onnx_are_one_source_of_truth(folder_with_onnx, case_dir, tmp_path, capsys):
    """An edited, missing, corrupt or future-version model.json beside model.onnx is refused in one line; a card
    written by bratsseg (sweep --apply) reaches both backends."""
    import json

    from bratsseg.cli.main import main
    from bratsseg.inference.loading import load_predictor
    from bratsseg.models.card import read_card, write_card
    from bratsseg.models.onnx_format import read_onnx_card

    folder = folder_with_onnx
    card_file = folder / "model.json"
    original = card_file.read_text()
    args = ["predict", str(case_dir), "-o", str(tmp_path / "out"), "--model", str(folder), "--overwrite"]
    assert main(args) == 0
    capsys.readouterr()

    edited = json.loads(original)
    edited["thresholds"] = {"WT": 0.2, "TC": 0.2, "ET": 0.2}
    bad_cards = {
        "disagree on thresholds": json.dumps(edited),
        "not valid JSON": "{",
        "newer than this bratsseg reads": json.dumps({**json.loads(original), "format_version": 99}),
        "no architecture": json.dumps({k: v for k, v in json.loads(original).items() if k != "architecture"}),
    }
    for message, text in bad_cards.items():
        card_file.write_text(text)
        assert main(args) == 1, message
        err = capsys.readouterr().err.strip()
        assert message in err and len(err.splitlines()) == 1, err
    card_file.unlink()
    assert main(args) == 1 and "no model.json" in capsys.readouterr().err
    card_file.write_text(original)

    # what bratsseg writes, both backends read: the thresholds of sweep --apply reach the ONNX path
    card = read_card(folder)
    write_card(folder, card.replace(thresholds={"WT": 0.3, "TC": 0.35, "ET": 0.4}))
    assert read_onnx_card(folder / "model.onnx").thresholds == {"WT": 0.3, "TC": 0.35, "ET": 0.4}
    on_ort = load_predictor(folder)
    assert on_ort.backend == "onnxruntime" and on_ort.thresholds == {"WT": 0.3, "TC": 0.35, "ET": 0.4}
    assert load_predictor(folder, backend="torch").thresholds == on_ort.thresholds


def test_weights_that_do_not_fit_the_card_are_one_line(model_dir, tmp_path, capsys):
    import json
    import shutil

    from bratsseg.cli.main import main

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    card = json.loads((folder / "model.json").read_text())
    card["architecture"]["widths"] = [8, 16, 32]
    (folder / "model.json").write_text(json.dumps(card))
    case = tmp_path / "case"
    from bratsseg.data.synthetic import make_synthetic_case

    make_synthetic_case(case, "Fit_001", "brats2021", size="tiny", seed=1)
    assert main(["predict", str(case), "-o", str(tmp_path / "o"), "--model", str(folder)]) == 1
    err = capsys.readouterr().err.strip()
    assert "weights do not fit the architecture" in err and len(err.splitlines()) == 1
