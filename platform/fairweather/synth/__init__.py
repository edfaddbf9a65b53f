"""Generated data: procedural clean scenes with depth and physically based haze, rain and snow."""

from .dataset import SynthResult, generate
from .degrade import DEGRADATIONS, degrade, haze, rain, sample_params, snow
from .scenes import procedural_scene

__all__ = [
    "DEGRADATIONS",
    "SynthResult",
    "degrade",
    "generate",
    "haze",
    "procedural_scene",
    "rain",
    "sample_params",
    "snow",
]
