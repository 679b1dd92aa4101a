import numpy as np
import pytest
import torch

from bratsseg import BratsSegError
from bratsseg.data.cache import open_cache
from bratsseg.data.preprocess import preprocess_dataset
from bratsseg.data.sampling import AugmentConfig, PatchDataset, augment_sample, extract
from bratsseg.data.splits import kfold_split
from bratsseg.labels import unpack_regions


@pytest.fixture(scope="module")
def cache(tmp_path_factory, synthetic_root):
    root = tmp_path_factory.mktemp("cache")
    preprocess_dataset(synthetic_root, root)
    return open_cache(root)


def test_extract_pads_outside():
    a = np.arange(24).reshape(2, 3, 4)
    out = extract(a, [-1, 2, 3], [3, 2, 2])
    assert out.shape == (3, 2, 2)
    assert out[0].sum() == 0 and out[1, 0, 0] == a[0, 2, 3] and out[1, 1].sum() == 0
    assert not extract(a, [5, 0, 0], [2, 2, 2]).any()


def test_samples_are_a_function_of_seed_epoch_index(cache):
    ds = PatchDataset(cache, (16, 16, 16), 8, augment=AugmentConfig(), seed=3)
    a = ds[5]
    b = PatchDataset(cache, (16, 16, 16), 8, augment=AugmentConfig(), seed=3)[5]
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    ds.set_epoch(1)
    assert not torch.equal(ds[5][0], a[0])
    assert a[0].shape == (4, 16, 16, 16) and a[1].shape == (3, 16, 16, 16) and a[0].dtype == torch.float32


def test_foreground_oversampling(cache):
    always = PatchDataset(cache, (8, 8, 8), 40, fg_fraction=1.0)
    assert all(always[i][1][0].any() for i in range(40))
    never = PatchDataset(cache, (8, 8, 8), 40, fg_fraction=0.0)
    assert sum(bool(never[i][1][0].any()) for i in range(40)) < 30


