import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bratsseg import BratsSegError
from bratsseg.metrics.distance import hd95
from bratsseg.metrics.overlap import BRATS_MAX_HD95, Counts, dice, overlap_metrics
from bratsseg.metrics.sweep import THRESHOLDS, SweepAccumulator, sweep_counts, threshold_bins
from bratsseg.metrics.tables import case_rows, summarize


def test_counts_and_metrics_by_hand():
    pred = np.array([1, 1, 1, 0, 0, 0, 0, 0], bool)
    truth = np.array([0, 1, 1, 1, 0, 0, 0, 0], bool)
    c = Counts.of(pred, truth)
    assert (c.tp, c.fp, c.fn, c.tn) == (2, 1, 1, 4)
    m = overlap_metrics(c)
    assert m["dice"] == pytest.approx(4 / 6) and m["iou"] == pytest.approx(2 / 4)
    assert m["sensitivity"] == pytest.approx(2 / 3) and m["specificity"] == pytest.approx(4 / 5)
    assert Counts.of(pred, truth, total_voxels=100).tn == 96  # TN over the whole original grid


@pytest.mark.parametrize(
    ("p", "t", "brats", "hd"),
    [
        (False, False, (1.0, 1.0, 1.0), 0.0),  # both empty
        (True, False, (0.0, 0.0, 0.0), BRATS_MAX_HD95),  # false positive only
        (False, True, (0.0, 0.0, 0.0), BRATS_MAX_HD95),  # missed entirely
        (True, True, (1.0, 1.0, 1.0), 0.0),  # identical
    ],
)
def test_empty_mask_policies(p, t, brats, hd):
    a = np.zeros((6, 6, 6), bool)
    b = np.zeros((6, 6, 6), bool)
    a[2:4, 2:4, 2:4] = p
    b[2:4, 2:4, 2:4] = t
    m = overlap_metrics(Counts.of(a, b), "brats")
    assert (m["dice"], m["iou"], m["sensitivity"]) == brats
    assert hd95(a, b, (1, 1, 1), "brats") == hd
    nan = overlap_metrics(Counts.of(a, b), "nan")
    if p or t:
        if p and t:
            assert nan["dice"] == 1.0
        else:
            assert nan["dice"] == 0.0 and math.isnan(hd95(a, b, (1, 1, 1), "nan"))
    else:
        assert math.isnan(nan["dice"]) and math.isnan(nan["sensitivity"]) and math.isnan(hd95(a, b, (1, 1, 1), "nan"))
    with pytest.raises(BratsSegError, match="policy"):
        dice(a, b, "zero")


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (0.9, 1.2, 3.0), (0.5, 0.5, 5.0)])
def test_hd95_equals_monai_and_the_edt_equals_scipy(spacing):
    """The numpy HD95 of the runtime install is MONAI's (surfaces by 6-connected erosion, exact Euclidean
    distances, 95th percentile each way, the larger); its distance transform is SciPy's."""
    import warnings

    import torch
    from monai.metrics import compute_hausdorff_distance
    from scipy import ndimage

    from bratsseg.metrics.distance import distance_to, surface

    rng = np.random.default_rng(int(spacing[2] * 10))
    for _ in range(3):
        truth = ndimage.gaussian_filter(rng.random((40, 36, 30)), 3) > 0.5
        pred = ndimage.gaussian_filter(rng.random((40, 36, 30)), 3) > 0.52
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = compute_hausdorff_distance(
                torch.from_numpy(pred)[None, None], torch.from_numpy(truth)[None, None], percentile=95, spacing=spacing
            )
        assert hd95(pred, truth, spacing) == pytest.approx(float(ref.item()), rel=1e-6)  # MONAI: float32
        assert np.array_equal(surface(truth), truth ^ ndimage.binary_erosion(truth))
        sparse = rng.random((20, 17, 9)) > 0.99
        assert np.allclose(distance_to(sparse, spacing), ndimage.distance_transform_edt(~sparse, sampling=spacing))


def test_hd95_by_hand_with_anisotropic_spacing():
    a = np.zeros((30, 30, 30), bool)
    b = np.zeros((30, 30, 30), bool)
    a[10, 10, 10] = True
    b[10, 10, 13] = True  # three voxels apart along the last axis
    assert hd95(a, b, (1, 1, 1)) == pytest.approx(3.0)
    assert hd95(a, b, (1, 1, 2.5)) == pytest.approx(7.5)
    assert hd95(a, b, (4, 4, 0.5)) == pytest.approx(1.5)
    # a cube shifted by 2 voxels along x: every surface distance is at most 2 voxels of 0.8 mm
    c = np.zeros((30, 30, 30), bool)
    d = np.zeros((30, 30, 30), bool)
    c[5:15, 5:15, 5:15] = True
    d[7:17, 5:15, 5:15] = True
    assert hd95(c, d, (0.8, 1, 1)) == pytest.approx(1.6)


def test_case_rows_and_summary():
    truth = np.zeros((3, 8, 8, 8), bool)
    truth[0, 2:6, 2:6, 2:6] = True
    truth[1, 3:5, 3:5, 3:5] = True
    pred = truth.copy()
    pred[2, 0, 0, 0] = True  # ET: predicted where truth has none
    rows = case_rows("c1", pred, truth, (1, 1, 1), total_voxels=1000)
    by = {r["region"]: r for r in rows}
    assert by["WT"]["dice"] == 1.0 and by["TC"]["hd95"] == 0.0
    assert by["ET"]["dice"] == 0.0 and by["ET"]["hd95"] == BRATS_MAX_HD95 and by["ET"]["fp"] == 1
    assert by["WT"]["tn"] == 1000 - 64
    s = summarize(rows + case_rows("c2", truth, truth, (1, 1, 1)))
    assert s["ET"]["dice"]["mean"] == 0.5 and s["ET"]["dice"]["n"] == 2


