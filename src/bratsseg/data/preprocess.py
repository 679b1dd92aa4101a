"""Preprocessing: crop to the brain, z-score each modality over brain voxels, cache compactly.

Done once per dataset by :func:`preprocess_dataset`; training and evaluation read the cache.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.data.cache import (
    DATASET_FILE,
    META_FILE,
    read_meta,
    remove_partial_writes,
    write_cached_case,
    write_json_atomic,
)
from bratsseg.data.geometry import BBox, bbox_of, bbox_shape, crop
from bratsseg.errors import BratsSegError
from bratsseg.io.discovery import MODALITIES, Case, discover_cases
from bratsseg.io.nifti import LoadedCase, load_case
from bratsseg.labels import LabelConvention, labels_to_regions, pack_regions, region_voxel_counts

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw cases become cached arrays. Stored in every case's metadata."""

    margin: int = 2  # voxels added around the brain bounding box
    image_dtype: str = "float16"
    #: resample every case to this voxel size in mm first (None: keep each case's own grid)
    spacing: tuple[float, float, float] | None = None

    def __post_init__(self) -> None:
        if self.spacing is not None:
            spacing = tuple(float(v) for v in self.spacing)
            if len(spacing) != 3 or min(spacing) <= 0:
                raise BratsSegError(f"spacing must be three positive sizes in mm, got {self.spacing}")
            object.__setattr__(self, "spacing", spacing)
        if self.margin < 0:
            raise BratsSegError(f"margin must be >= 0, got {self.margin}")
        if self.image_dtype not in ("float16", "float32"):
            raise BratsSegError(f"image_dtype must be float16 or float32, got {self.image_dtype!r}")


#: A case's image: one ``(C, X, Y, Z)`` array, or its C channels as 3-D arrays of any numeric dtype
Channels = NDArray[Any] | Sequence[NDArray[Any]]


def brain_mask(image: Channels, background: float = 0.0) -> NDArray[np.bool_]:
    """Voxels where any modality of ``(C, X, Y, Z)`` differs from ``background`` (BraTS images are skull-stripped,
    with background 0)."""
    mask = np.asarray(image[0] != background)
    for c in range(1, len(image)):
        mask |= image[c] != background
    return mask


#: Above this fraction of non-zero voxels on the volume's six faces the input is not skull-stripped or its
#: background is not zero (the 23 shared BraTS cases have at most 0.9%).
MAX_BORDER_FRACTION = 0.25
#: Above this fraction of "brain" voxels the background is not zero (BraTS brains fill 13-19% of the volume).
MAX_BRAIN_FRACTION = 0.9
NEEDS = (
    "BraTS-format input must be skull-stripped, its four modalities co-registered, and its background exactly 0 "
    "(the BraTS pipeline in CaPTk or FeTS does all three; HD-BET or SynthStrip strip the skull)"
)


def _border_fraction(mask: NDArray[np.bool_]) -> float:
    faces = [mask[0], mask[-1], mask[:, 0], mask[:, -1], mask[:, :, 0], mask[:, :, -1]]
    return sum(int(f.sum()) for f in faces) / sum(f.size for f in faces)


def check_background(
    mask: NDArray[np.bool_],
    image: Channels | None = None,
    names: Sequence[str] | None = None,
    background: float = 0.0,
) -> None:
    """Raise a :class:`BratsSegError` when ``mask`` (from :func:`brain_mask`) says the background is not zero.
    Given the ``image`` it was made from and its channels' ``names`` (the files), the message names the
    channels whose own background is not zero."""
    border = _border_fraction(mask)
    brain = float(mask.mean())
    if border > MAX_BORDER_FRACTION or brain > MAX_BRAIN_FRACTION:
        culprits = ""
        if image is not None:
            names = list(names) if names is not None else [f"channel {c}" for c in range(len(image))]
            bad = [n for c, n in enumerate(names) if _border_fraction(np.asarray(image[c] != background)) > 0.05]
            culprits = f" in {', '.join(bad)}" if bad else ""
        raise BratsSegError(
            f"the background is not zero{culprits} ({border:.0%} of the volume's border and {brain:.0%} of all "
            f"voxels are non-zero in some modality): {NEEDS}; a constant non-zero background can be given with "
            "--background"
        )


