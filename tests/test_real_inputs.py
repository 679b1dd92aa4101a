"""Input as real exports differ from challenge files: a non-zero background, several folders, a misnamed
``.nii.gz``, an output folder that cannot be written, files that only a full read finds broken."""

from __future__ import annotations

import gzip
import shutil

import nibabel as nib
import numpy as np
import pytest

from bratsseg.cli.main import main
from bratsseg.data.info import describe
from bratsseg.data.synthetic import make_synthetic_case
from bratsseg.engine.predict import predict
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case


def _offset(case_dir, value):
    """Every modality of the case plus ``value`` (a scanner export whose background is not 0)."""
    for p in case_dir.iterdir():
        if "seg" in p.name:
            continue
        img = nib.load(p)
        data = np.asarray(img.dataobj).astype(np.float32) + value
        nib.save(nib.Nifti1Image(data, img.affine, img.header), p)


def test_non_zero_background_is_refused_in_one_line_and_accepted_when_declared(case_dir, model_dir, tmp_path, capsys):
    _offset(case_dir, 1.0)
    report = predict([case_dir], tmp_path / "out", model_dir)
    assert not report.written and len(report.failed) == 1
    message = report.failed[0]
    assert "background is not zero" in message and "skull-stripped" in message and "\n" not in message
    assert main(["predict", str(case_dir), "-o", str(tmp_path / "cli")]) == 1
    assert "background is not zero" in capsys.readouterr().err
    declared = predict([case_dir], tmp_path / "ok", model_dir, background=1.0)
    assert declared.ok and len(declared.written) == 1


def test_a_non_zero_background_in_one_modality_names_its_file(case_dir, model_dir, tmp_path, capsys):
    t2 = next(p for p in case_dir.iterdir() if p.name.endswith("_t2.nii.gz"))
    img = nib.load(t2)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj).astype(np.float32) + 5.0, img.affine, img.header), t2)
    assert main(["predict", str(case_dir), "-o", str(tmp_path / "out"), "--model", str(model_dir)]) == 1
    err = capsys.readouterr().err.strip()
    assert f"background is not zero in {t2}" in err and "_flair" not in err and len(err.splitlines()) == 1
    assert main(["preprocess", str(case_dir), "-o", str(tmp_path / "cache")]) == 1
    assert f"background is not zero in {t2}" in capsys.readouterr().err


def test_background_check_passes_the_synthetic_cases(synthetic_root):  # the real ones: test_real_data.py
    from bratsseg.data.preprocess import brain_mask, check_background

    for case in (find_case(p) for p in sorted(synthetic_root.iterdir())):
        check_background(brain_mask(load_case(case, load_seg=False).image))


def test_several_folders_in_one_call(synthetic_root, model_dir, tmp_path):
    a = make_synthetic_case(tmp_path / "a", "One_001", size="tiny", seed=1).folder
    b = make_synthetic_case(tmp_path / "b", "Two_001", size="tiny", seed=2).folder
    report = predict([a, b, synthetic_root], tmp_path / "out", model_dir)
    assert report.ok and sorted(p.name for p in report.written) == sorted(
        [f"{c}.nii.gz" for c in ("One_001", "Two_001", *(p.name for p in synthetic_root.iterdir()))]
    )
    again = predict([a, a], tmp_path / "twice", model_dir)  # one case named twice: segmented once, said so
    assert len(again.written) == 1 and any("segmented once" in f for f in again.failed)
    assert main(["predict", str(a), str(b), "-o", str(tmp_path / "cli"), "--model", str(model_dir)]) == 0


def test_unwritable_output_fails_before_any_case_is_read(case_dir, model_dir, tmp_path, monkeypatch):
    import bratsseg.engine.predict as predict_module

    def never(*args, **kwargs):
        raise AssertionError("a case was read")

    monkeypatch.setattr(predict_module, "load_raw_case", never)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BratsSegError, match="the output folder is a file"):
        predict([case_dir], tmp_path / "file", model_dir)
    with pytest.raises(BratsSegError, match="cannot write to the output folder"):
        predict([case_dir], tmp_path / "file" / "below", model_dir)


