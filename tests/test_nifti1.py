"""The numpy NIfTI-1 reader and writer of ``predict``'s path (bratsseg.io.nifti1) against nibabel: the same
voxels and the same header essentials on the shared real cases and on synthetic headers of every kind; files
it does not handle are left to nibabel; what it writes reads back in nibabel on the input's grid."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratsseg.data.synthetic import make_synthetic_case
from bratsseg.io import nifti1
from bratsseg.io.discovery import discover_cases
from bratsseg.io.nifti import header_essentials, load_raw_case, open_nifti, save_nifti


def assert_same_as_nibabel(path: Path) -> nifti1.Nifti1:
    vol = nifti1.read(path)
    assert vol is not None, f"{path} should be a plain NIfTI-1 file"
    img = open_nifti(path)
    ref = np.asanyarray(img.dataobj)
    assert vol.voxels.dtype == ref.dtype
    np.testing.assert_array_equal(vol.voxels.reshape(ref.shape, order="F"), ref)
    assert vol.essentials() == header_essentials(img)
    return vol


def test_real_cases_read_as_nibabel_reads_them(real_brats, real_2023):
    """One modality of every shared case (2018, 2019, 2021, 2023 naming), voxels and header."""
    files = [sorted(d.glob("*.nii.gz"))[0] for d in sorted(real_brats.iterdir()) if d.is_dir()]
    files += [sorted(d.glob("*.nii.gz"))[0] for d in sorted(real_2023.iterdir()) if d.is_dir()]
    assert len(files) == len(json.loads((real_brats / "MANIFEST.json").read_text())) + 1
    for path in files:
        assert_same_as_nibabel(path)


def _rotation(angles: tuple[float, float, float]) -> np.ndarray:
    a, b, c = angles
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _image(kind: str, dtype=np.int16) -> nib.Nifti1Image:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 100, size=(7, 6, 5)).astype(dtype)
    affine = np.eye(4)
    affine[:3, :3] = _rotation((0.3, -0.2, 1.1)) @ np.diag([1.2, 0.9, 2.5])
    affine[:3, 3] = [-90.5, 12.25, 40.0]
    if kind == "left-handed":
        affine[:, 0] *= -1
    if kind == "axis-swapped":
        affine[:3, :3] = np.array([[0, 0, -1.0], [1.0, 0, 0], [0, 2.0, 0]])
    img = nib.Nifti1Image(data, affine)
    hdr = img.header
    if kind == "qform only":
        hdr.set_sform(None, code=0)
        hdr.set_qform(affine, code=1)
    elif kind == "sform only":
        hdr.set_qform(None, code=0)
        hdr.set_sform(affine, code=2)
    elif kind == "neither":
        hdr.set_qform(None, code=0)
        hdr.set_sform(None, code=0)
    else:
        hdr.set_qform(affine, code=1)
        hdr.set_sform(affine, code=4)
    hdr.set_xyzt_units("mm", "sec")
    return img


KINDS = ("both", "qform only", "sform only", "neither", "left-handed", "axis-swapped")


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", ["v.nii.gz", "v.nii"])
def test_synthetic_headers_read_as_nibabel_reads_them(tmp_path, kind, name):
    path = tmp_path / name
    nib.save(_image(kind), path)
    assert_same_as_nibabel(path)


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.float32, np.float64, np.uint16])
def test_dtypes_and_byte_orders(tmp_path, dtype):
    img = _image("both", dtype)
    path = tmp_path / "v.nii.gz"
    nib.save(img, path)
    assert_same_as_nibabel(path)
    big = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header.as_byteswapped(">"))
    nib.save(big, tmp_path / "big.nii.gz")
    vol = assert_same_as_nibabel(tmp_path / "big.nii.gz")
    assert vol.voxels.dtype.byteorder in (">", "|")


def test_inflate_equals_decompress_and_refuses_what_decompress_refuses():
    rng = np.random.default_rng(0)
    payload = rng.integers(0, 4, 300_000, dtype=np.uint8).tobytes()  # compressible: many inflate steps
    packed = nifti1.compress(payload)
    out = nifti1.inflate(packed)
    assert out.dtype == np.uint8 and out.tobytes() == payload
    two_members = gzip.compress(payload[:1000]) + gzip.compress(payload[1000:])  # the trailer gives the last one's size
    assert nifti1.inflate(two_members).tobytes() == payload
    assert nifti1.inflate(gzip.compress(b"")).tobytes() == b""
    bad_crc = bytearray(packed)
    bad_crc[-8] ^= 0xFF
    for broken in (packed[: len(packed) // 2], bytes(bad_crc), packed + b"junk"):
        with pytest.raises(Exception) as expected:
            nifti1.decompress(broken)
        with pytest.raises(type(expected.value)):
            nifti1.inflate(broken)


def test_misnamed_and_trailing_singleton_files(tmp_path):
    img = _image("both")
    nib.save(img, tmp_path / "plain.nii")
    (tmp_path / "plain-named-gz.nii.gz").write_bytes((tmp_path / "plain.nii").read_bytes())
    assert_same_as_nibabel(tmp_path / "plain-named-gz.nii.gz")
    four = nib.Nifti1Image(np.asarray(img.dataobj)[..., None], img.affine, img.header)
    nib.save(four, tmp_path / "four.nii.gz")
    vol = nifti1.read(tmp_path / "four.nii.gz")
    assert vol is not None and vol.shape == (7, 6, 5, 1)
    assert vol.essentials() == header_essentials(open_nifti(tmp_path / "four.nii.gz"))


def _set(path: Path, out: Path, **fields) -> Path:
    raw = bytearray(gzip.decompress(path.read_bytes()))
    hdr = np.frombuffer(bytes(raw[: nifti1.HEADER_SIZE]), dtype=nifti1.HEADER).copy()
    for key, value in fields.items():
        hdr[key] = value
    raw[: nifti1.HEADER_SIZE] = hdr.tobytes()
    out.write_bytes(gzip.compress(bytes(raw)))
    return out


def test_files_it_does_not_handle_are_left_to_nibabel(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(_image("both"), path)
    unusual = {
        "scaled": _set(path, tmp_path / "scaled.nii.gz", scl_slope=2.0),
        "offset": _set(path, tmp_path / "offset.nii.gz", scl_slope=1.0, scl_inter=3.0),
        "qfac 0 (nibabel fixes it)": _set(path, tmp_path / "qfac.nii.gz", pixdim=[0, 1.2, 0.9, 2.5, 1, 1, 1, 1]),
        "bitpix disagrees": _set(path, tmp_path / "bitpix.nii.gz", bitpix=32),
        "complex": _set(path, tmp_path / "complex.nii.gz", datatype=32, bitpix=64),
        "bad sform code": _set(path, tmp_path / "code.nii.gz", sform_code=9),
    }
    for name, p in unusual.items():
        assert nifti1.read(p) is None, name
    nib.save(nib.Nifti2Image(np.zeros((3, 3, 3), np.int16), np.eye(4)), tmp_path / "two.nii.gz")
    assert nifti1.read(tmp_path / "two.nii.gz") is None
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(path.read_bytes()[:-40])
    assert nifti1.read(truncated) is None
    assert nifti1.read(tmp_path / "missing.nii.gz") is None
    # nibabel reads the scaled one: the scaling is applied there
    scaled = np.asarray(nib.load(unusual["scaled"]).dataobj)
    np.testing.assert_array_equal(scaled, 2 * np.asarray(nib.load(path).dataobj))


@pytest.mark.parametrize("kind", KINDS)
def test_written_label_maps_sit_on_the_input_grid(tmp_path, kind):
    src = tmp_path / "src.nii.gz"
    nib.save(_image(kind), src)
    vol = nifti1.read(src)
    assert vol is not None
    labels = np.random.default_rng(1).choice(np.array([0, 1, 2, 4], np.uint8), size=vol.shape)
    fast = save_nifti(labels, vol.essentials(), tmp_path / "fast.nii.gz", template=vol.header)
    slow = save_nifti(labels, vol.essentials(), tmp_path / "slow.nii.gz")
    a, b, ref = nib.load(fast), nib.load(slow), nib.load(src)
    np.testing.assert_array_equal(np.asarray(a.dataobj), labels)
    assert a.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(a.affine, ref.affine)
    for img in (a, b):
        assert img.header.get_qform(coded=True)[1] == ref.header.get_qform(coded=True)[1]
        assert img.header.get_sform(coded=True)[1] == ref.header.get_sform(coded=True)[1]
        np.testing.assert_allclose(img.header.get_qform(), ref.header.get_qform(), atol=1e-5)
        np.testing.assert_allclose(img.header.get_sform(), ref.header.get_sform(), atol=1e-5)
        assert img.header.get_zooms() == ref.header.get_zooms()
        assert img.header.get_xyzt_units() == ref.header.get_xyzt_units()
    assert header_essentials(a)["axcodes"] == header_essentials(ref)["axcodes"]
    with pytest.raises(ValueError, match="grid"):
        nifti1.write_like(labels[:-1], vol.header, tmp_path / "wrong.nii.gz")


def test_load_raw_case_is_the_same_with_or_without_nibabel(tmp_path, monkeypatch):
    make_synthetic_case(tmp_path, "Nf_001", "brats2021", size="tiny", seed=3)
    (case,) = discover_cases(tmp_path).cases
    fast = load_raw_case(case)
    assert fast.template is not None
    monkeypatch.setattr(nifti1, "read", lambda path: None)
    slow = load_raw_case(case)
    assert slow.template is None
    assert fast.header == slow.header
    for a, b in zip(fast.channels, slow.channels, strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)


def test_predict_does_not_import_nibabel_for_plain_files(tmp_path):
    raw = tmp_path / "raw"
    make_synthetic_case(raw, "Nf_002", "brats2021", size="small", seed=4)
    code = (
        "import sys\nfrom bratsseg.cli.main import main\n"
        "assert main(['predict', sys.argv[1], '-o', sys.argv[2], '--threads', '1']) == 0\n"
        "print('nibabel' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(raw), str(tmp_path / "out")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    labels = np.asarray(nib.load(tmp_path / "out" / "Nf_002.nii.gz").dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 4}