def test_region_weights_choose_the_region_a_foreground_patch_is_centred_on(cache):
    def centred_on(ds, region):  # share of the windows whose centre voxel lies in the region (unclamped ones)
        hits = []
        for i in range(len(ds)):
            k, lo, size, _ = ds.window(i)
            packed = np.asarray(cache[k].packed_regions)
            if all(0 < a < n - s for a, s, n in zip(lo, size, packed.shape, strict=True)):
                hits.append(bool(packed[tuple(a + s // 2 for a, s in zip(lo, size, strict=True))] >> region & 1))
        assert len(hits) > len(ds) // 2
        return np.mean(hits)

    uniform = PatchDataset(cache, (8, 8, 8), 60, fg_fraction=1.0, seed=2)
    et_only = PatchDataset(cache, (8, 8, 8), 60, fg_fraction=1.0, seed=2, region_weights=(0, 0, 1))
    assert centred_on(et_only, 2) == 1.0 > centred_on(uniform, 2) + 0.2
    # window() is where __getitem__ cuts: its target equals the case's regions in that window
    k, lo, size, _ = et_only.window(3)
    assert np.array_equal(et_only[3][1].numpy(), unpack_regions(extract(cache[k].packed_regions, lo, size)))
    # equal weights draw exactly the samples the uniform choice draws
    tripled = PatchDataset(cache, (8, 8, 8), 60, fg_fraction=1.0, seed=2, region_weights=(3, 3, 3))
    assert all(tripled.window(i) == uniform.window(i) for i in range(20))
    with pytest.raises(BratsSegError, match="region_weights"):
        PatchDataset(cache, (8, 8, 8), 4, region_weights=(0, 0, 0))


def test_slices_and_padding(cache):
    ds = PatchDataset(cache, (64, 64), 4, fg_fraction=1.0)  # larger than the tiny cases: zero-padded
    image, regions = ds[0]
    assert image.shape == (4, 64, 64) and regions.shape == (3, 64, 64)
    assert image[:, 0, 0].abs().sum() == 0 and regions[0].any()


def test_needs_segmentations(cache):
    with pytest.raises(BratsSegError, match="patch_size"):
        PatchDataset(cache, (8,), 1)
    with pytest.raises(BratsSegError, match="no training cases"):
        PatchDataset([], (8, 8, 8), 1)


@pytest.mark.parametrize("dims", [2, 3])
def test_augmentation_keeps_image_and_regions_aligned(dims):
    rng = np.random.default_rng(0)
    regions = torch.zeros(3, *([24] * dims))
    regions[(slice(None), *[slice(6, 15)] * dims)] = 1
    regions[(slice(1, 3), *[slice(8, 12)] * dims)] = 1
    regions[1:] *= regions[0]
    image = regions.clone()[:3]
    cfg = AugmentConfig(
        flip_prob=0.5, intensity_prob=0, gamma_prob=0, bias_prob=0, noise_prob=0, spatial_prob=1, rotate_deg=30
    )
    for _ in range(10):
        img, reg = augment_sample(image, regions, cfg, rng)
        assert torch.equal(img > 0.5, reg > 0.5)
        assert reg[0].sum() > 0


def test_intensity_augmentation_leaves_background_zero():
    image = torch.zeros(4, 8, 8, 8)
    image[:, 2:6, 2:6, 2:6] = 1.0
    cfg = AugmentConfig(flip_prob=0, intensity_prob=1, spatial_prob=0)
    out, _ = augment_sample(image, torch.zeros(3, 8, 8, 8), cfg, np.random.default_rng(1))
    assert out[:, 0].abs().sum() == 0 and not torch.equal(out, image)


@pytest.mark.parametrize("kind", ["gamma", "bias", "noise"])
def test_each_intensity_augmentation_changes_the_brain_only(kind):
    rng = np.random.default_rng(3)
    image = torch.zeros(4, 12, 12, 12)
    image[:, 2:10, 2:10, 2:10] = torch.from_numpy(rng.normal(size=(4, 8, 8, 8))).float()
    probs = {"gamma_prob": 0.0, "bias_prob": 0.0, "noise_prob": 0.0, f"{kind}_prob": 1.0}
    cfg = AugmentConfig(flip_prob=0, intensity_prob=0, spatial_prob=0, **probs)
    out, _ = augment_sample(image, torch.zeros(3, 12, 12, 12), cfg, np.random.default_rng(1))
    brain = image.ne(0)
    assert torch.equal(out[~brain], image[~brain])  # the background stays 0
    assert (out[brain] - image[brain]).abs().mean() > 1e-3
    if kind == "gamma":  # gamma keeps each channel's brain mean and std (the z-scoring)
        for c in range(4):
            v, w = image[c][brain[c]], out[c][brain[c]]
            assert abs(float(v.mean() - w.mean())) < 1e-4 and abs(float(v.std() - w.std())) < 1e-4
    again, _ = augment_sample(image, torch.zeros(3, 12, 12, 12), cfg, np.random.default_rng(1))
    assert torch.equal(out, again)  # a pure function of the generator's state


def test_kfold_split():
    ids = [f"c{i:02d}" for i in range(14)]
    folds = [kfold_split(ids, 5, f, seed=0) for f in range(5)]
    vals = [v for s in folds for v in s["val"]]
    assert sorted(vals) == ids  # every case validated exactly once over the folds
    for s in folds:
        assert not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 14
    assert kfold_split(ids, 5, 2, seed=0) == folds[2] and kfold_split(ids, 5, 2, seed=1) != folds[2]
    assert kfold_split(ids, 5, -1, seed=0) == {"train": ids, "val": []}
    with pytest.raises(BratsSegError, match="cannot make 5 folds from 3"):
        kfold_split(ids[:3], 5, 0, 0)


def test_stratified_split_spreads_the_minority_over_the_folds():
    ids = [f"c{i:02d}" for i in range(14)]
    low = ["c03", "c07", "c11"]
    folds = [kfold_split(ids, 5, f, seed=0, stratify=low) for f in range(5)]
    assert sorted(v for s in folds for v in s["val"]) == ids
    assert all(sum(v in low for v in s["val"]) <= 1 for s in folds)  # one per fold at most
    assert all(set(low) & set(s["train"]) for s in folds)  # every training set keeps some
    assert kfold_split(ids, 5, 1, seed=0, stratify=low) == folds[1]
    with pytest.raises(BratsSegError, match="stratify names none"):
        kfold_split(ids, 5, 0, 0, stratify=["nope"])


def test_patches_on_a_coarse_grid(cache):
    from bratsseg.data.sampling import PatchDataset

    ds = PatchDataset(cache, (16, 16, 16), 4, downsample=2)
    image, regions = ds[0]
    assert image.shape == (4, 16, 16, 16) and regions.shape == (3, 16, 16, 16)
    assert set(regions.unique().tolist()) <= {0.0, 1.0}


def test_split_seed_keeps_the_folds_while_the_seed_changes(tmp_path):
    """Another seed on the same folds (an ensemble member): ``split_seed`` fixes the split, ``seed`` the rest."""
    from types import SimpleNamespace

    from bratsseg.engine.config import TrainConfig
    from bratsseg.engine.trainer import RunFolder, split_cases

    cases = [SimpleNamespace(case_id=f"C{i:02d}") for i in range(10)]
    run = RunFolder(tmp_path / "run")

    def val(**kw):
        return [c.case_id for c in split_cases(cases, TrainConfig(fold=1, **kw), run)[1]]  # type: ignore[arg-type]

    assert val(seed=1, split_seed=0) == val(seed=0) != val(seed=1)
    assert val(seed=0, split_seed=1) == val(seed=1)


def test_train_fraction_takes_a_stratified_subset_of_the_folds_training_cases(tmp_path):
    """A learning curve: ``train_fraction`` keeps the fold's validation cases and a seeded subset of its training
    cases, stratum by stratum (each stratum keeps at least one case)."""
    from types import SimpleNamespace

    import pytest

    from bratsseg.data.splits import subsample_cases
    from bratsseg.engine.config import TrainConfig
    from bratsseg.engine.trainer import RunFolder, split_cases
    from bratsseg.errors import BratsSegError

    cases = [SimpleNamespace(case_id=f"C{i:02d}") for i in range(20)]
    low = ("C00", "C01", "C02", "C03", "C04")

    def split(folder, **kw):
        train, val = split_cases(cases, TrainConfig(fold=2, stratify=low, **kw), RunFolder(tmp_path / folder))  # type: ignore[arg-type]
        return [c.case_id for c in train], [c.case_id for c in val]

    full_train, full_val = split("full")
    half_train, half_val = split("half", train_fraction=0.5)
    assert half_val == full_val and set(half_train) < set(full_train)
    assert len(half_train) == 8  # 16 training cases: 4 low-grade -> 2, 12 others -> 6
    assert sum(c in low for c in half_train) == 2
    assert split("again", train_fraction=0.5) == (half_train, half_val)  # seeded
    # the smallest stratum keeps one case; fraction 1 is every case; nonsense refused
    assert subsample_cases(["A", "B", "C"], 0.1, 0, [["A"]]) in (["A", "B"], ["A", "C"])
    assert subsample_cases(["B", "A"], 1.0, 0) == ["A", "B"]
    with pytest.raises(BratsSegError, match="train_fraction"):
        TrainConfig(train_fraction=0.0)
    with pytest.raises(BratsSegError, match="fraction"):
        subsample_cases(["A"], 1.5, 0)


def _tumour_left(nx=20, side=6):
    """A 2-channel image, mirror-symmetric but for a bright blob in the left half, and the blob's mask."""
    rng = np.random.default_rng(0)
    half = rng.normal(size=(2, nx // 2, 8, 6)).astype(np.float32)
    image = np.concatenate([half, half[:, ::-1]], axis=1)
    wt = np.zeros(image.shape[1:], bool)
    wt[2 : 2 + side // 2, 2:5, 2:4] = True
    healthy = image.copy()
    image[:, wt] = 9.0
    return image, wt, healthy


def test_heal_replaces_the_tumour_by_the_mirrored_other_hemisphere():
    from bratsseg.data.healthy import heal

    image, wt, healthy = _tumour_left()
    healed = heal(image, wt, margin=1)
    np.testing.assert_array_equal(healed, healthy)  # the image was symmetric but for the tumour
    assert image[:, wt].max() == 9.0  # the input is not modified
    # a tumour on both sides of the mid-line gives no tumour-free brain, nor does a case without tumour
    wt_across = wt | wt[::-1]
    assert heal(image, wt_across, margin=1) is None
    assert heal(image, np.zeros_like(wt), margin=1) is None


def test_healed_values_pasted_into_any_window_match_the_healed_image():
    from bratsseg.data.healthy import heal, healed_box, paste

    image, wt, _ = _tumour_left()
    healed = heal(image, wt, margin=1)
    found = healed_box(image, wt, margin=1)
    assert found is not None and found[1].size < image.size
    for lo in ([0, 0, 0], [3, 1, 2], [-2, -3, 1], [15, 0, 0]):  # inside, across the box, outside the image, apart
        size = (6, 5, 4)
        patch = paste(extract(image, lo, size), lo, found)
        np.testing.assert_array_equal(patch, extract(healed, lo, size))


def test_tumour_free_samples(cache, caplog):
    from bratsseg.data.healthy import heal

    plain = PatchDataset(cache, (16, 16, 16), 40, fg_fraction=1.0, seed=1)
    free = PatchDataset(cache, (16, 16, 16), 40, fg_fraction=1.0, seed=1, free_fraction=0.5)
    assert [cache[k].case_id for k, _ in free.healed] == ["Synth_002"]  # the one tumour on one side
    samples = [free[i] for i in range(40)]
    empty = [s for s in samples if not s[1].any()]
    assert 8 <= len(empty) <= 32  # about half, and every other sample is centred on tumour (fg_fraction 1)
    # an empty-target sample is a window of the healed case: the tumour's bright values are gone
    case = cache[free.healed[0][0]]
    healed = heal(np.asarray(case.image), np.asarray(case.packed_regions) & 1)
    windows = [extract(healed, lo, (16, 16, 16)) for lo in np.ndindex(*(max(n - 15, 1) for n in healed.shape[1:]))]
    assert any(np.array_equal(empty[0][0].numpy(), w.astype(np.float32)) for w in windows)
    # free_fraction 0 draws exactly the samples it drew before the option existed
    zero = PatchDataset(cache, (16, 16, 16), 40, fg_fraction=1.0, seed=1, free_fraction=0.0)
    assert all(torch.equal(zero[i][0], plain[i][0]) for i in range(5))
    # a dataset whose every tumour crosses the mid-line trains on its tumour cases as they are, and says so
    bilateral = [c for c in cache if c.case_id != "Synth_002"]
    with caplog.at_level("WARNING", logger="bratsseg.data.sampling"):
        none_free = PatchDataset(bilateral, (8, 8, 8), 4, fg_fraction=1.0, seed=1, free_fraction=0.2)
    assert "mid-line" in caplog.text and none_free.free_fraction == 0.0 and not none_free.healed
    as_before = PatchDataset(bilateral, (8, 8, 8), 4, fg_fraction=1.0, seed=1)
    assert all(torch.equal(none_free[i][0], as_before[i][0]) for i in range(4))
