"""`bratsseg predict`: label maps on the input's grid, conventions, bad cases, overwrite, ONNX, torchrun."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest

from bratsseg.cli.main import main
from bratsseg.engine.predict import parse_thresholds, predict
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import discover_cases


def _check_output(out_file, case, allowed):
    ref = nib.load(case.images[0])
    img = nib.load(out_file)
    assert img.shape == ref.shape
    np.testing.assert_allclose(img.affine, ref.affine, atol=1e-5)
    assert img.header.get_data_dtype() == np.uint8
    assert int(img.header["qform_code"]) == int(ref.header["qform_code"])
    assert int(img.header["sform_code"]) == int(ref.header["sform_code"])
    labels = set(np.unique(np.asarray(img.dataobj)).tolist())
    assert labels <= allowed
    return np.asarray(img.dataobj)


def test_predict_root_writes_every_case_in_its_convention(synthetic_root, model_dir, tmp_path):
    report = predict([synthetic_root], tmp_path / "out", model_dir, thresholds=dict.fromkeys(("WT", "TC", "ET"), 0.0))
    assert report.ok and len(report.written) == 4 and not report.skipped
    for case in discover_cases(synthetic_root).cases:
        out = tmp_path / "out" / f"{case.case_id}.nii.gz"
        et = case.convention.enhancing
        data = _check_output(out, case, {0, et})
        # threshold 0: every brain voxel is enhancing tumour, nothing outside the brain
        brain = np.asarray(nib.load(case.images[0]).dataobj) != 0
        assert np.all(data[brain] == et) and np.all(data[~brain & (data != 0)] == et)
        assert et == (3 if case.naming.name == "brats2023" else 4)
    assert set(report.mean_timings()) == {"read", "preprocess", "network", "postprocess", "write", "total"}


def test_predict_is_deterministic_and_never_overwrites_silently(case_dir, model_dir, tmp_path):
    out = tmp_path / "out"
    first = predict([case_dir], out, model_dir).written[0]
    data = first.read_bytes()
    again = predict([case_dir], out, model_dir)
    assert again.skipped and not again.written and again.ok
    assert first.read_bytes() == data
    (out / first.name).write_bytes(b"stale")
    redone = predict([case_dir], out, model_dir, overwrite=True)
    assert redone.written and first.read_bytes() == data  # identical bytes on a second prediction


def test_predict_four_files_and_probabilities(case_dir, model_dir, tmp_path):
    files = sorted(p for p in case_dir.iterdir() if "seg" not in p.name)
    report = predict(files, tmp_path / "out", model_dir, save_probabilities=True)
    assert report.ok and len(report.written) == 1
    probs = nib.load(tmp_path / "out" / "Tiny_001_probabilities.nii.gz")
    assert probs.shape == (*nib.load(files[0]).shape, 3)
    p = np.moveaxis(np.asarray(probs.dataobj), -1, 0)
    # exactly the predictor's probabilities on the brain crop, zero outside it
    from bratsseg.data.geometry import uncrop
    from bratsseg.data.preprocess import crop_and_normalise
    from bratsseg.inference.loading import load_predictor
    from bratsseg.inference.predictor import binarize
    from bratsseg.io.discovery import case_from_files
    from bratsseg.io.nifti import load_case
    from bratsseg.labels import regions_to_labels

    predictor = load_predictor(model_dir)
    loaded = load_case(case_from_files(files), load_seg=False)
    norm = crop_and_normalise(loaded.image, predictor.card.preprocessing.margin)
    expected = uncrop(predictor.probabilities(norm.image), norm.box, loaded.image.shape[1:])
    np.testing.assert_allclose(p, expected, atol=1e-6)
    # and the label map is those probabilities binarised at the model's thresholds
    labels = np.asarray(nib.load(report.written[0]).dataobj)
    convention = case_from_files(files).convention
    assert np.array_equal(labels, regions_to_labels(binarize(p, predictor.thresholds), convention))


def test_broken_case_is_reported_and_the_others_finish(fresh_root, model_dir, tmp_path, capsys):
    broken = sorted(discover_cases(fresh_root).cases, key=lambda c: c.case_id)[0]
    broken.images[2].unlink()  # t1ce missing
    code = main(["predict", str(fresh_root), "-o", str(tmp_path / "out"), "--model", str(model_dir)])
    captured = capsys.readouterr()
    assert code == 1
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 3
    assert broken.case_id in captured.err and "failed" in captured.err
    assert "3 case(s) written" in captured.out


def test_onnx_backend_matches_torch(case_dir, model_dir, tmp_path):
    pytest.importorskip("onnxruntime")
    from bratsseg.compress.onnx_export import export_onnx
    from bratsseg.engine.predictors import open_predictor
    from bratsseg.inference.loading import load_predictor
    from bratsseg.inference.onnx_predictor import OnnxPredictor
    from bratsseg.inference.torch_predictor import TorchPredictor

    onnx_file = export_onnx(model_dir, tmp_path / "m.onnx")
    a = predict([case_dir], tmp_path / "a", model_dir).written[0]
    b = predict([case_dir], tmp_path / "b", onnx_file, threads=1).written[0]
    c = predict([case_dir], tmp_path / "c", model_dir, backend="onnx").written[0]  # exported on the fly
    pa, pb, pc = (np.asarray(nib.load(f).dataobj) for f in (a, b, c))
    assert np.mean(pa == pb) > 0.999 and np.array_equal(pb, pc)
    # a folder holding model.onnx runs on ONNX Runtime unless told otherwise (as the bundled model does)
    folder = tmp_path / "with_onnx"
    shutil.copytree(model_dir, folder)
    export_onnx(folder, folder / "model.onnx")
    assert isinstance(load_predictor(folder), OnnxPredictor)
    assert isinstance(load_predictor(folder, backend="torch"), TorchPredictor)
    # a plain folder runs on ONNX Runtime only when the engine exports it; inference alone refuses clearly
    assert isinstance(open_predictor(model_dir, backend="onnx"), OnnxPredictor)
    with pytest.raises(BratsSegError, match=r"needs an \.onnx file or a model folder holding model\.onnx"):
        load_predictor(model_dir, backend="onnx")


def test_thresholds_and_errors(tmp_path, model_dir, case_dir, capsys):
    assert parse_thresholds("0.3") == {"WT": 0.3, "TC": 0.3, "ET": 0.3}
    assert parse_thresholds("wt=0.5,TC=0.4,ET=0.45") == {"WT": 0.5, "TC": 0.4, "ET": 0.45}
    for bad in ("x", "WT=0.5", "1.5", "WT=0.5,TC=0.4,XX=0.1"):
        with pytest.raises(BratsSegError):
            parse_thresholds(bad)
    (tmp_path / "empty").mkdir()
    with pytest.raises(BratsSegError, match="no BraTS case"):
        predict([tmp_path / "empty"], tmp_path / "o", model_dir)
    from bratsseg.compress.onnx_export import export_onnx

    onnx_file = export_onnx(model_dir, tmp_path / "m.onnx")
    args = ["predict", str(case_dir), "-o", str(tmp_path / "o"), "--backend", "torch", "--model", str(onnx_file)]
    assert main(args) == 1
    assert "--backend torch needs a model folder, not an .onnx file" in capsys.readouterr().err


@pytest.mark.slow
def test_torchrun_predict_splits_cases(synthetic_root, model_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "bratsseg", "predict", str(synthetic_root), "-o", str(out), "--model", str(model_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(list(out.glob("*.nii.gz"))) == 4
    assert proc.stdout.count("4 case(s) written") == 1  # every case once, reported once by rank 0


def test_real_cases_keep_their_grid(real_brats, real_2023, model_dir, tmp_path):
    case = sorted(discover_cases(real_brats).cases, key=lambda c: c.case_id)[0]
    out = predict([case.folder], tmp_path / "out", model_dir).written[0]
    _check_output(out, case, {0, 1, 2, 4})
    case23 = discover_cases(real_2023).cases[0]
    out23 = predict([case23.folder], tmp_path / "out", model_dir, thresholds={"WT": 0.0, "TC": 0.0, "ET": 0.0})
    data = _check_output(out23.written[0], case23, {0, 1, 2, 3})
    assert 3 in set(np.unique(data).tolist())
    shutil.rmtree(tmp_path / "out")


def test_bundled_component_rule_and_all_components(real_2023, tmp_path):
    """The bundle's rule (WT and TC reduced to their largest component) as predict writes it, on a case no model
    trained on; --all-components keeps the secondary components the network found."""
    from bratsseg.components import label_components
    from bratsseg.inference.loading import load_predictor
    from bratsseg.models.bundled import default_model_path

    post = load_predictor(default_model_path()).card.postprocessing
    assert post.filters_components and "WT" in post.largest_component_only
    case = discover_cases(real_2023).cases[0]
    ruled = nib.load(predict([case.folder], tmp_path / "a").written[0])
    every = nib.load(predict([case.folder], tmp_path / "b", all_components=True).written[0])
    a, b = np.asarray(ruled.dataobj), np.asarray(every.dataobj)
    assert label_components(a > 0)[1] == 1  # WT: one component
    assert label_components(b > 0)[1] > 1  # the network found WT in several places
    assert ((a > 0) <= (b > 0)).all() and (a > 0).sum() < (b > 0).sum()
    assert ruled.header.get_best_affine().tolist() == every.header.get_best_affine().tolist()
    proc = subprocess.run(
        [sys.executable, "-m", "bratsseg", "predict", str(case.folder), "-o", str(tmp_path / "c"), "--all-components"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "c" / f"{case.case_id}.nii.gz").dataobj), b)


def test_predict_and_evaluate_redraw_enhancing_tumour_from_t1ce(synthetic_root, model_dir, tmp_path):
    """With ``postprocessing.et_t1ce_threshold`` in the card, the written ET is the core's voxels whose z-scored
    T1ce exceeds it, on the input's own grid, in the case's convention; ``evaluate`` scores the same rule."""
    from bratsseg.data.geometry import uncrop
    from bratsseg.data.preprocess import crop_and_normalise, preprocess_dataset
    from bratsseg.engine.evaluate import evaluate_model
    from bratsseg.inference.postprocess import T1CE
    from bratsseg.io.nifti import load_raw_case
    from bratsseg.models.card import Postprocessing, read_card, write_card

    model = shutil.copytree(model_dir, tmp_path / "model")
    card = read_card(model)
    write_card(model, card.replace(postprocessing=Postprocessing(nested_regions=True, et_t1ce_threshold=0.3)))
    for case in sorted(discover_cases(synthetic_root).cases, key=lambda c: c.case_id)[-2:]:  # both namings
        everything = {"WT": 0.0, "TC": 0.0, "ET": 0.9999}  # the whole brain is tumour core; ET from T1ce alone
        labels = np.asarray(nib.load(predict([case.folder], tmp_path / "out", model, thresholds=everything)
                                     .written[0]).dataobj)  # fmt: skip
        norm = crop_and_normalise(load_raw_case(case).channels, card.preprocessing.margin)
        bright = uncrop(norm.image[T1CE] > 0.3, norm.box, labels.shape)
        brain = uncrop(np.any(norm.image != 0, axis=0), norm.box, labels.shape)
        np.testing.assert_array_equal(labels == case.convention.enhancing, bright & brain)
        assert set(np.unique(labels[brain & ~bright]).tolist()) == {1}  # the rest of the core: necrosis
    preprocess_dataset(synthetic_root, tmp_path / "cache")
    ruled = evaluate_model(model, tmp_path / "cache", tmp_path / "e1", split="all", thresholds=everything, lesion=None)
    write_card(model, card.replace(postprocessing=Postprocessing(nested_regions=True)))
    plain = evaluate_model(model, tmp_path / "cache", tmp_path / "e2", split="all", thresholds=everything, lesion=None)
    assert (
        ruled.info["postprocessing"]["et_t1ce_threshold"] == 0.3
        and plain.info["postprocessing"]["et_t1ce_threshold"] is None
    )
    assert ruled.metrics["ET"] != plain.metrics["ET"] and ruled.metrics["WT"] == plain.metrics["WT"]


def test_four_files_of_two_cases_are_refused_naming_both(tmp_path, capsys):
    """`predict A_flair A_t1ce A_t2 B_t1` once wrote B.nii.gz holding A's tumour, exit 0."""
    from bratsseg.cli.main import main
    from bratsseg.data.synthetic import make_synthetic_case

    a = make_synthetic_case(tmp_path / "raw", "Mix_A", "brats2021", size="tiny", seed=1)
    b = make_synthetic_case(tmp_path / "raw", "Mix_B", "brats2021", size="tiny", seed=2)
    files = [a.images[0], a.images[2], a.images[3], b.images[1]]
    assert main(["predict", *map(str, files), "-o", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Mix_A" in err and "Mix_B" in err and "different cases" in err
    assert not list((tmp_path / "out").glob("*.nii.gz"))


def test_an_output_that_appears_while_predict_works_is_not_replaced(case_dir, model_dir, tmp_path, monkeypatch):
    """Two runs into one folder: the second does not silently replace what the first wrote meanwhile."""
    import bratsseg.engine.predict as engine_predict

    out = tmp_path / "out"
    real = engine_predict.probabilities_at_model_spacing

    def slow(*args, **kwargs):  # another run writes the same case while this one computes
        (out / "Tiny_001.nii.gz").write_bytes(b"the other run's labels")
        return real(*args, **kwargs)

    monkeypatch.setattr(engine_predict, "probabilities_at_model_spacing", slow)
    report = predict([case_dir], out, model_dir)
    assert report.ok and not report.written and "appeared while this run worked" in report.skipped[0]
    assert (out / "Tiny_001.nii.gz").read_bytes() == b"the other run's labels"
    assert not list(out.glob(".*tmp*"))
    report = predict([case_dir], out, model_dir, overwrite=True)  # --overwrite replaces it
    assert report.written and (out / "Tiny_001.nii.gz").read_bytes() != b"the other run's labels"


def test_a_temporary_left_by_a_killed_predict_is_removed(case_dir, model_dir, tmp_path):
    import os
    import time

    out = tmp_path / "out"
    out.mkdir()
    old = out / ".Tiny_001.nii.gz.1234abcd.tmp.nii.gz"
    old.write_bytes(b"half a file")
    os.utime(old, (time.time() - 3600, time.time() - 3600))
    fresh = out / ".Other.nii.gz.5678abcd.tmp.nii.gz"  # a live run's: left alone
    fresh.write_bytes(b"being written")
    report = predict([case_dir], out, model_dir)
    assert report.cleaned == [old] and not old.exists() and fresh.exists()


def test_predict_writes_a_report_beside_each_label_map(case_dir, model_dir, tmp_path, monkeypatch):
    """Volumes in cm^3, confidence, and a flag a device can read: 'no tumour found' for empty labels."""
    import json

    import nibabel as nib

    out = tmp_path / "out"
    report = predict([case_dir], out, model_dir, thresholds=dict.fromkeys(("WT", "TC", "ET"), 0.0))
    finding = json.loads((out / "Tiny_001.json").read_text())
    labels = np.asarray(nib.load(report.written[0]).dataobj)
    voxel_cm3 = float(np.prod(nib.load(report.written[0]).header.get_zooms()[:3])) / 1000
    assert finding["flag"] == "finding" and finding["agreement"] is None
    assert finding["volume_cm3"]["WT"] == pytest.approx((labels > 0).sum() * voxel_cm3, abs=1e-3)
    assert 0 < finding["confidence"] <= 1 and "tumour-free" in finding["caveat"]
    import bratsseg.engine.predict as engine_predict

    real = engine_predict.probabilities_at_model_spacing
    monkeypatch.setattr(engine_predict, "probabilities_at_model_spacing", lambda *a: np.zeros_like(real(*a)))
    assert predict([case_dir], tmp_path / "none", model_dir).ok
    none = json.loads((tmp_path / "none" / "Tiny_001.json").read_text())
    assert none["flag"] == "no tumour found" and none["volume_cm3"] == {"WT": 0.0, "TC": 0.0, "ET": 0.0}


def test_an_ensemble_reports_how_far_its_members_agree():
    from bratsseg.engine.predict import MIN_AGREEMENT, case_finding
    from bratsseg.inference.ensemble import mean_pairwise_dice

    a = np.zeros((4, 4, 4), bool)
    a[:2] = True
    b = np.zeros_like(a)
    b[1:3] = True
    assert mean_pairwise_dice([a, a, a]) == 1.0 and mean_pairwise_dice([a, b]) == pytest.approx(0.5)
    assert mean_pairwise_dice([a & False, b & False]) == 1.0
    volumes = {"WT": 10.0, "TC": 2.0, "ET": 1.0}
    assert case_finding("c", volumes, 0.9, MIN_AGREEMENT - 0.1)["flag"] == "unsure"
    assert case_finding("c", volumes, 0.9, 0.95)["flag"] == "finding"


def test_the_report_caveat_says_whether_the_model_learnt_from_tumour_free_brains(case_dir, model_dir, tmp_path):
    import json

    from bratsseg.engine.predict import CAVEAT_TUMOUR_FREE, CAVEAT_TUMOUR_ONLY
    from bratsseg.models.files import load_model, save_model

    model, card = load_model(model_dir)
    assert card.free_fraction == 0.0
    tuned = save_model(tmp_path / "tuned", model, card.with_step("finetune", epochs=1, free_fraction=0.2))
    assert load_model(tuned)[1].free_fraction == 0.2
    for folder, caveat in ((model_dir, CAVEAT_TUMOUR_ONLY), (tuned, CAVEAT_TUMOUR_FREE)):
        out = tmp_path / f"out-{folder.name}"
        assert predict([case_dir], out, folder, backend="torch").ok
        assert json.loads((out / "Tiny_001.json").read_text())["caveat"] == caveat
