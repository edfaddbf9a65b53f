"""Generated data: procedural clean scenes with depth and physically based haze, rain and snow."""

from .dataset import SynthResult, generate
from .degrade import DEGRADATIONS, degrade, haze, rain, sample_params, snow
from .paired import SPLITS, PairRecord, paired_table, write_pairs
from .scenes import procedural_scene

__all__ = [
    "DEGRADATIONS",
    "SPLITS",
    "PairRecord",
    "SynthResult",
    "degrade",
    "generate",
    "haze",
    "paired_table",
    "procedural_scene",
    "rain",
    "sample_params",
    "snow",
    "write_pairs",
]
