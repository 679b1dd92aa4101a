"""The names of bratsseg's ONNX files, below both ``compress`` (which writes them) and ``inference`` (which runs
them): the input and output tensor names and the metadata entry that holds the model card.

Two kinds of graph: a *whole-case* graph (output ``probabilities``) takes the cropped, z-scored image
``(1, 4, X, Y, Z)`` of any size and does everything up to the masked region probabilities on the same grid (the
coarse-grid pooling, the padding to the network's divisor, the network, the trilinear upsampling of the logits,
the sigmoid, zero outside the brain); a *network* graph (output ``logits``) is the network proper, on inputs padded
to its divisor, and leaves the rest to the predictor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bratsseg.errors import BratsSegError
from bratsseg.models.card import ModelCard

META_KEY = "bratsseg"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"  # a network graph's output
PROBABILITIES_NAME = "probabilities"  # a whole-case graph's output


def set_onnx_card(proto: Any, card: ModelCard) -> None:
    """Store ``card`` as the ``bratsseg`` metadata entry of an ``onnx.ModelProto`` (replacing an older one)."""
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, card.to_json()


def card_from_metadata(metadata: dict[str, str], path: str | Path) -> ModelCard:
    """The model card in an ONNX file's metadata map (as ONNX Runtime's ``get_modelmeta()`` returns it)."""
    if META_KEY not in metadata:
        raise BratsSegError("ONNX file has no bratsseg metadata (export it with `bratsseg export`)", path)
    return ModelCard.from_json(metadata[META_KEY], Path(path))


def read_onnx_card(path: str | Path) -> ModelCard:
    """The model card inside an exported ``.onnx`` file, validated."""
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise BratsSegError(f"not a readable ONNX file ({type(err).__name__}: {err})", path) from err
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            return ModelCard.from_json(entry.value, path)
    raise BratsSegError("ONNX file has no bratsseg metadata (export it with `bratsseg export`)", path)


def rewrite_onnx_card(path: str | Path, card: ModelCard) -> None:
    """Store ``card`` in an exported file's metadata (keeping the file's own export steps in its compression
    history), atomically: what :func:`~bratsseg.models.card.write_card` does beside ``model.json``."""
    try:
        import onnx
    except ImportError:
        raise BratsSegError(
            "updating model.onnx's card needs the onnx package (pip install 'bratsseg[train]')", path
        ) from None
    from bratsseg.atomic import atomic_path

    path = Path(path)
    old = read_onnx_card(path)
    exported = [s for s in old.compression if s not in card.compression]
    proto = onnx.load(str(path), load_external_data=False)
    set_onnx_card(proto, card.replace(compression=(*card.compression, *exported)))
    with atomic_path(path) as tmp:
        onnx.save(proto, str(tmp))
