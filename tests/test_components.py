"""Connected components and holes in numpy (the runtime install's post-processing): equal to SciPy's labelling
and hole filling, the removal of small components by volume, and the filling of the tumour core's holes."""

from __future__ import annotations

import numpy as np
import pytest

from bratsseg.components import fill_holes, label_components, largest_component, remove_small_components

scipy_ndimage = pytest.importorskip("scipy.ndimage", reason="the reference labelling is SciPy's")
FULL = np.ones((3, 3, 3), dtype=bool)


@pytest.mark.parametrize("density", [0.05, 0.2, 0.35, 0.6])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_equals_scipy_on_random_masks(density, seed):
    mask = np.random.default_rng(seed).random((23, 17, 29)) < density
    ours, n = label_components(mask)
    ref, n_ref = scipy_ndimage.label(mask, structure=FULL)
    assert n == n_ref
    np.testing.assert_array_equal(ours, ref)  # same numbering too: by first voxel in C order


def test_long_thin_spiral_converges():
    """A one-voxel-wide path that winds through the volume: the worst case for label spreading."""
    mask = np.zeros((9, 40, 40), dtype=bool)
    for x in range(0, 9, 2):
        mask[x, 1:-1:2, 1:-1] = True  # rows
        mask[x, 1:-1, 1 if (x // 2) % 2 else -2] = True  # joined at alternating ends
    mask[1::2, 1, 1] = True  # the slabs joined at one corner
    ours, n = label_components(mask)
    ref, n_ref = scipy_ndimage.label(mask, structure=FULL)
    assert n == n_ref
    np.testing.assert_array_equal(ours, ref)


def test_empty_and_full():
    labels, n = label_components(np.zeros((4, 5, 6), dtype=bool))
    assert n == 0 and not labels.any()
    labels, n = label_components(np.ones((4, 5, 6), dtype=bool))
    assert n == 1 and (labels == 1).all()


def test_diagonal_neighbours_are_connected():
    mask = np.zeros((4, 4, 4), dtype=bool)
    mask[0, 0, 0] = mask[1, 1, 1] = mask[2, 2, 2] = True  # corners touching: one 26-connected component
    assert label_components(mask)[1] == 1
    mask[3, 3, 0] = True
    assert label_components(mask)[1] == 2


def test_remove_small_components_by_volume():
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[2:12, 2:12, 2:12] = True  # 1000 voxels
    mask[20:23, 20:23, 20:23] = True  # 27 voxels
    kept = remove_small_components(mask, (1.0, 1.0, 1.0), 100)
    assert kept[5, 5, 5] and not kept[21, 21, 21] and kept.sum() == 1000
    # the same voxels at 2 x 2 x 2 mm are 8x larger: 27 voxels = 216 mm^3 stay
    assert remove_small_components(mask, (2.0, 2.0, 2.0), 100).sum() == 1027
    assert remove_small_components(mask, (1.0, 1.0, 1.0), 0) is mask
    assert not remove_small_components(mask, (1.0, 1.0, 1.0), 5000).any()
    kept = remove_small_components(mask, (1.0, 1.0, 1.0), 5000, keep_largest=True)
    assert kept.sum() == 1000 and kept[5, 5, 5]  # never emptied: the largest stays


def test_largest_component():
    mask = np.zeros((30, 30, 30), dtype=bool)
    mask[2:12, 2:12, 2:12] = True
    mask[20:23, 20:23, 20:23] = True
    out = largest_component(mask)
    assert out.sum() == 1000 and out[5, 5, 5]
    single = np.zeros((5, 5, 5), dtype=bool)
    single[1:3, 1:3, 1:3] = True
    assert largest_component(single) is single


def test_postprocessing_removes_components_outer_regions_first():
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.models.card import Postprocessing

    regions = np.zeros((3, 30, 30, 30), dtype=bool)
    regions[:, 2:12, 2:12, 2:12] = True  # the tumour: 1000 voxels in every region
    regions[0, 20:24, 20:24, 20:24] = True  # a small WT blob (64 voxels) holding TC and ET
    regions[1:, 21:23, 21:23, 21:23] = True
    regions[2, 25:27, 2:4, 2:4] = True  # a lone ET speck (8 voxels) outside WT: nesting puts it in TC and WT
    settings = Postprocessing(nested_regions=True, min_component_mm3={"WT": 100})
    out = postprocess_regions(regions, (1.0, 1.0, 1.0), settings)
    assert out[:, 21, 21, 21].sum() == 0  # the blob left WT, and took its TC and ET with it
    assert out[:, 25, 2, 2].sum() == 0
    assert (out[:, 2:12, 2:12, 2:12]).all() and out.sum() == 3000
    largest = postprocess_regions(regions, (1.0, 1.0, 1.0), Postprocessing(largest_component_only=("ET",)))
    assert largest[2].sum() == 1000 and largest[0].sum() == regions[0].sum()  # only ET is touched
    # on a coarse grid the same blob is 64 * 8 = 512 mm^3: it stays
    assert postprocess_regions(regions, (2.0, 2.0, 2.0), settings)[0, 21, 21, 21]
    # a rule above every component's size keeps the largest: the region is never emptied
    huge = postprocess_regions(regions, (1.0, 1.0, 1.0), Postprocessing(min_component_mm3={"ET": 10**6}))
    assert huge[2].sum() == 1000


def test_card_round_trips_the_component_rule():
    from bratsseg.errors import BratsSegError
    from bratsseg.models.card import Postprocessing

    post = Postprocessing(min_component_mm3={"TC": 800.0}, largest_component_only=["WT"])  # a list, as JSON gives
    assert post.largest_component_only == ("WT",) and post.filters_components
    assert (
        not Postprocessing().filters_components and not Postprocessing(min_component_mm3={"ET": 0}).filters_components
    )
    with pytest.raises(BratsSegError, match="min_component_mm3"):
        Postprocessing(min_component_mm3={"XX": 5})
    with pytest.raises(BratsSegError, match="largest_component_only"):
        Postprocessing(largest_component_only=("NCR",))


def test_bundled_card_with_a_component_rule_round_trips_json():
    from bratsseg.models.bundled import default_model_path
    from bratsseg.models.card import ModelCard, Postprocessing, read_card

    card = read_card(default_model_path())
    changed = card.replace(
        postprocessing=Postprocessing(
            nested_regions=True,
            min_component_mm3={"ET": 1600.0},
            largest_component_only=("WT", "TC"),
            fill_holes=("TC",),
        )
    )
    again = ModelCard.from_json(changed.to_json())
    assert again.postprocessing == changed.postprocessing


@pytest.mark.parametrize("density", [0.3, 0.5, 0.6, 0.75])
@pytest.mark.parametrize("seed", [0, 1])
def test_fill_holes_equals_scipy(density, seed):
    mask = np.random.default_rng(seed).random((21, 18, 25)) < density
    for m in (mask, scipy_ndimage.binary_closing(mask)):
        np.testing.assert_array_equal(fill_holes(m), scipy_ndimage.binary_fill_holes(m))


def test_fill_holes_of_a_shell_and_of_a_diagonal_leak():
    x, y, z = np.mgrid[:30, :30, :30]
    r = np.sqrt((x - 15.0) ** 2 + (y - 15.0) ** 2 + (z - 15.0) ** 2)
    shell = (r < 12) & (r >= 8)
    np.testing.assert_array_equal(fill_holes(shell), r < 12)
    no_holes = r < 12
    assert fill_holes(no_holes) is no_holes  # nothing to fill: the mask itself
    empty = np.zeros((4, 4, 4), dtype=bool)
    assert fill_holes(empty) is empty
    # a cavity that touches the outside only diagonally is a hole: the background is 6-connected, as in SciPy
    box = np.ones((5, 5, 5), dtype=bool)
    box[2, 2, 2] = False
    box[1, 1, 1] = False
    box[0, 0, 0] = False
    np.testing.assert_array_equal(fill_holes(box), scipy_ndimage.binary_fill_holes(box))


def test_postprocessing_fills_the_tumour_cores_holes_with_necrosis():
    from bratsseg.errors import BratsSegError
    from bratsseg.inference.postprocess import postprocess_regions
    from bratsseg.labels import BRATS2021, regions_to_labels
    from bratsseg.models.card import Postprocessing

    x, y, z = np.mgrid[:32, :32, :32]
    r = np.sqrt((x - 16.0) ** 2 + (y - 16.0) ** 2 + (z - 16.0) ** 2)
    regions = np.zeros((3, 32, 32, 32), dtype=bool)
    regions[0] = r < 14  # edema around
    regions[1] = (r < 10) & (r >= 6)  # an enhancing rim, and the necrosis inside it missed
    regions[2] = regions[1]
    regions[0, 16, 16, 16] = False  # the missed core is not even edema at its centre
    settings = Postprocessing(nested_regions=True, fill_holes=("TC",))
    out = postprocess_regions(regions, (1.0, 1.0, 1.0), settings)
    np.testing.assert_array_equal(out[1], r < 10)  # the core is solid
    np.testing.assert_array_equal(out[2], regions[2])  # ET is untouched: a rim
    assert out[0][r < 10].all() and out[0].sum() == (r < 14).sum()
    labels = regions_to_labels(out, BRATS2021)
    assert labels[16, 16, 16] == 1  # what filled the hole is necrosis
    untouched = postprocess_regions(regions, (1.0, 1.0, 1.0), Postprocessing(nested_regions=True))
    assert not untouched[1, 16, 16, 16]
    with pytest.raises(BratsSegError, match="fill_holes"):
        Postprocessing(fill_holes=("ET",))


def test_postprocessing_redraws_enhancing_tumour_from_t1ce():
    from bratsseg.errors import BratsSegError
    from bratsseg.inference.postprocess import T1CE, postprocess_regions
    from bratsseg.labels import BRATS2021, MODALITIES, regions_to_labels
    from bratsseg.models.card import ModelCard, Postprocessing

    assert MODALITIES[T1CE] == "t1ce"
    rng = np.random.default_rng(0)
    image = rng.normal(size=(4, 12, 12, 12)).astype(np.float32)
    regions = np.zeros((3, 12, 12, 12), dtype=bool)
    regions[0, 1:11, 1:11, 1:11] = True
    regions[1, 3:9, 3:9, 3:9] = True
    regions[2, 4:6, 4:6, 4:6] = True  # the network's ET: a small blob
    regions[2, 0, 0, 0] = True  # and a voxel outside the core: ET leaves it, TC takes it (the union is the core)
    settings = Postprocessing(nested_regions=True, et_t1ce_threshold=0.5)
    out = postprocess_regions(regions, (1.0, 1.0, 1.0), settings, image)
    core = regions[1] | regions[2]
    np.testing.assert_array_equal(out[1], core)  # the tumour core is what the network said (TC or ET)
    np.testing.assert_array_equal(out[2], core & (image[T1CE] > 0.5))  # ET: the bright part of it, voxel by voxel
    np.testing.assert_array_equal(out[0], regions[0] | core)
    assert regions[2, 4:6, 4:6, 4:6].all() and regions.sum() == 1000 + 216 + 9  # the input is left alone
    labels = regions_to_labels(out, BRATS2021)
    assert set(np.unique(labels[core])) <= {1, 4} and (labels[core & (image[T1CE] <= 0.5)] == 1).all()
    # the other channels play no part
    other = image.copy()
    other[[0, 1, 3]] = 9.0
    np.testing.assert_array_equal(postprocess_regions(regions, (1.0, 1.0, 1.0), settings, other), out)
    with pytest.raises(BratsSegError, match="needs the case's image"):
        postprocess_regions(regions, (1.0, 1.0, 1.0), settings)
    with pytest.raises(BratsSegError, match="same grid"):
        postprocess_regions(regions, (1.0, 1.0, 1.0), settings, image[:, :6])
    with pytest.raises(BratsSegError, match="et_t1ce_threshold"):
        Postprocessing(et_t1ce_threshold=float("nan"))
    # off by default, and the field round-trips through the card's JSON
    assert Postprocessing().et_t1ce_threshold is None
    card = ModelCard().replace(postprocessing=settings)
    assert ModelCard.from_json(card.to_json()).postprocessing.et_t1ce_threshold == 0.5


def test_keep_components_is_the_same_with_and_without_scipy(monkeypatch):
    """keep_components uses SciPy's labelling where installed (bundle labels thousands of masks) and the numpy one
    on the runtime install: the same masks."""
    import bratsseg.components as components

    rng = np.random.default_rng(3)
    masks = [rng.random((30, 40, 20)) < p for p in (0.05, 0.2, 0.45)]
    spacing = (1.0, 1.2, 2.0)
    settings = [(0.0, True), (5.0, False), (40.0, False)]
    fast = [components.keep_components(m, spacing, v, largest) for m in masks for v, largest in settings]
    monkeypatch.setattr(components, "_scipy_label", lambda: None)
    slow = [components.keep_components(m, spacing, v, largest) for m in masks for v, largest in settings]
    assert all(np.array_equal(a, b) for a, b in zip(fast, slow, strict=True))


def test_enhancing_tumour_redrawn_only_near_the_networks_own():
    """``et_t1ce_within``: the T1ce redraw keeps only what lies within k voxels of the network's ET, so a core the
    network saw no enhancement in gets none (the small low-grade tumours' over-drawn ET)."""
    from scipy import ndimage

    from bratsseg.errors import BratsSegError
    from bratsseg.inference.postprocess import T1CE, dilate, postprocess_regions
    from bratsseg.models.card import ModelCard, Postprocessing

    rng = np.random.default_rng(1)
    image = rng.normal(size=(4, 14, 14, 14)).astype(np.float32)
    regions = np.zeros((3, 14, 14, 14), dtype=bool)
    regions[0, 1:13, 1:13, 1:13] = True
    regions[1, 2:12, 2:12, 2:12] = True
    regions[2, 3:5, 3:5, 3:5] = True  # the network's ET: one corner of the core
    bright = (regions[1] | regions[2]) & (image[T1CE] > 0.5)
    anywhere = postprocess_regions(regions, (1.0,) * 3, Postprocessing(et_t1ce_threshold=0.5), image)
    np.testing.assert_array_equal(anywhere[2], bright)
    for k in (0, 1, 3):
        near = Postprocessing(et_t1ce_threshold=0.5, et_t1ce_within=k)
        out = postprocess_regions(regions, (1.0,) * 3, near, image)
        grown = ndimage.binary_dilation(regions[2], np.ones((3, 3, 3)), iterations=k) if k else regions[2]
        np.testing.assert_array_equal(out[2], bright & grown)
        np.testing.assert_array_equal(dilate(regions[2], k), grown)
        np.testing.assert_array_equal(out[1], anywhere[1])  # the core is unchanged: only ET moves
    assert out[2].sum() < anywhere[2].sum()
    # no ET from the network: none drawn
    no_et = regions.copy()
    no_et[2] = False
    none = postprocess_regions(no_et, (1.0,) * 3, Postprocessing(et_t1ce_threshold=0.5, et_t1ce_within=2), image)
    assert not none[2].any()
    with pytest.raises(BratsSegError, match="et_t1ce_within"):
        Postprocessing(et_t1ce_within=-1)
    card = ModelCard().replace(postprocessing=Postprocessing(et_t1ce_threshold=0.5, et_t1ce_within=2))
    assert ModelCard.from_json(card.to_json()).postprocessing.et_t1ce_within == 2
    assert Postprocessing(et_t1ce_threshold=0.5, et_t1ce_within=2).without_components().et_t1ce_within is None
