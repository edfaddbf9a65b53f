"""Procedural data generation (``fairweather synth``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SynthConfig:
    #: Output folder: ``<out>/paired`` (input/target/manifest) and ``<out>/pool`` (unlabeled images).
    out: str = "runs/data"
    num_paired: int = 48
    num_unlabeled: int = 48
    #: (height, width) of generated scenes.
    size: tuple[int, int] = (128, 128)
    weathers: tuple[str, ...] = ("rain", "haze", "snow")
    #: Optional folder of real clean photos to degrade instead of procedural scenes.
    clean_photos: str | None = None
    seed: int = 0
