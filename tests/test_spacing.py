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
def test_real_case_at_3_mm_slices_is_segmented_as_at_1_mm(real_brats, tmp_path):
    """``BraTS2021_00006`` at 1 x 1 x 3 mm: Dice against its resampled truth within 0.03 of the 1 mm prediction
    brought to the same grid."""
    case = real_brats / "BraTS2021_00006"
    thick = resample_case(case, tmp_path / "thick" / "BraTS2021_00006", (1.0, 1.0, 1 / 3))
    native = predict([case], tmp_path / "native").written[0]
    aware = predict([thick], tmp_path / "aware").written[0]
    convention = find_case(thick).convention
    truth = _regions(thick / "BraTS2021_00006_seg.nii.gz", convention)
    native_on_thick = labels_to_regions(
        ndimage.zoom(
            np.asarray(nib.load(native).dataobj), (1.0, 1.0, 1 / 3), order=0, grid_mode=True, mode="grid-constant"
        ),
        convention,
    )
    reference, got = _dice3(native_on_thick, truth), _dice3(_regions(aware, convention), truth)
    (tmp_path / "dice.json").write_text(json.dumps({"reference": reference, "resampled": got}))
    assert all(g >= r - 0.03 for g, r in zip(got, reference, strict=True)), (got, reference)
