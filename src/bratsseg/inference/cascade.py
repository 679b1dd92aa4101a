"""A two-stage cascade: a coarse model for the whole crop, then a full-resolution refinement around the tumour.

nnU-Net's ``3d_cascade`` runs its second stage over the whole image; here the second stage sees only the box
around the first stage's whole tumour (plus a margin), so its cost follows the tumour's size, not the head's.
Inside the box the refinement's probabilities replace the first stage's; outside it the first stage's stand.
The refinement network (``UNetConfig.prior_channels``) reads the four modalities and the first stage's three
probabilities and adds its logits to theirs, so a refinement that outputs zeros returns its input unchanged.

Needs neither PyTorch nor ONNX Runtime: both stages are :class:`~bratsseg.inference.predictor.Predictor`s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.data.geometry import box_around
from bratsseg.inference.predictor import Predictor
from bratsseg.models.card import Refinement

Box = tuple[slice, slice, slice]


def refine_box(mask: NDArray[np.bool_], margin: int) -> Box | None:
    """The bounding box of ``mask`` (3-D) grown by ``margin`` voxels on every side, clipped to the array; None
    when the mask is empty."""
    return box_around(mask, margin)


def refine_in_box(
    refine: Callable[[NDArray[np.float32]], NDArray[np.float32]],
    image: NDArray[Any],
    prior: NDArray[np.float32],
    settings: Refinement,
) -> NDArray[np.float32]:
    """``prior`` (the first stage's ``(3, x, y, z)`` probabilities, changed in place and returned) with the box
    around its whole tumour replaced by ``refine``'s probabilities of the ``(4 + 3, *box)`` input there."""
    box = refine_box(prior[0] > settings.box_threshold, settings.margin)
    if box is None:
        return prior
    index = (slice(None), *box)
    x = np.concatenate([np.asarray(image[index], dtype=np.float32), prior[index]])
    prior[index] = refine(x)
    return prior


class CascadePredictor(Predictor):
    """The first stage's probabilities, refined around the tumour by the second (see the module docstring).
    The card is the first stage's (whose ``refinement`` names the second); its thresholds apply to the result."""

    def __init__(self, first: Predictor, refiner: Predictor, settings: Refinement) -> None:
        self.first, self.refiner, self.settings = first, refiner, settings
        self.card = first.card
        self.device = first.device
        self.backend = first.backend if first.backend == refiner.backend else f"{first.backend}+{refiner.backend}"

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        return refine_in_box(self.refiner.probabilities, image, self.first.probabilities(image), self.settings)
