"""Physically based rain, haze and snow on real clean photos, with depth in metres.

The procedural path (:mod:`fairweather.synth.degrade`) works in relative scene units on small generated scenes; a
real photo needs parameters in the units of the benchmark sets it should resemble: β per metre over a metric
depth, streak lengths and flake sizes in pixels at the benchmarks' resolution (``synth.photo``,
:class:`~fairweather.contracts.config.synth.PhotoSynthConfig`, documents each range and its source). The
scattering model itself is :func:`fairweather.synth.degrade.haze`, shared by both paths.

* **haze**: I = J·t + A·(1 − t), t = exp(−β·d) (RESIDE OTS / SOTS-outdoor), A grey or slightly tinted;
  optionally non-homogeneous (NH-HAZE, Dense-Haze): β·d times a smooth log-normal field (:func:`haze_field`).
* **rain**: Outdoor-Rain's model (Li et al., CVPR 2019) I = T·(J + Σᵢ Sᵢ) + (1 − T)·A: several streak layers
  Sᵢ (sparse seeds, a Gaussian for the streak width, a line kernel for the motion blur; nearer layers longer,
  wider, sparser and brighter; each layer's direction turned by up to the drawn spread, as Rain100H's several
  directions; one layer with no spread is Rain100L's light rain), plus the veiling fog of heavy rain
  T = exp(−β_veil·d) (β_veil = 0 for light rain). Optionally raindrops on the lens (:func:`raindrops`).
* **snow**: Snow100K-style layers of flakes of several sizes, far (small, dense, faint) to near (large, sparse,
  defocused, opaque), each motion-blurred along the fall direction and alpha-composited over a slightly blurred
  (and optionally veiled) scene, so nearer flakes occlude farther ones and the scene.

Every function is deterministic for its ``rng``; parameters are plain JSON-able values, recorded with each pair.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter, map_coordinates
from scipy.signal import fftconvolve

from fairweather.contracts.config.synth import PhotoSynthConfig

from .degrade import haze, streak_kernel

#: Bumped whenever a degradation's output changes for the same parameters; recorded in every row's parameters.
PHOTO_MODEL_VERSION = "photo/v1"


def _draw(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _draw_log(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """Log-uniform over ``bounds`` (both > 0): every octave of a wide range (light to heavy rain) equally likely."""
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _draw_int(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def sample_photo_params(weather: str, cfg: PhotoSynthConfig, rng: np.random.Generator) -> dict[str, Any]:
    """One image's degradation parameters, drawn from ``synth.photo`` (plain floats and ints, JSON-able)."""
    tint = [float(x) for x in rng.uniform(-cfg.haze_tint, cfg.haze_tint, size=3)]
    airlight = _draw(rng, cfg.haze_airlight)
    base: dict[str, Any] = {"model": PHOTO_MODEL_VERSION, "weather": weather}
    if weather == "haze":
        return {**base, "beta": _draw(rng, cfg.haze_beta), "airlight": airlight, "airlight_tint": tint}
    if weather == "rain":
        veil = _draw(rng, cfg.rain_veil_beta) if rng.random() < cfg.rain_veil_prob else 0.0
        drops = _draw_int(rng, cfg.raindrop_count) if rng.random() < cfg.raindrop_prob else 0
        return {
            **base,
            "layers": _draw_int(rng, cfg.rain_layers),
            "density": _draw_log(rng, cfg.rain_density),
            "length_px": _draw(rng, cfg.rain_length_px),
            "width_px": _draw(rng, cfg.rain_width_px),
            "angle_deg": _draw(rng, cfg.rain_angle_deg),
            "angle_spread_deg": _draw(rng, cfg.rain_angle_spread_deg),
            "intensity": _draw(rng, cfg.rain_intensity),
            "veil_beta": veil,
            "airlight": airlight,
            "airlight_tint": tint,
            "raindrops": drops,
            "raindrop_radius_px": list(cfg.raindrop_radius_px),
        }
    if weather == "snow":
        veil = _draw(rng, cfg.snow_veil_beta) if rng.random() < cfg.snow_veil_prob else 0.0
        return {
            **base,
            "layers": _draw_int(rng, cfg.snow_layers),
            "density": _draw(rng, cfg.snow_density),
            "size_px": _draw(rng, cfg.snow_size_px),
            "opacity": _draw(rng, cfg.snow_opacity),
            "motion_px": _draw(rng, cfg.snow_motion_px),
            "angle_deg": _draw(rng, cfg.rain_angle_deg) / 2,  # snow falls closer to vertical than it is blown
            "blur": _draw(rng, cfg.snow_blur),
            "brightness": float(rng.uniform(0.9, 1.0)),
            "veil_beta": veil,
            "airlight": airlight,
            "airlight_tint": tint,
        }
    raise ValueError(f"unknown weather {weather!r} (known: haze, rain, snow)")


