"""The model card: one frozen, typed description of a trained model, validated once when it is read.

It is what ``model.json`` holds in a model folder and what the ``bratsseg`` metadata entry of an exported ONNX
file holds, byte for byte the same JSON. Every consumer (predictors, evaluation, sweeps, compression, int8,
``predict``, the demo) reads the card's fields; nothing digs through untyped dicts.

Sections::

    architecture     UNetConfig: spatial dims, widths, norm, skip layout
    convention       label convention of the training data (brats2021: ET = 4; brats2023: ET = 3)
    modalities       input channel order; regions: output channel order (WT, TC, ET)
    preprocessing    how raw images became network input, *as the training cache was built* (crop margin, ...)
    inference        sliding-window size and overlap, and the coarse grid factor (downsample)
    thresholds       per-region binarisation thresholds, and where they came from (threshold_source)
    postprocessing   what happens to the binarised regions before they become labels (nesting, small-ET rule)
    training         provenance: steps, the cases trained and validated on, the run's full TrainConfig
    compression      history of what turned the trained model into this one (pruning, fine-tuning, fp16, onnx, int8)
    weights_dtype    how the weights are stored in this artefact (float32 or float16)
    modes            named prediction modes (``fast``, ``accurate``): which member models are averaged, mirrored how
    refinement       an optional second, full-resolution stage (cascade) around the tumour: its folder, box margin
    bundle           free-form notes of a packaged model (description, cross-validation results, recipe, caveat)

Version 1 files (written before the card existed, the previous bundled model among them) load unchanged:
their ``compression`` dict becomes a history, the ONNX-only keys (``divisor``, ``onnx_weights_dtype``) are
derived or become a history step.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bratsseg.atomic import write_text_atomic
from bratsseg.dataclass_io import from_dict, to_dict
from bratsseg.errors import BratsSegError
from bratsseg.labels import CONVENTIONS, MODALITIES, REGIONS
from bratsseg.models.config import UNetConfig

CARD_FORMAT = "bratsseg-model"
CARD_VERSION = 2
CARD_FILE = "model.json"
ONNX_FILE = "model.onnx"  # the whole-case graph a model folder may hold beside its weights
ONNX_META_KEY = "bratsseg"  # the ONNX metadata entry that holds the card
NORMALISATIONS = ("zscore over brain voxels",)
WEIGHT_DTYPES = ("float32", "float16")
COMPRESSION_METHODS = ("global_magnitude", "pair", "finetune", "onnx", "int8")


@dataclass(frozen=True)
class Preprocessing:
    """How a raw case becomes the network's input: crop to the brain box plus ``margin`` voxels, z-score."""

    margin: int = 2
    image_dtype: str = "float16"  # how the training cache stored images (inference computes in float32)
    normalisation: str = NORMALISATIONS[0]
    spacing: tuple[float, float, float] | None = None  # mm of the grid the network was trained on; None: as given

    def __post_init__(self) -> None:
        if self.spacing is not None and (len(self.spacing) != 3 or min(self.spacing) <= 0):
            raise BratsSegError(f"preprocessing.spacing must be three positive sizes in mm, got {self.spacing}")
        if self.margin < 0:
            raise BratsSegError(f"preprocessing.margin must be >= 0, got {self.margin}")
        if self.image_dtype not in WEIGHT_DTYPES:
            raise BratsSegError(f"preprocessing.image_dtype must be one of {WEIGHT_DTYPES}, got {self.image_dtype!r}")
        if self.normalisation not in NORMALISATIONS:
            raise BratsSegError(
                f"preprocessing.normalisation must be one of {NORMALISATIONS}, got {self.normalisation!r}"
            )


@dataclass(frozen=True)
class InferenceSettings:
    """How the network is run over a case: whole (``roi_size`` None) or by sliding window, on a grid
    ``downsample`` times coarser than the input (3-D only)."""

    roi_size: tuple[int, ...] | None = None
    overlap: float = 0.5
    downsample: int = 1
    mirror_axes: tuple[int, ...] = ()  # test-time mirroring: probabilities averaged over these axes' flips

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap < 1.0:
            raise BratsSegError(f"inference.overlap must be in [0, 1), got {self.overlap}")
        if self.downsample < 1:
            raise BratsSegError(f"inference.downsample must be >= 1, got {self.downsample}")
        if self.roi_size is not None and any(s < 1 for s in self.roi_size):
            raise BratsSegError(f"inference.roi_size must be positive, got {list(self.roi_size)}")
        if len(set(self.mirror_axes)) != len(self.mirror_axes) or any(a not in (0, 1, 2) for a in self.mirror_axes):
            raise BratsSegError(
                f"inference.mirror_axes must be distinct axes among 0, 1, 2, got {list(self.mirror_axes)}"
            )


