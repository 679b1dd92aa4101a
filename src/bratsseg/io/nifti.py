"""Reading and writing NIfTI volumes with nibabel, and loading a whole case with validation.

Every problem with a file becomes a :class:`~bratsseg.errors.BratsSegError` that names the file.
Arrays keep nibabel's axis order; nothing is reoriented. nibabel is imported when first needed: ``predict``'s
path (:func:`load_raw_case`, :func:`save_nifti` with a template) reads and writes plain NIfTI-1 files with
:mod:`bratsseg.io.nifti1` and imports it only for a file that is not plain.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from numpy.typing import NDArray

from bratsseg.atomic import atomic_path
from bratsseg.errors import BratsSegError
from bratsseg.io import nifti1
from bratsseg.io.discovery import MODALITIES, Case
from bratsseg.labels import invalid_labels, labels_to_regions

if TYPE_CHECKING:
    import nibabel as nib

    NiftiImage = nib.Nifti1Image | nib.Nifti2Image


class Volume(Protocol):
    """What the checks need of an image: a nibabel image, or a :class:`bratsseg.io.nifti1.Nifti1`."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def affine(self) -> Any: ...

    def get_data_dtype(self) -> Any: ...


log = logging.getLogger(__name__)

#: Largest difference allowed between the affines of a case's files (mm, or direction cosines).
AFFINE_ATOL = 1e-3

GZIP_MAGIC = nifti1.GZIP_MAGIC


def is_gzip(path: Path) -> bool:
    """Whether the file starts with gzip's magic bytes (what ITK and Slicer go by, not the name)."""
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def _load_misnamed(path: Path, gzipped: bool) -> NiftiImage:
    """A NIfTI file whose name says ``.nii.gz`` but holds plain bytes, or the reverse: read from memory."""
    import nibabel as nib

    data = _gunzip(path) if gzipped else path.read_bytes()
    try:
        return nib.Nifti1Image.from_bytes(data)
    except Exception:  # not NIfTI-1: NIfTI-2, or not NIfTI at all (the caller reports that)
        return nib.Nifti2Image.from_bytes(data)


