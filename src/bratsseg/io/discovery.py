"""Finding BraTS cases on disk, in the namings of the BraTS editions and of other collections.

BraTS 2017-2021: ``<id>_flair``, ``<id>_t1``, ``<id>_t1ce``, ``<id>_t2`` and optionally ``<id>_seg``.
BraTS 2023+:     ``<id>-t2f``, ``<id>-t1n``, ``<id>-t1c``, ``<id>-t2w`` and optionally ``<id>-seg``.
UPENN-GBM (TCIA): ``<id>_FLAIR``, ``<id>_T1``, ``<id>_T1GD``, ``<id>_T2`` and ``<id>_segm`` (labels 1/2/4).
UCSF-PDGM (TCIA): ``<id>_FLAIR``, ``<id>_T1``, ``<id>_T1c``, ``<id>_T2`` and ``<id>_tumor_segmentation`` (1/2/4).
nnU-Net raw data: ``imagesTr/<case>_0000..0003`` (+ ``labelsTr/<case>``, ``imagesTs/``) beside a ``dataset.json``
whose channel names say which channel is which modality and whose labels give the label convention.
Any other: ``naming=`` a :class:`Naming` (``--naming SEP:FLAIR,T1,T1CE,T2[,SEG]`` on the command line).
Each with ``.nii`` or ``.nii.gz``; names are matched case-insensitively, and where a folder's files fit several
namings the one that makes a complete case wins. Modalities always come out in :data:`MODALITIES` order.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bratsseg.errors import BratsSegError
from bratsseg.labels import CONVENTIONS, MODALITIES, LabelConvention, get_convention

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
        alternatives = "|".join(re.escape(a) for a in sorted((*self.suffixes, self.seg_suffix), key=len, reverse=True))
        return re.compile(rf"^(?P<id>.+){re.escape(self.separator)}(?P<mod>{alternatives})\.nii(\.gz)?$", re.IGNORECASE)

    def modality_of(self, suffix: str) -> str:
        """The canonical modality (or ``seg``) of a matched suffix."""
        lower = suffix.lower()
        if lower == self.seg_suffix.lower():
            return "seg"
        return MODALITIES[[s.lower() for s in self.suffixes].index(lower)]


NAMING_2021 = Naming("brats2021", "_", ("flair", "t1", "t1ce", "t2"), "seg", "brats2021")
NAMING_2023 = Naming("brats2023", "-", ("t2f", "t1n", "t1c", "t2w"), "seg", "brats2023")
NAMING_UPENN = Naming("upenn-gbm", "_", ("FLAIR", "T1", "T1GD", "T2"), "segm", "brats2021")
NAMING_UCSF = Naming("ucsf-pdgm", "_", ("FLAIR", "T1", "T1c", "T2"), "tumor_segmentation", "brats2021")
NAMINGS: dict[str, Naming] = {n.name: n for n in (NAMING_2021, NAMING_2023, NAMING_UPENN, NAMING_UCSF)}


def parse_naming(text: str, convention: str = "brats2021") -> Naming:
    """``SEP:FLAIR,T1,T1CE,T2[,SEG]`` (the separator between case id and suffix, then the suffixes of FLAIR, T1,
    T1ce, T2 and optionally the segmentation, e.g. ``_:FLAIR,T1,T1GD,T2,segm``) as a :class:`Naming`."""
    sep, colon, rest = text.partition(":")
    parts = [p.strip() for p in rest.split(",")]
    if not colon or len(parts) not in (4, 5) or not all(parts) or len(set(p.lower() for p in parts)) != len(parts):
        raise BratsSegError(
            f"--naming must be SEP:FLAIR,T1,T1CE,T2[,SEG] with distinct suffixes (e.g. _:FLAIR,T1,T1GD,T2,segm), "
            f"got {text!r}"
        )
    seg = parts[4] if len(parts) == 5 else "seg"
    return Naming("custom", sep, (parts[0], parts[1], parts[2], parts[3]), seg, convention)


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


def _matches(filename: str, namings: Sequence[Naming] | None = None) -> list[tuple[Naming, str, str]]:
    """(naming, case id, canonical modality or 'seg') for every naming the file name follows."""
    out = []
    for naming in namings or list(NAMINGS.values()):
        m = naming.pattern.match(filename)
        if m:
            out.append((naming, m.group("id"), naming.modality_of(m.group("mod"))))
    return out


def _match(filename: str, namings: Sequence[Naming] | None = None) -> tuple[Naming, str, str] | None:
    """The first of :func:`_matches`, or None."""
    found = _matches(filename, namings)
    return found[0] if found else None


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
    folder: Path,
    filenames: Iterable[str],
    convention: str | LabelConvention | None,
    discovery: Discovery,
    namings: Sequence[Naming] | None = None,
    segs: Path | None = None,
) -> None:
    """The cases of one folder. A file that fits several namings joins each one's group; for each case id the
    naming whose group is a complete case wins (a UPENN-GBM ``_FLAIR``/``_T1``/``_T2`` also fits BraTS 2021's
    naming, which lacks its ``_T1GD``). ``segs``: a folder holding each case's segmentation as ``<id>.nii.gz``
    (nnU-Net's ``labelsTr``)."""
    namings = list(namings or NAMINGS.values())
    groups: dict[str, dict[str, dict[str, list[Path]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for name in sorted(filenames):
        if not _is_nifti(name):
            continue
        found = _matches(name, namings)
        if not found:
            log.debug("ignoring %s: not a BraTS modality file name", folder / name)
            continue
        for naming, case_id, mod in found:
            groups[case_id][naming.name][mod].append(folder / name)
    by_name = {n.name: n for n in namings}
    for case_id, candidates in sorted(groups.items()):
        if segs is not None:
            for files in candidates.values():
                options = [segs / f"{case_id}{ext}" for ext in (".nii.gz", ".nii")]
                seg = next((o for o in options if o.is_file()), None)
                if seg is not None:
                    files["seg"].append(seg)

        def completeness(item: tuple[str, dict[str, list[Path]]]) -> tuple[int, int, int]:
            name, files = item
            complete = all(len(files.get(m, [])) == 1 for m in MODALITIES)
            return int(complete), sum(1 for m in MODALITIES if m in files), -list(by_name).index(name)

        best_name, best = max(candidates.items(), key=completeness)  # an incomplete one is reported below
        try:
            discovery.cases.append(_group_to_case(case_id, by_name[best_name], best, folder, convention))
        except BratsSegError as err:
            discovery.problems.append(err)


#: what a channel name of an nnU-Net ``dataset.json`` may say, lower-cased with everything but letters and digits
#: dropped, for each modality (checked in this order: T1ce before T1, FLAIR before T2)
_CHANNEL_WORDS = {
    "flair": ("flair", "t2f", "t2flair"),
    "t1ce": ("t1ce", "t1gd", "t1c", "t1gad", "t1post", "t1contrast", "t1wce", "t1cegd", "t1wgd", "t1wpost"),
    "t1": ("t1", "t1w", "t1n", "t1native", "t1pre"),
    "t2": ("t2", "t2w"),
}


def _channel_modality(name: str) -> str | None:
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    for modality, words in _CHANNEL_WORDS.items():
        if key in words:
            return modality
    return None


def nnunet_layout(dataset_json: Path) -> tuple[Naming, LabelConvention]:
    """The naming (which ``_000k`` is which modality) and label convention an nnU-Net raw dataset's
    ``dataset.json`` implies (nnU-Net v2 ``channel_names``/``labels``, or v1 and the Decathlon's
    ``modality``/``labels``, region-based labels included)."""
    try:
        spec = json.loads(dataset_json.read_text())
        channels = spec.get("channel_names") or spec.get("modality")
        labels = spec.get("labels", {})
        if not isinstance(channels, dict) or not isinstance(labels, dict):
            raise ValueError("no channel_names/modality or labels mapping")
    except (OSError, ValueError) as err:
        raise BratsSegError(f"not a readable nnU-Net dataset.json ({err})", dataset_json) from None
    by_modality: dict[str, str] = {}
    for index, name in channels.items():
        modality = _channel_modality(str(name))
        if modality is None or modality in by_modality:
            raise BratsSegError(
                f"channel {index} is {name!r}: cannot tell which of FLAIR, T1, T1ce, T2 it is (or it is twice)",
                dataset_json,
            )
        by_modality[modality] = f"{int(index):04d}"
    if set(by_modality) != set(MODALITIES):
        raise BratsSegError(f"channels {channels} are not the four BraTS modalities", dataset_json)
    flair, t1, t1ce, t2 = (by_modality[m] for m in MODALITIES)
    naming = Naming(f"nnunet:{dataset_json.parent.name}", "_", (flair, t1, t1ce, t2), "seg", "msd")
    return naming, _nnunet_convention(labels, dataset_json)


def _nnunet_convention(labels: dict[str, object], where: Path) -> LabelConvention:
    """The convention of an nnU-Net ``labels`` map: ``{"background": 0, "edema": 1, ...}`` (v2), ``{"0":
    "background", ...}`` (v1, the Decathlon), or regions (``{"whole tumor": [1, 2, 3], "tumor core": [2, 3],
    "enhancing tumor": [3]}``)."""
    if all(str(k).isdigit() for k in labels):  # v1: value -> name
        labels = {str(v): int(k) for k, v in labels.items()}
    norm = {re.sub(r"[^a-z]", "", k.lower()): v for k, v in labels.items()}
    values: dict[str, int] = {}
    if any(isinstance(v, list) for v in norm.values()):
        sets: dict[str, set[int]] = {
            k: {int(x) for x in v} if isinstance(v, list) else {int(v)}  # type: ignore[call-overload]
            for k, v in norm.items()
        }
        whole = next((v for k, v in sets.items() if "whole" in k), set())
        core = next((v for k, v in sets.items() if "core" in k), set())
        enh = next((v for k, v in sets.items() if "enhanc" in k and "non" not in k), set())
        if len(enh) == 1 and len(core - enh) == 1 and len(whole - core) == 1:
            values = {"enhancing": enh.pop(), "necrotic": (core - enh).pop(), "edema": (whole - core).pop()}
    else:
        for k, v in norm.items():
            if "edema" in k or "oedema" in k:
                values["edema"] = int(v)  # type: ignore[call-overload]
            elif "nonenhanc" in k or "necro" in k or k == "ncr":
                values["necrotic"] = int(v)  # type: ignore[call-overload]
            elif "enhanc" in k:
                values["enhancing"] = int(v)  # type: ignore[call-overload]
    for convention in CONVENTIONS.values():
        if values == {"necrotic": convention.necrotic, "edema": convention.edema, "enhancing": convention.enhancing}:
            return convention
    raise BratsSegError(
        f"labels {labels} are not a BraTS label layout bratsseg knows ({', '.join(CONVENTIONS)})", where
    )


NNUNET_IMAGES = ("imagesTr", "imagesTs")


def discover_cases(
    path: str | Path, convention: str | LabelConvention | None = None, naming: Naming | str | None = None
) -> Discovery:
    """Every case under ``path``: a case folder, or a dataset root holding case folders at any depth, or an
    nnU-Net raw dataset (a folder with ``dataset.json`` and ``imagesTr``/``imagesTs``, or one of those folders).

    ``convention`` overrides the label convention implied by the naming; ``naming`` (a :class:`Naming`, or
    ``SEP:FLAIR,T1,T1CE,T2[,SEG]``) is the only naming tried. Folders that look like a case but are not usable (a
    missing modality, two files for one modality, a case id seen twice) are reported in
    :attr:`Discovery.problems`; the usable cases are still returned.
    """
    root = Path(path)
    if not root.exists():
        raise BratsSegError("no such file or folder", root)
    if not root.is_dir():
        raise BratsSegError("expected a case folder or a dataset root, got a file", root)
    namings = [parse_naming(naming) if isinstance(naming, str) else naming] if naming is not None else None
    discovery = Discovery()
    visited: set[str] = set()  # symlinked folders are followed (datasets are often linked), each real one once
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        here = Path(dirpath)
        spec = here / "dataset.json"
        if here.name in NNUNET_IMAGES and (here.parent / "dataset.json").is_file() and here == root:
            spec = here.parent / "dataset.json"
        if spec.is_file() and (here.name in NNUNET_IMAGES or any(d in NNUNET_IMAGES for d in dirnames)):
            nn_naming, nn_convention = nnunet_layout(spec)
            folders = [here] if here.name in NNUNET_IMAGES else [here / d for d in NNUNET_IMAGES if d in dirnames]
            for images in folders:
                labels = spec.parent / ("labelsTr" if images.name == "imagesTr" else "labelsTs")
                _cases_in_folder(
                    images, sorted(os.listdir(images)), convention or nn_convention, discovery, [nn_naming],
                    labels if labels.is_dir() else None,
                )  # fmt: skip
            dirnames[:] = []  # imagesTr, labelsTr ... are done
            continue
        _cases_in_folder(here, filenames, convention, discovery, namings)
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
            "no BraTS cases found (expected files like <id>_flair.nii.gz ..., <id>-t2f.nii.gz ..., <id>_FLAIR.nii.gz "
            "..., or an nnU-Net dataset; another naming: --naming SEP:FLAIR,T1,T1CE,T2[,SEG])",
            root,
        )
    return discovery


def find_case(
    path: str | Path, convention: str | LabelConvention | None = None, naming: Naming | str | None = None
) -> Case:
    """The single case in a case folder; raises :class:`BratsSegError` if it holds none or several."""
    discovery = discover_cases(path, convention, naming)
    if discovery.problems:
        raise discovery.problems[0]
    if len(discovery.cases) != 1:
        ids = ", ".join(c.case_id for c in discovery.cases)
        raise BratsSegError(f"expected one case, found {len(discovery.cases)}: {ids}", path)
    return discovery.cases[0]


def case_from_modalities(
    files: dict[str, str | Path],
    case_id: str | None = None,
    convention: str | LabelConvention | None = None,
) -> Case:
    """A case from explicitly assigned files (``--flair/--t1/--t1ce/--t2`` and optionally ``--seg``): any names;
    the case id is ``case_id`` or the FLAIR file's name without its extension."""
    missing = [m for m in MODALITIES if m not in files]
    if missing:
        raise BratsSegError(f"give all four modalities: --{' --'.join(missing)} missing")
    paths = {m: Path(f) for m, f in files.items()}
    for p in paths.values():
        if not p.is_file():
            raise BratsSegError("no such file", p)
    flair = paths["flair"].name
    cid = case_id or re.sub(r"\.nii(\.gz)?$", "", flair, flags=re.IGNORECASE)
    naming = Naming("explicit", "_", ("flair", "t1", "t1ce", "t2"), "seg", "brats2021")
    images = tuple(paths[m] for m in MODALITIES)
    conv = get_convention(convention if convention is not None else naming.convention)
    return Case(cid, images, paths.get("seg"), naming, conv)  # type: ignore[arg-type]


def case_from_files(
    files: Sequence[str | Path],
    case_id: str | None = None,
    convention: str | LabelConvention | None = None,
    naming: Naming | str | None = None,
) -> Case:
    """A case from four modality files given explicitly (plus an optional segmentation), in any order.

    Each file name must follow one naming (the same for all), so that its modality is known.
    """
    paths = [Path(f) for f in files]
    namings = [parse_naming(naming) if isinstance(naming, str) else naming] if naming is not None else None
    matches = []
    for p in paths:
        if not p.is_file():
            raise BratsSegError("no such file", p)
        found = _matches(p.name, namings)
        if not found:
            raise BratsSegError(
                "cannot tell the modality from the file name (expected <id>_flair/_t1/_t1ce/_t2, "
                "<id>-t2f/-t1n/-t1c/-t2w, <id>_FLAIR/_T1/_T1GD/_T2 ..., .nii or .nii.gz; or give --flair/--t1/"
                "--t1ce/--t2, or --naming)",
                p,
            )
        matches.append({m[0].name: m for m in found})
    shared = [n for n in matches[0] if all(n in m for m in matches)]
    if not shared:
        names = sorted({n for m in matches for n in m})
        raise BratsSegError(f"files mix namings {names}: {', '.join(str(p) for p in paths)}")
    by_mod: dict[str, list[Path]] = defaultdict(list)
    ids = set()
    chosen = shared[0]
    for p, m in zip(paths, matches, strict=True):
        _, cid, mod = m[chosen]
        ids.add(cid)
        by_mod[mod].append(p)
    naming_obj = matches[0][chosen][0]
    if len(ids) != 1 and case_id is None:
        raise BratsSegError(
            f"the files are of different cases ({', '.join(sorted(ids))}); give one case's four files, "
            f"or its folder: {', '.join(str(p) for p in paths)}"
        )
    return _group_to_case(case_id or ids.pop(), naming_obj, by_mod, paths[0].parent, convention)