@dataclass(frozen=True)
class Postprocessing:
    """What happens to the binarised regions before they become labels (chosen on out-of-fold results).

    ``nested_regions``: make the regions nested as the label map is (WT = WT | TC | ET, TC = TC | ET), so that
    evaluation scores exactly what ``predict`` writes. ``et_min_volume_mm3``: nnU-Net's BraTS rule; a case whose
    predicted enhancing tumour is smaller than this has it relabelled as necrosis (TC kept, ET emptied).
    ``min_component_mm3`` (per region) removes predicted 26-connected components smaller than that volume
    except the region's largest (a rule never empties a region: an empty region costs HD95 373 mm), and
    ``largest_component_only`` keeps only the largest component of the regions it names; a component removed from
    a region takes the inner regions inside it with it (TC within WT, ET within TC). ``fill_holes`` (WT and/or TC)
    then fills the holes of the regions it names (background enclosed in 3-D; what fills a hole of TC becomes
    necrosis, inside WT): the tumour core is solid, and a model that finds an enhancing rim but not the
    necrosis it encloses leaves a hole there.

    ``et_t1ce_threshold`` redraws the enhancing tumour at the input's full resolution, before everything else:
    ET becomes the voxels of the predicted tumour core (TC or ET) whose T1ce, z-scored over the brain as the
    network's input is, exceeds this value (None: ET as the network predicts it). Enhancing tumour is, by
    definition, the part of the core that is bright on T1ce; the network sees a grid 2x coarser and blurs thin
    enhancing rims. The rest of the core stays TC (necrosis). ``et_t1ce_within`` (voxels) keeps, of the redrawn
    ET, only what lies within that many voxels (26-connected steps) of the network's own ET, so the rule sharpens
    the enhancing tumour the network found but does not make one in a core the network saw no enhancement in
    (None: anywhere in the core; 0: only inside the network's ET).
    """

    nested_regions: bool = False
    et_min_volume_mm3: float = 0.0
    min_component_mm3: dict[str, float] = field(default_factory=dict)
    largest_component_only: tuple[str, ...] = ()
    fill_holes: tuple[str, ...] = ()
    et_t1ce_threshold: float | None = None
    et_t1ce_within: int | None = None

    def __post_init__(self) -> None:
        if self.et_t1ce_within is not None and self.et_t1ce_within < 0:
            raise BratsSegError(f"postprocessing.et_t1ce_within must be >= 0 or null, got {self.et_t1ce_within}")
        if self.et_t1ce_threshold is not None and not math.isfinite(self.et_t1ce_threshold):
            raise BratsSegError(
                f"postprocessing.et_t1ce_threshold must be a number or null, got {self.et_t1ce_threshold}"
            )
        if self.et_min_volume_mm3 < 0:
            raise BratsSegError(f"postprocessing.et_min_volume_mm3 must be >= 0, got {self.et_min_volume_mm3}")
        unknown = sorted(set(self.min_component_mm3) - set(REGIONS))
        if unknown or any(v < 0 for v in self.min_component_mm3.values()):
            raise BratsSegError(
                f"postprocessing.min_component_mm3 needs regions among {list(REGIONS)} and volumes >= 0, "
                f"got {self.min_component_mm3}"
            )
        object.__setattr__(self, "largest_component_only", tuple(self.largest_component_only))
        bad = sorted(set(self.largest_component_only) - set(REGIONS))
        if bad:
            raise BratsSegError(f"postprocessing.largest_component_only: unknown regions {bad}")
        object.__setattr__(self, "fill_holes", tuple(self.fill_holes))
        if not set(self.fill_holes) <= {"WT", "TC"}:
            raise BratsSegError(
                f"postprocessing.fill_holes names WT and/or TC (ET is a rim: its holes are necrosis), "
                f"got {list(self.fill_holes)}"
            )

    @property
    def filters_components(self) -> bool:
        return bool(self.largest_component_only) or any(v > 0 for v in self.min_component_mm3.values())

    def without_components(self) -> Postprocessing:
        """These settings with every connected component kept, and without the enhancing-tumour rule: it is chosen
        together with the component rule, which removes the enhancing speckles it makes."""
        return dataclasses.replace(
            self, min_component_mm3={}, largest_component_only=(), et_t1ce_threshold=None, et_t1ce_within=None
        )


