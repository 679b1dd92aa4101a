"""A predictor on ONNX Runtime alone: no PyTorch needed to run a bratsseg ``.onnx`` file.

A whole-case graph (see :mod:`bratsseg.models.onnx_format`) turns the crop into probabilities by itself; this
predictor adds mirrored test-time augmentation (numpy flips) where the card asks for it. A network graph gets its
coarse-grid pooling, padding, upsampling, sigmoid and brain mask from numpy here (2-D models slice by slice); only
sliding-window inference (a 3-D model with ``inference.roi_size`` smaller than the case) needs PyTorch and MONAI.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.data.resample import pool_array, upsample_array
from bratsseg.errors import BratsSegError
from bratsseg.extras import require
from bratsseg.inference.predictor import Predictor, mirror_flips
from bratsseg.models.onnx_format import INPUT_NAME, PROBABILITIES_NAME, card_from_metadata
from bratsseg.padding import crop_to, pad_to_multiple

SLICE_BATCH = 32  # 2-D models: axial slices per network call, as the PyTorch path


class OnnxPredictor(Predictor):
    """Region probabilities from an exported ``.onnx`` file on ONNX Runtime's CPU execution provider."""

    backend = "onnxruntime"

    def __init__(self, path: str | Path, threads: int | None = None, low_memory: bool = False) -> None:
        """``low_memory``: no memory arena. With one, an output array lives in the arena's block and keeps all of
        it (hundreds of MB) alive after the session closes: an ensemble member opened once per case (see
        :class:`~bratsseg.inference.ensemble.LazyPredictor`) must not have one."""
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise BratsSegError("no such ONNX file", self.path)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = not low_memory
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=["CPUExecutionProvider"])
        except Exception as err:
            raise BratsSegError(f"ONNX Runtime cannot load the model ({type(err).__name__}: {err})", self.path) from err
        self.card = card_from_metadata(self.session.get_modelmeta().custom_metadata_map, self.path)
        self.whole_case = self.session.get_outputs()[0].name == PROBABILITIES_NAME
        self.divisor = self.card.architecture.divisor

    def _run(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        out = self.session.run(None, {INPUT_NAME: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)

    def logits_array(self, x: NDArray[Any]) -> NDArray[np.float32]:
        """A network graph: ``(B, C, *spatial)`` -> logits, padding the spatial sizes up to the divisor and
        cropping back."""
        if self.whole_case:
            raise BratsSegError("a whole-case ONNX graph returns probabilities, not logits", self.path)
        size = x.shape[2:]
        return np.ascontiguousarray(crop_to(self._run(pad_to_multiple(np.asarray(x, np.float32), self.divisor)), size))

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        image = np.asarray(image, dtype=np.float32)
        if not self.card.inference.mirror_axes:
            return self._probabilities_once(image)
        total = np.zeros((self.card.architecture.out_channels, *image.shape[1:]), dtype=np.float32)
        self.add_probabilities(image, total, 1.0)
        return total

    def add_probabilities(self, image: NDArray[Any], total: NDArray[np.float32], weight: float) -> NDArray[np.float32]:
        """Each mirrored pass added straight into ``total`` (each pass is already zero outside the brain, which
        flips keep); the whole-tumour channel of this model's own mean returned."""
        image = np.asarray(image, dtype=np.float32)
        flips = mirror_flips(tuple(self.card.inference.mirror_axes))
        whole: NDArray[np.float32] | None = None
        for axes in flips:
            dims = tuple(a + 1 for a in axes)
            p = self._probabilities_once(np.flip(image, dims) if dims else image)
            p = np.flip(p, dims) if dims else p
            whole = p[0].copy() if whole is None else np.add(whole, p[0], out=whole)
            if len(flips) > 1 or weight != 1.0:
                p *= np.float32(weight / len(flips))
            total += p
            del p
        assert whole is not None
        if len(flips) > 1:
            whole /= np.float32(len(flips))
        return whole

    def _probabilities_once(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        if self.whole_case:
            return self._run(x[None])[0]
        logits = self._network_logits(x)
        probs = 1.0 / (1.0 + np.exp(-logits, dtype=np.float32))
        probs *= np.any(x != 0, axis=0, keepdims=True)
        return np.asarray(probs, dtype=np.float32)

    def _network_logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        settings = self.card.inference
        if self.spatial_dims == 2:
            slices = np.moveaxis(x, 3, 0)  # (Z, C, X, Y)
            outs = [self.logits_array(slices[i : i + SLICE_BATCH]) for i in range(0, len(slices), SLICE_BATCH)]
            return np.moveaxis(np.concatenate(outs), 0, 3)
        k = settings.downsample
        coarse = pool_array(x[None], k)
        roi = settings.roi_size
        if roi is not None and any(r < s for r, s in zip(roi, coarse.shape[2:], strict=True)):
            return self._window_logits(x)
        return upsample_array(self.logits_array(coarse), tuple(x.shape[1:]), k)[0]

    def _window_logits(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Sliding windows with Gaussian blending: MONAI's, so this one case needs PyTorch."""
        require(f"{self.path}: sliding-window inference", "torch", "monai")
        import torch

        from bratsseg.inference.sliding import predict_logits

        s = self.card.inference

        def network(batch: Any) -> Any:
            return torch.from_numpy(self.logits_array(batch.numpy()))

        logits = predict_logits(network, torch.from_numpy(x), 3, s.roi_size, s.overlap, downsample=s.downsample)
        return np.asarray(logits.numpy(), dtype=np.float32)
