"""CPU latency per case of a model and of each trimmed variant, in one run, as ratios to the untrimmed model.

    python benchmarks/compress_bench.py [CASE_DIR] [--model MODEL] [--threads 2] [--repeats 3]

The case is preprocessed as for training (crop + z-score); each variant's latency is the median seconds of
:meth:`Predictor.probabilities` on it (network, coarse-grid pooling and upsampling, sigmoid) after a warm-up.
Without ``--model`` an untrained model of the default architecture on the coarse (2x) grid is used: latency
does not depend on the weights (the study, `bratsseg compress`, measures accuracy on a trained one).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from common import DEFAULT_CASE, median_time

from bratsseg.compress.onnx_export import export_onnx
from bratsseg.compress.prune import conv_flops, global_magnitude_prune, pair_prune, pair_prune_refusal
from bratsseg.compress.quantize import int8_operators, quantize_int8
from bratsseg.data.cache import CachedCase
from bratsseg.data.preprocess import preprocess_case
from bratsseg.inference.loading import load_predictor
from bratsseg.inference.predictor import Predictor
from bratsseg.inference.torch_predictor import TorchPredictor
from bratsseg.io.discovery import find_case
from bratsseg.models.card import InferenceSettings, ModelCard
from bratsseg.models.files import load_model, save_model
from bratsseg.models.unet import UNet, UNetConfig, count_parameters
from bratsseg.runtime import tune_allocator


def latency(predictor: Predictor, image: np.ndarray, repeats: int) -> float:
    predictor.probabilities(image)
    return median_time(lambda: predictor.probabilities(image), repeats)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", type=Path, nargs="?", default=DEFAULT_CASE, help="a BraTS case folder")
    parser.add_argument("--model", type=Path, help="model folder (default: untrained default architecture)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.case.is_dir():
        print(f"no case folder at {args.case}", file=sys.stderr)
        return 2
    tune_allocator()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        cached = CachedCase.open(preprocess_case(find_case(args.case), tmp / "cache"))
        image = np.asarray(cached.image, dtype=np.float32)
        if args.model:
            base, card = load_model(args.model)
        else:
            base, card = UNet(UNetConfig()).eval(), ModelCard(inference=InferenceSettings(downsample=2))
        k = card.inference.downsample
        shape = (1, 4, *[-(-s // k) for s in image.shape[1:]])

        rows: list[tuple[str, float, UNet, str]] = []

        def add(name: str, predictor: Predictor, net: UNet, note: str = "") -> None:
            rows.append((name, latency(predictor, image, args.repeats), net, note))

        add("untrimmed (PyTorch fp32)", TorchPredictor(base, card), base)
        half_dir = save_model(tmp / "half", base, card, weights_dtype="float16")
        add("fp16 weights (PyTorch)", TorchPredictor.from_dir(half_dir), base, "computes in fp32 on the CPU")
        onnx_file = export_onnx(base, tmp / "base.onnx", card)
        add("ONNX Runtime fp32", load_predictor(onnx_file, threads=args.threads), base)
        int8_file = quantize_int8(onnx_file, tmp / "base8.onnx", [cached])
        ops = int8_operators(int8_file)["int8"]
        add("ONNX Runtime int8 (QDQ)", load_predictor(int8_file, threads=args.threads), base,
            "int8: " + ", ".join(f"{o} x{n}" for o, n in ops.items()))  # fmt: skip
        sparse = global_magnitude_prune(base, 0.7)
        add("global magnitude 70%", TorchPredictor(sparse, card), sparse, "zeros: dense kernels, same speed")
        refusal = pair_prune_refusal(base.config)
        if refusal:
            print(f"no pair-pruned variants: {refusal}")
        for ratio in (0.25, 0.5, 0.75) if not refusal else ():
            small = pair_prune(base, ratio)
            add(f"pair {ratio:.0%} (PyTorch)", TorchPredictor(small, card), small)
            small_onnx = export_onnx(small, tmp / f"pair{ratio}.onnx", card)
            add(f"pair {ratio:.0%} (ONNX Runtime)", load_predictor(small_onnx, threads=args.threads), small)

    base_s = rows[0][1]
    print(f"case {args.case.name}: network input {shape[2:]} (grid {k}x coarser), {args.threads} threads")
    print(f"{'variant':30}{'params':>10}{'GFLOPs':>8}{'s/case':>9}{'speed-up':>10}")
    for name, seconds, net, note in rows:
        print(f"{name:30}{count_parameters(net) / 1e6:9.2f}M{conv_flops(net, shape) / 1e9:8.1f}{seconds:9.3f}"
              f"{base_s / seconds:9.2f}x  {note}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
