import nibabel as nib
import numpy as np
import pytest

from bratsseg import BratsSegError
from bratsseg.data.synthetic import make_synthetic_case
from bratsseg.io.nifti import load_case


@pytest.mark.parametrize(("naming", "labels"), [("brats2021", {0, 1, 2, 4}), ("brats2023", {0, 1, 2, 3})])
def test_synthetic_case_is_brats_like(tmp_path, naming, labels):
    case = make_synthetic_case(tmp_path, "S-1", naming, size="tiny", seed=5)
    loaded = load_case(case)
    assert loaded.image.shape == (4, 48, 48, 32)
    assert set(np.unique(loaded.labels)) == labels
    wt, tc, et = loaded.regions
    assert et.sum() < tc.sum() < wt.sum()
    img = nib.load(case.images[0])
    assert not np.allclose(img.affine[:3, :3], np.diag(np.diag(img.affine[:3, :3])))  # rotated
    assert img.header["qform_code"] == 1 and img.header["sform_code"] == 1
    assert np.allclose(img.header.get_zooms(), (3.5, 3.5, 4.5))
    brain = loaded.image.any(axis=0)
    assert 0.2 < brain.mean() < 0.6 and not (wt & ~brain).any()
    # modality contrasts: enhancing tumour is brightest in T1ce, oedema bright in FLAIR
    flair, _, t1ce, _ = loaded.image
    assert t1ce[et].mean() > 1.5 * t1ce[brain & ~wt].mean()
    assert flair[wt & ~tc].mean() > 1.5 * flair[brain & ~wt].mean()


def test_seeded_and_low_grade(tmp_path):
    a = load_case(make_synthetic_case(tmp_path / "a", "S_1", size="tiny", seed=7))
    b = load_case(make_synthetic_case(tmp_path / "b", "S_1", size="tiny", seed=7))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    lgg = load_case(make_synthetic_case(tmp_path / "c", "S_2", size="tiny", seed=7, enhancing=False))
    assert lgg.regions[2].sum() == 0 and lgg.regions[1].sum() > 0


def test_unknown_size(tmp_path):
    with pytest.raises(BratsSegError, match="huge"):
        make_synthetic_case(tmp_path, size="huge")
