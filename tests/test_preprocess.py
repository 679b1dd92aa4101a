import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bratsseg import BratsSegError
from bratsseg.data import cache as cache_mod
from bratsseg.data.cache import CachedCase, open_cache, read_meta
from bratsseg.data.preprocess import PreprocessConfig, brain_mask, preprocess_case, preprocess_dataset, zscore
from bratsseg.data.synthetic import make_synthetic_dataset
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case


def test_zscore_over_mask_only():
    image = np.zeros((2, 4, 4, 4), dtype=np.float32)
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[1:3, 1:3, 1:3] = True
    image[0][mask] = np.arange(8)
    image[1][mask] = 5.0  # constant channel: no division by zero
    out, means, stds = zscore(image, mask)
    assert means[0] == pytest.approx(3.5) and stds[0] == pytest.approx(np.std(np.arange(8)))
    assert out[0][mask].mean() == pytest.approx(0, abs=1e-6) and out[0][mask].std() == pytest.approx(1, abs=1e-6)
    assert not out[:, ~mask].any() and not out[1].any()


def test_cached_case_matches_the_raw_case(synthetic_root, tmp_path):
    case = find_case(synthetic_root / "Synth_000")
    cached = CachedCase.open(preprocess_case(case, tmp_path))
    raw = load_case(case)
    mask = brain_mask(raw.image)
    # crop box holds the whole brain plus the margin, and no more
    assert cached.meta["brain_voxels"] == int(mask.sum())
    assert cached.image.dtype == np.float16 and isinstance(cached.image, np.memmap)
    assert cached.image.shape == (4, *cached.meta["cropped_shape"])
    full = cached.uncrop(np.asarray(cached.image, dtype=np.float32))
    assert full.shape == raw.image.shape
    assert not full[:, ~mask].any()
    for c in range(4):  # z-scored over brain voxels
        assert abs(full[c][mask].mean()) < 1e-2 and abs(full[c][mask].std() - 1) < 1e-2
        # and a monotone function of the raw intensities, clipped to the brain's percentiles (up to float16 rounding)
        from bratsseg.data.preprocess import clip_range

        values = raw.image[c][mask]
        clipped = np.clip(values, *clip_range(values))
        expect = (clipped - cached.meta["normalisation"]["mean"][c]) / cached.meta["normalisation"]["std"][c]
        assert np.allclose(full[c][mask], expect, atol=2e-2, rtol=1e-3)
    # regions: exact after un-cropping
    assert np.array_equal(cached.uncrop(cached.regions()), raw.regions)
    assert np.array_equal(cached.uncrop(cached.labels()), raw.labels)
    assert cached.meta["region_voxels"] == {
        k: int(v.sum()) for k, v in zip(("WT", "TC", "ET"), raw.regions, strict=True)
    }
    hdr = cached.meta["original_header"]
    assert hdr["shape"] == [48, 48, 32] and hdr["qform_code"] == 1 and hdr["sform_code"] == 1
    assert np.allclose(hdr["affine"], np.asarray(case_affine(case)))


def case_affine(case):
    import nibabel as nib

    return nib.load(case.images[0]).affine


