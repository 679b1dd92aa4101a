"""BraTS 2023+ lesion-wise metrics: hand-computed cases, the challenge's edge cases, the evaluate/compare wiring,
and agreement with the official evaluator where it is installed."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("scipy", reason="the lesion-wise metrics need SciPy (bratsseg[lesion])")

from bratsseg.cli.main import main
from bratsseg.engine.evaluate import evaluate_files
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import discover_cases
from bratsseg.metrics.lesion import PENALTY_HD95, PRESETS, LesionRules, lesion_scores
from bratsseg.metrics.tables import read_per_case

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (48, 48, 48)


def cube(corner: tuple[int, int, int], size: int, shape: tuple[int, int, int] = SHAPE) -> np.ndarray:
    m = np.zeros(shape, dtype=bool)
    x, y, z = corner
    m[x : x + size, y : y + size, z : z + size] = True
    return m


def score(pred: np.ndarray, truth: np.ndarray, spacing=(1.0, 1.0, 1.0), rules="BraTS-GLI"):
    return lesion_scores(pred, truth, spacing, rules)


def test_two_lesions_one_missed():
    big, small = cube((4, 4, 4), 10), cube((30, 30, 30), 6)  # 1000 and 216 mm^3, far apart
    s = score(big, big | small)
    assert (s.tp, s.fp, s.fn) == (1, 0, 1)
    assert s.dice == pytest.approx((1.0 + 0.0) / 2)
    assert s.hd95 == pytest.approx((0.0 + PENALTY_HD95) / 2)
    assert [les.volume_mm3 for les in s.lesions] == [1000.0, 216.0]


def test_spurious_lesion_counts_against_the_case():
    lesion, spurious = cube((4, 4, 4), 10), cube((30, 30, 30), 4)
    s = score(lesion | spurious, lesion)
    assert (s.tp, s.fp, s.fn) == (1, 1, 0)
    assert s.dice == pytest.approx(0.5) and s.hd95 == pytest.approx(PENALTY_HD95 / 2)


def test_partial_overlap_dice_is_the_lesions_own():
    truth, pred = cube((4, 4, 4), 10), cube((6, 4, 4), 10)  # shifted by 2 along x: overlap 8 x 10 x 10
    s = score(pred, truth)
    assert s.dice == pytest.approx(2 * 800 / 2000) and (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.hd95 == pytest.approx(2.0)


def test_empty_cases():
    empty, lesion = np.zeros(SHAPE, dtype=bool), cube((4, 4, 4), 10)
    both = score(empty, empty)
    assert (both.dice, both.hd95, both.tp, both.fp, both.fn) == (1.0, 0.0, 0, 0, 0)
    spurious = score(lesion | cube((30, 30, 30), 5), empty)  # empty truth: every component is a false positive
    assert (spurious.dice, spurious.hd95, spurious.fp) == (0.0, PENALTY_HD95, 2)
    missed = score(empty, lesion)
    assert (missed.dice, missed.hd95, missed.fn, missed.tp) == (0.0, PENALTY_HD95, 1, 0)


def test_reference_lesions_closer_than_the_dilation_are_one_lesion():
    a = cube((4, 4, 4), 8)
    near = cube((15, 4, 4), 8)  # a gap of 3 voxels: the dilations (3 each) touch
    far = cube((30, 4, 4), 8)  # a gap of 7 voxels
    assert len(score(a | near, a | near).lesions) == 1
    assert len(score(a | far, a | far).lesions) == 2
    # but the prediction's components are never merged: one lesion met by two components
    s = score(a | near, a | near)
    assert (s.tp, s.fp, s.fn, s.dice) == (1, 0, 0, 1.0)
    assert len(s.lesions[0].matched) == 2
    assert len(score(a | near, a | near, rules=LesionRules("no-dilation", 0, 50)).lesions) == 2


def test_components_are_26_connected():
    diagonal = cube((4, 4, 4), 6) | cube((10, 10, 10), 6)  # touching at one corner only
    s = score(diagonal, diagonal, rules=LesionRules("no-dilation", 0, 50))
    assert len(s.lesions) == 1 and s.n_predicted == 1


def test_small_reference_lesions_are_not_scored_nor_their_matches_false_positives():
    big, tiny = cube((4, 4, 4), 10), cube((30, 30, 30), 3)  # 27 voxels
    s = score(big | tiny, big | tiny)  # 27 mm^3 <= 50: left out
    assert (s.tp, s.fp, s.fn, s.dice, s.hd95) == (1, 0, 0, 1.0, 0.0)
    assert not s.lesions[1].scored
    missed = score(big, big | tiny)  # missing it costs nothing either
    assert (missed.tp, missed.fn, missed.dice) == (1, 0, 1.0)
    coarse = score(big, big | tiny, spacing=(2.0, 2.0, 2.0))  # 27 voxels of 8 mm^3 = 216 mm^3: scored
    assert (coarse.tp, coarse.fn, coarse.dice) == (1, 1, 0.5)
    met = lesion_scores(big, big | tiny, (1, 1, 1), PRESETS["BraTS-MET"])  # metastases: 2 mm^3 minimum
    assert (met.tp, met.fn) == (1, 1)


def test_a_nearby_component_matches_through_the_dilation():
    truth, pred = cube((4, 4, 4), 8), cube((14, 4, 4), 6)  # a 2-voxel gap: no overlap, within 3 dilations
    s = score(pred, truth)
    assert (s.tp, s.fp, s.fn) == (1, 0, 0) and s.dice == 0.0 and 0 < s.hd95 < PENALTY_HD95
    far = score(cube((20, 4, 4), 6), truth)  # an 8-voxel gap: a miss and a false positive
    assert (far.tp, far.fp, far.fn) == (0, 1, 1) and far.hd95 == PENALTY_HD95


def test_one_component_may_match_two_lesions():
    a, b = cube((4, 4, 4), 8), cube((30, 4, 4), 8)
    bridge = a | b
    bridge[11:31, 6:8, 6:8] = True  # the prediction joins them
    s = score(bridge, a | b)
    assert (s.tp, s.fp, s.fn) == (2, 0, 0) and s.n_predicted == 1
    assert all(les.matched == [1] for les in s.lesions)


def test_a_crop_scores_as_the_whole_grid():
    a, b = cube((1, 1, 1), 6), cube((9, 1, 1), 6)  # lesions at the array's face, 2 voxels apart
    pred = a | cube((20, 20, 20), 3)
    whole, bigger = score(pred, a | b), score(np.pad(pred, 10), np.pad(a | b, 10))
    assert (whole.dice, whole.hd95, whole.tp, whole.fp, whole.fn) == (
        bigger.dice,
        bigger.hd95,
        bigger.tp,
        bigger.fp,
        bigger.fn,
    )


def test_bad_input_is_refused():
    with pytest.raises(BratsSegError, match="3-D masks"):
        lesion_scores(np.zeros((4, 4)), np.zeros((4, 4)), (1, 1, 1))
    with pytest.raises(BratsSegError, match="unknown lesion rules"):
        lesion_scores(np.zeros(SHAPE), np.zeros(SHAPE), (1, 1, 1), "BraTS-XYZ")


def _write_predictions(cases, out: Path, change=None) -> None:
    import nibabel as nib

    out.mkdir(parents=True, exist_ok=True)
    for case in cases:
        img = nib.load(case.seg)
        data = np.asarray(img.dataobj)
        data = change(data) if change else data
        nib.save(nib.Nifti1Image(data.astype(np.uint8), img.affine, img.header), out / f"{case.case_id}.nii.gz")


def test_evaluate_writes_lesion_columns_and_compare_shows_them(synthetic_root, tmp_path, capsys):
    cases = [c for c in discover_cases(synthetic_root).cases if c.naming.name == "brats2021"][:2]
    _write_predictions(cases, tmp_path / "pred")
    s = evaluate_files(tmp_path / "pred", synthetic_root, tmp_path / "ev")
    assert s.info["lesion_wise"]["computed"] and s.info["lesion_wise"]["name"] == "BraTS-GLI"
    assert s.info["lesion_wise"]["dilation"] == 3 and s.info["lesion_wise"]["min_volume_mm3"] == 50
    rows = [r for r in read_per_case(tmp_path / "ev" / "per_case.csv") if r["case_id"] in {c.case_id for c in cases}]
    assert rows and all(r["lesion_dice"] == 1.0 and r["lesion_fp"] == 0 and r["lesion_fn"] == 0 for r in rows)
    assert s.metrics["WT"]["lesion_dice"]["mean"] == 1.0 and s.mean_lesion_dice == 1.0

    # a spurious blob far from the tumour: whole-region Dice barely moves, lesion-wise Dice halves
    def add_blob(d):
        d = d.copy()
        d[2:6, 2:6, 2:6] = 2
        return d

    _write_predictions(cases, tmp_path / "blob", add_blob)
    assert (
        main(
            [
                "evaluate",
                "--pred",
                str(tmp_path / "blob"),
                "--ref",
                str(synthetic_root),
                "-o",
                str(tmp_path / "ev_blob"),
            ]
        )
        == 1
    )  # the third case has no prediction: a problem
    out = capsys.readouterr().out
    assert "LW Dice" in out and "lesion-wise" in out
    blob = json.loads((tmp_path / "ev_blob" / "summary.json").read_text())
    assert blob["metrics"]["WT"]["lesion_dice"]["mean"] == pytest.approx(0.5)
    assert blob["metrics"]["WT"]["lesion_fp"]["mean"] == 1.0
    assert blob["metrics"]["WT"]["dice"]["mean"] > 0.9
    assert main(["evaluate", "--pred", str(tmp_path / "blob"), "--ref", str(synthetic_root), "-o",
                 str(tmp_path / "ev_off"), "--no-lesion"]) == 1  # fmt: skip
    off = json.loads((tmp_path / "ev_off" / "summary.json").read_text())
    assert not off["lesion_wise"]["computed"] and "lesion_dice" not in off["metrics"]["WT"]
    assert np.isnan(read_per_case(tmp_path / "ev_off" / "per_case.csv")[0]["lesion_dice"])
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "ev_blob"), str(tmp_path / "ev_off")]) == 0
    table = capsys.readouterr().out.splitlines()
    assert "LW Dice WT" in table[0] and "0.500" in table[1] and " - " in table[2]


def _official() -> tuple[str, str]:
    python, repo = os.environ.get("BRATS_OFFICIAL_PYTHON"), os.environ.get("BRATS_OFFICIAL_REPO")
    if not python or not repo:
        pytest.skip(
            "the official BraTS evaluator is not installed: set BRATS_OFFICIAL_PYTHON (an environment with its "
            "requirements) and BRATS_OFFICIAL_REPO (a checkout of github.com/rachitsaluja/BraTS-2023-Metrics); "
            "see scripts/lesion_vs_official.py"
        )
    return python, repo


def test_agrees_with_the_official_evaluator(real_brats, tmp_path):
    python, repo = _official()
    spec = importlib.util.spec_from_file_location("lesion_vs_official", ROOT / "scripts" / "lesion_vs_official.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    cases = discover_cases(real_brats).cases[:4]

    def damage(d):  # satellites, a spurious blob and a missed piece, so that every rule is exercised
        d = d.copy()
        d[20:24, 20:24, 20:24] = 2
        idx = np.argwhere(d > 0)
        x, y, z = idx[len(idx) // 2]
        d[x - 6 : x + 6, y - 6 : y + 6, z - 1 : z + 1] = 0
        return d

    _write_predictions(cases, tmp_path / "pred", damage)
    result = module.compare(tmp_path / "pred", real_brats, python, repo, limit=4)
    diff = result["max_abs_difference"]
    assert diff["lesion_dice"] < 1e-9 and diff["lesion_tp"] == diff["lesion_fp"] == diff["lesion_fn"] == 0
    assert diff["lesion_hd95"] < 1.0  # per lesion: voxel surfaces (MONAI) vs surfel-weighted (DeepMind)
