"""The real BraTS cases in ../shared/data: every one is found, read, validated and cached exactly."""

import json

import nibabel as nib
import numpy as np
import pytest

from bratsseg.data.cache import CachedCase
from bratsseg.data.info import describe
from bratsseg.data.preprocess import preprocess_case, preprocess_dataset
from bratsseg.io.discovery import discover_cases, find_case
from bratsseg.io.nifti import load_case

pytestmark = pytest.mark.realdata


def test_every_manifest_case_described(real_brats):
    manifest = json.loads((real_brats / "MANIFEST.json").read_text())
    info = describe(real_brats)
    assert not info["problems"]
    assert sorted(c["case_id"] for c in info["cases"]) == sorted(manifest)
    for c in info["cases"]:
        assert c["naming"] == "brats2021" and c["convention"] == "brats2021"
        assert c["shape"] == [240, 240, 155] and c["spacing"] == [1.0, 1.0, 1.0]
        assert c["orientation"] == "LPS"
        assert set(c["label_voxels"]) <= {"0", "1", "2", "4"}
        expected = manifest[c["case_id"]]["regions_voxels"]
        assert c["region_voxels"] == {
            "WT": expected["WT(1+2+4)"],
            "TC": expected["TC(1+4)"],
            "ET": expected["ET(4)"],
        }


@pytest.mark.slow
def test_every_real_case_loads_and_caches_exactly(real_brats, tmp_path):
    report = preprocess_dataset(real_brats, tmp_path, workers=2)
    manifest = json.loads((real_brats / "MANIFEST.json").read_text())
    assert report.ok and len(report.written) == len(manifest)
    for case in discover_cases(real_brats).cases:
        raw = load_case(case)
        cached = CachedCase.open(tmp_path / case.case_id)
        assert raw.image.shape == (4, 240, 240, 155)
        assert np.array_equal(cached.uncrop(cached.regions()), raw.regions), case.case_id
        assert np.array_equal(cached.uncrop(cached.labels()), raw.labels), case.case_id
        brain = raw.image.any(axis=0)
        assert np.array_equal(cached.uncrop(np.ones(cached.image.shape[1:], bool)) >= brain, np.ones_like(brain))
        assert cached.meta["brain_voxels"] == int(brain.sum())
        # the crop is much smaller than the grid: that is the point of it
        assert np.prod(cached.meta["cropped_shape"]) < 0.5 * 240 * 240 * 155


def test_modality_order_on_real_files(real_brats):
    case = find_case(real_brats / "Brats18_2013_2_1")
    assert [p.name for p in case.images] == [
        "Brats18_2013_2_1_flair.nii.gz",
        "Brats18_2013_2_1_t1.nii.gz",
        "Brats18_2013_2_1_t1ce.nii.gz",
        "Brats18_2013_2_1_t2.nii.gz",
    ]
    loaded = load_case(case)
    assert loaded.labels is not None and loaded.labels.dtype == np.uint8  # int16 on disk for this case
    assert loaded.header["dtype"] == "int16"


def test_brats2023_case(real_2023, tmp_path):
    case = find_case(real_2023 / "BraTS-GLI-00001-000")
    assert case.naming.name == "brats2023" and case.convention.enhancing == 3 and case.seg is None
    assert [p.name.split("-")[-1] for p in case.images] == ["t2f.nii.gz", "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz"]
    cached = CachedCase.open(preprocess_case(case, tmp_path))
    assert not cached.has_seg and cached.convention.name == "brats2023"
    ref = nib.load(case.images[0])
    assert cached.original_shape == ref.shape == (240, 240, 155)
    assert np.allclose(cached.meta["original_header"]["affine"], ref.affine)
    assert cached.meta["original_header"]["axcodes"] == "LPS"
    brain = load_case(case).image.any(axis=0)
    full = cached.uncrop(np.asarray(cached.image, dtype=np.float32))
    assert not full[:, ~brain].any()  # zero outside the brain
    assert np.count_nonzero(brain & ~full.any(axis=0)) <= 10  # and non-zero inside it (bar exact zeros)
