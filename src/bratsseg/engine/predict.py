"""`bratsseg predict`: raw BraTS cases in, label maps on each input's own grid out.

Per case: read the four modalities (decompressed in parallel, kept in their on-disk dtype), crop to the brain
and z-score with the same function and margin as the model's training cache (the card's
``preprocessing.margin``; only the brain's box is converted to float32, the cache stores float16), run the
network (PyTorch or ONNX Runtime), binarise each region at the model's thresholds, turn regions into labels of
the input's convention, put them back on the full grid and write ``<case_id>.nii.gz`` with the input's affine
and qform/sform. A bad case is reported and the others still finish; under ``torchrun`` each process takes
every ``world_size``-th case.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.atomic import atomic_path, stale_temporaries
from bratsseg.data.geometry import uncrop
from bratsseg.data.preprocess import SPACING_RTOL, crop_and_normalise
from bratsseg.data.resample import resampled_shape, resize
from bratsseg.engine.distributed import inference_context
from bratsseg.engine.predictors import open_predictor
from bratsseg.errors import BratsSegError
from bratsseg.inference.postprocess import postprocess_regions
from bratsseg.inference.predictor import Predictor, binarize
from bratsseg.io.discovery import Case, case_from_files, discover_cases
from bratsseg.io.nifti import load_raw_case, save_nifti
from bratsseg.labels import REGIONS, regions_to_labels
from bratsseg.models.bundled import default_model_path

STAGES = ("read", "preprocess", "network", "postprocess", "write")


#: a hidden temporary untouched this long was left by a killed run (a case is written in seconds)
STALE_TEMPORARY_S = 600.0


#: below this agreement between the members of an ensemble (``--mode accurate``) a finding is flagged "unsure"
#: (a mean pairwise whole-tumour Dice). Not chosen on data; checked on cases no member trained on: it flags the
#: tumour-free brains made from them and few real scans (the flags table, docs/results/robustness.md)
MIN_AGREEMENT = 0.8


CAVEAT_TUMOUR_ONLY = (
    "the model was trained on tumour cases only: on tumour-free brains it labels tumour with high confidence "
    "(docs/results/robustness.md), so 'finding' does not rule out a healthy scan"
)
CAVEAT_TUMOUR_FREE = (
    "the model also learnt from tumour-free brains made from tumour cases (no real healthy scan): on such brains "
    "it mostly finds nothing, but not always (docs/results/robustness.md); a small 'finding' may be a healthy scan"
)


def case_finding(
    case_id: str,
    volumes_cm3: dict[str, float],
    confidence: float | None,
    agreement: float | None,
    caveat: str = CAVEAT_TUMOUR_ONLY,
) -> dict[str, Any]:
    """What ``predict`` writes beside each label map as ``<case_id>.json``: the volume of each region in cm^3, the
    confidence (the mean whole-tumour probability over the voxels predicted as whole tumour), the agreement of an
    ensemble's members (mean pairwise whole-tumour Dice; None for one model), and a flag: ``no tumour found``,
    ``unsure`` (the members disagree) or ``finding``."""
    if volumes_cm3["WT"] == 0:
        flag, why = "no tumour found", "no voxel was labelled tumour"
    elif agreement is not None and agreement < MIN_AGREEMENT:
        flag, why = "unsure", f"the ensemble's members agree on the whole tumour with Dice {agreement:.2f} only"
    else:
        flag, why = "finding", "tumour labelled"
    return {
        "case_id": case_id,
        "flag": flag,
        "why": why,
        "volume_cm3": {g: round(v, 3) for g, v in volumes_cm3.items()},
        "confidence": None if confidence is None else round(confidence, 4),
        "agreement": None if agreement is None else round(agreement, 4),
        "caveat": caveat,
    }


@dataclass
class PredictReport:
    """What :func:`predict` did: files written, cases skipped (output exists), one message per failure, and
    the seconds each stage took per written case."""

    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    timings: list[dict[str, float]] = field(default_factory=list)
    cleaned: list[Path] = field(default_factory=list)  # temporaries an interrupted run left, removed

    @property
    def ok(self) -> bool:
        return not self.failed

    def mean_timings(self) -> dict[str, float]:
        if not self.timings:
            return {}
        return {k: float(np.mean([t[k] for t in self.timings])) for k in (*STAGES, "total")}


def probabilities_at_model_spacing(
    predictor: Predictor, image: NDArray[np.float32], spacing: tuple[float, ...]
) -> NDArray[np.float32]:
    """Region probabilities of the cropped, z-scored ``image`` on its own grid. When the model's card names the
    spacing it was trained at and the input's differs, the image is resampled to that spacing (trilinear), the
    network runs there, and the probabilities are resampled back to the input grid (trilinear) and set to 0
    outside the input's brain; thresholding happens after, on the input's own grid."""
    target = predictor.card.preprocessing.spacing
    if target is None or np.allclose(spacing, target, rtol=SPACING_RTOL):
        return predictor.probabilities(image)
    size = resampled_shape(tuple(image.shape[1:]), spacing, target)
    probs = resize(predictor.probabilities(resize(image, size)), tuple(image.shape[1:]))
    np.clip(probs, 0, 1, out=probs)
    probs *= np.any(image != 0, axis=0, keepdims=True)
    return probs


def predict_case(
    predictor: Predictor,
    case: Case,
    out_dir: str | Path,
    thresholds: dict[str, float] | None = None,
    save_probabilities: bool = False,
    background: float = 0.0,
    all_components: bool = False,
    overwrite: bool = True,
) -> tuple[Path, dict[str, float]]:
    """Segment one raw case into ``out_dir/<case_id>.nii.gz``; returns the file and the seconds per stage.
    ``all_components``: keep every connected component (turns off the card's component rule). Without
    ``overwrite`` an output that appeared meanwhile (another run's) is not replaced: :class:`FileExistsError`."""
    t = [time.perf_counter()]
    raw = load_raw_case(case)  # int16 for BraTS: only the brain's box is converted to float, below
    header, template = raw.header, raw.template
    t.append(time.perf_counter())
    norm = crop_and_normalise(
        raw.channels, predictor.card.preprocessing.margin, background=background, names=[str(f) for f in case.images]
    )
    del raw  # the whole volumes are no longer needed: keep the peak memory low
    t.append(time.perf_counter())
    probs = probabilities_at_model_spacing(predictor, norm.image, tuple(header["zooms"]))
    t.append(time.perf_counter())
    regions = binarize(probs, thresholds or predictor.thresholds)
    confidence = float(probs[0].mean(where=regions[0])) if regions[0].any() else None
    settings = predictor.card.postprocessing
    regions = postprocess_regions(
        regions, header["zooms"], settings.without_components() if all_components else settings, norm.image
    )
    voxel_cm3 = float(np.prod(header["zooms"][:3])) / 1000.0
    finding = case_finding(
        case.case_id,
        {g: float(regions[r].sum()) * voxel_cm3 for r, g in enumerate(REGIONS)},
        confidence,
        getattr(predictor, "last_agreement", None),
        CAVEAT_TUMOUR_FREE if predictor.card.free_fraction > 0 else CAVEAT_TUMOUR_ONLY,
    )
    full = uncrop(regions_to_labels(regions, case.convention), norm.box, header["shape"])
    t.append(time.perf_counter())
    out_dir = Path(out_dir)
    exclusive = not overwrite
    if save_probabilities:  # first, so that the label map, the file a run checks for, is the last to appear
        p_full = uncrop(probs, norm.box, header["shape"])
        target = out_dir / f"{case.case_id}_probabilities.nii.gz"
        save_nifti(np.moveaxis(p_full, 0, -1), header, target, exclusive=exclusive)
    out_dir.mkdir(parents=True, exist_ok=True)
    report_path = out_dir / f"{case.case_id}.json"
    with atomic_path(report_path) as tmp:
        tmp.write_text(json.dumps(finding, indent=1))
    path = save_nifti(full, header, out_dir / f"{case.case_id}.nii.gz", template=template, exclusive=exclusive)
    t.append(time.perf_counter())
    seconds = {stage: t[i + 1] - t[i] for i, stage in enumerate(STAGES)}
    seconds["total"] = t[-1] - t[0]
    return path, seconds


def gather_cases(
    inputs: Sequence[str | Path | Case], convention: str | None = None, naming: str | None = None
) -> tuple[list[Case], list[str]]:
    """Cases from case folders and dataset roots (any number, in one call), or the four modality files of one
    case, or :class:`Case` objects (``case_from_modalities``); and one message per unusable folder or input (a
    case id found twice is segmented once). ``naming``: ``SEP:FLAIR,T1,T1CE,T2[,SEG]``, the only naming tried."""
    given = [c for c in inputs if isinstance(c, Case)]
    paths = [Path(p) for p in inputs if not isinstance(p, Case)]
    if not paths and not given:
        raise BratsSegError("no input given")
    files = [p for p in paths if p.is_file()]
    if files:
        if len(files) != len(paths) or given:
            raise BratsSegError("give case folders and dataset roots, or the four modality files of one case, not both")
        if len(files) == 1:
            raise BratsSegError("a single file is not a case: give the four modality files, or their folder", files[0])
        return [case_from_files(files, convention=convention, naming=naming)], []
    cases: list[Case] = []
    problems: list[str] = []
    seen: dict[str, Path] = {}
    found_cases = list(given)
    for path in paths:
        if not path.is_dir():
            problems.append(f"{path}: no such folder")
            continue
        found = discover_cases(path, convention, naming)
        if not found.cases and not found.problems:
            problems.append(f"{path}: no BraTS case found (four modality files per case)")
        problems += [str(p) for p in found.problems]
        found_cases += found.cases
    for case in found_cases:
        if case.case_id in seen:
            problems.append(f"{case.folder}: case id {case.case_id} also in {seen[case.case_id]}; segmented once")
            continue
        seen[case.case_id] = case.folder
        cases.append(case)
    if not cases:
        raise BratsSegError("; ".join(problems) if problems else "no BraTS case found")
    return cases, problems


def check_output_folder(out_dir: str | Path) -> Path:
    """Create ``out_dir`` if needed and make sure files can be written there, before any case is read."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise BratsSegError("the output folder is a file", out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".bratsseg-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BratsSegError(f"cannot write to the output folder ({err.strerror or err})", out) from None
    return out


@dataclass(frozen=True)
class PredictOptions:
    """How ``predict`` runs: every setting of ``bratsseg predict`` but the inputs and the output folder."""

    device: str = "cpu"
    threads: int | None = None
    backend: str = "auto"  # as in load_predictor: torch, onnx, or auto
    mode: str = "fast"  # one of the card's prediction modes (the bundled model: fast, accurate)
    thresholds: dict[str, float] | None = None  # None: the model's (its mode's)
    save_probabilities: bool = False
    overwrite: bool = False
    convention: str | None = None  # override the label convention the naming implies
    naming: str | None = None  # SEP:FLAIR,T1,T1CE,T2[,SEG]: the only file naming tried
    background: float = 0.0  # the constant value outside the brain, for input whose background is not 0
    all_components: bool = False  # keep every component of every region, whatever the card's component rule


def predict(
    inputs: Sequence[str | Path | Case],
    out_dir: str | Path,
    model: str | Path | None = None,
    options: PredictOptions | None = None,
    progress: Callable[[int], Any] | None = None,
    on_start: Callable[[int], Any] | None = None,
    **settings: Any,
) -> PredictReport:
    """Segment every case of ``inputs`` into ``out_dir``. ``model`` is a model folder or an ``.onnx`` file
    (the bundled model when None). ``options`` (:class:`PredictOptions`), or its fields as keywords
    (``predict(inputs, out, threads=1, mode="accurate")``). Existing outputs are skipped unless ``overwrite``.
    ``on_start`` is told how many cases this process will do, ``progress`` each one done. ``mode``: the bundled
    model has ``fast`` (one network pass) and ``accurate`` (the cross-validation fold models with mirroring)."""
    o = dataclasses.replace(options or PredictOptions(), **settings)
    device, threads, backend, mode = o.device, o.threads, o.backend, o.mode
    thresholds, save_probabilities, overwrite = o.thresholds, o.save_probabilities, o.overwrite
    convention, background, all_components = o.convention, o.background, o.all_components
    ctx = inference_context(device)
    out_dir = check_output_folder(out_dir)
    cleaned = []
    if ctx.is_main:  # what a killed run left (a live run touches its temporaries within seconds)
        for tmp in stale_temporaries(out_dir, STALE_TEMPORARY_S):
            tmp.unlink(missing_ok=True)
            cleaned.append(tmp)
    predictor = open_predictor(model or default_model_path(), str(ctx.device), threads, backend, mode)
    cases, problems = gather_cases(inputs, convention, o.naming)
    report = PredictReport(failed=problems if ctx.is_main else [], cleaned=cleaned)
    mine = cases[ctx.rank :: ctx.world_size]
    if on_start:
        on_start(len(mine))
    for case in mine:
        target = out_dir / f"{case.case_id}.nii.gz"
        if target.exists() and not overwrite:
            report.skipped.append(f"{case.case_id}: {target} exists (pass --overwrite to replace it)")
        else:
            try:
                path, seconds = predict_case(
                    predictor, case, out_dir, thresholds, save_probabilities, background, all_components, overwrite
                )
                report.written.append(path)
                report.timings.append(seconds)
            except FileExistsError as err:
                report.skipped.append(
                    f"{case.case_id}: {err.filename or err} appeared while this run worked (another run's?); "
                    "not replaced (pass --overwrite to replace it)"
                )
            except BratsSegError as err:
                report.failed.append(f"{case.case_id}: {err}")
            except (OSError, RuntimeError, ValueError) as err:
                report.failed.append(f"{case.case_id}: {type(err).__name__}: {err}")
        if progress:
            progress(1)
    if ctx.distributed:
        parts = ctx.gather(report)
        report = PredictReport(
            written=[p for r in parts for p in r.written],
            skipped=[s for r in parts for s in r.skipped],
            failed=[f for r in parts for f in r.failed],
            timings=[t for r in parts for t in r.timings],
            cleaned=[c for r in parts for c in r.cleaned],
        )
    return report


def parse_thresholds(text: str | None) -> dict[str, float] | None:
    """``"0.4"`` (every region) or ``"WT=0.5,TC=0.4,ET=0.45"`` -> thresholds; None stays None."""
    if text is None:
        return None
    try:
        if "=" not in text:
            value = float(text)
            out = dict.fromkeys(REGIONS, value)
        else:
            out = {}
            for part in text.split(","):
                key, value_text = part.split("=")
                out[key.strip().upper()] = float(value_text)
    except ValueError:
        raise BratsSegError(f"--threshold must be a number or WT=..,TC=..,ET=.., got {text!r}") from None
    unknown = set(out) - set(REGIONS)
    if unknown or not all(0.0 <= v < 1.0 for v in out.values()):
        raise BratsSegError(f"--threshold needs regions among {list(REGIONS)} and values in [0, 1), got {text!r}")
    if set(out) != set(REGIONS):
        raise BratsSegError(f"--threshold with names must give all of {list(REGIONS)}, got {text!r}")
    return out
