"""int8 models: ONNX Runtime static quantisation (QDQ, per-channel weights) calibrated on cached cases.

The calibration inputs are what the network sees at inference: whole cached training cases, pooled to the
model's inference grid and padded to its divisor. :func:`int8_operators` says which operators ONNX Runtime's
CPU execution provider actually runs in int8 once it has fused the QDQ pairs.
"""

from __future__ import annotations

import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from bratsseg.compress.onnx_export import WRAPPER_PREFIX
from bratsseg.data.cache import CachedCase
from bratsseg.data.resample import pool
from bratsseg.errors import BratsSegError
from bratsseg.models.onnx_format import INPUT_NAME, OUTPUT_NAME, PROBABILITIES_NAME, read_onnx_card, set_onnx_card
from bratsseg.padding import pad_to_multiple

#: operators of an optimised ONNX Runtime graph that compute on 8-bit integers
INT8_OPS = ("QLinearConv", "ConvInteger", "QLinearConvTranspose", "QLinearLeakyRelu", "QLinearConcat", "QLinearAdd")


def calibration_inputs(
    cases: Sequence[CachedCase], downsample: int, divisor: int, whole_case: bool = False
) -> Iterator[np.ndarray]:
    """``(1, 4, *spatial)`` float32 graph inputs: each cropped case as it is for a whole-case graph; for a network
    graph, pooled by ``downsample`` and padded to ``divisor``."""
    for case in cases:
        image = np.asarray(case.image, dtype=np.float32)[None]
        if whole_case:
            yield image
            continue
        x = pool(torch.from_numpy(image), downsample)
        yield pad_to_multiple(x.numpy().astype(np.float32, copy=False), divisor)


class _Reader:
    """ONNX Runtime's CalibrationDataReader protocol over an iterator of inputs."""

    def __init__(self, inputs: Iterator[np.ndarray]) -> None:
        self.inputs = inputs

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self.inputs, None)
        return None if x is None else {INPUT_NAME: x}

    def rewind(self) -> None:  # not needed: one pass
        pass


def quantize_int8(
    fp32_onnx: str | Path,
    out: str | Path,
    cases: Sequence[CachedCase],
    per_channel: bool = True,
    calibrate_method: str = "minmax",
    float_ends: bool = True,
) -> Path:
    """Write an int8 QDQ copy of ``fp32_onnx`` (uint8 activations, int8 per-channel weights), calibrated on
    ``cases``; the model card is kept, with an ``int8`` compression step. With ``float_ends`` the first
    convolution (which reads the z-scored image) and the output head stay in float, as is usual for segmentation
    networks."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not cases:
        raise BratsSegError("int8 calibration needs at least one cached case")
    card = read_onnx_card(fp32_onnx)
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if calibrate_method not in methods:
        raise BratsSegError(f"calibrate_method must be one of {sorted(methods)}, got {calibrate_method!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        graph = onnx.load(str(prepared)).graph
        whole_case = graph.output[0].name == PROBABILITIES_NAME
        first, last = ("net_in", "net_out") if whole_case else (INPUT_NAME, OUTPUT_NAME)
        ends = [n.name for n in graph.node if n.op_type == "Conv" and (first in n.input or last in n.output)]
        wrapper = [n.name for n in graph.node if n.name.startswith(WRAPPER_PREFIX)]  # pooling, resize, mask: float
        root = logging.getLogger()  # ORT warns on the root logger about every (float) normalisation weight
        old_level, root.level = root.level, max(root.level, logging.ERROR)
        try:
            quantize_static(
                str(prepared),
                str(out),
                _Reader(calibration_inputs(cases, card.inference.downsample, card.architecture.divisor, whole_case)),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=methods[calibrate_method],
                nodes_to_exclude=[*wrapper, *(ends if float_ends else [])],
            )
        finally:
            root.setLevel(old_level)
    model = onnx.load(str(out))
    del model.metadata_props[:]
    settings = {"per_channel": per_channel, "calibrate_method": calibrate_method, "float_ends": float_ends}
    set_onnx_card(model, card.with_step("int8", **settings, calibration_cases=[c.case_id for c in cases]))
    onnx.save(model, str(out))
    return out


def int8_operators(path: str | Path) -> dict[str, Any]:
    """Operator counts of the graph ONNX Runtime's CPU provider runs after its optimisations, split into
    those that compute in int8 and those that stay in float."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # not the warning that the saved graph is specific to this machine
        opts.optimized_model_filepath = str(Path(tmp) / "optimised.onnx")
        ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    counts = Counter(node.op_type for node in graph.node)
    return {
        "int8": {k: v for k, v in sorted(counts.items()) if k in INT8_OPS},
        "float": {k: v for k, v in sorted(counts.items()) if k not in INT8_OPS},
    }