def _mean_std(values: NDArray[np.float32]) -> tuple[float, float]:
    """Mean and (population) std of ``values`` in float64, two passes: the centred values' dot product with
    themselves instead of ``ndarray.std``'s square-then-sum (half the memory traffic)."""
    if not values.size:
        return 0.0, 0.0
    centred = values.astype(np.float64)
    mean = float(centred.mean())
    centred -= mean
    return mean, float(np.sqrt(np.dot(centred, centred) / values.size))


#: each channel is clipped to these percentiles of its brain voxels before the z-score (winsorised), so that a few
#: extreme voxels (a scanner artefact, a corrupt slice) cannot stretch the standard deviation and wash out the
#: whole image; on BraTS images it moves 0.1% of the brain's voxels a little and the rest not at all
CLIP_PERCENTILES = (0.05, 99.95)
#: the percentiles are taken on about this many brain voxels, evenly strided (a BraTS brain has 1-2 million: 15x
#: cheaper, and 50 sampled voxels still lie above the upper percentile, so a few outliers cannot set it)
CLIP_SAMPLE = 100_000


def clip_range(values: NDArray[Any]) -> tuple[float, float]:
    """The :data:`CLIP_PERCENTILES` of ``values`` (a channel's brain voxels), from about :data:`CLIP_SAMPLE` of
    them, evenly strided."""
    sample = np.array(values[:: max(1, values.size // CLIP_SAMPLE)])
    n = sample.size
    lo_k = int(CLIP_PERCENTILES[0] / 100 * (n - 1))
    hi_k = int(np.ceil(CLIP_PERCENTILES[1] / 100 * (n - 1)))
    sample.partition([lo_k, hi_k])
    return float(sample[lo_k]), float(sample[hi_k])


def zscore(image: Channels, mask: NDArray[np.bool_]) -> tuple[NDArray[np.float32], list[float], list[float]]:
    """Each channel of ``(C, ...)`` clipped to its brain's :data:`CLIP_PERCENTILES`, minus its mean over ``mask``,
    divided by its std there; 0 outside the mask.

    Returns the normalised float32 image and the per-channel means and stds (the channels may be of any numeric
    dtype: each is converted once, into the output). A channel that is constant over the mask becomes all zero
    there instead of dividing by zero.
    """
    out = np.empty((len(image), *image[0].shape), dtype=np.float32)
    mask = np.ascontiguousarray(mask)
    outside = ~mask
    means, stds = [], []
    for c in range(len(image)):
        channel = out[c]
        np.copyto(channel, image[c], casting="unsafe")  # one pass, into contiguous memory: the rest runs there
        values = channel[mask]
        if values.size:
            lo, hi = clip_range(values)
            np.clip(values, lo, hi, out=values)
            np.clip(channel, lo, hi, out=channel)
        mean, std = _mean_std(values)
        means.append(mean)
        stds.append(std)
        scale = 1.0 / std if std > 1e-8 else 0.0
        channel -= np.float32(mean)
        channel *= np.float32(scale)
        np.copyto(channel, 0.0, where=outside)
    return out, means, stds


@dataclass
class Preprocessed:
    """A preprocessed case in memory, ready to be cached."""

    image: NDArray[Any]
    packed_regions: NDArray[np.uint8] | None
    meta: dict[str, Any]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def source_fingerprint(case: Case) -> dict[str, dict[str, Any]]:
    """Size, modification time and sha256 of each input file, so that a changed input is preprocessed again and a
    copied or touched one (same bytes, another time) is not."""
    out = {}
    for p in case.files:
        st = p.stat()
        out[p.name] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _file_sha256(p)}
    return out


def _same_sources(case: Case, stored: Any) -> dict[str, dict[str, Any]] | None:
    """``stored`` (a cached case's fingerprint) with today's file times when ``case``'s input files are the ones it
    was made from, else None. Same size and time is taken as the same file without reading it; same size at another
    time (a copied dataset, a touched file) is compared by sha256. A fingerprint without sha256 (a cache made before
    it was recorded) needs the times to match."""
    if not isinstance(stored, dict) or set(stored) != {p.name for p in case.files}:
        return None
    now = {}
    for p in case.files:
        st, was = p.stat(), stored[p.name]
        if not isinstance(was, dict) or was.get("size") != st.st_size:
            return None
        if was.get("mtime_ns") != st.st_mtime_ns and (was.get("sha256") is None or was["sha256"] != _file_sha256(p)):
            return None
        now[p.name] = {**was, "mtime_ns": st.st_mtime_ns}
    return now


@dataclass
class Normalised:
    """A case's image cropped to its brain box (plus the margin) and z-scored over brain voxels."""

    image: NDArray[np.float32]
    box: BBox
    means: list[float]
    stds: list[float]
    brain_voxels: int


def crop_and_normalise(
    image: Channels, margin: int, background: float = 0.0, names: Sequence[str] | None = None
) -> Normalised:
    """The one preprocessing of the package, for the training cache and for prediction alike: brain mask (any
    modality differs from ``background``), checked to look skull-stripped, its bounding box plus ``margin``
    voxels, z-score of each channel over the brain. ``image`` may be the channels as read from disk (int16 for
    BraTS, :class:`~bratsseg.io.nifti.RawCase`): then only the box is converted to float. ``names`` (the
    channels' files) make a refusal name the file at fault."""
    mask = brain_mask(image, background)
    if not mask.any():
        raise BratsSegError("every modality is zero, no brain to segment")
    check_background(mask, image, names, background)
    box: BBox = bbox_of(mask, margin)
    cropped_mask = crop(mask, box)
    out, means, stds = zscore([crop(channel, box) for channel in image], cropped_mask)
    return Normalised(out, box, means, stds, int(cropped_mask.sum()))


#: within 1% of the target spacing on every axis, a case stays on its own grid (here and in ``predict``)
SPACING_RTOL = 0.01


def resampled_grid(header: dict[str, Any], target: tuple[float, ...]) -> dict[str, Any]:
    """The grid that covers ``header``'s volume with ``target`` mm voxels: shape, zooms and the affine whose voxel
    centres are where :func:`~bratsseg.data.resample.resize` puts them (pixel centres aligned)."""
    from bratsseg.data.resample import resampled_shape

    shape = [int(v) for v in header["shape"][:3]]
    new = resampled_shape(tuple(shape), tuple(header["zooms"][:3]), target)
    scale = np.array([n / m for n, m in zip(shape, new, strict=True)])  # old voxels per new voxel
    step = np.diag([*scale, 1.0])
    step[:3, 3] = 0.5 * scale - 0.5  # new voxel i sits at old continuous index (i + 0.5) * scale - 0.5
    affine = (np.asarray(header["affine"], dtype=np.float64) @ step).tolist()
    zooms = [float(z) * float(c) for z, c in zip(header["zooms"][:3], scale, strict=True)]
    return {**header, "shape": list(new), "zooms": zooms, "affine": affine, "qform": affine, "sform": affine}


def resample_case(loaded: LoadedCase, target: tuple[float, ...]) -> tuple[LoadedCase, dict[str, Any] | None]:
    """``loaded`` on a grid of ``target`` mm voxels (images trilinear; each region's mask trilinear, then >= 0.5,
    so that regions stay nested), and the new grid; the case itself and None when its spacing is already that."""
    from bratsseg.data.resample import resize
    from bratsseg.labels import regions_to_labels

    if np.allclose(loaded.header["zooms"][:3], target, rtol=SPACING_RTOL):
        return loaded, None
    grid = resampled_grid(loaded.header, target)
    size = tuple(grid["shape"])
    image = resize(loaded.image, size)
    labels = None
    if loaded.labels is not None:
        regions = resize(labels_to_regions(loaded.labels, loaded.case.convention).astype(np.float32), size) >= 0.5
        regions[1] &= regions[0]
        regions[2] &= regions[1]
        labels = regions_to_labels(regions, loaded.case.convention)
    return LoadedCase(loaded.case, image, labels, grid), grid


def preprocess_loaded(loaded: LoadedCase, config: PreprocessConfig) -> Preprocessed:
    """Crop a loaded case to its brain box, z-score it, and describe it in JSON-ready metadata. With
    ``config.spacing`` the case is first resampled to it; the cache's arrays then live on that grid
    (``meta["grid"]``), and ``original_header`` still describes the input."""
    case = loaded.case
    source_header = loaded.header
    grid = None
    if config.spacing is not None:
        loaded, grid = resample_case(loaded, config.spacing)
    try:
        norm = crop_and_normalise(loaded.image, config.margin, names=[str(f) for f in case.images])
    except BratsSegError as err:
        raise BratsSegError(f"case {case.case_id}: {err}", case.folder) from None
    image, box, means, stds = norm.image, norm.box, norm.means, norm.stds
    meta: dict[str, Any] = {
        "case_id": case.case_id,
        "naming": case.naming.name,
        "convention": case.convention.name,
        "modalities": list(MODALITIES),
        "source_folder": str(case.folder.resolve()),
        "source_files": {m: p.name for m, p in zip(MODALITIES, case.images, strict=True)}
        | ({"seg": case.seg.name} if case.seg is not None else {}),
        "source_fingerprint": source_fingerprint(case),
        "original_header": source_header,
        **({"grid": grid} if grid is not None else {}),
        "bbox": [list(pair) for pair in box],
        "cropped_shape": list(bbox_shape(box)),
        "brain_voxels": norm.brain_voxels,
        "normalisation": {
            "scheme": "zscore over brain voxels",
            "clip_percentiles": list(CLIP_PERCENTILES),
            "mean": means,
            "std": stds,
        },
        "preprocess": _config_json(config),
        "has_seg": loaded.labels is not None,
    }
    packed = None
    if loaded.labels is not None:
        regions = labels_to_regions(crop(loaded.labels, box), case.convention)
        full_wt = int(np.count_nonzero(loaded.labels))
        counts = region_voxel_counts(regions)
        if counts["WT"] != full_wt:  # the brain box must never cut tumour off
            raise BratsSegError(
                f"case {case.case_id}: {full_wt - counts['WT']} tumour voxels lie outside the brain "
                "(where every modality is zero)",
                case.seg,
            )
        meta["region_voxels"] = counts
        values, freq = np.unique(loaded.labels, return_counts=True)
        meta["label_voxels"] = {str(int(v)): int(n) for v, n in zip(values, freq, strict=True)}
        packed = pack_regions(regions)
    return Preprocessed(image.astype(config.image_dtype), packed, meta)


def _config_json(config: PreprocessConfig) -> dict[str, Any]:
    """``config`` as its JSON reads back (tuples as lists), so that a stored one compares equal."""
    return json.loads(json.dumps(asdict(config)))


def is_cached(case: Case, cache_root: Path, config: PreprocessConfig) -> bool:
    """True when the cache holds this case complete, made with ``config`` from the same input files."""
    meta = read_meta(cache_root / case.case_id)
    if not (
        meta is not None
        and meta.get("preprocess") == _config_json(config)
        and meta.get("convention") == case.convention.name
        and meta.get("has_seg") == (case.seg is not None)
    ):
        return False
    fingerprint = _same_sources(case, meta.get("source_fingerprint"))
    if fingerprint is not None and fingerprint != meta["source_fingerprint"]:
        try:  # the same bytes at another time: record the times, so that the next check need not read the files
            write_json_atomic(cache_root / case.case_id / META_FILE, {**meta, "source_fingerprint": fingerprint})
        except OSError as err:  # a read-only cache is still valid; it is checked by content again next time
            log.debug("could not record %s's new file times: %s", case.case_id, err)
    return fingerprint is not None


def preprocess_case(case: Case, cache_root: str | Path, config: PreprocessConfig | None = None) -> Path:
    """Load, validate, preprocess and cache one case; return its cache folder."""
    config = config or PreprocessConfig()
    loaded = load_case(case)
    pre = preprocess_loaded(loaded, config)
    return write_cached_case(cache_root, case.case_id, pre.image, pre.packed_regions, pre.meta)


@dataclass
class PreprocessReport:
    """What :func:`preprocess_dataset` did: case ids written and skipped, and one message per failure."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


def _preprocess_worker(case: Case, cache_root: Path, config: PreprocessConfig) -> str:
    preprocess_case(case, cache_root, config)
    return case.case_id


def preprocess_dataset(
    raw: str | Path,
    cache_root: str | Path,
    config: PreprocessConfig | None = None,
    workers: int = 1,
    convention: str | LabelConvention | None = None,
    overwrite: bool = False,
    progress: Callable[[int], Any] | None = None,
    naming: str | None = None,
) -> PreprocessReport:
    """Preprocess every case under ``raw`` (a case folder or a dataset root) into ``cache_root``.

    Cases already cached (same settings, same input files) are skipped unless ``overwrite``; half-written
    folders of an earlier, killed run are removed and redone. A bad case is reported in the returned
    :class:`PreprocessReport` and the others still finish. ``progress`` is called with the number of cases
    finished since the last call (to drive a progress bar).
    """
    config = config or PreprocessConfig()
    cache_root = Path(cache_root)
    cache_root.mkdir(parents=True, exist_ok=True)
    for p in remove_partial_writes(cache_root):
        log.info("removed half-written %s", p)
    discovery = discover_cases(raw, convention, naming)
    report = PreprocessReport(failed=[str(e) for e in discovery.problems])
    todo = []
    for case in discovery.cases:
        if not overwrite and is_cached(case, cache_root, config):
            report.skipped.append(case.case_id)
        else:
            todo.append(case)
    log.info("%d cases found, %d already cached, %d to do", len(discovery.cases), len(report.skipped), len(todo))
    tick = progress or (lambda n: None)
    tick(len(report.skipped))

    def record(case: Case, result: Callable[[], object]) -> None:
        try:
            result()
            report.written.append(case.case_id)
        except BratsSegError as err:
            report.failed.append(str(err))
        except OSError as err:  # a full disk, a read-only folder: one line per case, no traceback
            where = f" ({err.filename})" if err.filename else ""
            report.failed.append(f"{case.folder}: case {case.case_id}: {err.strerror or err}{where}")
        except Exception as err:  # an unexpected failure in one case must not lose the others
            log.error("case %s failed", case.case_id, exc_info=err)
            report.failed.append(f"{case.folder}: case {case.case_id} failed ({type(err).__name__}: {err})")
        tick(1)

    if workers <= 1 or len(todo) <= 1:
        for case in todo:
            record(case, partial(_preprocess_worker, case, cache_root, config))
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed  # 13 ms of imports predict never needs

        with ProcessPoolExecutor(max_workers=min(workers, len(todo), os.cpu_count() or 1)) as pool:
            pending = {pool.submit(_preprocess_worker, case, cache_root, config): case for case in todo}
            for done in as_completed(pending):
                record(pending[done], done.result)
    report.written.sort()
    write_json_atomic(
        cache_root / DATASET_FILE,
        {
            "source": str(Path(raw).resolve()),
            "preprocess": asdict(config),
            "cases": sorted({*report.written, *report.skipped}),
        },
    )
    return report
