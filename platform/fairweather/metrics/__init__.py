"""Image-quality metrics by name (pyiqa and the labeling VLM's VLM-Vis) behind one scorer interface."""

from .registry import METRICS, MetricSpec, MissingWeightsError, WeightFile, missing_weights
from .scorers import Scorer, build_scorer, build_scorers

__all__ = [
    "METRICS",
    "MetricSpec",
    "MissingWeightsError",
    "Scorer",
    "WeightFile",
    "build_scorer",
    "build_scorers",
    "missing_weights",
]
