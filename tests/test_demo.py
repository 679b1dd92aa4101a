"""`bratsseg demo` end to end on a shrunken configuration (the real one takes a few minutes)."""

from __future__ import annotations

import nibabel as nib
import numpy as np

from bratsseg.demo import DemoConfig, run_demo


def test_demo_writes_a_report_with_every_step(tmp_path, capsys):
    said = []
    report = run_demo(tmp_path / "demo", DemoConfig(cases=4, size="tiny", epochs=1, steps_per_epoch=2), said.append)
    text = report.read_text()
    for section in ("## Training", "## Threshold sweep", "## Compression", "## Prediction on a held-out case"):
        assert section in text
    assert "| pair-0.5 int8 |" in text
    for figure in ("training.png", "sweep.png", "compress/pareto.png", "held_out.png"):
        assert (tmp_path / "demo" / figure).stat().st_size > 1000
    pred = nib.load(tmp_path / "demo" / "predictions" / "Demo-HeldOut-00001.nii.gz")
    assert set(np.unique(np.asarray(pred.dataobj)).tolist()) <= {0, 1, 2, 3}  # BraTS 2023 labels
    assert any("train" in s for s in said)
    assert "[demo] epoch 1/1 step 2/2 loss" in capsys.readouterr().err  # the training talks
    page = (tmp_path / "demo" / "report.html").read_text()  # the same report as one self-contained page
    assert "<h2>Training</h2>" in page and page.count("data:image/png;base64,") >= 4 and "Compression study" in page
