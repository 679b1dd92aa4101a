"""Pooling out-of-fold results: the 0.5 table, the sweep and the nested estimates, on synthetic probabilities."""

from __future__ import annotations

import numpy as np
import pytest

from bratsseg.data.cache import open_cache
from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.engine.crossval import OutOfFold, cross_validate
from bratsseg.metrics.tables import case_rows, write_results


def _write_fold(out, cases, make_probs):
    (out / "probabilities").mkdir(parents=True)
    rows = []
    for case in cases:
        truth = case.regions()
        probs = make_probs(case, truth)
        np.save(out / "probabilities" / f"{case.case_id}.npy", probs.astype(np.float16))
        total = int(np.prod(case.original_shape))
        rows += case_rows(
            case.case_id, probs > 0.5, truth, case.spacing, total, thresholds=dict.fromkeys(["WT", "TC", "ET"], 0.5)
        )
    write_results(out, rows, {"policy": "brats"})


def test_cross_validation_pools_each_case_once_and_nests_its_choices(synthetic_root, tmp_path):
    cache = tmp_path / "cache"
    assert preprocess_dataset(synthetic_root, cache).ok
    cases = open_cache(cache)
    # the truth, blurred to 0.3 / 0.6: right at every threshold in [0.3, 0.6), wrong everywhere at 0.6 and above
    blurred = lambda case, truth: np.where(truth, 0.6, 0.3).astype(np.float32)  # noqa: E731
    for k in range(2):
        _write_fold(tmp_path / "eval" / f"fold{k}", cases[k::2], blurred)
    oof = OutOfFold(tmp_path / "eval", cache)
    cv = cross_validate(oof)
    assert cv["n_cases"] == len(cases) and cv["folds"] == 2
    assert sorted(cv["per_case"]) == sorted(c.case_id for c in cases)
    for g in ("WT", "TC", "ET"):
        assert cv["pooled"][g]["dice_mean"] == pytest.approx(1.0)
        assert cv["nested_threshold"]["per_region"][g] == pytest.approx(1.0)
    for t in cv["nested_threshold"]["thresholds"].values():
        assert 0.3 <= t < 0.6
    rows = cv["postprocessing"]["rows"]
    assert rows["nested threshold"]["mean_dice"] == pytest.approx(1.0)
    assert rows["+ nested regions"]["mean_dice"] == pytest.approx(1.0)  # truth regions are nested already


def test_a_case_in_two_folds_is_refused(synthetic_root, tmp_path):
    from bratsseg.errors import BratsSegError

    cache = tmp_path / "cache"
    assert preprocess_dataset(synthetic_root, cache).ok
    cases = open_cache(cache)
    same = lambda case, truth: truth.astype(np.float32)  # noqa: E731
    _write_fold(tmp_path / "eval" / "fold0", cases[:2], same)
    _write_fold(tmp_path / "eval" / "fold1", cases[1:3], same)
    with pytest.raises(BratsSegError, match="more than one fold"):
        OutOfFold(tmp_path / "eval", cache)