@dataclass(frozen=True)
class Training:
    """Where the weights came from."""

    epoch: int = 0
    global_step: int = 0
    val_dice: dict[str, float] = field(default_factory=dict)  # last validation, threshold 0.5
    train_cases: tuple[str, ...] = ()
    val_cases: tuple[str, ...] = ()
    config: dict[str, Any] = field(default_factory=dict)  # the run's TrainConfig, as stored in config.yaml


@dataclass(frozen=True)
class CompressionStep:
    """One step from the trained model to this one, e.g. ``("pair", {"ratio": [0.5]})``."""

    method: str
    settings: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in COMPRESSION_METHODS:
            raise BratsSegError(f"compression method must be one of {COMPRESSION_METHODS}, got {self.method!r}")


@dataclass(frozen=True)
class Mode:
    """What one prediction mode runs: the region probabilities of ``members`` (model folders relative to this
    one; ``"."`` is this model) averaged, each with test-time mirroring over ``mirror_axes``, then binarised at
    ``thresholds`` (the card's own when empty)."""

    members: tuple[str, ...] = (".",)
    mirror_axes: tuple[int, ...] = ()
    thresholds: dict[str, float] = field(default_factory=dict)
    description: str = ""
    refine: bool = True  # run each member's refinement stage, where its card has one

    def __post_init__(self) -> None:
        if not self.members:
            raise BratsSegError("a mode needs at least one member model")
        if self.thresholds and set(self.thresholds) != set(REGIONS):
            raise BratsSegError(f"mode thresholds must give each of {list(REGIONS)}, got {sorted(self.thresholds)}")
        InferenceSettings(mirror_axes=self.mirror_axes)  # the same validation


@dataclass(frozen=True)
class Refinement:
    """A second, full-resolution stage (a cascade, as nnU-Net's ``3d_cascade``): the model folder ``model``
    (relative to this one; its architecture has ``prior_channels``) re-segments the box around this model's
    whole tumour (voxels with WT probability above ``box_threshold``, plus ``margin`` voxels on each side) from
    the four modalities and this model's probabilities; outside the box this model's probabilities stand. The
    card's thresholds and post-processing then apply to the refined probabilities."""

    model: str = "refine"
    margin: int = 6
    box_threshold: float = 0.5

    def __post_init__(self) -> None:
        if self.margin < 0 or not 0.0 <= self.box_threshold < 1.0:
            raise BratsSegError(
                f"refinement needs margin >= 0 and box_threshold in [0, 1), got {self.margin}, {self.box_threshold}"
            )


FAST = "fast"


def _default_thresholds() -> dict[str, float]:
    return dict.fromkeys(REGIONS, 0.5)


