import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from bratsseg import BRATS2021, BRATS2023, BratsSegError, LabelConvention, get_convention
from bratsseg.labels import (
    invalid_labels,
    labels_to_regions,
    pack_regions,
    region_voxel_counts,
    regions_to_labels,
    unpack_regions,
)


def test_conventions_by_name():
    assert get_convention("brats2021").enhancing == 4
    assert get_convention("brats2023").enhancing == 3
    assert get_convention(BRATS2023) is BRATS2023
    with pytest.raises(BratsSegError, match="brats2019"):
        get_convention("brats2019")


def test_convention_rejects_clashing_labels():
    with pytest.raises(BratsSegError, match="distinct"):
        LabelConvention("bad", necrotic=1, edema=1, enhancing=4)


def test_regions_by_hand():
    labels = np.array([0, 1, 2, 4, 4, 2], dtype=np.uint8)
    wt, tc, et = labels_to_regions(labels, BRATS2021)
    assert wt.tolist() == [False, True, True, True, True, True]
    assert tc.tolist() == [False, True, False, True, True, False]
    assert et.tolist() == [False, False, False, True, True, False]
    assert region_voxel_counts(np.stack([wt, tc, et])) == {"WT": 5, "TC": 3, "ET": 2}


def test_regions_to_labels_priority():
    # ET wins over TC over WT, whatever the masks say elsewhere
    regions = np.array([[1, 1, 1, 0], [0, 1, 1, 0], [0, 0, 1, 0]], dtype=bool)
    assert regions_to_labels(regions, BRATS2021).tolist() == [2, 1, 4, 0]
    assert regions_to_labels(regions, BRATS2023).tolist() == [2, 1, 3, 0]
    assert regions_to_labels(regions, BRATS2021).dtype == np.uint8


def test_label_outside_convention_is_an_error():
    with pytest.raises(BratsSegError, match=r"\[3\].*brats2021"):
        labels_to_regions(np.array([0, 1, 3]), BRATS2021)
    assert invalid_labels(np.array([0, 4, 7, 4]), BRATS2023) == [4, 7]
    assert invalid_labels(np.array([-1, 0]), BRATS2021) == [-1]


def test_regions_shape_checked():
    with pytest.raises(BratsSegError, match=r"\(3, \.\.\.\)"):
        regions_to_labels(np.zeros((2, 4, 4)), BRATS2021)


@pytest.mark.parametrize("convention", [BRATS2021, BRATS2023], ids=lambda c: c.name)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_labels_regions_labels_roundtrip(convention, data):
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, max_side=7))
    labels = data.draw(hnp.arrays(np.uint8, shape, elements=st.sampled_from(convention.labels)))
    regions = labels_to_regions(labels, convention)
    assert regions.shape == (3, *shape)
    assert np.array_equal(regions_to_labels(regions, convention), labels)
    # nesting holds: ET inside TC inside WT
    assert not (regions[2] & ~regions[1]).any() and not (regions[1] & ~regions[0]).any()
    assert np.array_equal(unpack_regions(pack_regions(regions)), regions)


@settings(max_examples=60, deadline=None)
@given(masks=hnp.arrays(np.bool_, st.tuples(st.just(3), st.integers(1, 9), st.integers(1, 9))))
def test_nested_regions_roundtrip(masks):
    # nest arbitrary masks, then region -> label -> region is the identity
    wt = masks[0] | masks[1] | masks[2]
    tc = masks[1] | masks[2]
    regions = np.stack([wt, tc, masks[2]])
    for convention in (BRATS2021, BRATS2023):
        assert np.array_equal(labels_to_regions(regions_to_labels(regions, convention), convention), regions)
