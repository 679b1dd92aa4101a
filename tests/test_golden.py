"""Golden output: a tiny committed model's labels on a generated synthetic case must not change.

``tests/golden/model`` and ``tests/golden/expected.json`` come from ``scripts/make_golden.py``; the input is
regenerated from the seed the JSON names (no imaging file is committed). A change to preprocessing, the network,
resampling, binarisation, label conversion or NIfTI writing that alters one voxel fails here; the only voxels
allowed to differ are those whose probability lies within 1e-4 of the threshold (float rounding on another CPU).
"""

from __future__ import annotations

import json
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


def expected_labels() -> np.ndarray:
    spec = json.loads((GOLDEN / "expected.json").read_text())
    flat = np.zeros(int(np.prod(spec["shape"])), dtype=spec["dtype"])
    for label, voxels in spec["voxels"].items():
        flat[voxels] = int(label)
    return flat.reshape(spec["shape"], order=spec["order"])


def _near_threshold(model: Path, case_dir: Path, backend: str) -> np.ndarray:
    """Voxels whose region probability is within 1e-4 of its threshold, on the full grid."""
    predictor = load_predictor(model, backend=backend)
    image = load_case(find_case(case_dir), load_seg=False).image
    norm = crop_and_normalise(image, predictor.card.preprocessing.margin)
    probs = uncrop(predictor.probabilities(norm.image), norm.box, image.shape[1:])
    t = np.array([predictor.thresholds[r] for r in ("WT", "TC", "ET")]).reshape(3, 1, 1, 1)
    return np.any(np.abs(probs - t) < 1e-4, axis=0)


def test_golden_model_is_small_and_its_labels_do_not_change(golden_case, tmp_path):
    model = GOLDEN / "model"
    assert sum(f.stat().st_size for f in model.iterdir()) < 100e3
    expected = expected_labels()
    assert set(np.unique(expected).tolist()) == {0, 1, 2, 4}  # every label present: the test covers all regions
    reference = nib.load(next(p for p in golden_case.iterdir() if p.name.endswith("_flair.nii.gz")))
    for backend in ("torch", "onnx"):  # the ONNX path exports the model on the fly
        out = predict([golden_case], tmp_path / backend, model, threads=1, backend=backend).written[0]
        got_img = nib.load(out)
        got = np.asarray(got_img.dataobj)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        np.testing.assert_array_equal(got_img.affine, reference.affine)
        differ = got != expected
        assert not np.any(differ & ~_near_threshold(model, golden_case, "torch")), (backend, int(differ.sum()))
        assert differ.sum() <= 5, backend


def test_golden_model_card_is_a_current_card():
    card = load_model(GOLDEN / "model")[1]
    assert card.inference.downsample == 2 and card.architecture.skip == "add"
    assert card.training.global_step == 300 and len(card.training.train_cases) == 6
