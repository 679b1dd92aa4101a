"""Plain single-file NIfTI-1 in numpy alone: the fast path of ``bratsseg predict``, without importing nibabel.

Importing nibabel costs about 0.2 s, a fifth of a device's one-second budget for a whole case, and ``predict``
only needs to read four plain ``.nii.gz`` volumes and write one label map on the same grid. :func:`read` handles
exactly the files nibabel would load without changing anything in their header: a 348-byte NIfTI-1 header
(either byte order) with the single-file magic ``n+1``, a plain numeric datatype whose ``bitpix`` agrees, no
scaling (``scl_slope`` 0, NaN or 1 with ``scl_inter`` 0), positive voxel sizes, ``qfac`` of +-1 and valid
qform/sform codes. Anything else, and any file it cannot parse, returns None: the caller then goes through
nibabel (:mod:`bratsseg.io.nifti`), whose checks, fixes and error messages stay the reference.

The affine, zooms, codes and axis codes are computed as nibabel 5 computes them (sform if its code is set, else
the qform, else the centred base affine; quaternions in long double), and ``tests/test_nifti1.py`` checks
them against nibabel on the shared real cases and on synthetic headers of every kind. :func:`write_like` writes
a volume on a read file's grid by copying that header's geometry fields verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

HEADER_SIZE = 348
#: the NIfTI-1 header's fields, in file order (little-endian here; a big-endian file is read with the swapped dtype)
HEADER = np.dtype(
    [
        ("sizeof_hdr", "<i4"),
        ("data_type", "S10"),
        ("db_name", "S18"),
        ("extents", "<i4"),
        ("session_error", "<i2"),
        ("regular", "S1"),
        ("dim_info", "u1"),
        ("dim", "<i2", (8,)),
        ("intent_p1", "<f4"),
        ("intent_p2", "<f4"),
        ("intent_p3", "<f4"),
        ("intent_code", "<i2"),
        ("datatype", "<i2"),
        ("bitpix", "<i2"),
        ("slice_start", "<i2"),
        ("pixdim", "<f4", (8,)),
        ("vox_offset", "<f4"),
        ("scl_slope", "<f4"),
        ("scl_inter", "<f4"),
        ("slice_end", "<i2"),
        ("slice_code", "u1"),
        ("xyzt_units", "u1"),
        ("cal_max", "<f4"),
        ("cal_min", "<f4"),
        ("slice_duration", "<f4"),
        ("toffset", "<f4"),
        ("glmax", "<i4"),
        ("glmin", "<i4"),
        ("descrip", "S80"),
        ("aux_file", "S24"),
        ("qform_code", "<i2"),
        ("sform_code", "<i2"),
        ("quatern_b", "<f4"),
        ("quatern_c", "<f4"),
        ("quatern_d", "<f4"),
        ("qoffset_x", "<f4"),
        ("qoffset_y", "<f4"),
        ("qoffset_z", "<f4"),
        ("srow_x", "<f4", (4,)),
        ("srow_y", "<f4", (4,)),
        ("srow_z", "<f4", (4,)),
        ("intent_name", "S16"),
        ("magic", "S4"),
    ]
)
assert HEADER.itemsize == HEADER_SIZE

#: NIfTI-1 datatype codes of plain numeric voxels (no complex, RGB or float128)
DATATYPES: dict[int, np.dtype[Any]] = {
    2: np.dtype(np.uint8),
    4: np.dtype(np.int16),
    8: np.dtype(np.int32),
    16: np.dtype(np.float32),
    64: np.dtype(np.float64),
    256: np.dtype(np.int8),
    512: np.dtype(np.uint16),
    768: np.dtype(np.uint32),
    1024: np.dtype(np.int64),
    1280: np.dtype(np.uint64),
}
_CODES = {dtype: code for code, dtype in DATATYPES.items()}
XFORM_CODES = (0, 1, 2, 3, 4)
#: xyzt_units' space and time codes, named as nibabel names them
SPACE_UNITS = {0: "unknown", 1: "meter", 2: "mm", 3: "micron"}
TIME_UNITS = {0: "unknown", 8: "sec", 16: "msec", 24: "usec", 32: "hz", 40: "ppm", 48: "rads"}
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))
GZIP_MAGIC = b"\x1f\x8b"


def decompress(data: bytes) -> bytes:
    """gzip bytes inflated: Intel ISA-L (about 3x zlib's speed) when installed, else zlib."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover - isal is a dependency; plain zlib still works
        import gzip

        return gzip.decompress(data)
    return igzip.decompress(data)


INFLATE_CHUNK = 16384  # compressed bytes per step: each step's output stays small enough for malloc's heap


def inflate(data: bytes) -> NDArray[np.uint8]:
    """gzip bytes inflated into a numpy buffer (as :func:`decompress`; a broken stream raises there). The
    length comes from the gzip trailer, so the output is allocated once, by numpy (which asks the kernel for
    transparent huge pages), and filled in small steps: a fifth of the page faults of one ``bytes`` result,
    and page faults are much of what a cold ``predict`` process spends on a virtual machine. A stream the
    trailer does not describe (several members, 4 GiB or more) goes through :func:`decompress`."""
    size = int.from_bytes(data[-4:], "little") if len(data) >= 18 else 0
    if 0 < size <= 1032 * len(data):  # deflate expands at most ~1032x: a larger "size" is a damaged trailer
        inflater: Any
        try:
            from isal import isal_zlib as inflater
        except ImportError:  # pragma: no cover - isal is a dependency
            import zlib as inflater

        out = np.empty(size, dtype=np.uint8)
        view, got = out.data, 0
        stream = inflater.decompressobj(31)  # wbits 31: a gzip wrapper, its CRC and length checked at the end
        source = memoryview(data)
        try:
            for start in range(0, len(data), INFLATE_CHUNK):
                piece = stream.decompress(source[start : start + INFLATE_CHUNK])
                if got + len(piece) > size:
                    break
                view[got : got + len(piece)] = piece
                got += len(piece)
                if stream.eof:
                    break
        except Exception:  # a broken stream: decompress below raises its own error
            pass
        if stream.eof and got == size and not stream.unused_data:
            return out
    return np.frombuffer(decompress(data), dtype=np.uint8)


def compress(data: bytes) -> bytes:
    """gzip bytes with a zero timestamp, so that the same volume always gives the same file."""
    try:
        from isal import igzip
    except ImportError:  # pragma: no cover
        import gzip

        return gzip.compress(data, compresslevel=1, mtime=0)
    return igzip.compress(data, compresslevel=1, mtime=0)


def parse_header(raw: bytes | NDArray[np.uint8]) -> np.void | None:
    """The header at the start of ``raw`` in its own byte order, or None where it is not a plain single-file
    NIfTI-1 header that nibabel would load unchanged (see the module's docstring)."""
    if len(raw) < HEADER_SIZE + 4:
        return None
    first = bytes(raw[:4])
    if int.from_bytes(first, "little") == HEADER_SIZE:
        dtype = HEADER
    elif int.from_bytes(first, "big") == HEADER_SIZE:
        dtype = HEADER.newbyteorder(">")
    else:
        return None
    hdr = np.frombuffer(raw, dtype=dtype, count=1)[0]
    ndim = int(hdr["dim"][0])
    dims = hdr["dim"][1 : ndim + 1]
    pixdim = hdr["pixdim"]
    on_disk = DATATYPES.get(int(hdr["datatype"]))
    slope, inter = float(hdr["scl_slope"]), float(hdr["scl_inter"])
    plain = (
        hdr["magic"] == b"n+1"
        and 3 <= ndim <= 7
        and bool(np.all(dims >= 1))
        and on_disk is not None
        and int(hdr["bitpix"]) == 8 * on_disk.itemsize
        and bool(np.all(np.isfinite(pixdim[1:4])))
        and bool(np.all(pixdim[1:4] > 0))
        and float(pixdim[0]) in (-1.0, 1.0)
        and int(hdr["qform_code"]) in XFORM_CODES
        and int(hdr["sform_code"]) in XFORM_CODES
        and (slope == 0.0 or not np.isfinite(slope) or (slope == 1.0 and inter == 0.0))
        and float(hdr["vox_offset"]) >= HEADER_SIZE + 4
        and float(hdr["vox_offset"]) == int(hdr["vox_offset"])
    )
    return hdr if plain else None


def _qform(hdr: np.void) -> NDArray[np.float64]:
    """nibabel 5's ``Nifti1Header.get_qform``: the quaternion completed in long double, times the voxel sizes."""
    bcd = np.asarray([hdr["quatern_b"], hdr["quatern_c"], hdr["quatern_d"]], dtype=np.longdouble)
    w2 = 1.0 - bcd @ bcd
    threshold = np.finfo(np.float32).eps * 3
    if np.abs(w2) < threshold:
        w = np.longdouble(0)
    elif w2 < 0:
        raise ValueError(f"w2 should be positive, but is {w2:e}")
    else:
        w = np.sqrt(w2)
    x, y, z = bcd
    n = w * w + x * x + y * y + z * z
    if n < np.finfo(float).eps:
        rot: NDArray[Any] = np.eye(3)
    else:
        s = 2.0 / n
        X, Y, Z = x * s, y * s, z * s
        wX, wY, wZ = w * X, w * Y, w * Z
        xX, xY, xZ = x * X, x * Y, x * Z
        yY, yZ, zZ = y * Y, y * Z, z * Z
        rot = np.array(
            [
                [1.0 - (yY + zZ), xY - wZ, xZ + wY],
                [xY + wZ, 1.0 - (xX + zZ), yZ - wX],
                [xZ - wY, yZ + wX, 1.0 - (xX + yY)],
            ]
        )
    vox = hdr["pixdim"][1:4].copy()
    vox[-1] *= hdr["pixdim"][0]
    out = np.eye(4)
    out[0:3, 0:3] = np.dot(rot, np.diag(vox))
    out[0:3, 3] = [hdr["qoffset_x"], hdr["qoffset_y"], hdr["qoffset_z"]]
    return out


def _sform(hdr: np.void) -> NDArray[np.float64]:
    out = np.eye(4)
    out[0, :] = hdr["srow_x"]
    out[1, :] = hdr["srow_y"]
    out[2, :] = hdr["srow_z"]
    return out


def _base_affine(hdr: np.void) -> NDArray[np.float64]:
    """nibabel's centred affine of a header without qform or sform (x flipped)."""
    shape = np.asarray(hdr["dim"][1:4], dtype=float)
    zooms = np.array(hdr["pixdim"][1:4])
    zooms[0] *= -1
    aff = np.eye(4)
    aff[:3, :3] = np.diag(zooms)
    aff[:3, -1] = -((shape - 1) / 2.0) * zooms
    return aff


def best_affine(hdr: np.void) -> NDArray[np.float64]:
    """The affine nibabel gives the image: the sform if coded, else the qform if coded, else the base affine."""
    if int(hdr["sform_code"]) != 0:
        return _sform(hdr)
    if int(hdr["qform_code"]) != 0:
        return _qform(hdr)
    return _base_affine(hdr)


def axcodes(affine: NDArray[np.float64]) -> str:
    """nibabel's ``aff2axcodes`` (``io_orientation``: polar decomposition, strongest axes first), joined."""
    rzs = np.asarray(affine)[:3, :3]
    zooms = np.sqrt(np.sum(rzs * rzs, axis=0))
    zooms[zooms == 0] = 1
    rs = rzs / zooms
    p, s, qs = np.linalg.svd(rs, full_matrices=False)
    keep = s > s.max() * max(rs.shape) * np.finfo(s.dtype).eps
    r = np.dot(p[:, keep], qs[keep])
    codes: list[str | None] = [None, None, None]
    for in_ax in np.argsort(np.min(-(r**2), axis=0), kind="stable"):
        col = r[:, in_ax]
        if not np.allclose(col, 0):
            out_ax = int(np.argmax(np.abs(col)))
            codes[in_ax] = AXIS_LABELS[out_ax][1 if col[out_ax] > 0 else 0]
            r[out_ax, :] = 0
    return "".join(str(c) for c in codes)


@dataclass
class Nifti1:
    """A plain NIfTI-1 volume read by :func:`read`: its header (in the file's byte order) and its voxels, a
    read-only Fortran-order view of the decompressed bytes in the on-disk dtype (unscaled: the file has no
    scaling). Has the ``shape``, ``affine`` and ``get_data_dtype`` of a nibabel image."""

    header: np.void
    voxels: NDArray[Any]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.voxels.shape)

    @property
    def affine(self) -> NDArray[np.float64]:
        return best_affine(self.header)

    def get_data_dtype(self) -> np.dtype[Any]:
        return self.voxels.dtype

    def essentials(self) -> dict[str, Any]:
        """What :func:`bratsseg.io.nifti.header_essentials` gives for the same file through nibabel."""
        hdr = self.header
        qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
        affine = self.affine
        units = int(hdr["xyzt_units"])
        return {
            "shape": [int(s) for s in self.shape[:3]],
            "affine": affine.tolist(),
            "qform": _qform(hdr).tolist() if qcode else None,
            "qform_code": qcode,
            "sform": _sform(hdr).tolist() if scode else None,
            "sform_code": scode,
            "zooms": [float(z) for z in hdr["pixdim"][1:4]],
            "axcodes": axcodes(affine),
            "dtype": str(self.voxels.dtype),
            "xyzt_units": [SPACE_UNITS.get(units & 0x07, "unknown"), TIME_UNITS.get(units & 0x38, "unknown")],
        }


