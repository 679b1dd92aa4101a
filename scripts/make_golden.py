"""Write the golden test's fixtures into ``tests/golden/`` (run once; the files are committed):

    python scripts/make_golden.py

``model/``: a tiny 3-D U-Net (widths 4/8/16, a 2x coarse grid like the bundled model) trained for 300 steps on
six synthetic cases, so that its probabilities are far from the threshold almost everywhere;
``expected.json``: the label map ``bratsseg predict`` wrote for one held-out synthetic case (the voxels of each
label, and the generator's seed, so the test regenerates the input and no imaging file is committed).
``tests/test_golden.py`` checks that the same prediction still comes out, voxel for voxel.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bratsseg.data.preprocess import crop_and_normalise, preprocess_dataset
from bratsseg.data.synthetic import make_synthetic_case, make_synthetic_dataset
from bratsseg.engine.config import load_train_config
from bratsseg.engine.predict import predict
from bratsseg.engine.trainer import train
from bratsseg.inference.loading import load_predictor
from bratsseg.io.discovery import find_case
from bratsseg.io.nifti import load_case
from bratsseg.models.files import load_model, save_model

GOLDEN = Path(__file__).resolve().parents[1] / "tests" / "golden"


def main() -> int:
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        make_synthetic_dataset(tmp / "raw", 6, naming="brats2021", size="tiny", seed=42)
        preprocess_dataset(tmp / "raw", tmp / "cache")
        config = load_train_config(
            None,
            ["model.widths=[4,8,16]", "model.skip=add", "model.top_convs=1", "downsample=2", "patch_size=[16,16,16]",
             "epochs=10", "steps_per_epoch=30", "warmup_steps=5", "lr=0.01", "fold=-1", "num_workers=0", "seed=7"],
        )  # fmt: skip
        train(tmp / "cache", tmp / "run", config, device="cpu")
        model, card = load_model(tmp / "run" / "last")
        if GOLDEN.exists():
            shutil.rmtree(GOLDEN)
        GOLDEN.mkdir(parents=True)
        save_model(GOLDEN / "model", model, card)
    spec = {"case_id": "case", "naming": "brats2021", "size": "tiny", "seed": 4242}
    inputs = Path(tempfile.mkdtemp())
    case = make_synthetic_case(inputs, spec["case_id"], spec["naming"], size=spec["size"], seed=spec["seed"])
    report = predict([case.folder], inputs / "out", GOLDEN / "model", threads=1)
    assert report.ok, report.failed
    labels = np.asarray(nib.load(report.written[0]).dataobj)
    flat = labels.ravel(order="C")
    expected = {
        "shape": list(labels.shape),
        "dtype": str(labels.dtype),
        "order": "C",
        "voxels": {str(v): np.flatnonzero(flat == v).tolist() for v in np.unique(flat) if v},
        "input": {"generator": "bratsseg.data.synthetic.make_synthetic_case", **spec},
    }
    (GOLDEN / "expected.json").write_text(json.dumps(expected, separators=(",", ":")))
    # how far from the threshold the probabilities are: the golden labels must not hinge on float rounding
    predictor = load_predictor(GOLDEN / "model")
    image = load_case(find_case(case.folder), load_seg=False).image
    probs = predictor.probabilities(crop_and_normalise(image, card.preprocessing.margin).image)
    gap = np.abs(probs - 0.5)
    shutil.rmtree(inputs)
    size = sum(f.stat().st_size for f in GOLDEN.rglob("*") if f.is_file())
    print(f"{GOLDEN}: {size / 1e3:.0f} kB; min |p - 0.5| = {gap.min():.2e}, voxels within 1e-3: {(gap < 1e-3).sum()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
