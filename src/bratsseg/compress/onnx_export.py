"""Export to ONNX, validated by onnx.checker and against PyTorch.

The network is traced from :meth:`UNet.forward_padded` (no shape-dependent Python), with dynamic batch and
spatial axes. A 3-D model that runs in one pass (``inference.roi_size`` None, as the bundled model does) is then
wrapped into a *whole-case* graph: ONNX nodes pad the cropped, z-scored image to the coarse grid's multiple,
average-pool it, pad to the network's divisor, run the network, crop, upsample the logits trilinearly (half-pixel
centres, as :func:`bratsseg.data.resample.upsample`), crop to the input size, apply the sigmoid and zero the voxels
outside the brain: ONNX Runtime alone turns a crop into probabilities, with no PyTorch installed. Other models
(2-D, sliding windows) keep the network graph and the predictor does the rest. The model card (thresholds,
convention, preprocessing, inference settings, provenance) travels inside the ONNX file as metadata, so one file
is a whole model.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from bratsseg.errors import BratsSegError
from bratsseg.models.card import WEIGHT_DTYPES, ModelCard
from bratsseg.models.files import load_model
from bratsseg.models.onnx_format import INPUT_NAME, OUTPUT_NAME, PROBABILITIES_NAME, read_onnx_card, set_onnx_card
from bratsseg.models.unet import UNet

log = logging.getLogger(__name__)

__all__ = ["export_model_folder", "export_onnx", "onnx_parity", "read_onnx_card"]


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
    whole_case: bool | None = None,
) -> Path:
    """Write ``out`` (.onnx) from a model folder or a :class:`UNet` (with ``card``, or the folder's card); check
    it; return its path. The file's card gains an ``onnx`` compression step that says which graph it holds.

    ``whole_case``: the whole-case graph (default: wherever the model can have one, see :func:`can_be_whole_case`)
    or the network graph alone (False).

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
    base = base.replace(architecture=cfg)
    if whole_case is None:
        whole_case = can_be_whole_case(base)
    elif whole_case and not can_be_whole_case(base):
        raise BratsSegError("only a 3-D model that runs in one pass (inference.roi_size None) has a whole-case graph")
    if whole_case:
        proto = _whole_case_graph(proto, base.inference.downsample, cfg.divisor)
    if weights_dtype == "float16":
        _store_weights_in_half(proto)
    graph = "whole-case" if whole_case else "network"
    set_onnx_card(proto, base.with_step("onnx", weights_dtype=weights_dtype, opset=opset, graph=graph))
    onnx.checker.check_model(proto)
    onnx.save(proto, str(out))
    return out


def export_model_folder(folder: str | Path, weights_dtype: str = "float16") -> list[Path]:
    """Write ``model.onnx`` into a model folder, into every member folder its card's modes name (the bundled
    model's ``folds/*``) and into each one's refinement stage, so that each mode runs on ONNX Runtime alone;
    returns the files written."""
    from bratsseg.models.card import read_card

    folder = Path(folder)
    members = {m for mode in read_card(folder).modes.values() for m in mode.members if m != "."}
    written = []
    for member in [folder / m for m in [".", *sorted(members)]]:
        refinement = read_card(member).refinement
        stages = [member] if refinement is None else [member, member / refinement.model]
        written += [export_onnx(s, s / "model.onnx", weights_dtype=weights_dtype) for s in stages]
    return written


WRAPPER_PREFIX = "wholecase_"  # the names of the nodes around the network in a whole-case graph


def can_be_whole_case(card: ModelCard) -> bool:
    """Whether the model's whole inference fits one ONNX graph: a 3-D model that runs in one pass."""
    return card.architecture.spatial_dims == 3 and card.inference.roi_size is None


def _whole_case_graph(network: Any, k: int, divisor: int) -> Any:
    """The whole-case model around a network ``ModelProto`` (input ``image``, output ``logits``)."""
    from onnx import TensorProto, helper, numpy_helper

    graph = network.graph
    for node in graph.node:  # the network's own input and output become inner tensors
        node.input[:] = ["net_in" if n == INPUT_NAME else n for n in node.input]
        node.output[:] = ["net_out" if n == OUTPUT_NAME else n for n in node.output]

    def const(name: str, values: Any, dtype: Any = np.int64) -> Any:
        return numpy_helper.from_array(np.asarray(values, dtype=dtype), name)

    constants = [
        const("wc_k", [k] * 3),
        const("wc_divisor", [divisor] * 3),
        const("wc_zeros7", [0] * 7),  # pads: 5 begins, then the batch and channel ends
        const("wc_zeros3", [0] * 3),
        const("wc_two", [2]),
        const("wc_five", [5]),
        const("wc_axes", [2, 3, 4]),
        const("wc_scales", [1, 1, k, k, k], np.float32),
        const("wc_fzero", 0.0, np.float32),
    ]
    node = helper.make_node

    def pad_to(x: str, multiple: str, out: str) -> list[Any]:
        """Zero-pad ``x``'s spatial axes at the far end up to a multiple of the ``multiple`` constant."""
        return [
            node("Shape", [x], [f"{out}_shape"]),
            node("Slice", [f"{out}_shape", "wc_two", "wc_five"], [f"{out}_size"]),
            node("Mod", [f"{out}_size", multiple], [f"{out}_rem"]),
            node("Sub", [multiple, f"{out}_rem"], [f"{out}_gap"]),
            node("Mod", [f"{out}_gap", multiple], [f"{out}_pad"]),
            node("Concat", ["wc_zeros7", f"{out}_pad"], [f"{out}_pads"], axis=0),
            node("Pad", [x, f"{out}_pads"], [out], mode="constant"),
        ]

    before = [
        *pad_to(INPUT_NAME, "wc_k", "wc_padded"),  # wc_padded_size: the input's spatial size
        node("AveragePool", ["wc_padded"], ["wc_coarse"], kernel_shape=[k] * 3, strides=[k] * 3),
        *pad_to("wc_coarse", "wc_divisor", "net_in"),  # net_in_size: the coarse grid's size
    ]
    after = [
        node("Slice", ["net_out", "wc_zeros3", "net_in_size", "wc_axes"], ["wc_logits_coarse"]),
        node(
            "Resize",
            ["wc_logits_coarse", "", "wc_scales"],
            ["wc_logits_up"],
            mode="linear",
            coordinate_transformation_mode="half_pixel",
        ),
        node("Slice", ["wc_logits_up", "wc_zeros3", "wc_padded_size", "wc_axes"], ["wc_logits"]),
        node("Sigmoid", ["wc_logits"], ["wc_sigmoid"]),
        node("ReduceL1", [INPUT_NAME], ["wc_l1"], axes=[1], keepdims=1),  # 0 exactly where every modality is 0
        node("Greater", ["wc_l1", "wc_fzero"], ["wc_brain"]),
        node("Cast", ["wc_brain"], ["wc_brain_f"], to=TensorProto.FLOAT),
        node("Mul", ["wc_sigmoid", "wc_brain_f"], [PROBABILITIES_NAME]),
    ]
    if k == 1:  # no pooling: the network reads the image padded to its divisor, its logits are cropped back
        before = pad_to(INPUT_NAME, "wc_divisor", "net_in")
        after[0] = node("Slice", ["net_out", "wc_zeros3", "net_in_size", "wc_axes"], ["wc_logits"])
        del after[1:3]
    for i, n in enumerate([*before, *after]):
        n.name = f"{WRAPPER_PREFIX}{i}_{n.op_type}"  # named, so that int8 quantisation can leave them in float
    channels = graph.input[0].type.tensor_type.shape.dim[1].dim_value
    read = {name for n in [*before, *after] for name in n.input}
    constants = [c for c in constants if c.name in read]  # an unused initializer makes ONNX Runtime warn on load
    new = helper.make_graph(
        [*before, *graph.node, *after],
        "bratsseg_whole_case",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", channels, "x", "y", "z"])],
        [helper.make_tensor_value_info(PROBABILITIES_NAME, TensorProto.FLOAT, ["batch", 3, "x", "y", "z"])],
        initializer=[*graph.initializer, *constants],
    )
    model = helper.make_model(new, opset_imports=network.opset_import)
    model.ir_version = network.ir_version
    return model


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
    """Largest absolute difference between PyTorch and ONNX Runtime over random inputs of ``shapes`` (full
    ``(B, C, *spatial)`` shapes; any spatial size): on the logits for a network graph, on the probabilities (of
    each batch item, as the PyTorch path computes them under the file's card) for a whole-case graph."""
    from bratsseg.inference.onnx_predictor import OnnxPredictor
    from bratsseg.inference.torch_predictor import TorchPredictor

    predictor = OnnxPredictor(onnx_path)
    reference = TorchPredictor(model.eval(), predictor.card)
    g = torch.Generator().manual_seed(seed)
    worst = 0.0
    for shape in shapes:
        x = torch.randn(*shape, generator=g)
        if predictor.whole_case:
            for item in x.numpy():
                diff = predictor.probabilities(item) - reference.probabilities(item)
                worst = max(worst, float(np.max(np.abs(diff))))
            continue
        with torch.no_grad():
            ref = model(x)
        assert isinstance(ref, Tensor)
        got = predictor.logits_array(x.numpy())
        worst = max(worst, float(np.max(np.abs(got - ref.numpy()))))
    return worst


@dataclass(frozen=True)
class ExportCheck:
    """An exported file compared with its PyTorch model on two odd-sized inputs."""

    path: Path
    graph: str  # "whole-case" (probabilities compared) or "network" (logits compared)
    size_mb: float
    max_abs_diff: float
    tolerance: float

    def line(self) -> str:
        compared = "probabilities" if self.graph == "whole-case" else "logits"
        return (
            f"{self.path}: {self.graph} graph, {self.size_mb:.2f} MB, onnx.checker passed, "
            f"max |ONNX - PyTorch| on the {compared} = {self.max_abs_diff:.2e}"
        )


def check_export(model_dir: str | Path, out: str | Path, tolerance: float) -> ExportCheck:
    """Compare ``out`` with the model folder it was exported from; one-line error past ``tolerance``."""
    out = Path(out)
    model, _ = load_model(model_dir)
    dims, channels = model.config.spatial_dims, model.config.in_channels
    shapes = [(1, channels, *[37, 45, 29][:dims]), (2, channels, *[64, 48, 32][:dims])]
    diff = onnx_parity(model, out, shapes)
    graph = str(read_onnx_card(out).compression[-1].settings["graph"])
    if diff > tolerance:
        raise BratsSegError(f"ONNX output differs from PyTorch by {diff:.2e} (tolerance {tolerance:g})", out)
    return ExportCheck(out, graph, out.stat().st_size / 1e6, diff, tolerance)


def export_checked(
    model_dir: str | Path,
    out: str | Path,
    opset: int | None = None,
    weights_dtype: str = "float32",
    whole_case: bool | None = None,
    tolerance: float | None = None,
) -> list[ExportCheck]:
    """``bratsseg export``: export, check against PyTorch, and do the same for a cascade's second stage (written
    where the loader looks for it, beside the file). Tolerance: 0.2 for float16 weights, 1e-2 for float32."""
    tol = tolerance if tolerance is not None else (0.2 if weights_dtype == "float16" else 1e-2)
    kwargs: dict[str, Any] = {"weights_dtype": weights_dtype, "whole_case": whole_case}
    if opset is not None:
        kwargs["opset"] = opset
    first = export_onnx(model_dir, out, **kwargs)
    checks = [check_export(model_dir, first, tol)]
    refinement = read_onnx_card(first).refinement
    if refinement is not None:
        stage = Path(model_dir) / refinement.model
        second = export_onnx(stage, first.parent / refinement.model / "model.onnx", **kwargs)
        checks.append(check_export(stage, second, tol))
    return checks
