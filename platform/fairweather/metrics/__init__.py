"""Image-quality metrics by name (pyiqa and the labeling VLM's VLM-Vis) behind one scorer interface.

The registry (names, files, what is missing) imports no torch, so a driver checks its metrics without it; the
scorers (torch, pyiqa, the VLM) are imported on first use of ``Scorer``, ``build_scorer`` or ``build_scorers``,
in the processes that score.
"""

from typing import TYPE_CHECKING

from .registry import METRICS, MetricSpec, MissingWeightsError, WeightFile, missing_weights

if TYPE_CHECKING:
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

_SCORERS = ("Scorer", "build_scorer", "build_scorers")


def __getattr__(name: str):
    if name in _SCORERS:
        from . import scorers

        return getattr(scorers, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
