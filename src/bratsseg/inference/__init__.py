"""Whole-case inference: 3-D sliding window or whole volume, 2-D slice by slice."""

from bratsseg.inference.sliding import predict_logits, predict_probabilities

__all__ = ["predict_logits", "predict_probabilities"]