def test_second_run_skips_and_changed_input_is_redone(fresh_root, tmp_path):
    cache = tmp_path / "cache"
    first = preprocess_dataset(fresh_root, cache)
    assert sorted(first.written) == ["Synth-GLI-000", "Synth_000", "Synth_001", "Synth_002"] and first.ok
    second = preprocess_dataset(fresh_root, cache)
    assert second.written == [] and len(second.skipped) == 4
    # a touched or copied input (same bytes, another time) is not preprocessed again; its new time is recorded
    seg = fresh_root / "Synth_001" / "Synth_001_seg.nii.gz"
    os.utime(seg, ns=(time.time_ns(), time.time_ns()))
    assert preprocess_dataset(fresh_root, cache).written == []
    recorded = read_meta(cache / "Synth_001")["source_fingerprint"][seg.name]
    assert recorded["mtime_ns"] == seg.stat().st_mtime_ns
    # same size at another time but other bytes (as the recorded sha256 now says): that case, and only it, is redone
    meta_path = cache / "Synth_001" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["source_fingerprint"][seg.name]["sha256"] = "0" * 64
    meta_path.write_text(json.dumps(meta))
    os.utime(seg, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    assert preprocess_dataset(fresh_root, cache).written == ["Synth_001"]
    # a cache made before sha256 was recorded is kept while the times match, and redone once a file is touched
    for entry in meta["source_fingerprint"].values():
        del entry["sha256"]
    meta["source_fingerprint"][seg.name] = {"size": seg.stat().st_size, "mtime_ns": seg.stat().st_mtime_ns}
    meta_path.write_text(json.dumps(meta))
    assert preprocess_dataset(fresh_root, cache).written == []
    os.utime(seg, ns=(time.time_ns() + 2 * 10**9, time.time_ns() + 2 * 10**9))
    assert preprocess_dataset(fresh_root, cache).written == ["Synth_001"]
    # other settings redo everything
    assert len(preprocess_dataset(fresh_root, cache, PreprocessConfig(margin=0)).written) == 4
    assert [c.case_id for c in open_cache(cache)] == ["Synth-GLI-000", "Synth_000", "Synth_001", "Synth_002"]


def test_half_written_cases_are_redone(fresh_root, tmp_path):
    cache = tmp_path / "cache"
    preprocess_dataset(fresh_root, cache)
    (cache / "Synth_000" / "meta.json").unlink()  # a case folder without its metadata is not complete
    (cache / ".tmp-Synth_001-deadbeef").mkdir()  # what a killed run leaves
    (cache / ".tmp-Synth_001-deadbeef" / "image.npy").write_bytes(b"partial")
    report = preprocess_dataset(fresh_root, cache)
    assert report.written == ["Synth_000"]
    assert not list(cache.glob(".tmp-*"))
    assert len(open_cache(cache)) == 4


def test_failed_write_leaves_nothing(synthetic_root, tmp_path, monkeypatch):
    def boom(path, array):
        path.write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(cache_mod, "_save_npy", boom)
    with pytest.raises(OSError, match="disk full"):
        preprocess_case(find_case(synthetic_root / "Synth_002"), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_case_without_segmentation(synthetic_root, tmp_path):
    cached = CachedCase.open(preprocess_case(find_case(synthetic_root / "Synth-GLI-000"), tmp_path))
    assert cached.convention.name == "brats2023"
    assert cached.has_seg  # the synthetic 2023 case has one; drop it:
    from bratsseg.io.discovery import case_from_files

    case = case_from_files(find_case(synthetic_root / "Synth-GLI-000").images)
    cached = CachedCase.open(preprocess_case(case, tmp_path / "noseg"))
    assert not cached.has_seg and "region_voxels" not in cached.meta
    with pytest.raises(BratsSegError, match="no segmentation"):
        cached.regions()


def test_workers_give_the_same_cache(synthetic_root, tmp_path):
    a = preprocess_dataset(synthetic_root, tmp_path / "a", workers=1)
    b = preprocess_dataset(synthetic_root, tmp_path / "b", workers=2)
    assert sorted(a.written) == sorted(b.written)
    for ca, cb in zip(open_cache(tmp_path / "a"), open_cache(tmp_path / "b"), strict=True):
        assert np.array_equal(ca.image, cb.image) and np.array_equal(ca.packed_regions, cb.packed_regions)


def test_open_cache_errors(tmp_path):
    with pytest.raises(BratsSegError, match="no such cache folder"):
        open_cache(tmp_path / "nope")
    with pytest.raises(BratsSegError, match="bratsseg preprocess"):
        open_cache(tmp_path)
    with pytest.raises(BratsSegError, match="not a complete bratsseg cache folder"):
        CachedCase.open(tmp_path)


@pytest.mark.slow
def test_sigkill_then_rerun_completes(tmp_path):
    """Kill preprocessing with SIGKILL mid-run (after some cases, maybe mid-write); a rerun finishes the job."""
    raw = tmp_path / "raw"
    make_synthetic_dataset(raw, 6, size="small", seed=1)
    cache = tmp_path / "cache"
    cmd = [sys.executable, "-m", "bratsseg", "preprocess", str(raw), "-o", str(cache)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith("Synth") for p in cache.glob("*")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    # whatever has its final name is complete
    for p in cache.glob("Synth*"):
        CachedCase.open(p)
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    cases = open_cache(cache)
    assert len(cases) == 6 and not list(cache.glob(".tmp-*"))
    for c in cases:
        assert c.image.shape[0] == 4 and c.regions().any()


def _both_reads(case, margin=2):
    from bratsseg.data.preprocess import crop_and_normalise
    from bratsseg.io.nifti import load_raw_case

    raw = load_raw_case(case)
    return crop_and_normalise(raw.channels, margin), crop_and_normalise(load_case(case, load_seg=False).image, margin)


def test_reading_on_disk_dtype_and_converting_the_box_equals_converting_whole_volumes(synthetic_root):
    case = find_case(synthetic_root / "Synth_000")
    from bratsseg.io.nifti import load_raw_case

    channels = load_raw_case(case).channels
    assert all(c.shape == channels[0].shape for c in channels)
    new, old = _both_reads(case)
    assert new.box == old.box and new.means == old.means and new.stds == old.stds
    np.testing.assert_array_equal(new.image, old.image)


@pytest.mark.realdata
def test_predict_preprocessing_equals_the_cache_on_a_real_case(real_brats, tmp_path):
    """int16 on disk: the box converted alone gives exactly what the training cache holds (float16 there)."""
    case = find_case(real_brats / "BraTS2021_00006")
    from bratsseg.io.nifti import load_raw_case

    assert all(c.dtype == np.int16 for c in load_raw_case(case).channels)  # no float copy of whole volumes
    new, old = _both_reads(case)
    np.testing.assert_array_equal(new.image, old.image)
    cached = CachedCase.open(preprocess_case(case, tmp_path))
    np.testing.assert_array_equal(new.image.astype(np.float16), np.asarray(cached.image))
