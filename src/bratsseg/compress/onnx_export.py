"""Export to ONNX with dynamic batch and spatial axes, validated by onnx.checker and against PyTorch.

The exported graph is :meth:`UNet.forward_padded` (the network proper, no shape-dependent Python), so it
accepts any batch and any spatial size that is a multiple of the model's divisor; the ONNX predictor pads
and crops around it exactly as :meth:`UNet.forward` does. The model's ``model.json`` (thresholds, convention,
preprocessing, inference settings) travels inside the ONNX file as metadata, so one file is a whole model.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bratsseg.errors import BratsSegError
from bratsseg.models.files import load_model
from bratsseg.models.unet import UNet

log = logging.getLogger(__name__)

META_KEY = "bratsseg"
INPUT_NAME = "image"
OUTPUT_NAME = "logits"


class _Padded(nn.Module):
    def __init__(self, model: UNet) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model.forward_padded(x)
        assert isinstance(out, Tensor)
        return out


def export_onnx(
    model: str | Path | UNet,
    out: str | Path,
    meta: dict[str, Any] | None = None,
    opset: int = 17,
    weights_dtype: str = "float32",
) -> Path:
    """Write ``out`` (.onnx) from a model folder or a :class:`UNet`; check it; return its path.

    ``weights_dtype="float16"`` stores the weights in half precision behind ``Cast`` nodes: half the file, and
    ONNX Runtime folds the casts when it loads the model, so it still computes in float32.
    """
    import onnx

    if isinstance(model, UNet):
        net, info = model, dict(meta or {})
    else:
        net, info = load_model(model)
        info.update(meta or {})
    net = net.eval().cpu()
    cfg = net.config
    example = torch.zeros(1, cfg.in_channels, *([2 * cfg.divisor] * cfg.spatial_dims))
    spatial = {i + 2: name for i, name in enumerate(("x", "y", "z")[: cfg.spatial_dims])}
    axes = {INPUT_NAME: {0: "batch", **spatial}, OUTPUT_NAME: {0: "batch", **spatial}}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():  # tracer warnings about Python ints and instance norm in eval mode
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _Padded(net),
            (example,),
            str(out),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes=axes,
            opset_version=opset,
            dynamo=False,
        )
    proto = onnx.load(str(out))
    info = {**info, "architecture": cfg.to_dict(), "divisor": cfg.divisor}
    if weights_dtype == "float16":
        _store_weights_in_half(proto)
    elif weights_dtype != "float32":
        raise BratsSegError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps({**info, "onnx_weights_dtype": weights_dtype})
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def _store_weights_in_half(proto: Any) -> None:
    """Replace every float32 initializer by a float16 one followed by a Cast back to float32."""
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts, kept = [], []
    for init in graph.initializer:
        if init.data_type != TensorProto.FLOAT:
            kept.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "_fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT, name=init.name + "_cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)


def onnx_parity(model: UNet, onnx_path: str | Path, shapes: Sequence[Sequence[int]], seed: int = 0) -> float:
    """Largest absolute difference between PyTorch and ONNX Runtime logits over random inputs of ``shapes``
    (full ``(B, C, *spatial)`` shapes; any spatial size, padded as in use)."""
    from bratsseg.inference.onnx_predictor import OnnxPredictor

    predictor = OnnxPredictor(onnx_path)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    model = model.eval()
    for shape in shapes:
        x = torch.randn(*shape, generator=g)
        with torch.no_grad():
            ref = model(x)
        assert isinstance(ref, Tensor)
        got = predictor.logits_batch(x)
        worst = max(worst, float(np.max(np.abs(got.numpy() - ref.numpy()))))
    return worst


def read_onnx_meta(path: str | Path) -> dict[str, Any]:
    import onnx

    path = Path(path)
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception as err:
        raise BratsSegError(f"not a readable ONNX file ({type(err).__name__}: {err})", path) from err
    for entry in proto.metadata_props:
        if entry.key == META_KEY:
            return dict(json.loads(entry.value))
    raise BratsSegError("ONNX file has no bratsseg metadata (export it with `bratsseg export`)", path)