def open_nifti(path: str | Path) -> NiftiImage:
    """The image object (header read, data not yet) of a NIfTI file, with its spatial shape checked to be 3-D.
    Compression is read from the file's magic bytes: a plain file named ``.nii.gz`` loads too."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise BratsSegError("no such file", path)
    try:
        gzipped = is_gzip(path)
        img: Any
        if gzipped != path.name.lower().endswith(".gz"):
            log.info("%s: %s despite its name", path, "gzip-compressed" if gzipped else "not compressed")
            img = _load_misnamed(path, gzipped)
        else:
            img = nib.load(path)
    except Exception as err:  # nibabel raises many types for bad files
        raise BratsSegError(f"not a readable NIfTI file ({type(err).__name__}: {err})", path) from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise BratsSegError(f"not a NIfTI image (nibabel read it as {type(img).__name__})", path)
    spatial_shape(img, path)
    return img


def spatial_shape(img: Volume, path: str | Path) -> tuple[int, int, int]:
    """The 3-D shape of ``img``; trailing singleton dimensions are allowed, anything else is an error."""
    shape = tuple(int(s) for s in img.shape)
    core = shape[:3] if len(shape) >= 3 and all(s == 1 for s in shape[3:]) else shape
    if len(core) != 3 or min(core) < 1:
        raise BratsSegError(f"expected a 3-D volume, got shape {shape}", path)
    return (core[0], core[1], core[2])


def _gunzip(path: Path) -> bytes:
    """The decompressed bytes of a gzip file: Intel ISA-L (about 3x zlib's speed) when installed, else zlib."""
    return nifti1.decompress(path.read_bytes())


def _gz_voxels(img: NiftiImage, path: Path) -> NDArray[Any] | None:
    """The voxels of a ``.nii.gz`` file in their on-disk dtype, unscaled: one decompression, no copy (a read-only
    view of the decompressed bytes); None where the layout is not the plain one this handles."""
    proxy: Any = img.dataobj
    if not hasattr(proxy, "offset") or not is_gzip(path):
        return None
    raw = nifti1.inflate(path.read_bytes())
    shape = tuple(int(s) for s in img.shape)
    count = int(np.prod(shape))
    on_disk = img.header.get_data_dtype()
    offset = int(proxy.offset)
    if offset + count * on_disk.itemsize > len(raw):
        raise BratsSegError(f"voxel data too short: {len(raw) - offset} bytes for {count} voxels of {on_disk}", path)
    return np.frombuffer(raw, dtype=on_disk, count=count, offset=offset).reshape(shape, order="F")


def _fast_gz_array(img: NiftiImage, path: Path, dtype: type, out: NDArray[Any] | None = None) -> NDArray[Any] | None:
    """The voxels of a ``.nii.gz`` file decompressed in one call and converted once (no nibabel stream), into
    ``out`` when given; None where the layout is not the plain one this handles (nibabel then reads it)."""
    data = _gz_voxels(img, path)
    if data is None:
        return None
    proxy: Any = img.dataobj
    slope, inter = proxy.slope, proxy.inter
    if np.issubdtype(dtype, np.floating):
        if out is None:
            out = data.astype(dtype)
        else:
            np.copyto(out, data.reshape(out.shape), casting="unsafe")
        if slope != 1.0 or inter != 0.0:
            out *= dtype(slope)
            out += dtype(inter)
        return out
    if slope != 1.0 or inter != 0.0:
        return data * slope + inter
    return data.copy()


def _unscaled(img: NiftiImage) -> bool:
    proxy: Any = img.dataobj
    return getattr(proxy, "slope", 1.0) == 1.0 and getattr(proxy, "inter", 0.0) == 0.0


@contextmanager
def _voxel_errors(path: str | Path) -> Iterator[None]:
    """Decompression errors (truncated gzip: EOFError, zlib.error, OSError, ValueError ...) as a
    :class:`BratsSegError` naming the file."""
    try:
        yield
    except BratsSegError:
        raise
    except Exception as err:
        raise BratsSegError(
            f"cannot read voxel data, file truncated or corrupt ({type(err).__name__}: {err})", path
        ) from err


def read_voxels(img: NiftiImage, path: str | Path) -> NDArray[Any]:
    """The 3-D voxel values of ``img`` in the cheapest exact form: the on-disk dtype, uncopied, where the file
    needs no scaling (``int16`` for BraTS), else float32 (scaling applied). For reading a whole volume once and
    converting only a part of it (the brain's box) to float."""
    path = Path(path)
    if _unscaled(img):
        with _voxel_errors(path):
            data = _gz_voxels(img, path)
        if data is not None:
            return data.reshape(spatial_shape(img, path), order="F")
    return read_array(img, path)


def read_array(
    img: NiftiImage, path: str | Path, dtype: type = np.float32, out: NDArray[Any] | None = None
) -> NDArray[Any]:
    """The voxel data of ``img`` as a 3-D array (scaling applied), written into ``out`` (a float array of the
    spatial shape) when given; decompression errors become a :class:`BratsSegError` naming the file."""
    with _voxel_errors(path):
        floating = np.issubdtype(dtype, np.floating)
        data = _fast_gz_array(img, Path(path), dtype, out=out if floating else None)
        if data is None:
            data = img.get_fdata(dtype=dtype) if floating else np.asanyarray(img.dataobj)
    if out is not None:
        if data is not out:
            out[...] = np.asarray(data).reshape(out.shape)
        return out
    return np.asarray(data).reshape(spatial_shape(img, path))


def header_essentials(img: NiftiImage) -> dict[str, Any]:
    """What is needed to write a volume back on this image's grid, as JSON-ready values."""
    import nibabel as nib

    hdr = img.header
    qform, qcode = hdr.get_qform(coded=True)
    sform, scode = hdr.get_sform(coded=True)
    return {
        "shape": [int(s) for s in img.shape[:3]],
        "affine": np.asarray(img.affine, dtype=float).tolist(),
        "qform": None if qform is None else np.asarray(qform, dtype=float).tolist(),
        "qform_code": int(qcode),
        "sform": None if sform is None else np.asarray(sform, dtype=float).tolist(),
        "sform_code": int(scode),
        "zooms": [float(z) for z in hdr.get_zooms()[:3]],
        "axcodes": "".join(str(c) for c in nib.aff2axcodes(img.affine)),
        "dtype": str(hdr.get_data_dtype()),
        "xyzt_units": list(hdr.get_xyzt_units()),
    }


def make_nifti(data: NDArray[Any], essentials: dict[str, Any]) -> nib.Nifti1Image:
    """A NIfTI-1 image of ``data`` on the grid described by :func:`header_essentials`."""
    import nibabel as nib

    img = nib.Nifti1Image(data, np.asarray(essentials["affine"]))
    hdr = img.header
    if essentials.get("qform") is not None:
        hdr.set_qform(np.asarray(essentials["qform"]), code=int(essentials["qform_code"]))
    else:
        hdr.set_qform(None, code=0)
    if essentials.get("sform") is not None:
        hdr.set_sform(np.asarray(essentials["sform"]), code=int(essentials["sform_code"]))
    else:
        hdr.set_sform(None, code=0)
    zooms = tuple(essentials["zooms"])[:3]
    hdr.set_zooms(zooms[: data.ndim] + (1.0,) * (data.ndim - 3))
    units = essentials.get("xyzt_units")
    if units:
        hdr.set_xyzt_units(*units)
    hdr.set_data_dtype(data.dtype)
    return img


@dataclass
class LoadedCase:
    """A case in memory: ``image`` is ``(4, X, Y, Z)`` float32 in :data:`MODALITIES` order."""

    case: Case
    image: NDArray[np.float32]
    labels: NDArray[np.uint8] | None
    header: dict[str, Any]

    @property
    def regions(self) -> NDArray[np.bool_] | None:
        """``(3, X, Y, Z)`` WT/TC/ET masks, or None for a case without segmentation."""
        if self.labels is None:
            return None
        return labels_to_regions(self.labels, self.case.convention)


def check_same_grid(paths: list[Path], imgs: Sequence[Volume]) -> None:
    ref_shape, ref_aff = spatial_shape(imgs[0], paths[0]), imgs[0].affine
    for path, img in zip(paths[1:], imgs[1:], strict=True):
        shape = spatial_shape(img, path)
        if shape != ref_shape:
            raise BratsSegError(f"shape {shape} differs from {paths[0].name}'s {ref_shape}", path)
        diff = float(np.max(np.abs(img.affine - ref_aff)))
        if diff > AFFINE_ATOL:
            raise BratsSegError(
                f"affine differs from {paths[0].name}'s by up to {diff:.4g} (tolerance {AFFINE_ATOL})", path
            )


def check_intensities(values: NDArray[Any], img: Volume, path: Path) -> None:
    """An image's voxels must be finite and not all zero."""
    integer_on_disk = np.issubdtype(img.get_data_dtype(), np.integer)
    if not integer_on_disk and not np.isfinite(values).all():  # integers are finite by construction
        raise BratsSegError("image holds NaN or infinite intensities", path)
    if not values.any():
        raise BratsSegError("image is empty (every voxel is zero): no brain to segment", path)


def check_case_files(case: Case) -> list[str]:
    """Every problem :func:`load_case` could raise for ``case``, one message per file (all voxels are read)."""
    problems: list[str] = []
    imgs: dict[Path, NiftiImage] = {}
    for path in case.files:
        try:
            imgs[path] = open_nifti(path)
        except BratsSegError as err:
            problems.append(str(err))
    if len(imgs) == len(case.files):
        try:
            check_same_grid(list(imgs), list(imgs.values()))
        except BratsSegError as err:
            problems.append(str(err))
    for path, img in imgs.items():
        try:
            if path == case.seg:
                check_labels(read_array(img, path, dtype=np.int64), case, path)
            else:
                values = read_array(img, path)
                check_intensities(values, img, path)
                extreme = extreme_values(values)
                if extreme:
                    problems.append(f"{path}: {extreme}")
        except BratsSegError as err:
            problems.append(str(err))
    return problems


#: a voxel is extreme when it lies this many times the 99.9th percentile's distance from the median beyond that
#: percentile (or below the 0.1th): the 44 labelled and the unlabelled BraTS cases reach at most 6.4
EXTREME_SPREADS = 20.0


def extreme_values(values: NDArray[Any]) -> str | None:
    """A sentence about a modality's extreme voxels (a scanner artefact, a corrupt slice), or None. Prediction
    clips them before the z-score, so they no longer wash out the image, but a scan holding them is suspect."""
    v = np.asarray(values).ravel()
    v = v[v != 0]
    if v.size < 1000:
        return None
    lo, med, hi = (float(x) for x in np.percentile(v.astype(np.float32), [0.1, 50, 99.9]))
    above = v > hi + EXTREME_SPREADS * max(hi - med, 1e-6)
    below = v < lo - EXTREME_SPREADS * max(med - lo, 1e-6)
    n = int(above.sum() + below.sum())
    if not n:
        return None
    return (
        f"{n} voxel(s) with extreme values (from {float(v.min()):.4g} to {float(v.max()):.4g}; the brain's 0.1-99.9th "
        f"percentiles are {lo:.4g}-{hi:.4g}): they are clipped before the z-score, but check the scan"
    )


def check_labels(raw: NDArray[Any], case: Case, path: Path) -> NDArray[np.uint8]:
    if not np.issubdtype(raw.dtype, np.integer):
        finite = np.isfinite(raw)
        if not finite.all():
            raise BratsSegError("segmentation holds NaN or infinite values", path)
        if not np.array_equal(raw, np.round(raw)):
            raise BratsSegError("segmentation holds non-integer values", path)
    bad = invalid_labels(raw.astype(np.int64, copy=False) if raw.dtype.kind == "f" else raw, case.convention)
    if bad:
        raise BratsSegError(
            f"label values {bad} are not in convention {case.convention.name!r} "
            f"(valid: {list(case.convention.labels)})",
            path,
        )
    return raw.astype(np.uint8)


def load_case(case: Case, load_seg: bool = True, threads: int = 4) -> LoadedCase:
    """Read and validate a case: the four modalities (decompressed in parallel) and its segmentation.

    Raises :class:`BratsSegError` naming the file for: unreadable or non-NIfTI files, volumes that are
    not 3-D, shapes or affines that differ between files, NaN or infinite intensities, an all-zero
    modality, and label values outside the case's convention.
    """
    paths = list(case.images) + ([case.seg] if load_seg and case.seg is not None else [])
    imgs = [open_nifti(p) for p in paths]
    check_same_grid(paths, imgs)

    n = len(MODALITIES)
    image = np.empty((n, *spatial_shape(imgs[0], paths[0])), dtype=np.float32)  # each thread fills its slice

    def read(i: int) -> NDArray[Any] | None:
        if i == n:
            return read_array(imgs[i], paths[i], dtype=np.int64)
        read_array(imgs[i], paths[i], np.float32, out=image[i])
        check_intensities(image[i], imgs[i], paths[i])
        return None

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(paths)))) as pool:
        arrays = list(pool.map(read, range(len(paths))))
    seg = arrays[n] if len(arrays) > n else None
    labels = check_labels(seg, case, paths[n]) if seg is not None else None
    return LoadedCase(case=case, image=image, labels=labels, header=header_essentials(imgs[0]))


