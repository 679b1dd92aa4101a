"""Golden output: a tiny committed model's labels on a committed synthetic case must not change.

The fixtures in ``tests/golden/`` come from ``scripts/make_golden.py``. A change to preprocessing, the network,
resampling, binarisation, label conversion or NIfTI writing that alters one voxel fails here; the only voxels
allowed to differ are those whose probability lies within 1e-4 of the threshold (float rounding on another CPU).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np

from bratsseg.data.geometry import uncrop
from bratsseg.data.preprocess import crop_and_normalise
from bratsseg.engine.predict import predict
from bratsseg.inference.loading import load_predictor
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case
from bratsseg.models.files import load_model

GOLDEN = Path(__file__).parent / "golden"


def _near_threshold(model: Path, case_dir: Path, backend: str) -> np.ndarray:
    """Voxels whose region probability is within 1e-4 of its threshold, on the full grid."""
    predictor = load_predictor(model, backend=backend)
    image = load_case(find_case(case_dir), load_seg=False).image
    norm = crop_and_normalise(image, predictor.card.preprocessing.margin)
    probs = uncrop(predictor.probabilities(norm.image), norm.box, image.shape[1:])
    t = np.array([predictor.thresholds[r] for r in ("WT", "TC", "ET")]).reshape(3, 1, 1, 1)
    return np.any(np.abs(probs - t) < 1e-4, axis=0)


def test_golden_model_is_small_and_its_labels_do_not_change(tmp_path):
    model, case_dir = GOLDEN / "model", GOLDEN / "case"
    assert sum(f.stat().st_size for f in model.iterdir()) < 100e3
    expected_img = nib.load(GOLDEN / "expected.nii.gz")
    expected = np.asarray(expected_img.dataobj)
    assert set(np.unique(expected).tolist()) == {0, 1, 2, 4}  # every label present: the test covers all regions
    for backend in ("torch", "onnx"):  # the ONNX path exports the model on the fly
        out = predict([case_dir], tmp_path / backend, model, threads=1, backend=backend).written[0]
        got_img = nib.load(out)
        got = np.asarray(got_img.dataobj)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got_img.affine, expected_img.affine)
        differ = got != expected
        assert not np.any(differ & ~_near_threshold(model, case_dir, "torch")), (backend, int(differ.sum()))
        assert differ.sum() <= 5, backend


def test_golden_model_card_is_a_current_card():
    card = load_model(GOLDEN / "model")[1]
    assert card.inference.downsample == 2 and card.architecture.skip == "add"
    assert card.training.global_step == 300 and len(card.training.train_cases) == 6
