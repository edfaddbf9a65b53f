"""Image-quality scores through pyiqa (weight-free ones here; the evaluation issue adds the learned metrics)."""

from .weight_free import WeightFreeScorer

__all__ = ["WeightFreeScorer"]
