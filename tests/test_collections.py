"""Cases from other collections: TCIA's UPENN-GBM and UCSF-PDGM namings, nnU-Net raw datasets (v2 and the
Decathlon's v1 dataset.json, region-based labels), explicit --flair/--t1/--t1ce/--t2 files and a --naming pattern;
each read by predict, preprocess and evaluate with the label convention it implies."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bratsseg.cli.main import main
from bratsseg.data.cache import open_cache
from bratsseg.data.synthetic import make_synthetic_case
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import discover_cases, find_case, parse_naming
from bratsseg.io.nifti import load_case

SUFFIXES = ("flair", "t1", "t1ce", "t2")


@pytest.fixture
def brats_case(tmp_path):
    return make_synthetic_case(tmp_path / "src", "Orig_001", "brats2021", size="tiny", seed=5)


def _relabel(src: Path, dst: Path, mapping: dict[int, int]) -> None:
    img = nib.load(src)
    data = np.asarray(img.dataobj).astype(np.int16)
    out = np.zeros_like(data)
    for a, b in mapping.items():
        out[data == a] = b
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(out, img.affine, img.header), dst)


def _copy_as(case, folder: Path, names: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for modality, path in zip(SUFFIXES, case.images, strict=True):
        shutil.copy(path, folder / names[modality])
    if "seg" in names:
        shutil.copy(case.seg, folder / names["seg"])
    return folder


@pytest.mark.parametrize(
    ("collection", "names"),
    [
        ("upenn-gbm", {"flair": "_FLAIR", "t1": "_T1", "t1ce": "_T1GD", "t2": "_T2", "seg": "_segm"}),
        ("ucsf-pdgm", {"flair": "_FLAIR", "t1": "_T1", "t1ce": "_T1c", "t2": "_T2", "seg": "_tumor_segmentation"}),
    ],
)
def test_tcia_namings_are_read_by_predict_preprocess_and_evaluate(brats_case, tmp_path, collection, names, capsys):
    cid = "UPENN-GBM-00001_11" if collection == "upenn-gbm" else "UCSF-PDGM-0004"
    folder = _copy_as(brats_case, tmp_path / "data" / cid, {m: f"{cid}{s}.nii.gz" for m, s in names.items()})
    shutil.copy(brats_case.images[2], folder / f"{cid}_ADC.nii.gz")  # other series of the collection: ignored
    shutil.copy(brats_case.images[2], folder / f"{cid}_T1c_bias.nii.gz")
    case = find_case(folder)
    assert case.naming.name == collection and case.case_id == cid and case.convention.name == "brats2021"
    assert [p.name for p in case.images] == [f"{cid}{names[m]}.nii.gz" for m in SUFFIXES]
    assert np.array_equal(load_case(case).regions, load_case(brats_case).regions)
    pred = tmp_path / "pred"
    assert main(["predict", str(tmp_path / "data"), "-o", str(pred)]) == 0
    assert (pred / f"{cid}.nii.gz").is_file()
    assert set(np.unique(np.asarray(nib.load(pred / f"{cid}.nii.gz").dataobj))) <= {0, 1, 2, 4}
    assert main(["preprocess", str(tmp_path / "data"), "-o", str(tmp_path / "cache")]) == 0
    assert [c.case_id for c in open_cache(tmp_path / "cache")] == [cid]
    assert main(["evaluate", "--pred", str(pred), "--ref", str(tmp_path / "data"), "-o", str(tmp_path / "ev")]) == 0
    # the four files given directly are read the same way
    files = [str(p) for p in case.images]
    assert main(["predict", *files, "-o", str(tmp_path / "pred-files")]) == 0
    assert (tmp_path / "pred-files" / f"{cid}.nii.gz").is_file()
    capsys.readouterr()


@pytest.mark.parametrize("version", ["v2-regions", "v1-decathlon"])
def test_nnunet_raw_datasets_are_read_with_their_channels_and_labels(brats_case, tmp_path, version):
    root = tmp_path / ("Dataset137_BraTS" if version == "v2-regions" else "Task01_BrainTumour")
    if version == "v2-regions":  # nnU-Net's BraTS 2021 conversion: channels T1, T1ce, T2, FLAIR
        order = ("t1", "t1ce", "t2", "flair")
        spec = {
            "channel_names": {"0": "T1", "1": "T1ce", "2": "T2", "3": "Flair"},
            "labels": {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]},
            "regions_class_order": [1, 2, 3],
            "file_ending": ".nii.gz",
        }
    else:  # the Decathlon's Task01: FLAIR, T1w, t1gd, T2w (split into 3-D files, as nnU-Net's converter does)
        order = ("flair", "t1", "t1ce", "t2")
        spec = {
            "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
        }
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps(spec))
    by_mod = dict(zip(SUFFIXES, brats_case.images, strict=True))
    for k, modality in enumerate(order):
        shutil.copy(by_mod[modality], root / "imagesTr" / f"BraTS_0001_{k:04d}.nii.gz")
    _relabel(brats_case.seg, root / "labelsTr" / "BraTS_0001.nii.gz", {1: 2, 2: 1, 4: 3})  # BraTS -> MSD labels
    case = find_case(root)
    assert case.case_id == "BraTS_0001" and case.convention.name == "msd"
    assert [p.name for p in case.images] == [f"BraTS_0001_{order.index(m):04d}.nii.gz" for m in SUFFIXES]
    assert case.seg == root / "labelsTr" / "BraTS_0001.nii.gz"
    assert np.array_equal(load_case(case).regions, load_case(brats_case).regions)  # the same tumour regions
    assert find_case(root / "imagesTr").case_id == "BraTS_0001"  # the images folder alone, too
    pred = tmp_path / "pred"
    assert main(["predict", str(root), "-o", str(pred)]) == 0
    labels = set(np.unique(np.asarray(nib.load(pred / "BraTS_0001.nii.gz").dataobj)).tolist())
    assert labels <= {0, 1, 2, 3}  # written in the dataset's own convention
    assert main(["evaluate", "--pred", str(pred), "--ref", str(root), "-o", str(tmp_path / "ev")]) == 0
    assert main(["preprocess", str(root), "-o", str(tmp_path / "cache")]) == 0
    cached = open_cache(tmp_path / "cache")[0]
    assert cached.convention.name == "msd" and cached.regions().any()


def test_unknown_nnunet_layouts_are_one_line(tmp_path):
    root = tmp_path / "ds"
    (root / "imagesTr").mkdir(parents=True)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"background": 0}}))
    with pytest.raises(BratsSegError, match="cannot tell which of FLAIR"):
        discover_cases(root)
    spec = {"channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}, "labels": {"background": 0, "x": 1}}
    (root / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(BratsSegError, match="not a BraTS label layout"):
        discover_cases(root)


def test_explicit_files_and_a_naming_pattern(brats_case, tmp_path, capsys):
    odd = tmp_path / "odd"
    names = {"flair": "scan a.nii.gz", "t1": "b.nii.gz", "t1ce": "c.nii.gz", "t2": "d.nii.gz"}
    _copy_as(brats_case, odd, names)
    args = [f"--{m}={odd / n}" for m, n in names.items()]
    assert main(["predict", *args, "-o", str(tmp_path / "p1"), "--case-id", "Patient7"]) == 0
    assert (tmp_path / "p1" / "Patient7.nii.gz").is_file()
    assert main(["predict", *args[:3], "-o", str(tmp_path / "p2")]) == 1
    assert "--t2 missing" in capsys.readouterr().err
    # a pattern for any other collection: separator, then the suffixes of FLAIR, T1, T1ce, T2 and the labels
    pat = _copy_as(brats_case, tmp_path / "pat" / "P9", {m: f"P9.{s}.nii.gz" for m, s in
                   {"flair": "fl", "t1": "t1w", "t1ce": "t1c", "t2": "t2w", "seg": "lab"}.items()})  # fmt: skip
    with pytest.raises(BratsSegError, match="--naming"):  # no built-in naming fits: the error says what to do
        discover_cases(pat)
    case = find_case(pat, naming=".:fl,t1w,t1c,t2w,lab")
    assert case.case_id == "P9" and case.seg is not None and case.seg.name == "P9.lab.nii.gz"
    assert main(["predict", str(pat), "--naming", ".:fl,t1w,t1c,t2w,lab", "-o", str(tmp_path / "p3")]) == 0
    assert (tmp_path / "p3" / "P9.nii.gz").is_file()
    with pytest.raises(BratsSegError, match="SEP:FLAIR"):
        parse_naming("fl,t1w,t1c,t2w")