@dataclass(frozen=True)
class ModelCard:
    """Everything that, with the weights, makes a usable model. See the module docstring for the sections."""

    architecture: UNetConfig = field(default_factory=UNetConfig)
    convention: str = "brats2021"
    modalities: tuple[str, ...] = MODALITIES
    regions: tuple[str, ...] = REGIONS
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    inference: InferenceSettings = field(default_factory=InferenceSettings)
    thresholds: dict[str, float] = field(default_factory=_default_thresholds)
    threshold_source: dict[str, Any] = field(default_factory=dict)
    postprocessing: Postprocessing = field(default_factory=Postprocessing)
    training: Training = field(default_factory=Training)
    compression: tuple[CompressionStep, ...] = ()
    weights_dtype: str = "float32"
    modes: dict[str, Mode] = field(default_factory=dict)
    refinement: Refinement | None = None
    bundle: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.convention not in CONVENTIONS:
            raise BratsSegError(f"convention must be one of {sorted(CONVENTIONS)}, got {self.convention!r}")
        if tuple(self.modalities) != MODALITIES:
            raise BratsSegError(f"modalities must be {list(MODALITIES)}, got {list(self.modalities)}")
        if tuple(self.regions) != REGIONS:
            raise BratsSegError(f"regions must be {list(REGIONS)}, got {list(self.regions)}")
        if set(self.thresholds) != set(REGIONS):
            raise BratsSegError(f"thresholds must give each of {list(REGIONS)}, got {sorted(self.thresholds)}")
        bad = {r: t for r, t in self.thresholds.items() if not 0.0 <= t < 1.0}
        if bad:
            raise BratsSegError(f"thresholds must lie in [0, 1), got {bad}")
        object.__setattr__(self, "thresholds", {r: float(self.thresholds[r]) for r in REGIONS})
        if self.weights_dtype not in WEIGHT_DTYPES:
            raise BratsSegError(f"weights_dtype must be one of {WEIGHT_DTYPES}, got {self.weights_dtype!r}")
        if self.inference.downsample > 1 and self.architecture.spatial_dims != 3:
            raise BratsSegError(f"inference.downsample must be 1 for a 2-D model, got {self.inference.downsample}")
        roi = self.inference.roi_size
        dims = self.architecture.spatial_dims
        if roi is not None and len(roi) != dims:
            raise BratsSegError(f"inference.roi_size {list(roi)} has {len(roi)} entries, the model is {dims}-D")

    def mode(self, name: str) -> Mode:
        """The named prediction mode; ``fast`` is this model alone, as its inference settings say, unless the card
        defines it otherwise."""
        if name in self.modes:
            return self.modes[name]
        if name == FAST:
            return Mode(mirror_axes=self.inference.mirror_axes)
        raise BratsSegError(f"this model has no mode {name!r}; it has {sorted({FAST, *self.modes})}")

    def replace(self, **changes: Any) -> ModelCard:
        """A copy with ``changes`` (validated again)."""
        return dataclasses.replace(self, **changes)

    def with_step(self, method: str, **settings: Any) -> ModelCard:
        """A copy with one more compression step."""
        return self.replace(compression=(*self.compression, CompressionStep(method, settings)))

    def steps(self, method: str) -> list[CompressionStep]:
        return [s for s in self.compression if s.method == method]

    @property
    def free_fraction(self) -> float:
        """The fraction of tumour-free training samples its weights saw (``free_fraction`` in the training run
        or in a fine-tuning step; the largest); 0 for a model trained on tumour cases only."""
        seen = [self.training.config.get("free_fraction", 0.0), *(s.settings.get("free_fraction", 0.0)
                for s in self.steps("finetune"))]  # fmt: skip
        return float(max(float(v or 0.0) for v in seen))

    # ---- JSON ----

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": CARD_FORMAT, "format_version": CARD_VERSION}
        out.update(to_dict(self))
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> ModelCard:
        """Validate a card's plain values (a version 1 or 2 ``model.json``, or ONNX metadata)."""
        if not isinstance(data, dict) or data.get("format") != CARD_FORMAT:
            raise BratsSegError(f"not a {CARD_FORMAT} description", source)
        version = data.get("format_version", 1)
        if version not in (1, CARD_VERSION):
            raise BratsSegError(f"model description version {version} is newer than this bratsseg reads", source)
        body = {k: v for k, v in data.items() if k not in ("format", "format_version")}
        if version == 1:
            body = _upgrade_v1(body)
        if "architecture" not in body:
            raise BratsSegError("invalid model description: it has no architecture", source)
        try:
            card: ModelCard = from_dict(cls, body)
        except (TypeError, ValueError) as err:
            raise BratsSegError(f"invalid model description ({err})", source) from err
        except BratsSegError as err:
            raise BratsSegError(f"invalid model description: {err}", source) from None
        return card

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> ModelCard:
        try:
            data = json.loads(text)
        except ValueError as err:
            raise BratsSegError(f"{CARD_FILE} is not valid JSON ({err})", source) from err
        return cls.from_dict(data, source)