def read(path: str | Path) -> Nifti1 | None:
    """The volume in ``path`` (gzip-compressed or not, whatever its name says) when it is a plain NIfTI-1 file
    (see the module's docstring), else None; None also for a file that cannot be read or is too short, which
    the caller then reads through nibabel for its error message."""
    try:
        stored = Path(path).read_bytes()
        data = inflate(stored) if stored[:2] == GZIP_MAGIC else stored
    except Exception:  # unreadable or truncated: nibabel's path names the problem
        return None
    hdr = parse_header(data)
    if hdr is None:
        return None
    ndim = int(hdr["dim"][0])
    shape = tuple(int(d) for d in hdr["dim"][1 : ndim + 1])
    count = int(np.prod(shape))
    on_disk = DATATYPES[int(hdr["datatype"])].newbyteorder(hdr.dtype["sizeof_hdr"].byteorder)
    offset = int(hdr["vox_offset"])
    if offset + count * on_disk.itemsize > len(data):
        return None
    voxels = np.frombuffer(data, dtype=on_disk, count=count, offset=offset).reshape(shape, order="F")
    return Nifti1(hdr, voxels)


def write_like(data: NDArray[Any], template: np.void, path: str | Path) -> Path:
    """Write 3-D ``data`` (a plain numeric dtype) as a little-endian, gzip-compressed NIfTI-1 file on the grid of
    ``template`` (a header from :func:`read` of the same spatial shape): its voxel sizes, ``qfac``, units, and
    qform and sform parameters are copied verbatim; the rest is what nibabel writes for a new image."""
    path = Path(path)
    data = np.asarray(data)
    if data.ndim != 3 or tuple(int(d) for d in template["dim"][1:4]) != data.shape:
        raise ValueError(f"data of shape {data.shape} is not on the template's grid {tuple(template['dim'][1:4])}")
    code = _CODES.get(data.dtype.newbyteorder("="))
    if code is None:
        raise ValueError(f"no NIfTI-1 datatype for {data.dtype}")
    hdr = np.zeros((), dtype=HEADER)
    hdr["sizeof_hdr"] = HEADER_SIZE
    hdr["dim"] = [3, *data.shape, 1, 1, 1, 1]
    hdr["datatype"] = code
    hdr["bitpix"] = 8 * data.dtype.itemsize
    hdr["pixdim"] = [template["pixdim"][0], *template["pixdim"][1:4], 1, 1, 1, 1]
    hdr["vox_offset"] = HEADER_SIZE + 4
    hdr["scl_slope"] = np.nan
    hdr["scl_inter"] = np.nan
    hdr["xyzt_units"] = template["xyzt_units"]
    for field in (
        "qform_code", "sform_code", "quatern_b", "quatern_c", "quatern_d", "qoffset_x", "qoffset_y",
        "qoffset_z", "srow_x", "srow_y", "srow_z",
    ):  # fmt: skip
        hdr[field] = template[field]
    hdr["magic"] = b"n+1"
    voxels = np.asarray(data, dtype=data.dtype.newbyteorder("<")).tobytes(order="F")
    path.write_bytes(compress(hdr.tobytes() + b"\0\0\0\0" + voxels))
    return path