@dataclass
class RawCase:
    """A case's four modalities as read (``channels``: 3-D arrays in :data:`MODALITIES` order, each in the
    cheapest exact dtype, see :func:`read_voxels`) and the grid to write results on. For prediction, which
    converts only the brain's box to float instead of whole volumes. ``template``: the first modality's NIfTI-1
    header where every file was plain (:mod:`bratsseg.io.nifti1`), for :func:`save_nifti` to write on its grid
    without nibabel."""

    case: Case
    channels: list[NDArray[Any]]
    header: dict[str, Any]
    template: np.void | None = None


def load_raw_case(case: Case, threads: int = 4) -> RawCase:
    """Read and validate a case's four modalities as :func:`load_case` does (same grid, finite, not all zero;
    errors name the file), decompressed in parallel, without converting them to float. Plain NIfTI-1 files are
    read by :mod:`bratsseg.io.nifti1`; if any file is not plain, all go through nibabel."""
    paths = list(case.images)
    workers = max(1, min(threads, len(paths)))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        plain = list(pool.map(nifti1.read, paths))
    if all(v is not None for v in plain):
        vols = [v for v in plain if v is not None]
        check_same_grid(paths, vols)  # checks every volume's spatial shape too
        channels = [v.voxels.reshape(spatial_shape(v, p), order="F") for v, p in zip(vols, paths, strict=True)]
        for path, vol, values in zip(paths, vols, channels, strict=True):
            check_intensities(values, vol, path)
        return RawCase(case=case, channels=channels, header=vols[0].essentials(), template=vols[0].header)
    del plain
    imgs = [open_nifti(p) for p in paths]
    check_same_grid(paths, imgs)

    def read(i: int) -> NDArray[Any]:
        values = read_voxels(imgs[i], paths[i])
        check_intensities(values, imgs[i], paths[i])
        return values

    with ThreadPoolExecutor(max_workers=workers) as pool:
        channels = list(pool.map(read, range(len(paths))))
    return RawCase(case=case, channels=channels, header=header_essentials(imgs[0]))


def save_nifti(
    data: NDArray[Any],
    essentials: dict[str, Any],
    path: str | Path,
    template: np.void | None = None,
    exclusive: bool = False,
) -> Path:
    """Write ``data`` on the grid of ``essentials`` to ``path`` (atomically: a temporary file, then rename).
    With ``template`` (:attr:`RawCase.template`, the same grid) a 3-D volume is written without nibabel, its
    geometry copied from that header. ``exclusive``: :class:`FileExistsError` rather than replace a file that
    appeared at ``path`` meanwhile."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix="".join(path.suffixes), exclusive=exclusive) as tmp:
        if template is not None and data.ndim == 3 and path.name.lower().endswith(".nii.gz"):
            nifti1.write_like(data, template, tmp)
        else:
            import nibabel as nib

            nib.save(make_nifti(data, essentials), tmp)
    return path
