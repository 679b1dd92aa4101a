"""The benchmark scripts run (on synthetic data, so that they do not rot); their timings are not asserted."""

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_io_bench_runs(synthetic_root):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "io_bench.py"), str(synthetic_root / "Synth_000"), "--repeats", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "raw NIfTI" in proc.stdout and "speed-up" in proc.stdout


@pytest.mark.slow
def test_eval_bench_runs(synthetic_root):
    proc = subprocess.run(
        [sys.executable, str(BENCH / "eval_bench.py"), str(synthetic_root / "Synth_000"), "--repeats", "1"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "sweep: Dice + IoU at 101 thresholds" in proc.stdout
    assert "170 scattered false positives" in proc.stdout and "with numpy alone" in proc.stdout


@pytest.mark.slow
def test_train_bench_runs(synthetic_root, tmp_path):
    from bratsseg.data.preprocess import preprocess_dataset

    preprocess_dataset(synthetic_root, tmp_path / "cache")
    args = [
        "--cache",
        str(tmp_path / "cache"),
        "--patch",
        "32",
        "--steps",
        "1",
        "--loader-steps",
        "2",
        "--threads",
        "1",
    ]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "train_bench.py"), *args], capture_output=True, text=True, check=True
    )
    assert "MONAI SegResNet" in proc.stdout and "data wait" in proc.stdout


@pytest.mark.slow
def test_predict_bench_runs(synthetic_root, model_dir, tmp_path):
    import json

    out = tmp_path / "predict_bench.json"
    args = [str(synthetic_root / "Synth_000"), "--model", str(model_dir), "--repeats", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "predict_bench.py"), *args, "--json", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    for needle in ("ours, PyTorch, end to end", "ours, ONNX Runtime", "SegResNet", "DynUNet", "Peak memory"):
        assert needle in proc.stdout
    rows = {r["row"]: r["seconds"] for r in json.loads(out.read_text())["rows"]}
    assert len(rows) == 4 and all(s > 0 for s in rows.values())


@pytest.mark.slow
def test_compress_bench_runs(synthetic_root, model_dir):
    args = [str(synthetic_root / "Synth_000"), "--model", str(model_dir), "--repeats", "1", "--threads", "1"]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "compress_bench.py"), *args], capture_output=True, text=True, check=True
    )
    for needle in ("untrimmed", "int8", "pair 50%", "global magnitude"):
        assert needle in proc.stdout


@pytest.mark.slow
def test_cascade_bench_runs(synthetic_root, tmp_path):
    import json

    import torch

    from bratsseg.data.preprocess import preprocess_dataset
    from bratsseg.engine.cascade import attach_refinement
    from bratsseg.models.card import InferenceSettings, ModelCard
    from bratsseg.models.files import save_model
    from bratsseg.models.unet import UNet, UNetConfig

    torch.manual_seed(0)
    first = UNetConfig(widths=(4, 8, 16))
    second = UNetConfig(widths=(4, 8), in_channels=7, prior_channels=3)
    save_model(
        tmp_path / "first", UNet(first), ModelCard(architecture=first, inference=InferenceSettings(downsample=2))
    )
    save_model(tmp_path / "second", UNet(second), ModelCard(architecture=second))
    attach_refinement(tmp_path / "first", tmp_path / "second", tmp_path / "cascade")
    assert preprocess_dataset(synthetic_root, tmp_path / "cache").ok
    args = ["--cascade", str(tmp_path / "cascade"), "--cache", str(tmp_path / "cache"), "--repeats", "1"]
    args += ["--json", str(tmp_path / "cascade.json")]
    proc = subprocess.run(
        [sys.executable, str(BENCH / "cascade_bench.py"), *args], capture_output=True, text=True, check=True
    )
    assert "the refinement" in proc.stdout
    rows = json.loads((tmp_path / "cascade.json").read_text())["cases"]
    assert len(rows) == 4 and all(r["first_s"] > 0 and 0 <= r["box_share"] <= 1 for r in rows)
