"""Preprocessing, the on-disk cache, coarse-grid resampling, patch sampling and augmentation, k-fold splits,
synthetic cases, and describing a dataset or a cache (`bratsseg info`)."""

from bratsseg.data.cache import CachedCase, open_cache
from bratsseg.data.geometry import BBox, bbox_of, crop, uncrop
from bratsseg.data.preprocess import PreprocessConfig, PreprocessReport, preprocess_case, preprocess_dataset

__all__ = [
    "BBox",
    "CachedCase",
    "PreprocessConfig",
    "PreprocessReport",
    "bbox_of",
    "crop",
    "open_cache",
    "preprocess_case",
    "preprocess_dataset",
    "uncrop",
]