def settle_haze(params: dict[str, Any], depth: np.ndarray, max_mean_t: float) -> dict[str, Any]:
    """``params`` with β raised, if needed, so that the mean transmission over ``depth`` is at most
    ``max_mean_t`` (``synth.photo.haze_max_mean_t``); the drawn β is kept as ``beta_drawn``. Haze only."""
    if params.get("weather") != "haze" or max_mean_t >= 1.0:
        return params
    beta = params["beta"]
    if float(np.exp(-beta * depth).mean()) <= max_mean_t:
        return params
    low, high = beta, beta
    while float(np.exp(-high * depth).mean()) > max_mean_t and high < 1e3:
        high *= 2.0
    for _ in range(40):  # bisection: the mean transmission falls monotonically with β
        mid = 0.5 * (low + high)
        low, high = (mid, high) if float(np.exp(-mid * depth).mean()) > max_mean_t else (low, mid)
    return {**params, "beta": high, "beta_drawn": beta}


def _airlight(params: dict[str, Any]) -> np.ndarray:
    tint = np.asarray(params.get("airlight_tint", (0.0, 0.0, 0.0)), dtype=np.float32)
    return np.clip(params["airlight"] + tint, 0.0, 1.0)


def photo_haze(clean: np.ndarray, depth: np.ndarray, params: dict[str, Any]) -> np.ndarray:
    """Haze by the scattering model with a (possibly tinted) airlight; ``depth`` in metres."""
    return haze(clean, depth, params["beta"], _airlight(params)).clip(0, 1).astype(np.float32)


def _layer_falloffs(layers: int) -> list[float]:
    """Relative size of each layer, nearest (1.0) to farthest."""
    return [1.0 / (1.0 + 0.8 * i) for i in range(layers)]


def rain_layers(shape: tuple[int, int], params: dict[str, Any], rng: np.random.Generator) -> np.ndarray:
    """Σ of the streak layers, ``(H, W)`` float32 in [0, 1] (the S of Outdoor-Rain's model)."""
    h, w = shape
    total = np.zeros((h, w), dtype=np.float32)
    margin = math.ceil(params["length_px"]) + 4  # streaks enter from outside the frame
    for falloff in _layer_falloffs(params["layers"]):
        length = max(3, round(params["length_px"] * falloff))
        sigma = max(0.3, params["width_px"] * falloff)
        density = params["density"] / falloff  # farther layers: more, smaller streaks
        angle = params["angle_deg"] + params["angle_spread_deg"] * float(rng.uniform(-1, 1))
        canvas = (h + 2 * margin, w + 2 * margin)
        seeds = (rng.random(canvas) < density).astype(np.float32) * rng.uniform(0.5, 1.0, canvas).astype(
            np.float32
        )
        seeds = gaussian_filter(seeds, sigma)
        streaks = fftconvolve(seeds, streak_kernel(length, angle), mode="same")
        # An isolated streak's core reaches the seed's value whatever its width and length.
        streaks = np.clip(streaks * length * 2 * np.pi * sigma**2 * 0.6, 0, 1)
        total += params["intensity"] * (0.4 + 0.6 * falloff) * streaks[margin:-margin, margin:-margin]
    return np.clip(total, 0, 1).astype(np.float32)