def _upgrade_v1(body: dict[str, Any]) -> dict[str, Any]:
    """A version 1 ``model.json`` (or ONNX metadata) as version 2 values."""
    body = dict(body)
    steps: list[dict[str, Any]] = []
    old = body.pop("compression", None) or {}
    if "global_sparsity" in old:
        steps.append({"method": "global_magnitude", "settings": {"sparsity": old["global_sparsity"]}})
    if "pair_ratio" in old:
        ratio = old["pair_ratio"]
        steps.append({"method": "pair", "settings": {"ratio": ratio if isinstance(ratio, list) else [ratio]}})
    if "finetune_epochs" in old:
        steps.append({"method": "finetune", "settings": {"epochs": old["finetune_epochs"]}})
    body.pop("divisor", None)  # derived from the architecture
    onnx_dtype = body.pop("onnx_weights_dtype", None)
    if onnx_dtype is not None:
        steps.append({"method": "onnx", "settings": {"weights_dtype": onnx_dtype}})
    body["compression"] = steps
    prep = body.get("preprocessing")
    if isinstance(prep, dict):
        body["preprocessing"] = {
            k: v for k, v in prep.items() if k in ("margin", "image_dtype", "normalisation", "spacing")
        }
    return body


def read_card(folder: str | Path) -> ModelCard:
    """The card of a model folder (its ``model.json``), validated."""
    folder = Path(folder)
    try:
        text = (folder / CARD_FILE).read_text()
    except FileNotFoundError:
        raise BratsSegError(f"not a bratsseg model folder (no {CARD_FILE})", folder) from None
    except OSError as err:
        raise BratsSegError(f"cannot read {CARD_FILE} ({err.strerror})", folder) from err
    return ModelCard.from_json(text, folder / CARD_FILE)


def write_card(folder: str | Path, card: ModelCard) -> Path:
    """Write ``folder/model.json`` atomically, and the same card into the folder's ``model.onnx`` where it has one
    (one source of truth: both backends read the same thresholds and post-processing); returns its path."""
    path = Path(folder) / CARD_FILE
    onnx_file = Path(folder) / ONNX_FILE
    if onnx_file.is_file():
        rewrite_onnx_card(onnx_file, card)
    write_text_atomic(path, card.to_json())
    return path


def check_cards_agree(folder_card: ModelCard, onnx_card: ModelCard, folder: str | Path) -> None:
    """A folder's ``model.json`` and its ``model.onnx``'s card must say the same (the ONNX one adds its export to
    the compression history); else a one-line error naming the fields that differ."""
    a, b = folder_card.to_dict(), onnx_card.to_dict()
    differ = sorted(k for k in set(a) | set(b) if k != "compression" and a.get(k) != b.get(k))
    history_a, history_b = a.get("compression", []), b.get("compression", [])
    if history_b[: len(history_a)] != history_a:
        differ.append("compression")
    if differ:
        raise BratsSegError(
            f"{CARD_FILE} and {ONNX_FILE} disagree on {', '.join(differ)}; edit cards with bratsseg (sweep --apply "
            f"keeps both in step) or re-export with `bratsseg export {Path(folder)} -o {Path(folder) / ONNX_FILE}`",
            folder,
        )


def set_onnx_card(proto: Any, card: ModelCard) -> None:
    """Store ``card`` as the ``bratsseg`` metadata entry of an ``onnx.ModelProto`` (replacing an older one)."""
    kept = [p for p in proto.metadata_props if p.key != ONNX_META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = ONNX_META_KEY, card.to_json()


def rewrite_onnx_card(path: str | Path, card: ModelCard) -> None:
    """Store ``card`` in an exported file's metadata (keeping the file's own export steps in its compression
    history), atomically: what :func:`write_card` does beside ``model.json``."""
    try:
        import onnx
    except ImportError:
        raise BratsSegError(
            "updating model.onnx's card needs the onnx package (pip install 'bratsseg[train]')", path
        ) from None
    from bratsseg.atomic import atomic_path

    path = Path(path)
    proto = onnx.load(str(path), load_external_data=False)
    entry = next((p.value for p in proto.metadata_props if p.key == ONNX_META_KEY), None)
    if entry is None:
        raise BratsSegError("ONNX file has no bratsseg metadata (export it with `bratsseg export`)", path)
    old = ModelCard.from_json(entry, path)
    exported = [s for s in old.compression if s not in card.compression]
    set_onnx_card(proto, card.replace(compression=(*card.compression, *exported)))
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
