"""Several predictors as one: region probabilities averaged over member models (a fold ensemble, as nnU-Net
predicts), under one model card that says how to binarise them."""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from bratsseg.errors import BratsSegError
from bratsseg.inference.predictor import Predictor
from bratsseg.models.card import ModelCard


class LazyPredictor(Predictor):
    """A member that holds no network between cases: ``load`` (a function returning the predictor) runs once here,
    to check the model and take its card, and again for each :meth:`probabilities`, whose network is dropped
    when it returns. An ensemble of these needs the memory of one member at a time (what a device can spare), at
    the price of opening each model once per case (ONNX Runtime: tens of milliseconds)."""

    def __init__(self, load: Callable[[], Predictor]) -> None:
        self.load = load
        first = load()
        self.card, self.device, self.backend = first.card, first.device, first.backend

    @contextmanager
    def _opened(self) -> Iterator[Predictor]:
        predictor = self.load()
        try:
            yield predictor
        finally:
            del predictor
            gc.collect()

    def probabilities(self, image: NDArray[Any]) -> NDArray[np.float32]:
        with self._opened() as predictor:
            return predictor.probabilities(image)

    def add_probabilities(self, image: NDArray[Any], total: NDArray[np.float32], weight: float) -> NDArray[np.float32]:
        with self._opened() as predictor:
            return predictor.add_probabilities(image, total, weight)


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
        image = np.asarray(image, dtype=np.float32)
        threshold = np.float32(self.card.thresholds["WT"])
        total = np.zeros((self.card.architecture.out_channels, *image.shape[1:]), dtype=np.float32)
        weight = 1.0 / len(self.members)
        masks = [member.add_probabilities(image, total, weight) > threshold for member in self.members]
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