def test_misnamed_nii_gz_loads(case_dir):
    flair = next(p for p in case_dir.iterdir() if p.name.endswith("_flair.nii.gz"))
    expected = load_case(find_case(case_dir)).image
    flair.write_bytes(gzip.decompress(flair.read_bytes()))  # plain NIfTI under a .nii.gz name, as ITK reads it
    assert np.array_equal(load_case(find_case(case_dir)).image, expected)


def test_info_check_reads_every_voxel(fresh_root, capsys):
    from bratsseg.io.discovery import discover_cases

    cases = sorted(discover_cases(fresh_root).cases, key=lambda c: c.case_id)
    t1 = cases[0].images[1]
    t1.write_bytes(t1.read_bytes()[: len(t1.read_bytes()) // 2])  # truncated: the header still reads
    t1ce = cases[1].images[2]
    img = nib.load(t1ce)
    data = np.asarray(img.dataobj).astype(np.float32)
    data[3, 3, 3] = np.nan
    nib.save(nib.Nifti1Image(data, img.affine), t1ce)
    quick = describe(fresh_root)
    full = describe(fresh_root, check=True)
    assert len(full["problems"]) == len(quick["problems"]) + 2
    assert any(t1.name in p and "truncated" in p for p in full["problems"])
    assert any(t1ce.name in p and "NaN" in p for p in full["problems"])
    assert len(full["cases"]) == len(cases) - 2  # the good ones are still listed
    assert main(["info", str(fresh_root), "--check"]) == 1
    assert "2 problem(s)" in capsys.readouterr().out


@pytest.mark.parametrize("value", ["0", "-2", "two"])
def test_threads_must_be_at_least_one(value, tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["predict", str(tmp_path), "-o", str(tmp_path / "o"), "--threads", value])
    assert "--threads" in capsys.readouterr().err


def test_sigterm_removes_the_temporary_file(tmp_path):
    """SIGTERM ends a command like Ctrl-C: the atomic writer's temporary is gone, the target never half-written."""
    import os
    import signal

    from bratsseg.atomic import atomic_path
    from bratsseg.cli.main import _terminate

    old = signal.signal(signal.SIGTERM, _terminate)
    try:
        with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            os.kill(os.getpid(), signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert not list(tmp_path.iterdir())
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_info_check_reports_extreme_values(case_dir, capsys):
    """Ten voxels at 1e6 (a scanner artefact) are reported by `info --check`; prediction clips them."""
    flair = next(p for p in case_dir.iterdir() if p.name.endswith("_flair.nii.gz"))
    img = nib.load(flair)
    data = np.asarray(img.dataobj).astype(np.float32)
    brain = np.argwhere(data != 0)[:10]
    data[tuple(brain.T)] = 1e6
    assert main(["info", str(case_dir), "--check"]) == 0
    capsys.readouterr()
    nib.save(nib.Nifti1Image(data, img.affine, img.header), flair)
    assert main(["info", str(case_dir), "--check"]) == 1
    out = capsys.readouterr().out
    assert "10 voxel(s) with extreme values" in out and str(flair) in out


def test_a_few_extreme_voxels_change_nothing_in_the_normalisation(case_dir):
    """Clipped to the brain's percentiles before the z-score: ten voxels at 1e6 leave every other voxel's value."""
    from bratsseg.data.preprocess import crop_and_normalise
    from bratsseg.io.discovery import find_case
    from bratsseg.io.nifti import load_raw_case

    raw = load_raw_case(find_case(case_dir))
    clean = crop_and_normalise([np.asarray(c) for c in raw.channels], 2)
    channels = [np.asarray(c).astype(np.float32) for c in raw.channels]
    brain = np.argwhere(channels[0] != 0)[::997][:10]
    channels[0][tuple(brain.T)] = 1e6
    noisy = crop_and_normalise(channels, 2)
    assert np.abs(noisy.means[0] - clean.means[0]) < 0.02 * clean.stds[0]
    assert abs(noisy.stds[0] / clean.stds[0] - 1) < 0.02
    diff = np.abs(noisy.image - clean.image)
    lo = [b[0] for b in noisy.box]
    diff[(0, *(brain - lo).T)] = 0  # the ten voxels themselves: clipped to the brain's top, not 1e4 sigma
    assert diff.max() < 0.15 and noisy.image.max() < 20  # a tiny synthetic brain: 10 voxels are 0.05% of it
