import json
import shutil

import nibabel as nib
import numpy as np
import pytest

from bratsseg.cli.main import main
from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.engine.config import load_train_config
from bratsseg.engine.evaluate import evaluate_files, evaluate_model, sweep_model
from bratsseg.engine.trainer import train
from bratsseg.io.discovery import discover_cases
from bratsseg.metrics.overlap import BRATS_MAX_HD95
from bratsseg.metrics.tables import read_per_case
from bratsseg.models.card import read_card


@pytest.fixture(scope="module")
def trained(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp("evalrun")
    cache = root / "cache"
    preprocess_dataset(synthetic_root, cache)
    cfg = load_train_config(
        None,
        ["model.widths=[4,8,16]", "patch_size=[16,16,16]", "epochs=1", "steps_per_epoch=4", "folds=2", "num_workers=0"],
    )
    train(cache, root / "run", cfg)
    return cache, root / "run" / "best"


def test_evaluate_model_writes_results(trained, tmp_path):
    cache, model = trained
    summary = evaluate_model(model, cache, tmp_path / "ev", split="all")
    assert summary.policy == "brats" and summary.n_cases == 4
    rows = read_per_case(tmp_path / "ev" / "per_case.csv")
    assert len(rows) == 12 and {r["region"] for r in rows} == {"WT", "TC", "ET"}
    for r in rows:  # counts and metrics agree
        denom = 2 * r["tp"] + r["fp"] + r["fn"]
        assert r["dice"] == pytest.approx(2 * r["tp"] / denom if denom else 1.0, abs=1e-5)
    saved = json.loads((tmp_path / "ev" / "summary.json").read_text())
    whole_region = {"dice", "iou", "hd95", "sensitivity", "specificity"}
    lesion_wise = {"lesion_dice", "lesion_hd95", "lesion_tp", "lesion_fp", "lesion_fn"}
    assert set(saved["metrics"]["ET"]) == whole_region | lesion_wise and saved["lesion_wise"]["computed"]
    for r in rows:  # the lesion-wise metrics are on the case's original grid, like the others
        assert 0.0 <= r["lesion_dice"] <= 1.0 and r["lesion_tp"] + r["lesion_fn"] >= 0
    assert saved["thresholds"] == {"WT": 0.5, "TC": 0.5, "ET": 0.5} and "policy_description" in saved
    val = evaluate_model(model, cache, tmp_path / "val", split="val")
    assert val.n_cases == 2


def test_sweep_and_apply(trained, tmp_path):
    cache, model = trained
    copy = tmp_path / "model"
    shutil.copytree(model, copy)
    result = sweep_model(copy, cache, tmp_path / "sw", split="all", apply="per-region")
    assert len(result.thresholds) == 101 and (tmp_path / "sw" / "sweep.csv").read_text().count("\n") == 102
    card = read_card(copy)
    assert card.thresholds == result.best_per_region.thresholds
    assert card.threshold_source["chosen_by"].startswith("bratsseg sweep (per-region")
    # evaluate now uses the stored thresholds, and reproduces the sweep's IoU at them
    ev = evaluate_model(copy, cache, tmp_path / "ev", split="all")
    for region, t in card.thresholds.items():
        k = round(t * 100)
        assert ev.metrics[region]["iou"]["mean"] == pytest.approx(result.mean_iou[region][k], abs=1e-9)


def test_cli_evaluate_sweep_plot(trained, tmp_path, capsys):
    cache, model = trained
    assert (
        main(
            [
                "evaluate",
                "--model",
                str(model),
                "--data",
                str(cache),
                "--split",
                "all",
                "-o",
                str(tmp_path / "e"),
                "--save-probabilities",
            ]
        )
        == 0
    )
    assert "HD95" in capsys.readouterr().out
    assert (
        main(["sweep", "--model", str(model), "--data", str(cache), "--split", "all", "-o", str(tmp_path / "s")]) == 0
    )
    assert "best global threshold" in capsys.readouterr().out
    run = model.parent
    case = sorted(p for p in cache.iterdir() if p.is_dir())[0]
    prob = tmp_path / "e" / "probabilities" / f"{case.name}.npy"
    for args in (
        ["sweep", str(tmp_path / "s"), str(tmp_path / "s"), "-o", str(tmp_path / "f" / "sweep.png")],
        ["boxplot", str(tmp_path / "e"), "-o", str(tmp_path / "f" / "box.png")],
        ["training", str(run), "-o", str(tmp_path / "f" / "train.png")],
        ["case", str(case), str(prob), "-o", str(tmp_path / "f" / "case.png")],
    ):
        assert main(["plot", *args]) == 0
    for name in ("sweep", "box", "train", "case"):
        data = (tmp_path / "f" / f"{name}.png").read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_cli_evaluate_needs_inputs(tmp_path, capsys):
    assert main(["evaluate", "-o", str(tmp_path)]) == 1
    assert "--model and --data" in capsys.readouterr().err


def _copy_segs_as_predictions(cases, out, transform=None):
    out.mkdir()
    for case in cases:
        img = nib.load(case.seg)
        data = np.asarray(img.dataobj)
        if transform is not None:
            data = transform(data)
        nib.save(nib.Nifti1Image(data.astype(np.uint8), img.affine, img.header), out / f"{case.case_id}.nii.gz")


@pytest.mark.slow
def test_evaluate_files_on_real_cases(real_brats, tmp_path):
    cases = discover_cases(real_brats).cases
    _copy_segs_as_predictions(cases, tmp_path / "truth")
    s = evaluate_files(tmp_path / "truth", real_brats, tmp_path / "ev")
    assert s.n_cases == len(json.loads((real_brats / "MANIFEST.json").read_text())) and not s.problems
    for region in ("WT", "TC", "ET"):
        assert s.metrics[region]["dice"]["mean"] == 1.0 and s.metrics[region]["hd95"]["mean"] == 0.0
        assert s.metrics[region]["lesion_dice"]["mean"] == 1.0 and s.metrics[region]["lesion_hd95"]["mean"] == 0
        assert s.metrics[region]["lesion_fp"]["mean"] == 0 and s.metrics[region]["lesion_fn"]["mean"] == 0
    # enhancing tumour relabelled as necrosis: ET is missed entirely, WT and TC are untouched
    _copy_segs_as_predictions(cases, tmp_path / "no_et", lambda d: np.where(d == 4, 1, d))
    s = evaluate_files(tmp_path / "no_et", real_brats, tmp_path / "ev2")
    assert s.metrics["WT"]["dice"]["mean"] == 1.0 and s.metrics["TC"]["dice"]["mean"] == 1.0
    assert s.metrics["ET"]["dice"]["mean"] == 0.0 and s.metrics["ET"]["hd95"]["mean"] == pytest.approx(BRATS_MAX_HD95)
    assert s.metrics["ET"]["sensitivity"]["mean"] == 0.0
    for row in read_per_case(tmp_path / "ev2" / "per_case.csv"):  # every scored ET lesion missed, none spurious
        if row["region"] == "ET":
            assert row["lesion_tp"] == 0 and row["lesion_fp"] == 0 and row["lesion_fn"] >= 1
            assert row["lesion_dice"] == 0.0 and row["lesion_hd95"] == 374.0


def test_evaluate_files_reports_missing_and_bad_predictions(synthetic_root, tmp_path):
    cases = [c for c in discover_cases(synthetic_root).cases if c.naming.name == "brats2021"]
    _copy_segs_as_predictions(cases[:2], tmp_path / "pred")
    (tmp_path / "pred" / f"{cases[1].case_id}.nii.gz").write_bytes(b"broken")
    s = evaluate_files(tmp_path / "pred", synthetic_root, tmp_path / "ev")
    assert s.n_cases == 1
    text = " | ".join(s.problems)
    assert cases[1].case_id in text and cases[2].case_id in text and "no prediction" in text


@pytest.mark.slow
def test_torchrun_evaluate_splits_cases(trained, tmp_path):
    import os
    import subprocess
    import sys

    cache, model = trained
    one = tmp_path / "one"
    assert main(["evaluate", "--model", str(model), "--data", str(cache), "--split", "all", "-o", str(one)]) == 0
    two = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "bratsseg"]
    cmd += ["evaluate", "--model", str(model), "--data", str(cache), "--split", "all", "-o", str(two)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = read_per_case(one / "per_case.csv"), read_per_case(two / "per_case.csv")
    assert [(r["case_id"], r["region"]) for r in a] == [(r["case_id"], r["region"]) for r in b]  # each case once
    assert [r["tp"] for r in a] == [r["tp"] for r in b]
    assert proc.stdout.count("case(s), empty-mask policy") == 1  # printed by rank 0 only


def test_compare_paired_gives_each_result_minus_the_first_case_by_case(tmp_path, capsys):
    """`bratsseg compare A B --paired`: B's Dice minus A's per region with a bootstrap interval, over the same
    cases; results of other cases are refused, naming the file."""
    import math
    import re

    from bratsseg.cli.main import main
    from bratsseg.labels import REGIONS
    from bratsseg.metrics.tables import COLUMNS, write_results

    def results(name, dice, cases=("c1", "c2", "c3", "c4")):
        rows = []
        for c, d in zip(cases, dice, strict=True):
            for g in REGIONS:
                row = dict.fromkeys(COLUMNS, math.nan)
                row.update(case_id=c, region=g, threshold=0.5, tp=1, fp=0, fn=0, tn=1, dice=d, iou=d, hd95=1.0)
                rows.append(row)
        write_results(tmp_path / name, rows, {"policy": "brats"})
        return str(tmp_path / name)

    a = results("a", [0.5, 0.6, 0.7, 0.8])
    b = results("b", [0.6, 0.7, 0.8, 0.9])  # 0.1 better on every case
    assert main(["compare", a, b, "--paired"]) == 0
    out = capsys.readouterr().out
    assert "Dice minus a" in out and "b: WT +0.100 [+0.100, +0.100] 4/0" in out
    other = results("other", [0.5, 0.6, 0.7, 0.8], cases=("c1", "c2", "c3", "x9"))
    assert main(["compare", a, other, "--paired"]) != 0  # a one-line error naming the file
    assert re.search(r"other/per_case.csv: not the baseline's cases \(differing: c4, x9\)", capsys.readouterr().err)
    assert main(["compare", a, "--paired"]) != 0
    assert "two or more" in capsys.readouterr().err
    # two results folders of the same name (fold2 of two runs) are told apart by their paths
    (tmp_path / "run1").mkdir()
    (tmp_path / "run2").mkdir()
    (tmp_path / "a").rename(tmp_path / "run1" / "fold2")
    (tmp_path / "b").rename(tmp_path / "run2" / "fold2")
    assert main(["compare", str(tmp_path / "run1" / "fold2"), str(tmp_path / "run2" / "fold2"), "--paired"]) == 0
    out = capsys.readouterr().out
    assert out.count("run1/fold2") == 2 and out.count("run2/fold2") == 2  # one table row each, and the paired line
    assert main(["compare", str(tmp_path / "run1" / "fold2"), str(tmp_path / "run1" / "fold2")]) != 0
    assert "given twice" in capsys.readouterr().err
