"""Physically based weather degradations of a clean image with depth.

All functions are pure: ``(clean (H, W, 3) float32 in [0, 1], depth (H, W), parameters, rng) -> degraded`` of the
same shape, in [0, 1]. Parameters are sampled per image from ``SynthConfig`` ranges by :func:`sample_params` and
recorded in the dataset manifest, so every degraded image can be reproduced and audited.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.ndimage import convolve, gaussian_filter, rotate

from fairweather.contracts.config.synth import SynthConfig


def haze(clean: np.ndarray, depth: np.ndarray, beta: float, airlight: float | np.ndarray) -> np.ndarray:
    """Atmospheric scattering model: I = J·t + A·(1 − t), t = exp(−β·d). β = 0 returns ``clean`` unchanged.

    ``airlight``: a grey level, or an RGB triple for a tinted atmospheric light."""
    t = np.exp(-beta * depth)[..., None].astype(np.float32)
    return (clean * t + airlight * (1.0 - t)).astype(np.float32)


def streak_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line kernel of ``length`` pixels, tilted ``angle_deg`` from vertical (motion blur of a drop)."""
    size = length if length % 2 else length + 1
    kernel = np.zeros((size, size), dtype=np.float32)
    kernel[:, size // 2] = 1.0
    kernel = rotate(kernel, angle_deg, reshape=False, order=1)
    return kernel / max(kernel.sum(), 1e-8)


def rain(
    clean: np.ndarray, depth: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Rain streak layers: sparse noise seeds motion-blurred along one angle (jittered per layer), screen-composited
    over the (optionally veiled) scene. Farther layers are shorter and fainter."""
    h, w = depth.shape
    image = haze(clean, depth, params["veil_beta"], params["airlight"])
    streaks = np.zeros((h, w), dtype=np.float32)
    for layer in range(params["layers"]):
        falloff = 1.0 / (1 + layer)  # layer 0 is nearest: longest, brightest streaks
        seeds = (rng.random((h, w)) < params["density"] * falloff).astype(np.float32)
        seeds *= rng.uniform(0.6, 1.0, size=(h, w)).astype(np.float32)
        length = max(3, round(params["length"] * h * falloff))
        angle = params["angle_deg"] + rng.uniform(-3.0, 3.0)
        blurred = convolve(seeds, streak_kernel(length, angle), mode="wrap")
        streaks = np.maximum(streaks, blurred / (blurred.max() + 1e-8) * falloff)
    alpha = (params["opacity"] * streaks)[..., None]
    return (1.0 - (1.0 - image) * (1.0 - alpha)).clip(0, 1).astype(np.float32)


def snow(
    clean: np.ndarray, depth: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Snow particle layers of several sizes (far: small, dense, faint; near: large, sparse, opaque) alpha-composited
    over the (optionally veiled) scene, so flakes occlude what is behind them."""
    h, w = depth.shape
    image = haze(clean, depth, params["veil_beta"], params["airlight"])
    for layer in reversed(range(params["layers"])):  # far layers first, near layers occlude them
        falloff = 1.0 / (1 + layer)
        radius = max(0.6, params["radius"] * min(h, w) * falloff)
        density = params["density"] * (1 + layer)
        seeds = (rng.random((h, w)) < density / max(radius, 1.0)).astype(np.float32)
        flakes = gaussian_filter(seeds, sigma=radius)
        # Normalise so an isolated flake's centre reaches full opacity whatever its size.
        flakes = (flakes * 2 * np.pi * radius**2).clip(0, 1)
        alpha = (params["opacity"] * (0.5 + 0.5 * falloff) * flakes)[..., None]
        image = image * (1.0 - alpha) + params["flake_brightness"] * alpha
    return image.clip(0, 1).astype(np.float32)


def sample_params(weather: str, cfg: SynthConfig, rng: np.random.Generator) -> dict[str, Any]:
    """Draw one image's degradation parameters from the config ranges (plain floats, JSON-serialisable)."""

    def draw(bounds: tuple[float, float]) -> float:
        return float(rng.uniform(*bounds))

    airlight = draw(cfg.haze_airlight)
    if weather == "haze":
        return {"beta": draw(cfg.haze_beta), "airlight": airlight}
    if weather == "rain":
        return {"layers": cfg.rain_layers, "density": draw(cfg.rain_density), "length": draw(cfg.rain_length),
                "angle_deg": draw(cfg.rain_angle_deg), "opacity": draw(cfg.rain_opacity),
                "veil_beta": draw(cfg.veil_beta), "airlight": airlight}  # fmt: skip
    if weather == "snow":
        return {"layers": cfg.snow_layers, "density": draw(cfg.snow_density), "radius": draw(cfg.snow_radius),
                "opacity": draw(cfg.snow_opacity), "flake_brightness": float(rng.uniform(0.9, 1.0)),
                "veil_beta": draw(cfg.veil_beta), "airlight": airlight}  # fmt: skip
    raise ValueError(f"unknown weather {weather!r} (known: {', '.join(DEGRADATIONS)})")


#: weather -> degradation taking (clean, depth, params, rng).
DEGRADATIONS: dict[
    str, Callable[[np.ndarray, np.ndarray, dict[str, Any], np.random.Generator], np.ndarray]
] = {
    "haze": lambda clean, depth, p, rng: haze(clean, depth, p["beta"], p["airlight"]),
    "rain": rain,
    "snow": snow,
}


def degrade(
    clean: np.ndarray, depth: np.ndarray, weather: str, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Apply the named weather with the given parameters."""
    if weather not in DEGRADATIONS:
        raise ValueError(f"unknown weather {weather!r} (known: {', '.join(DEGRADATIONS)})")
    return DEGRADATIONS[weather](clean, depth, params, rng)
