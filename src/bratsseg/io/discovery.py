"""Finding BraTS cases on disk, in either file naming.

BraTS 2017-2021: ``<id>_flair``, ``<id>_t1``, ``<id>_t1ce``, ``<id>_t2`` and optionally ``<id>_seg``.
BraTS 2023+:     ``<id>-t2f``, ``<id>-t1n``, ``<id>-t1c``, ``<id>-t2w`` and optionally ``<id>-seg``.
Each with ``.nii`` or ``.nii.gz``. Modalities always come out in :data:`MODALITIES` order.
"""

from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bratsseg.errors import BratsSegError
from bratsseg.labels import MODALITIES, LabelConvention, get_convention

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Naming:
    """A file-naming scheme: how case id and modality are joined, and each modality's suffix."""

    name: str
    separator: str
    suffixes: tuple[str, str, str, str]  # in MODALITIES order
    seg_suffix: str
    convention: str  # the label convention this naming implies

    def filename(self, case_id: str, modality: str, ext: str = ".nii.gz") -> str:
        """The file name of ``modality`` (a canonical name or ``"seg"``) for ``case_id``."""
        suffix = self.seg_suffix if modality == "seg" else self.suffixes[MODALITIES.index(modality)]
        return f"{case_id}{self.separator}{suffix}{ext}"

    @property
    def pattern(self) -> re.Pattern[str]:
        alternatives = "|".join(sorted((*self.suffixes, self.seg_suffix), key=len, reverse=True))
        return re.compile(rf"^(?P<id>.+){re.escape(self.separator)}(?P<mod>{alternatives})\.nii(\.gz)?$", re.IGNORECASE)


NAMING_2021 = Naming("brats2021", "_", ("flair", "t1", "t1ce", "t2"), "seg", "brats2021")
NAMING_2023 = Naming("brats2023", "-", ("t2f", "t1n", "t1c", "t2w"), "seg", "brats2023")
NAMINGS: dict[str, Naming] = {n.name: n for n in (NAMING_2021, NAMING_2023)}


def get_naming(name: str | Naming) -> Naming:
    if isinstance(name, Naming):
        return name
    try:
        return NAMINGS[name]
    except KeyError:
        raise BratsSegError(f"unknown naming {name!r}; known: {', '.join(sorted(NAMINGS))}") from None


@dataclass(frozen=True)
class Case:
    """One BraTS case on disk: four modality files in :data:`MODALITIES` order and an optional segmentation."""

    case_id: str
    images: tuple[Path, Path, Path, Path]
    seg: Path | None
    naming: Naming
    convention: LabelConvention

    @property
    def folder(self) -> Path:
        return self.images[0].parent

    @property
    def files(self) -> tuple[Path, ...]:
        return self.images + ((self.seg,) if self.seg is not None else ())


@dataclass
class Discovery:
    """The cases found under a path, and one error per folder that looked like a case but is not usable."""

    cases: list[Case] = field(default_factory=list)
    problems: list[BratsSegError] = field(default_factory=list)


def _is_nifti(name: str) -> bool:
    lower = name.lower()
    return lower.endswith(".nii") or lower.endswith(".nii.gz")


def _match(filename: str) -> tuple[Naming, str, str] | None:
    """(naming, case id, canonical modality or 'seg') for a file name that follows a naming, else None."""
    for naming in NAMINGS.values():
        m = naming.pattern.match(filename)
        if m:
            suffix = m.group("mod").lower()
            mod = "seg" if suffix == naming.seg_suffix else MODALITIES[naming.suffixes.index(suffix)]
            return naming, m.group("id"), mod
    return None


def _group_to_case(
    case_id: str,
    naming: Naming,
    files: dict[str, list[Path]],
    folder: Path,
    convention: str | LabelConvention | None,
) -> Case:
    for mod, paths in sorted(files.items()):
        if len(paths) > 1:
            names = ", ".join(sorted(p.name for p in paths))
            raise BratsSegError(f"case {case_id}: several files claim modality {mod!r}: {names}", folder)
    missing = [m for m in MODALITIES if m not in files]
    if missing:
        expected = ", ".join(naming.filename(case_id, m) for m in missing)
        raise BratsSegError(f"case {case_id}: missing modality {', '.join(missing)} (expected {expected})", folder)
    images = tuple(files[m][0] for m in MODALITIES)
    seg = files["seg"][0] if "seg" in files else None
    conv = get_convention(convention if convention is not None else naming.convention)
    return Case(case_id, images, seg, naming, conv)  # type: ignore[arg-type]


