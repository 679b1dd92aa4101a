"""Several predictors as one: region probabilities averaged over member models (a fold ensemble, as nnU-Net
predicts), under one model card that says how to binarise them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import Predictor
from bratsseg.models.card import ModelCard


class EnsemblePredictor(Predictor):
    """The mean of ``members``' :meth:`~Predictor.probabilities` (each with its own card's inference settings,
    mirroring included), thresholded and post-processed as ``card`` says."""

    def __init__(self, members: Sequence[Predictor], card: ModelCard) -> None:
        if not members:
            raise BratsSegError("an ensemble needs at least one member")
        self.members = list(members)
        self.card = card
        self.device = members[0].device
        self.backend = "+".join(sorted({m.backend for m in members}))
        #: after each :meth:`probabilities`: the members' agreement on the whole tumour (mean pairwise Dice of their
        #: whole-tumour masks at the card's threshold; 1 when they agree exactly or all find nothing)
        self.last_agreement: float | None = None

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        threshold = np.float32(self.card.thresholds["WT"])
        first = self.members[0].probabilities(image)
        masks = [first[0] > threshold]
        total = first
        for member in self.members[1:]:
            probs = member.probabilities(image)
            masks.append(probs[0] > threshold)
            total += probs
        if len(self.members) > 1:
            total /= np.float32(len(self.members))
        self.last_agreement = mean_pairwise_dice(masks)
        return total


def mean_pairwise_dice(masks: Sequence[NDArray[np.bool_]]) -> float:
    """The mean Dice over every pair of ``masks`` (1 for a pair of empty masks, and for a single mask)."""
    sizes = [int(m.sum()) for m in masks]
    scores = []
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            both = sizes[i] + sizes[j]
            scores.append(1.0 if both == 0 else 2.0 * int(np.count_nonzero(masks[i] & masks[j])) / both)
    return float(np.mean(scores)) if scores else 1.0
