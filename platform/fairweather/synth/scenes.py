"""Clean outdoor-like procedural scenes with a depth map (real photos: :mod:`fairweather.synth.photo_set`).

A procedural scene is sky (depth 1.0), a mountain ridge near the horizon, a ground plane whose depth grows toward the
horizon, and a few buildings and trees painted far to near, each at the ground depth of its base. Everything is
textured with smooth noise so that a restoration network has structure to recover. Arrays are float32:
image ``(H, W, 3)`` in [0, 1], depth ``(H, W)`` in relative scene units (see ``SynthConfig``).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import zoom

SKY_DEPTH = 1.0
HORIZON_DEPTH = 0.7
NEAR_DEPTH = 0.05


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], scale: float) -> np.ndarray:
    """Zero-mean, unit-ish noise with features of about ``scale`` pixels, ``(H, W)`` float32."""
    h, w = shape
    coarse = rng.standard_normal((max(2, int(h / scale) + 2), max(2, int(w / scale) + 2)))
    fine = zoom(coarse, (h / (coarse.shape[0] - 1), w / (coarse.shape[1] - 1)), order=3)[:h, :w]
    return (fine / (np.abs(fine).max() + 1e-8)).astype(np.float32)


def ground_depth(rows: np.ndarray, horizon: float, height: int) -> np.ndarray:
    """Perspective depth of the ground at image rows below the horizon (inverse distance to the horizon line)."""
    below = np.clip((rows - horizon) / (height - horizon), 1e-3, 1.0)
    return np.clip(NEAR_DEPTH / below, NEAR_DEPTH, HORIZON_DEPTH).astype(np.float32)


def procedural_scene(rng: np.random.Generator, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A random clean scene and its depth: ``((H, W, 3) float32 in [0, 1], (H, W) float32 > 0)``."""
    h, w = size
    rows = np.arange(h, dtype=np.float32)[:, None].repeat(w, axis=1)
    cols = np.arange(w, dtype=np.float32)[None, :].repeat(h, axis=0)
    horizon = rng.uniform(0.35, 0.55) * h

    # Sky: vertical gradient from a deep to a pale blue with soft clouds.
    top, bottom = (
        rng.uniform([0.15, 0.3, 0.6], [0.35, 0.5, 0.85]),
        rng.uniform([0.6, 0.7, 0.8], [0.8, 0.85, 0.95]),
    )
    mix = (rows / max(horizon, 1.0)).clip(0, 1)[..., None]
    image = top * (1 - mix) + bottom * mix + 0.08 * smooth_noise(rng, (h, w), w / 4)[..., None].clip(0, None)
    depth = np.full((h, w), SKY_DEPTH, dtype=np.float32)

    # Mountain ridge just above the horizon, at a depth between the horizon and the sky.
    ridge = horizon - h * (0.05 + 0.12 * (smooth_noise(rng, (1, w), w / 3)[0] * 0.5 + 0.5))
    mountain = rows >= ridge[None, :]
    m_color = rng.uniform([0.25, 0.3, 0.3], [0.45, 0.5, 0.5])
    image = np.where(mountain[..., None], m_color + 0.06 * smooth_noise(rng, (h, w), 6)[..., None], image)
    depth = np.where(mountain, rng.uniform(0.8, 0.9), depth)

    # Ground plane: grass/soil colour with texture that gets finer toward the horizon.
    ground = rows >= horizon
    g_color = rng.uniform([0.2, 0.35, 0.1], [0.45, 0.55, 0.3])
    texture = 0.1 * smooth_noise(rng, (h, w), 3)[..., None]
    image = np.where(ground[..., None], g_color * (0.8 + 0.3 * (rows / h))[..., None] + texture, image)
    depth = np.where(ground, ground_depth(rows, horizon, h), depth)

    # Objects, painted far to near so nearer ones occlude: buildings (boxes with windows) and trees.
    bases = np.sort(rng.uniform(horizon + 0.03 * h, h, size=int(rng.integers(3, 8))))
    for base in bases:
        base_depth = float(ground_depth(np.array([min(base, h - 1)]), horizon, h)[0])
        scale = 0.4 + 0.8 * NEAR_DEPTH / base_depth  # nearer objects look larger
        width, height_px = w * rng.uniform(0.08, 0.22) * scale, h * rng.uniform(0.15, 0.45) * scale
        left = rng.uniform(-0.1, 0.9) * w
        if rng.random() < 0.6:
            inside = (cols >= left) & (cols < left + width) & (rows < base) & (rows >= base - height_px)
            color = rng.uniform(0.25, 0.85, size=3)
            windows = ((cols - left) % max(3.0, width / 5) < max(1.5, width / 12)) & (
                (rows - base) % max(3.0, height_px / 6) < max(1.5, height_px / 14)
            )
            paint = color * np.where(windows, 0.45, 1.0)[..., None]
        else:
            cx, radius = left + width / 2, width / 2
            crown = ((cols - cx) / radius) ** 2 + (
                (rows - (base - height_px * 0.65)) / (height_px * 0.4)
            ) ** 2 <= 1
            trunk = (np.abs(cols - cx) < radius * 0.15) & (rows < base) & (rows >= base - height_px * 0.35)
            inside = crown | trunk
            green = rng.uniform([0.05, 0.25, 0.05], [0.2, 0.5, 0.2])
            paint = np.where(trunk[..., None], np.array([0.35, 0.25, 0.15]), green)
        paint = paint + 0.05 * smooth_noise(rng, (h, w), 2)[..., None]
        image = np.where(inside[..., None], paint, image)
        depth = np.where(inside, base_depth, depth)

    return image.clip(0, 1).astype(np.float32), depth.astype(np.float32)
