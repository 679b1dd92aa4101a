"""Inputs at another voxel spacing than the model's are resampled to it for the network and back for the labels."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bratsseg.engine.predict import predict
from bratsseg.io.discovery import find_case
from bratsseg.labels import labels_to_regions
from bratsseg.metrics.overlap import dice
from bratsseg.models.card import read_card, write_card

GOLDEN = Path(__file__).parent / "golden"


def resample_case(case_dir, out_dir, factors):
    """Every file of a case zoomed by ``factors`` (images linear, labels nearest), pixel edges aligned, with the
    affine of the new grid: what a scanner export at another resolution looks like."""
    out_dir.mkdir(parents=True)
    for path in sorted(case_dir.iterdir()):
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        is_seg = "seg" in path.name
        new = ndimage.zoom(
            data.astype(np.float32), factors, order=0 if is_seg else 1, grid_mode=True, mode="grid-constant"
        )
        scale = np.diag([*(1 / np.asarray(factors)), 1.0])
        shift = np.eye(4)
        shift[:3, 3] = (1 / np.asarray(factors) - 1) / 2  # voxel centres of the new grid in old voxel units
        affine = img.affine @ shift @ scale
        out = nib.Nifti1Image(new.astype(np.uint8 if is_seg else np.float32), affine)
        out.set_qform(affine, 1)
        out.set_sform(affine, 1)
        nib.save(out, out_dir / path.name)
    return out_dir


def _regions(path, convention):
    return labels_to_regions(np.asarray(nib.load(path).dataobj), convention)


def _dice3(a, b):
    return [dice(a[r], b[r]) for r in range(3)]


def test_card_spacing_makes_a_coarser_input_agree_with_the_native_prediction(golden_case, tmp_path):
    """The golden model (trained on 3.5 x 3.5 x 4.5 mm synthetic cases) on its case with slices twice as thick."""
    model = tmp_path / "model"
    shutil.copytree(GOLDEN / "model", model)
    card = read_card(model)
    native_spacing = tuple(float(z) for z in nib.load(next((golden_case).iterdir())).header.get_zooms()[:3])
    assert card.preprocessing.spacing is None  # trained before the card recorded it
    coarse_dir = resample_case(golden_case, tmp_path / "coarse" / "case", (1.0, 1.0, 0.5))
    native = predict([golden_case], tmp_path / "native", model).written[0]
    blind = predict([coarse_dir], tmp_path / "blind", model).written[0]
    write_card(model, card.replace(preprocessing=dataclasses.replace(card.preprocessing, spacing=native_spacing)))
    aware = predict([coarse_dir], tmp_path / "aware", model).written[0]
    convention = find_case(coarse_dir).convention
    # the native prediction brought to the coarse grid the same way the truth would be
    reference = ndimage.zoom(
        np.asarray(nib.load(native).dataobj), (1.0, 1.0, 0.5), order=0, grid_mode=True, mode="grid-constant"
    )
    ref = labels_to_regions(reference, convention)
    got_aware, got_blind = _regions(aware, convention), _regions(blind, convention)
    assert nib.load(aware).shape == nib.load(coarse_dir / f"{golden_case.name}_flair.nii.gz").shape
    aware_dice, blind_dice = _dice3(got_aware, ref), _dice3(got_blind, ref)
    assert min(aware_dice) > 0.8, aware_dice
    assert np.mean(aware_dice) > np.mean(blind_dice), (aware_dice, blind_dice)


@pytest.mark.slow
@pytest.mark.realdata
@pytest.mark.parametrize(("name", "factors"), [("thick", (1.0, 1.0, 1 / 3)), ("fine", (2.0, 2.0, 1.0))])
def test_real_case_at_another_spacing_is_segmented_as_at_1_mm(real_brats, tmp_path, name, factors):
    """``BraTS2021_00006`` at 1 x 1 x 3 mm and at 0.5 x 0.5 x 1 mm: Dice against its resampled truth within 0.03
    of the 1 mm prediction brought to the same grid."""
    case = real_brats / "BraTS2021_00006"
    other = resample_case(case, tmp_path / name / "BraTS2021_00006", factors)
    native = predict([case], tmp_path / "native").written[0]
    aware = predict([other], tmp_path / "aware").written[0]
    convention = find_case(other).convention
    truth = _regions(other / "BraTS2021_00006_seg.nii.gz", convention)
    native_on_other = labels_to_regions(
        ndimage.zoom(np.asarray(nib.load(native).dataobj), factors, order=0, grid_mode=True, mode="grid-constant"),
        convention,
    )
    reference, got = _dice3(native_on_other, truth), _dice3(_regions(aware, convention), truth)
    (tmp_path / "dice.json").write_text(json.dumps({"reference": reference, "resampled": got}))
    assert nib.load(aware).shape == nib.load(other / "BraTS2021_00006_t1.nii.gz").shape
    assert all(g >= r - 0.03 for g, r in zip(got, reference, strict=True)), (got, reference)


def test_a_dataset_of_mixed_spacings_is_resampled_by_preprocess_and_trains_at_one(synthetic_root, tmp_path):
    """``preprocess --spacing``: every case on one grid (images trilinear, regions nested), the cache says so and
    is not rebuilt on a second run; a model trained on it records that spacing, and ``predict`` brings its labels
    back to each input's own grid."""
    from bratsseg.cli.main import main
    from bratsseg.data.cache import open_cache
    from bratsseg.data.info import describe
    from bratsseg.engine.config import load_train_config
    from bratsseg.engine.trainer import train
    from bratsseg.models.files import load_model

    raw = tmp_path / "raw"
    raw.mkdir()
    cases = sorted(p for p in synthetic_root.iterdir() if p.is_dir() and p.name.startswith("Synth"))[:2]
    shutil.copytree(cases[0], raw / cases[0].name)
    resample_case(cases[1], raw / cases[1].name, (1.0, 1.0, 0.5))  # half the slices: twice the slice spacing
    source = {c.case_id: c for c in (find_case(raw / p.name) for p in cases)}
    zooms = {k: nib.load(c.images[0]).header.get_zooms()[:3] for k, c in source.items()}
    assert not np.allclose(*zooms.values())  # the two inputs differ
    cache = tmp_path / "cache"
    assert main(["preprocess", str(raw), "-o", str(cache), "--spacing", "2"]) == 0
    cached = open_cache(cache)
    for case in cached:
        assert case.spacing == pytest.approx((2.0, 2.0, 2.0), rel=0.02)
        original = np.asarray(nib.load(source[case.case_id].seg).dataobj)
        volume = labels_to_regions(original, case.convention).sum(axis=(1, 2, 3)) * np.prod(zooms[case.case_id])
        resampled = case.regions()
        assert np.all(resampled[2] <= resampled[1]) and np.all(resampled[1] <= resampled[0])  # still nested
        assert np.allclose(resampled.sum(axis=(1, 2, 3)) * np.prod(case.spacing), volume, rtol=0.25)
        assert case.uncrop(resampled).shape[1:] == case.original_shape
        grid, source_header = case.grid, case.meta["original_header"]  # the new grid covers the same volume
        centre = [np.asarray(h["affine"]) @ [*((np.array(h["shape"][:3]) - 1) / 2), 1] for h in (grid, source_header)]
        assert np.linalg.norm(centre[0][:3] - centre[1][:3]) < max(case.spacing)
    info = describe(cache)["cases"]
    assert all(c["resampled_from"]["zooms"] for c in info)
    assert main(["preprocess", str(raw), "-o", str(cache), "--spacing", "2"]) == 0  # nothing to redo
    assert {c.case_id: c.meta["preprocess"] for c in open_cache(cache)} == {
        c.case_id: c.meta["preprocess"] for c in cached
    }
    config = load_train_config(
        None,
        ["model.widths=[4,8,16]", "patch_size=[16,16,16]", "epochs=1", "steps_per_epoch=1", "fold=-1", "num_workers=0"],
    )
    train(cache, tmp_path / "run", config)
    card = load_model(tmp_path / "run" / "last")[1]
    assert card.preprocessing.spacing == pytest.approx((2.0, 2.0, 2.0), rel=0.02)
    report = predict([raw], tmp_path / "out", tmp_path / "run" / "last")
    assert report.ok and len(report.written) == 2
    for path in report.written:
        ref = nib.load(source[path.name.split(".")[0]].images[0])
        assert nib.load(path).shape == ref.shape and np.allclose(nib.load(path).affine, ref.affine)
