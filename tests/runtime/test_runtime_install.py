"""The runtime install: `predict`, `info` and `evaluate --pred/--ref` on numpy, nibabel and ONNX Runtime alone.

CI runs this folder a second time in an environment made by ``pip install .`` (no extras) with
``BRATSSEG_RUNTIME_ONLY=1``, where PyTorch, MONAI, SciPy, onnx and matplotlib must not be importable.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bratsseg.cli.main import main
from bratsseg.data.synthetic import make_synthetic_case

pytestmark = pytest.mark.runtime

HEAVY = ("torch", "monai", "scipy", "onnx", "matplotlib")
#: not imported by bratsseg's runtime path even where installed (SciPy is left out: nibabel imports it itself
#: whenever it is installed)
NOT_IMPORTED = ("torch", "monai", "onnx", "matplotlib")
RUNTIME_ONLY = os.environ.get("BRATSSEG_RUNTIME_ONLY") == "1"


def test_the_runtime_environment_lacks_the_heavy_packages():
    if not RUNTIME_ONLY:
        pytest.skip("not the runtime-only environment (CI makes one with `pip install .` and runs this there)")
    assert [m for m in HEAVY if importlib.util.find_spec(m) is not None] == []


SCRIPT = """
import json, sys
from bratsseg.data.info import describe
from bratsseg.engine.evaluate import evaluate_files
from bratsseg.cli.main import main
from bratsseg.engine.predict import predict
raw, out = sys.argv[1], sys.argv[2]
assert main(["predict", raw, "-o", out + "/fast", "--threads", "1"]) == 0  # the command, as a user runs it
fast = predict([raw], out + "/fast", threads=1, overwrite=True)
accurate = predict([raw], out + "/accurate", threads=1, mode="accurate")
summary = evaluate_files(out + "/fast", raw, out + "/eval")
info = describe(raw, check=True)
heavy = sorted(m for m in {heavy!r} if m in sys.modules)
print(json.dumps({{"written": [len(fast.written), len(accurate.written)], "failed": fast.failed + accurate.failed,
                  "dice": summary.dice("WT"), "problems": info["problems"], "heavy": heavy,
                  "lesion": summary.info["lesion_wise"]}}))
"""


def test_predict_evaluate_and_info_import_no_pytorch(tmp_path):
    """Both prediction modes of the bundled model, evaluation of label files and a full ``info --check`` run
    without importing PyTorch, MONAI, onnx or matplotlib, even where they are installed."""
    raw = tmp_path / "raw"
    make_synthetic_case(raw, "Rt_001", "brats2021", size="small", seed=5)
    code = SCRIPT.format(heavy=NOT_IMPORTED)
    done = subprocess.run([sys.executable, "-c", code, str(raw), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["written"] == [1, 1] and result["failed"] == [] and result["problems"] == []
    assert result["heavy"] == []
    assert 0.0 <= result["dice"] <= 1.0
    # the lesion-wise metrics need SciPy (the lesion extra): computed where it is, skipped with the reason if not
    assert result["lesion"]["computed"] == (importlib.util.find_spec("scipy") is not None)
    if not result["lesion"]["computed"]:
        assert "pip install 'bratsseg[lesion]'" in result["lesion"]["reason"]
    for mode in ("fast", "accurate"):
        import nibabel as nib

        labels = np.asarray(nib.load(tmp_path / mode / "Rt_001.nii.gz").dataobj)
        assert set(np.unique(labels)) <= {0, 1, 2, 4}


def test_commands_that_need_the_train_extra_say_so_in_one_line(tmp_path, capsys, monkeypatch):
    import bratsseg.extras

    if not RUNTIME_ONLY:  # where PyTorch is installed, pretend it is not
        monkeypatch.setattr(bratsseg.extras, "missing", lambda *modules: list(modules))
    for argv in (
        ["train", "--data", str(tmp_path), "-o", str(tmp_path / "run")],
        ["export", str(tmp_path), "-o", str(tmp_path / "m.onnx")],
    ):
        assert main(argv) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "pip install 'bratsseg[train]'" in err and argv[0] in err


def test_a_model_folder_without_onnx_needs_the_extra(tmp_path, monkeypatch):
    import bratsseg.extras
    from bratsseg import BratsSegError
    from bratsseg.inference.loading import load_predictor

    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "model.json").write_text(
        (Path(__file__).parents[2] / "src/bratsseg/models/bundled/brats3d/folds/fold0/model.json").read_text()
    )
    if not RUNTIME_ONLY:
        monkeypatch.setattr(bratsseg.extras, "missing", lambda *modules: list(modules))
    with pytest.raises(BratsSegError, match=r"model\.onnx.*bratsseg\[train\]"):
        load_predictor(folder)


def test_the_viewer_and_the_report_run_on_the_runtime_install(tmp_path):
    """`bratsseg view` serves NiiVue from the installed package (package data, no network) and `report` writes its
    page, with neither PyTorch nor matplotlib."""
    import urllib.request

    from bratsseg.viewer.report import write_report
    from bratsseg.viewer.server import build_page, start_server

    case = make_synthetic_case(tmp_path / "raw", "Rt_002", "brats2021", size="tiny", seed=6)
    server, url = start_server(build_page(case.folder, truth=True))
    try:
        with urllib.request.urlopen(url + "niivue.umd.js", timeout=10) as r:
            assert r.status == 200 and len(r.read()) > 1_000_000
    finally:
        server.shutdown()
    import shutil

    out = tmp_path / "results"
    (out / "predictions").mkdir(parents=True)
    shutil.copy(case.seg, out / "predictions" / "Rt_002.nii.gz")
    argv = ["evaluate", "--pred", str(out / "predictions"), "--ref", str(case.folder.parent), "-o", str(out)]
    assert main(argv) == 0
    page = write_report(out).read_text()
    assert "Evaluation" in page and 'href="predictions/Rt_002.nii.gz"' in page
