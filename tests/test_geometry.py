import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bratsseg import BratsSegError
from bratsseg.data.geometry import as_bbox, bbox_of, bbox_shape, crop, uncrop


def test_bbox_by_hand():
    mask = np.zeros((10, 8, 6), dtype=bool)
    mask[2, 3, 1] = mask[5, 4, 4] = True
    assert bbox_of(mask) == ((2, 6), (3, 5), (1, 5))
    assert bbox_of(mask, margin=2) == ((0, 8), (1, 7), (0, 6))  # clipped at the edges


def test_bbox_of_empty_mask_is_an_error():
    with pytest.raises(BratsSegError, match="empty"):
        bbox_of(np.zeros((3, 3, 3)))


def test_uncrop_checks_shapes():
    with pytest.raises(BratsSegError, match="does not match"):
        uncrop(np.zeros((2, 2, 2)), ((0, 3), (0, 2), (0, 2)), (4, 4, 4))
    with pytest.raises(BratsSegError, match="does not fit"):
        uncrop(np.zeros((2, 2, 2)), ((3, 5), (0, 2), (0, 2)), (4, 4, 4))
    with pytest.raises(BratsSegError, match="invalid bounding box"):
        as_bbox([[3, 3], [0, 1], [0, 1]])


@st.composite
def volume_and_box(draw):
    shape = tuple(draw(st.integers(1, 12)) for _ in range(3))
    box = []
    for s in shape:
        a = draw(st.integers(0, s - 1))
        b = draw(st.integers(a + 1, s))
        box.append((a, b))
    channels = draw(st.sampled_from([(), (2,)]))
    seed = draw(st.integers(0, 2**16))
    return shape, tuple(box), channels, seed


@settings(max_examples=100, deadline=None)
@given(volume_and_box())
def test_crop_uncrop_identity(args):
    shape, box, channels, seed = args
    rng = np.random.default_rng(seed)
    full = rng.normal(size=(*channels, *shape)).astype(np.float32)
    inside = np.zeros(shape, dtype=bool)
    inside[tuple(slice(a, b) for a, b in box)] = True
    full[..., ~inside] = 0  # zero outside the box, as a cropped-away background is
    cropped = crop(full, box)
    assert cropped.shape == (*channels, *bbox_shape(box))
    back = uncrop(cropped, box, shape)
    assert back.dtype == full.dtype and np.array_equal(back, full)
    assert np.array_equal(crop(uncrop(cropped, box, shape, fill=-7), box), cropped)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**16), st.integers(0, 3))
def test_bbox_holds_every_voxel(seed, margin):
    rng = np.random.default_rng(seed)
    mask = rng.random((9, 7, 5)) > 0.97
    if not mask.any():
        mask[4, 3, 2] = True
    box = bbox_of(mask, margin)
    assert np.array_equal(uncrop(crop(mask, box), box, mask.shape), mask)
