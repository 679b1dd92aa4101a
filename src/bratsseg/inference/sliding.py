"""Region probabilities for a whole (cropped) case from any network.

3-D models run by MONAI's sliding-window inferer with Gaussian blending (or in one pass over the whole
volume when it fits in one window); 2-D models run slice by slice along the axial (last) axis.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bratsseg.data.resample import pool, upsample
from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import mirror_flips

Predictor = Callable[[Tensor], Tensor]


def predict_logits(
    predictor: Predictor,
    image: Tensor,
    spatial_dims: int,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    slice_batch_size: int = 32,
    downsample: int = 1,
) -> Tensor:
    """Logits ``(C_out, X, Y, Z)`` for ``image`` ``(C_in, X, Y, Z)``.

    ``predictor`` maps ``(B, C_in, *spatial)`` to ``(B, C_out, *spatial)``: a model in eval mode, an ONNX
    session wrapper, anything. For ``spatial_dims == 3`` with ``roi_size`` None or not smaller than the
    volume, one pass over the whole volume; otherwise sliding windows of ``roi_size`` with Gaussian blending.
    ``downsample`` k > 1 (3-D only) runs the network on the image average-pooled by k and resamples the logits
    back trilinearly (``roi_size`` is then on the coarse grid): see :mod:`bratsseg.data.resample`.
    """
    if image.ndim != 4:
        raise BratsSegError(f"expected one case (C, X, Y, Z), got {tuple(image.shape)}")
    if spatial_dims == 2:
        if downsample != 1:
            raise BratsSegError("downsample > 1 is for 3-D models only")
        slices = image.permute(3, 0, 1, 2)  # (Z, C, X, Y)
        outs = [predictor(slices[i : i + slice_batch_size]) for i in range(0, slices.shape[0], slice_batch_size)]
        return torch.cat(outs).permute(1, 2, 3, 0)
    if spatial_dims != 3:
        raise BratsSegError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    size = tuple(image.shape[1:])
    batch = pool(image.unsqueeze(0), downsample)
    if downsample > 1:
        return upsample(_predict_3d(predictor, batch, roi_size, overlap, sw_batch_size), size, downsample)[0]
    return _predict_3d(predictor, batch, roi_size, overlap, sw_batch_size)[0]


def _predict_3d(
    predictor: Predictor, batch: Tensor, roi_size: Sequence[int] | None, overlap: float, sw_batch_size: int
) -> Tensor:
    if roi_size is None or all(r >= s for r, s in zip(roi_size, batch.shape[2:], strict=True)):
        return predictor(batch)
    from monai.inferers import sliding_window_inference  # imported here: MONAI adds ~1.5 s and ~120 MB

    out = sliding_window_inference(
        batch, tuple(roi_size), sw_batch_size, predictor, overlap=overlap, mode="gaussian", padding_mode="constant"
    )
    assert isinstance(out, Tensor)
    return out


def predict_probabilities(
    predictor: Predictor,
    image: Tensor,
    spatial_dims: int,
    roi_size: Sequence[int] | None = None,
    overlap: float = 0.5,
    sw_batch_size: int = 1,
    mask_to_brain: bool = True,
    downsample: int = 1,
    mirror_axes: Sequence[int] = (),
) -> Tensor:
    """Sigmoid of :func:`predict_logits`: region probabilities ``(3, X, Y, Z)`` in float32.

    ``mirror_axes`` (spatial axes, 0-based): test-time augmentation as nnU-Net does it; the probabilities are
    averaged over every combination of flips along those axes (``2 ** len(mirror_axes)`` passes).
    With ``mask_to_brain``, voxels where every modality is 0 (outside the skull-stripped brain, where the
    network sees a constant input and outputs a constant) get probability 0: tumour lies inside the brain.
    """
    flips = [[a + 1 for a in combo] for combo in mirror_flips(tuple(mirror_axes))]
    probs: Tensor | None = None
    for dims in flips:
        x = image.flip(dims) if dims else image
        logits = predict_logits(predictor, x, spatial_dims, roi_size, overlap, sw_batch_size, downsample=downsample)
        p = logits.float().sigmoid_()  # in place: the logits are a temporary of this function
        p = p.flip(dims) if dims else p
        probs = p if probs is None else probs.add_(p)
    assert probs is not None
    if len(flips) > 1:
        probs.div_(len(flips))
    if mask_to_brain:
        probs.mul_(image.ne(0).any(dim=0, keepdim=True))
    return probs
