"""Export to ONNX with dynamic batch and spatial axes, validated by onnx.checker and against PyTorch.

The exported graph is :meth:`UNet.forward_padded` (the network proper, no shape-dependent Python), so it
accepts any batch and any spatial size that is a multiple of the model's divisor; the ONNX predictor pads
and crops around it exactly as :meth:`UNet.forward` does. The model card (thresholds, convention, preprocessing,
inference settings, provenance) travels inside the ONNX file as metadata, so one file is a whole model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bratsseg.errors import BratsSegError
from bratsseg.models.card import WEIGHT_DTYPES, ModelCard
from bratsseg.models.files import load_model
from bratsseg.models.onnx_format import INPUT_NAME, OUTPUT_NAME, read_onnx_card, set_onnx_card
from bratsseg.models.unet import UNet

log = logging.getLogger(__name__)

__all__ = ["export_onnx", "onnx_parity", "read_onnx_card"]


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
    card: ModelCard | None = None,
    opset: int = 17,
    weights_dtype: str = "float32",
) -> Path:
    """Write ``out`` (.onnx) from a model folder or a :class:`UNet` (with ``card``, or the folder's card); check
    it; return its path. The file's card gains an ``onnx`` compression step.

    ``weights_dtype="float16"`` stores the weights in half precision behind ``Cast`` nodes: half the file, and
    ONNX Runtime folds the casts when it loads the model, so it still computes in float32.
    """
    import onnx

    if weights_dtype not in WEIGHT_DTYPES:
        raise BratsSegError(f"weights_dtype must be float32 or float16, got {weights_dtype!r}")
    if isinstance(model, UNet):
        net, base = model, card or ModelCard(architecture=model.config)
    else:
        net, base = load_model(model)
        base = card or base
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
    if weights_dtype == "float16":
        _store_weights_in_half(proto)
    set_onnx_card(proto, base.replace(architecture=cfg).with_step("onnx", weights_dtype=weights_dtype, opset=opset))
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