@pytest.mark.filterwarnings("ignore:Mean of empty slice")
@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["brats", "nan"]))
def test_sweep_equals_brute_force(seed, policy):
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(3):
        prob = rng.random((3, 9, 7, 5)).astype(np.float32)
        prob[:, 0, 0, :] = THRESHOLDS[rng.integers(0, 101, 5)]  # exact threshold values: the boundary case
        truth = rng.random((3, 9, 7, 5)) < rng.uniform(0, 0.3)
        if rng.random() < 0.3:
            truth[2] = False  # an empty region
        cases.append((prob, truth))
    acc = SweepAccumulator(policy=policy)
    for i, (p, t) in enumerate(cases):
        acc.add(f"c{i}", p, t)
    result = acc.result("dice")
    for k, thr in enumerate(THRESHOLDS):
        for r, region in enumerate(("WT", "TC", "ET")):
            values = []
            for p, t in cases:
                m = overlap_metrics(Counts.of(p[r] > thr, t[r]), policy)
                values.append((m["dice"], m["iou"]))
            d = np.array(values, dtype=float)
            assert result.mean_dice[region][k] == pytest.approx(np.nanmean(d[:, 0]), nan_ok=True)
            assert result.mean_iou[region][k] == pytest.approx(np.nanmean(d[:, 1]), nan_ok=True)


def test_threshold_bins_match_searchsorted_at_the_edges():
    p = np.concatenate([THRESHOLDS, np.nextafter(THRESHOLDS, 2), np.nextafter(THRESHOLDS, -1), [0.0, 1.0, 0.5]])
    for arr in (p, p.astype(np.float32)):
        expected = np.searchsorted(THRESHOLDS, arr.astype(np.float64), side="left")
        assert np.array_equal(threshold_bins(arr), expected)


def test_best_thresholds():
    # ET is best at a high threshold, WT and TC at a low one
    prob = np.zeros((3, 10, 10, 10), np.float32)
    truth = np.zeros((3, 10, 10, 10), bool)
    truth[:, 2:8, 2:8, 2:8] = True
    prob[:, 2:8, 2:8, 2:8] = 0.3
    prob[2, 0:2] = 0.555  # ET false positives at 0.555
    prob[2, 2:8, 2:8, 2:8] = 0.9
    acc = SweepAccumulator()
    acc.add("c", prob, truth)
    res = acc.result("iou")
    assert res.best_per_region.thresholds == {"WT": 0.0, "TC": 0.0, "ET": 0.56}
    assert res.best_global.threshold == 0.0  # WT, TC perfect below 0.3; ET then has the false positives
    tp, fp, fn = sweep_counts(prob[2], truth[2])
    assert tp[55] == 216 and fp[55] == 200 and tp[56] == 216 and fp[56] == 0 and fn[95] == 216


def test_paired_bootstrap_interval_covers_a_known_shift_and_refuses_bad_input():
    import numpy as np
    import pytest

    from bratsseg.errors import BratsSegError
    from bratsseg.metrics.paired import paired_bootstrap

    rng = np.random.default_rng(1)
    b = rng.uniform(0.5, 0.9, 200)
    a = b + 0.02 + rng.normal(0, 0.01, 200)  # a is 0.02 better, clearly
    r = paired_bootstrap(a, b)
    assert r["low"] < 0.02 < r["high"] and r["low"] > 0 and r["ahead"] > 150 and r["cases"] == 200
    assert abs(r["mean"] - float((a - b).mean())) < 1e-12
    # the same scores: no difference, an interval of zero width, no case ahead or behind
    same = paired_bootstrap(b, b)
    assert same["mean"] == same["low"] == same["high"] == 0.0 and same["ahead"] == same["behind"] == 0
    # a higher level gives a wider interval; the resampling is seeded
    assert paired_bootstrap(a, b, level=0.99)["high"] - paired_bootstrap(a, b, level=0.99)["low"] > r["high"] - r["low"]
    assert paired_bootstrap(a, b) == r
    with pytest.raises(BratsSegError, match="equal-length"):
        paired_bootstrap(a, b[:-1])
    with pytest.raises(BratsSegError, match="finite"):
        paired_bootstrap(np.array([0.5, np.nan]), np.array([0.5, 0.5]))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 0.7, 2.5)])
def test_the_runtime_installs_distance_transform_equals_scipys(spacing):
    """The numpy distance transform (no SciPy on the runtime install) is exact: dense, sparse and scattered sources,
    lines and planes without any (what made a few scattered voxels cost minutes)."""
    from scipy.ndimage import distance_transform_edt

    from bratsseg.metrics.distance import distance_to, distance_to_numpy

    rng = np.random.default_rng(1)
    for shape in ((31, 40, 23), (7, 1, 12)):
        for fraction in (0.0005, 0.02, 0.4):
            targets = rng.random(shape) < fraction
            targets.flat[0] = True
            ref = distance_transform_edt(~targets, sampling=spacing)
            assert np.allclose(distance_to_numpy(targets, spacing), ref)
            assert np.allclose(distance_to(targets, spacing), ref)
    assert np.isinf(distance_to_numpy(np.zeros((3, 4, 5), bool), spacing)).all()
    assert np.isinf(distance_to(np.zeros((3, 4, 5), bool), spacing)).all()