def _cases_in_folder(
    folder: Path, filenames: Iterable[str], convention: str | LabelConvention | None, discovery: Discovery
) -> None:
    groups: dict[tuple[str, str], dict[str, list[Path]]] = defaultdict(lambda: defaultdict(list))
    for name in sorted(filenames):
        if not _is_nifti(name):
            continue
        matched = _match(name)
        if matched is None:
            log.debug("ignoring %s: not a BraTS modality file name", folder / name)
            continue
        naming, case_id, mod = matched
        groups[(naming.name, case_id)][mod].append(folder / name)
    for (naming_name, case_id), files in sorted(groups.items()):
        try:
            discovery.cases.append(_group_to_case(case_id, NAMINGS[naming_name], files, folder, convention))
        except BratsSegError as err:
            discovery.problems.append(err)


def discover_cases(path: str | Path, convention: str | LabelConvention | None = None) -> Discovery:
    """Every case under ``path``: a case folder, or a dataset root holding case folders at any depth.

    ``convention`` overrides the label convention implied by the naming. Folders that look like a case
    but are not usable (a missing modality, two files for one modality, a case id seen twice) are
    reported in :attr:`Discovery.problems`; the usable cases are still returned.
    """
    root = Path(path)
    if not root.exists():
        raise BratsSegError("no such file or folder", root)
    if not root.is_dir():
        raise BratsSegError("expected a case folder or a dataset root, got a file", root)
    discovery = Discovery()
    visited: set[str] = set()  # symlinked folders are followed (datasets are often linked), each real one once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        _cases_in_folder(Path(dirpath), filenames, convention, discovery)
    seen: dict[str, Case] = {}
    unique: list[Case] = []
    for case in discovery.cases:
        if case.case_id in seen:
            discovery.problems.append(
                BratsSegError(
                    f"case id {case.case_id} appears twice: in {seen[case.case_id].folder} and {case.folder}",
                    case.folder,
                )
            )
            continue
        seen[case.case_id] = case
        unique.append(case)
    discovery.cases = sorted(unique, key=lambda c: c.case_id)
    if not discovery.cases and not discovery.problems:
        raise BratsSegError(
            "no BraTS cases found (expected files like <id>_flair.nii.gz ... or <id>-t2f.nii.gz ...)", root
        )
    return discovery


def find_case(path: str | Path, convention: str | LabelConvention | None = None) -> Case:
    """The single case in a case folder; raises :class:`BratsSegError` if it holds none or several."""
    discovery = discover_cases(path, convention)
    if discovery.problems:
        raise discovery.problems[0]
    if len(discovery.cases) != 1:
        ids = ", ".join(c.case_id for c in discovery.cases)
        raise BratsSegError(f"expected one case, found {len(discovery.cases)}: {ids}", path)
    return discovery.cases[0]


def case_from_files(
    files: Sequence[str | Path], case_id: str | None = None, convention: str | LabelConvention | None = None
) -> Case:
    """A case from four modality files given explicitly (plus an optional segmentation), in any order.

    Each file name must follow one naming, so that its modality is known.
    """
    paths = [Path(f) for f in files]
    by_mod: dict[str, list[Path]] = defaultdict(list)
    namings, ids = set(), set()
    for p in paths:
        if not p.is_file():
            raise BratsSegError("no such file", p)
        matched = _match(p.name)
        if matched is None:
            raise BratsSegError(
                "cannot tell the modality from the file name (expected <id>_flair/_t1/_t1ce/_t2 or "
                "<id>-t2f/-t1n/-t1c/-t2w, .nii or .nii.gz)",
                p,
            )
        naming, cid, mod = matched
        namings.add(naming.name)
        ids.add(cid)
        by_mod[mod].append(p)
    if len(namings) != 1:
        raise BratsSegError(f"files mix namings {sorted(namings)}: {', '.join(str(p) for p in paths)}")
    if len(ids) != 1 and case_id is None:
        raise BratsSegError(
            f"the files are of different cases ({', '.join(sorted(ids))}); give one case's four files, "
            f"or its folder: {', '.join(str(p) for p in paths)}"
        )
    return _group_to_case(case_id or ids.pop(), NAMINGS[namings.pop()], by_mod, paths[0].parent, convention)
