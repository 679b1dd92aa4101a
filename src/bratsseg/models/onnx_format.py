"""The names of bratsseg's ONNX files, below both ``compress`` (which writes them) and ``inference`` (which runs
them): the input and output tensor names and the metadata entry that holds the model card.

Two kinds of graph: a *whole-case* graph (output ``probabilities``) takes the cropped, z-scored image
``(1, 4, X, Y, Z)`` of any size and does everything up to the masked region probabilities on the same grid (the
coarse-grid pooling, the padding to the network's divisor, the network, the trilinear upsampling of the logits,
the sigmoid, zero outside the brain); a *network* graph (output ``logits``) is the network proper, on inputs padded
to its divisor, and leaves the rest to the predictor."""

from __future__ import annotations

from pathlib import Path

from bratsseg.errors import BratsSegError
from bratsseg.models.card import ONNX_META_KEY as META_KEY
from bratsseg.models.card import ModelCard, rewrite_onnx_card, set_onnx_card

__all__ = [
    "INPUT_NAME",
    "META_KEY",
    "OUTPUT_NAME",
    "PROBABILITIES_NAME",
    "card_from_metadata",
    "read_onnx_card",
    "rewrite_onnx_card",
    "set_onnx_card",
]

INPUT_NAME = "image"
OUTPUT_NAME = "logits"  # a network graph's output
PROBABILITIES_NAME = "probabilities"  # a whole-case graph's output


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
