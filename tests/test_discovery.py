import shutil

import pytest

from bratsseg import BRATS2023, BratsSegError
from bratsseg.io.discovery import MODALITIES, case_from_files, discover_cases, find_case


def test_dataset_root_both_namings(synthetic_root):
    found = discover_cases(synthetic_root)
    assert not found.problems
    assert [c.case_id for c in found.cases] == ["Synth-GLI-000", "Synth_000", "Synth_001", "Synth_002"]
    by_id = {c.case_id: c for c in found.cases}
    assert by_id["Synth_000"].naming.name == "brats2021" and by_id["Synth_000"].convention.enhancing == 4
    c23 = by_id["Synth-GLI-000"]
    assert c23.naming.name == "brats2023" and c23.convention.enhancing == 3
    # modalities always in the fixed order flair, t1, t1ce, t2 whatever the naming
    assert [p.name.split("-")[-1] for p in c23.images] == ["t2f.nii.gz", "t1n.nii.gz", "t1c.nii.gz", "t2w.nii.gz"]
    assert [p.name.split("_")[-1] for p in by_id["Synth_000"].images] == [f"{m}.nii.gz" for m in MODALITIES]


def test_case_folder_and_convention_override(synthetic_root):
    case = find_case(synthetic_root / "Synth_001")
    assert case.case_id == "Synth_001" and case.seg is not None
    assert find_case(synthetic_root / "Synth_001", convention="brats2023").convention is BRATS2023


def test_nested_and_flat_layouts(tmp_path, synthetic_root):
    # HGG/LGG sub-folders, and a flat folder holding the files of two cases
    shutil.copytree(synthetic_root / "Synth_000", tmp_path / "HGG" / "Synth_000")
    flat = tmp_path / "LGG"
    flat.mkdir()
    for cid in ("Synth_001", "Synth_002"):
        for f in (synthetic_root / cid).iterdir():
            shutil.copy(f, flat / f.name)
    (flat / "notes.txt").write_text("not an image")
    (flat / "Synth_001_prediction.nii.gz").write_bytes(b"")  # not a modality name: ignored
    found = discover_cases(tmp_path)
    assert not found.problems
    assert [c.case_id for c in found.cases] == ["Synth_000", "Synth_001", "Synth_002"]


def test_uncompressed_and_upper_case_names(tmp_path, synthetic_root):
    import nibabel as nib

    dst = tmp_path / "X"
    dst.mkdir()
    for f in (synthetic_root / "Synth_000").iterdir():
        name = f.name.replace(".nii.gz", ".nii").replace("_t1ce", "_T1CE")
        nib.save(nib.load(f), dst / name)
    case = find_case(dst)
    assert case.images[2].name == "Synth_000_T1CE.nii"


def test_explicit_files(synthetic_root):
    files = sorted((p for p in (synthetic_root / "Synth-GLI-000").iterdir() if "-seg" not in p.name), reverse=True)
    case = case_from_files(files)
    assert case.case_id == "Synth-GLI-000" and case.seg is None
    assert case.images[0].name.endswith("-t2f.nii.gz")


def test_explicit_file_with_unknown_name(tmp_path):
    bad = tmp_path / "brain.nii.gz"
    bad.write_bytes(b"x")
    with pytest.raises(BratsSegError, match=r"brain\.nii\.gz.*modality"):
        case_from_files([bad])


def test_no_cases_found(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(BratsSegError, match="no BraTS cases found"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(BratsSegError, match="no such file"):
        discover_cases(tmp_path / "missing")
    f = tmp_path / "file.txt"
    f.write_text("")
    with pytest.raises(BratsSegError, match="got a file"):
        discover_cases(f)


def test_same_case_id_twice(tmp_path, synthetic_root):
    shutil.copytree(synthetic_root / "Synth_000", tmp_path / "a" / "Synth_000")
    shutil.copytree(synthetic_root / "Synth_000", tmp_path / "b" / "Synth_000")
    found = discover_cases(tmp_path)
    assert len(found.cases) == 1
    assert len(found.problems) == 1 and "appears twice" in str(found.problems[0])


def test_case_folder_with_several_cases_is_not_one_case(tmp_path, synthetic_root):
    for cid in ("Synth_001", "Synth_002"):
        for f in (synthetic_root / cid).iterdir():
            shutil.copy(f, tmp_path / f.name)
    with pytest.raises(BratsSegError, match="expected one case, found 2"):
        find_case(tmp_path)


def test_symlinked_case_folders_are_followed_once(synthetic_root, tmp_path):
    root = tmp_path / "linked"
    root.mkdir()
    for case in discover_cases(synthetic_root).cases:
        (root / case.case_id).symlink_to(case.folder, target_is_directory=True)
    (root / "loop").symlink_to(root, target_is_directory=True)  # a cycle must not hang or duplicate
    found = discover_cases(root)
    assert len(found.cases) == 4 and not found.problems
