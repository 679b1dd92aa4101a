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

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        total = self.members[0].probabilities(image)
        for member in self.members[1:]:
            total += member.probabilities(image)
        if len(self.members) > 1:
            total /= np.float32(len(self.members))
        return total