def raindrops(
    image: np.ndarray, count: int, radius_px: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """Water drops on the lens: each a soft disc that shows a blurred, flipped, shrunken view of the scene (a
    drop acts as a small fish-eye lens) with a darker rim and a small highlight."""
    if count <= 0:
        return image
    h, w = image.shape[:2]
    out = image.copy()
    blurred = np.stack([gaussian_filter(image[..., c], 2.0) for c in range(3)], axis=-1)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for _ in range(count):
        radius = float(rng.uniform(*radius_px))
        cy, cx = float(rng.uniform(0, h)), float(rng.uniform(0, w))
        ry = radius * float(rng.uniform(0.8, 1.2))
        dist = np.sqrt(((yy - cy) / ry) ** 2 + ((xx - cx) / radius) ** 2)
        inside = dist < 1.0
        if not inside.any():
            continue
        # Refraction: sample the scene around the drop, flipped and magnified outwards (shrunken image).
        src_y = np.clip(cy - (yy - cy) * 2.5, 0, h - 1)
        src_x = np.clip(cx - (xx - cx) * 2.5, 0, w - 1)
        refracted = np.stack(
            [map_coordinates(blurred[..., c], [src_y[inside], src_x[inside]], order=1) for c in range(3)],
            axis=-1,
        )
        d = dist[inside][:, None]
        shade = 1.0 - 0.35 * np.clip((d - 0.75) / 0.25, 0, 1)  # dark rim
        highlight = 0.25 * np.exp(-(((yy[inside] - (cy - 0.4 * ry)) ** 2 + (xx[inside] - (cx - 0.3 * radius)) ** 2)
                                     / (2 * (0.15 * radius) ** 2)))[:, None]  # fmt: skip
        alpha = np.clip((1.0 - d) / 0.15, 0, 1)
        drop = np.clip(refracted * shade * 1.05 + highlight, 0, 1)
        out[inside] = out[inside] * (1 - alpha) + drop * alpha
    return out.astype(np.float32)


def photo_rain(
    clean: np.ndarray, depth: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Outdoor-Rain's I = T·(J + ΣS) + (1 − T)·A with T = exp(−β_veil·d), then optional raindrops."""
    streaks = rain_layers(depth.shape, params, rng)
    rainy = np.clip(clean + streaks[..., None], 0, 1)
    image = haze(rainy, depth, params["veil_beta"], _airlight(params))
    radius = params.get("raindrop_radius_px", (4.0, 14.0))
    image = raindrops(image, int(params.get("raindrops", 0)), (float(radius[0]), float(radius[1])), rng)
    return image.clip(0, 1).astype(np.float32)


def snow_layers(shape: tuple[int, int], params: dict[str, Any], rng: np.random.Generator) -> list[np.ndarray]:
    """Each layer's flake alpha ``(H, W)`` in [0, 1], farthest first (composite in this order)."""
    h, w = shape
    layers = []
    motion = params["motion_px"]
    margin = math.ceil(params["size_px"] * 3 + motion) + 2
    for falloff in reversed(_layer_falloffs(params["layers"])):
        radius = max(0.5, params["size_px"] * falloff)
        density = params["density"] / falloff**1.5  # farther: smaller and more numerous
        canvas = (h + 2 * margin, w + 2 * margin)
        seeds = (rng.random(canvas) < density).astype(np.float32) * rng.uniform(0.6, 1.0, canvas).astype(
            np.float32
        )
        flakes = gaussian_filter(seeds, radius)
        # Flat-topped flakes: an isolated flake's centre saturates, its edge stays soft.
        flakes = np.clip(flakes * 2 * np.pi * radius**2 * 1.6, 0, 1)
        length = round(motion * falloff)
        if length >= 2:
            kernel = streak_kernel(length, params["angle_deg"])
            flakes = np.clip(fftconvolve(flakes, kernel, mode="same") * 1.3, 0, 1)
        if falloff > 0.9 and radius > 2.0:
            flakes = gaussian_filter(flakes, 0.3 * radius)  # the nearest flakes are out of focus
        alpha = params["opacity"] * (0.45 + 0.55 * falloff) * flakes[margin:-margin, margin:-margin]
        layers.append(alpha.astype(np.float32))
    return layers


def photo_snow(
    clean: np.ndarray, depth: np.ndarray, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Slight blur and veil of the scene, then the flake layers composited far to near (occlusion)."""
    image = clean
    if params["blur"] > 0:
        image = np.stack([gaussian_filter(image[..., c], params["blur"]) for c in range(3)], axis=-1)
    image = haze(image, depth, params["veil_beta"], _airlight(params))
    for alpha in snow_layers(depth.shape, params, rng):
        image = image * (1.0 - alpha[..., None]) + params["brightness"] * alpha[..., None]
    return image.clip(0, 1).astype(np.float32)


def degrade_photo(
    clean: np.ndarray, depth: np.ndarray, weather: str, params: dict[str, Any], rng: np.random.Generator
) -> np.ndarray:
    """Apply ``weather`` with ``params`` (from :func:`sample_photo_params`) to ``(H, W, 3)`` float32 in [0, 1] with
    ``depth`` ``(H, W)`` in metres; returns the same shape in [0, 1]."""
    if clean.shape[:2] != depth.shape:
        raise ValueError(f"image {clean.shape[:2]} and depth {depth.shape} differ in size")
    if weather == "haze":
        return photo_haze(clean, depth, params)
    if weather == "rain":
        return photo_rain(clean, depth, params, rng)
    if weather == "snow":
        return photo_snow(clean, depth, params, rng)
    raise ValueError(f"unknown weather {weather!r} (known: haze, rain, snow)")


def haze_field(shape: tuple[int, int], sigma: float, patch_px: float, rng: np.random.Generator) -> np.ndarray:
    """A smooth log-normal field ``(H, W)`` float32 of mean about 1: exp(σ·z − σ²/2), z of unit variance,
    interpolated (cubic) from a coarse grid of normals spaced ``patch_px`` apart: the dense and thin patches of
    haze-machine haze (NH-HAZE, Dense-Haze) rather than RESIDE's uniform β."""
    cells = [max(1, round(n / patch_px)) for n in shape]
    grid = rng.standard_normal((cells[0] + 1, cells[1] + 1))
    axes = [np.linspace(0, c, n) for c, n in zip(cells, shape, strict=True)]
    z = map_coordinates(grid, np.meshgrid(*axes, indexing="ij"), order=3, mode="nearest")
    z = (z - z.mean()) / max(float(z.std()), 1e-6)
    return np.exp(sigma * z - sigma**2 / 2).astype(np.float32)


def synthesize(
    clean: np.ndarray, depth: np.ndarray, weather: str, cfg: PhotoSynthConfig, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, Any]]:
    """Draw one image's parameters and degrade it: ``(degraded, params)``, params JSON-able.

    Non-homogeneous haze (``cfg.haze_patchiness`` > 0) scales the depth the scattering model sees by
    :func:`haze_field`, with σ drawn per image in [0, haze_patchiness] and the patches' spacing in
    ``haze_patch_px``, both recorded (``patchiness``, ``patch_px``)."""
    params = sample_photo_params(weather, cfg, rng)
    if weather == "haze" and cfg.haze_patchiness > 0:
        sigma, patch_px = _draw(rng, (0.0, cfg.haze_patchiness)), _draw(rng, cfg.haze_patch_px)
        depth = depth * haze_field(depth.shape, sigma, patch_px, rng)
        params = {**params, "patchiness": sigma, "patch_px": patch_px}
    params = settle_haze(params, depth, cfg.haze_max_mean_t)
    return degrade_photo(clean, depth, weather, params, rng), params
