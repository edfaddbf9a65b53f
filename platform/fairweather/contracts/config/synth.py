"""Procedural data generation (``fairweather synth``): sizes, counts and the degradations' parameter ranges.

Depth is in relative scene units: ~0.05 at the bottom of the frame, ~0.7 at the horizon, 1.0 for the sky, so a
haze coefficient β in the ranges below gives transmissions t = exp(−β·d) from ~0.95 (near) to ~0.1 (sky).
Each ``(low, high)`` pair is sampled uniformly per image.
"""

from __future__ import annotations

from dataclasses import dataclass

from .loader import (
    NON_NEGATIVE,
    UNIT_INTERVAL,
    FieldRangeError,
    Range,
    check_ordered_pairs,
    check_ranges,
)


@dataclass(frozen=True)
class SynthConfig:
    #: Output folder (local or cloud URI): ``<out>/paired/{input,target}/`` and ``<out>/pool/<weather>/``; the
    #: pairs are listed in the ``paired`` table of ``data.tables``.
    out: str = "runs/data"
    num_paired: int = 48
    #: Fractions of each weather's pairs held out as ``val`` and ``test`` (the rest is ``train``). The k-th pair of
    #: a weather gets its split from k alone, so a pair keeps its split when ``num_paired`` grows.
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    num_unlabeled: int = 48
    #: (height, width) of generated images; real photos are resized to cover it and centre-cropped.
    size: tuple[int, int] = (128, 128)
    weathers: tuple[str, ...] = ("rain", "haze", "snow")
    #: Optional folder of real clean photos to degrade instead of procedural scenes.
    clean_photos: str | None = None
    seed: int = 0
    #: Haze: scattering coefficient β and atmospheric light A (grey level) of I = J·t + A·(1 − t).
    haze_beta: tuple[float, float] = (0.8, 2.5)
    haze_airlight: tuple[float, float] = (0.7, 0.95)
    #: Rain: streak layers; density = streak seeds per pixel; length as a fraction of the image height.
    rain_layers: int = 2
    rain_density: tuple[float, float] = (0.004, 0.012)
    rain_length: tuple[float, float] = (0.06, 0.18)
    rain_angle_deg: tuple[float, float] = (-25.0, 25.0)
    rain_opacity: tuple[float, float] = (0.35, 0.75)
    #: Snow: particle layers from far (small, dense) to near (large, sparse); flake radius as a fraction of the
    #: image's shorter side for the nearest layer.
    snow_layers: int = 3
    snow_density: tuple[float, float] = (0.001, 0.004)
    snow_radius: tuple[float, float] = (0.008, 0.02)
    snow_opacity: tuple[float, float] = (0.7, 1.0)
    #: Veiling haze added to rain and snow (β of the same scattering model; 0 disables it).
    veil_beta: tuple[float, float] = (0.0, 0.5)

    def __post_init__(self) -> None:
        if min(self.size) < 16:
            raise ValueError(f"size must be at least 16x16, got {self.size}")
        unknown = set(self.weathers) - {"rain", "haze", "snow"}
        if unknown or not self.weathers:
            raise ValueError(f"weathers must be a non-empty subset of rain, haze, snow; got {self.weathers}")
        fractions = (
            "haze_airlight",
            "rain_density",
            "rain_length",
            "rain_opacity",
            "snow_density",
            "snow_radius",
        )
        check_ranges(
            self,
            num_paired=NON_NEGATIVE,
            num_unlabeled=NON_NEGATIVE,
            seed=NON_NEGATIVE,
            rain_layers=NON_NEGATIVE,
            snow_layers=NON_NEGATIVE,
            haze_beta=NON_NEGATIVE,
            veil_beta=NON_NEGATIVE,
            rain_angle_deg=Range(-90, 90),
            snow_opacity=UNIT_INTERVAL,
            val_fraction=UNIT_INTERVAL,
            test_fraction=UNIT_INTERVAL,
            **dict.fromkeys(fractions, UNIT_INTERVAL),
        )
        check_ordered_pairs(self, "haze_beta", "veil_beta", "rain_angle_deg", "snow_opacity", *fractions)
        if self.val_fraction + self.test_fraction >= 1:
            raise FieldRangeError(
                "test_fraction",
                f"val_fraction + test_fraction must be below 1 (some pairs must train), "
                f"got {self.val_fraction} + {self.test_fraction}",
            )
