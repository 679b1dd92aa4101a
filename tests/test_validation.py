"""One test per kind of bad input: the error is a BratsSegError whose message names the file."""

import gzip
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bratsseg import BratsSegError
from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.io.discovery import discover_cases, find_case
from bratsseg.io.nifti import load_case


def _rewrite(path, fn):
    """Replace a NIfTI file's data (and possibly affine) by fn(data, affine) -> (data, affine)."""
    img = nib.load(path)
    data, affine = fn(np.asarray(img.dataobj), img.affine.copy())
    nib.save(nib.Nifti1Image(data, affine), path)


def _error(case_dir):
    with pytest.raises(BratsSegError) as info:
        load_case(find_case(case_dir))
    return str(info.value)


def test_missing_modality(case_dir):
    (case_dir / "Tiny_001_t1ce.nii.gz").unlink()
    with pytest.raises(BratsSegError, match=r"Tiny_001.*missing modality t1ce.*Tiny_001_t1ce\.nii\.gz") as info:
        find_case(case_dir)
    assert str(case_dir) in str(info.value)


def test_two_files_claim_one_modality(case_dir):
    nib.save(nib.load(case_dir / "Tiny_001_t2.nii.gz"), case_dir / "Tiny_001_t2.nii")
    with pytest.raises(
        BratsSegError, match=r"several files claim modality 't2': Tiny_001_t2\.nii, Tiny_001_t2\.nii\.gz"
    ):
        find_case(case_dir)


def test_shapes_differ(case_dir):
    _rewrite(case_dir / "Tiny_001_t1.nii.gz", lambda d, a: (d[:-1], a))
    msg = _error(case_dir)
    assert "Tiny_001_t1.nii.gz" in msg and "shape (47, 48, 32) differs" in msg


def test_affines_differ(case_dir):
    def shift(d, a):
        a[0, 3] += 0.5
        return d, a

    _rewrite(case_dir / "Tiny_001_t2.nii.gz", shift)
    msg = _error(case_dir)
    assert "Tiny_001_t2.nii.gz" in msg and "affine differs" in msg and "0.5" in msg


def test_tiny_affine_difference_is_tolerated(case_dir):
    def nudge(d, a):
        a[0, 3] += 1e-5
        return d, a

    _rewrite(case_dir / "Tiny_001_t2.nii.gz", nudge)
    load_case(find_case(case_dir))


@pytest.mark.parametrize("shape", [(48, 48, 32, 2), (48, 48)])
def test_not_3d(case_dir, shape):
    _rewrite(case_dir / "Tiny_001_flair.nii.gz", lambda d, a: (np.ones(shape, dtype=np.int16), a))
    msg = _error(case_dir)
    assert "Tiny_001_flair.nii.gz" in msg and "expected a 3-D volume" in msg


def test_trailing_singleton_dimension_is_fine(case_dir):
    _rewrite(case_dir / "Tiny_001_flair.nii.gz", lambda d, a: (d[..., None], a))
    assert load_case(find_case(case_dir)).image.shape == (4, 48, 48, 32)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf(case_dir, bad):
    def poison(d, a):
        d = d.astype(np.float32)
        d[20, 20, 15] = bad
        return d, a

    _rewrite(case_dir / "Tiny_001_t1ce.nii.gz", poison)
    msg = _error(case_dir)
    assert "Tiny_001_t1ce.nii.gz" in msg and "NaN or infinite" in msg


def test_truncated_gzip(case_dir):
    path = case_dir / "Tiny_001_t2.nii.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    msg = _error(case_dir)
    assert "Tiny_001_t2.nii.gz" in msg and ("truncated" in msg or "not a readable NIfTI" in msg)


def test_corrupt_gzip_payload(case_dir):
    path = case_dir / "Tiny_001_t2.nii.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2 : len(raw) // 2 + 64] = bytes(64)  # damage the deflate stream, keep the header
    path.write_bytes(bytes(raw))
    msg = _error(case_dir)
    assert "Tiny_001_t2.nii.gz" in msg


@pytest.mark.parametrize("content", [b"this is not an image\n" * 30, gzip.compress(b"hello" * 100)])
def test_not_a_nifti(case_dir, content):
    (case_dir / "Tiny_001_t1.nii.gz").write_bytes(content)
    msg = _error(case_dir)
    assert "Tiny_001_t1.nii.gz" in msg and "not a readable NIfTI" in msg


def test_label_outside_convention(case_dir):
    def add_three(d, a):
        d = d.copy()
        d[d == 4] = 3  # a 2023 label in a 2021-named case
        return d, a

    _rewrite(case_dir / "Tiny_001_seg.nii.gz", add_three)
    msg = _error(case_dir)
    assert "Tiny_001_seg.nii.gz" in msg and "[3]" in msg and "brats2021" in msg
    # the same file is fine when the user says it follows the 2023 convention
    loaded = load_case(find_case(case_dir, convention="brats2023"))
    assert set(np.unique(loaded.labels)) <= {0, 1, 2, 3}


def test_non_integer_labels(case_dir):
    _rewrite(case_dir / "Tiny_001_seg.nii.gz", lambda d, a: (d.astype(np.float32) + 0.5, a))
    msg = _error(case_dir)
    assert "Tiny_001_seg.nii.gz" in msg and "non-integer" in msg


def test_all_zero_brain(case_dir):
    _rewrite(case_dir / "Tiny_001_flair.nii.gz", lambda d, a: (np.zeros_like(d), a))
    msg = _error(case_dir)
    assert "Tiny_001_flair.nii.gz" in msg and "empty" in msg


def test_root_with_bad_cases_still_handles_good_ones(fresh_root, tmp_path):
    (fresh_root / "Synth_001" / "Synth_001_t1.nii.gz").unlink()
    seg = fresh_root / "Synth_002" / "Synth_002_seg.nii.gz"
    seg.write_bytes(seg.read_bytes()[:200])
    found = discover_cases(fresh_root)
    assert [c.case_id for c in found.cases] == ["Synth-GLI-000", "Synth_000", "Synth_002"]
    report = preprocess_dataset(fresh_root, tmp_path / "cache")
    assert sorted(report.written) == ["Synth-GLI-000", "Synth_000"]
    assert len(report.failed) == 2
    assert any("Synth_001" in m and "missing modality t1" in m for m in report.failed)
    assert any("Synth_002_seg.nii.gz" in m for m in report.failed)


def test_cli_prints_one_line_and_exits_nonzero(case_dir, tmp_path):
    (case_dir / "Tiny_001_t2.nii.gz").write_bytes(b"junk")
    proc = subprocess.run(
        [sys.executable, "-m", "bratsseg", "preprocess", str(case_dir), "-o", str(tmp_path / "c")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Tiny_001_t2.nii.gz" in lines[0] and "Traceback" not in proc.stderr
