"""The names of bratsseg's ONNX files, below both ``compress`` (which writes them) and ``inference`` (which runs
them): the input and output tensor names and the metadata entry that holds the model card."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bratsseg.errors import BratsSegError
from bratsseg.models.card import ModelCard

META_KEY = "bratsseg"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


def set_onnx_card(proto: Any, card: ModelCard) -> None:
    """Store ``card`` as the ``bratsseg`` metadata entry of an ``onnx.ModelProto`` (replacing an older one)."""
    kept = [p for p in proto.metadata_props if p.key != META_KEY]
    del proto.metadata_props[:]
    proto.metadata_props.extend(kept)
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, card.to_json()


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
