"""Data generation (``fairweather synth``): sizes, counts and the degradations' parameter ranges.

Two sources of clean images. Procedural scenes (the default): depth is in relative scene units, ~0.05 at the bottom
of the frame, ~0.7 at the horizon, 1.0 for the sky, so a haze coefficient β in the top-level ranges below gives
transmissions t = exp(−β·d) from ~0.95 (near) to ~0.1 (sky). Real clean photos (``synth.clean``): depth is in
metres (from the depth model, or the geometric prior of :mod:`fairweather.synth.depth`) and the degradations take
their ranges from ``synth.photo`` (:class:`PhotoSynthConfig`), chosen close to the public benchmark sets'.
Each ``(low, high)`` pair is sampled uniformly per image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .loader import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    UNIT_INTERVAL,
    FieldRangeError,
    Range,
    check_ordered_pairs,
    check_ranges,
)


@dataclass(frozen=True)
class PhotoSynthConfig:
    """Degradations of real clean photos (``synth.photo.*``), as in the benchmark sets named per key.

    Every pair is a ``synth.size`` crop of a photo brought to a working resolution whose short side is drawn from
    ``short_side`` (never upscaled): the benchmark images' scale (Rain100L/H 481×321, SOTS-outdoor 550×413,
    Snow100K 640×480), so streak lengths and flake sizes in pixels mean what they mean there. Depth is in metres.
    """

    #: Short side of the working resolution, pixels (drawn per pair; a photo is never upscaled).
    short_side: tuple[int, int] = (288, 416)
    #: Depth (metres) of the nearest pixels when a depth model gives only relative inverse depth, and the
    #: geometric prior's camera height; ``far_m`` caps every depth (sky, horizon).
    near_m: float = 3.0
    camera_height_m: float = 1.6
    far_m: float = 60.0
    #: Weight of the prior's dark-channel cue: log-depth += depth_cue * (dark channel - its median).
    depth_cue: float = 0.7
    #: Haze, I = J·t + A·(1 − t), t = exp(−β·d): RESIDE OTS / SOTS-outdoor draw β in [0.04, 0.2] and a grey
    #: A in [0.8, 1.0] over estimated metric depth (Li et al., "Benchmarking single-image dehazing and beyond",
    #: TIP 2019). ``haze_tint``: largest per-channel deviation of A from grey (0: RESIDE's grey airlight).
    haze_beta: tuple[float, float] = (0.04, 0.2)
    haze_airlight: tuple[float, float] = (0.8, 1.0)
    haze_tint: float = 0.03
    #: A haze crop whose mean transmission would stay above this (a close-up: a few metres of depth) gets β raised
    #: until it reaches it, so that no haze pair is haze-free; the drawn β is kept as ``beta_drawn``. 1 disables.
    haze_max_mean_t: float = 0.65
    #: Non-homogeneous haze (NH-HAZE, Dense-Haze: a haze machine's dense and thin patches): β·d is multiplied by
    #: a smooth log-normal field exp(σ·z − σ²/2), σ drawn per image in [0, ``haze_patchiness``] (1: the optical
    #: depth from about a seventh to seven times its mean; 0: homogeneous, as RESIDE), its patches
    #: ``haze_patch_px`` apart (NH-HAZE's span a third of the frame; here at the benchmarks' resolution).
    haze_patchiness: float = 0.0
    haze_patch_px: tuple[float, float] = (64.0, 192.0)
    #: Rain: ``rain_layers`` streak layers (drawn per image; Rain100L: one light direction, Rain100H: up to five),
    #: near to far, each seeds per pixel ``rain_density`` (nearest layer; farther layers denser, thinner, shorter),
    #: motion-blurred to ``rain_length_px`` at ``rain_angle_deg`` from vertical, each layer turned by up to
    #: ``rain_angle_spread_deg`` (0: one direction, as Rain100L). Streak width (Gaussian sigma, px) and
    #: brightness as drawn. The density is drawn log-uniformly (light rain as likely as heavy) over a range that
    #: spans the real sets' rain, measured as the mean of input minus target (grey levels, 0-255): Rain100L and
    #: Rain12 about 5, DDN-SIRR 22, Rain100H 54 (q90 83); this range gives 7 to 77 (q10-q90; up to 0.0025 gave 6 to
    #: 47, which never showed the network Rain100H's dense rain). docs/real-weather.md has the measurements.
    rain_layers: tuple[int, int] = (1, 4)
    rain_density: tuple[float, float] = (0.0003, 0.01)
    rain_length_px: tuple[float, float] = (12.0, 48.0)
    rain_width_px: tuple[float, float] = (0.5, 1.3)
    rain_angle_deg: tuple[float, float] = (-30.0, 30.0)
    rain_angle_spread_deg: tuple[float, float] = (0.0, 15.0)
    rain_intensity: tuple[float, float] = (0.35, 0.85)
    #: The veiling fog of heavy rain (Outdoor-Rain, Li et al. CVPR 2019: I = T·(J + ΣS) + (1 − T)·A): β per metre
    #: of the same scattering model, 0 for none; drawn as 0 with probability 1 − ``rain_veil_prob``.
    rain_veil_beta: tuple[float, float] = (0.01, 0.08)
    rain_veil_prob: float = 0.5
    #: Raindrops on the lens (as in the RainDrop set): probability per rain image (0: never), drop count and radius.
    raindrop_prob: float = 0.0
    raindrop_count: tuple[int, int] = (4, 16)
    raindrop_radius_px: tuple[float, float] = (4.0, 14.0)
    #: Snow (Snow100K: small, medium and large flakes): ``snow_layers`` layers far (small, dense) to near (large,
    #: sparse, defocused); ``snow_density`` flakes per pixel of the nearest layer, ``snow_size_px`` its flake
    #: radius; flakes fall ``snow_motion_px`` along the rain angle range; ``snow_blur`` is the sigma (px) of the
    #: scene's slight blur; a veil as for rain.
    snow_layers: tuple[int, int] = (2, 4)
    snow_density: tuple[float, float] = (0.0002, 0.0012)
    snow_size_px: tuple[float, float] = (1.5, 4.5)
    snow_opacity: tuple[float, float] = (0.7, 1.0)
    snow_motion_px: tuple[float, float] = (0.0, 6.0)
    snow_blur: tuple[float, float] = (0.0, 0.8)
    snow_veil_beta: tuple[float, float] = (0.01, 0.06)
    snow_veil_prob: float = 0.5

    def __post_init__(self) -> None:
        pairs = [
            "short_side", "haze_beta", "haze_airlight", "haze_patch_px", "rain_layers", "rain_density",
            "rain_length_px", "rain_width_px", "rain_angle_deg", "rain_angle_spread_deg", "rain_intensity",
            "rain_veil_beta", "raindrop_count", "raindrop_radius_px", "snow_layers", "snow_density", "snow_size_px",
            "snow_opacity", "snow_motion_px", "snow_blur", "snow_veil_beta",
        ]  # fmt: skip
        check_ranges(
            self,
            short_side=Range(16),
            near_m=POSITIVE,
            camera_height_m=POSITIVE,
            far_m=POSITIVE,
            depth_cue=NON_NEGATIVE,
            haze_beta=NON_NEGATIVE,
            haze_airlight=UNIT_INTERVAL,
            haze_tint=Range(0, 0.5),
            haze_max_mean_t=Range(0, 1, low_open=True),
            haze_patchiness=Range(0, 3),
            haze_patch_px=AT_LEAST_ONE,
            rain_layers=Range(0, 8),
            rain_density=Range(0, 1, low_open=True),
            rain_length_px=AT_LEAST_ONE,
            rain_width_px=POSITIVE,
            rain_angle_deg=Range(-90, 90),
            rain_angle_spread_deg=Range(0, 90),
            rain_intensity=UNIT_INTERVAL,
            rain_veil_beta=NON_NEGATIVE,
            rain_veil_prob=UNIT_INTERVAL,
            raindrop_prob=UNIT_INTERVAL,
            raindrop_count=NON_NEGATIVE,
            raindrop_radius_px=AT_LEAST_ONE,
            snow_layers=Range(0, 8),
            snow_density=UNIT_INTERVAL,
            snow_size_px=POSITIVE,
            snow_opacity=UNIT_INTERVAL,
            snow_motion_px=NON_NEGATIVE,
            snow_blur=NON_NEGATIVE,
            snow_veil_beta=NON_NEGATIVE,
            snow_veil_prob=UNIT_INTERVAL,
        )
        check_ordered_pairs(self, *pairs)
        if not self.near_m < self.far_m:
            raise FieldRangeError("far_m", f"must exceed near_m ({self.near_m}), got {self.far_m}")


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
    #: Real clean photos to degrade instead of procedural scenes: a folder, glob or manifest (listed by the same
    #: rules as ``data.pool``), or ``bundled`` for the permissively licensed photos shipped with the package
    #: (``fairweather/synth/assets/clean``, see its README.md and SOURCES.csv). Unset: procedural scenes.
    clean: str | None = None
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
    #: Ranges for real clean photos (``synth.clean``); the ranges above apply to procedural scenes only.
    photo: PhotoSynthConfig = field(default_factory=PhotoSynthConfig)

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
