"""Depth of a real clean photo, in metres: from a depth model when one is given, otherwise a geometric prior.

The haze of the atmospheric scattering model needs a depth map. Two sources, and every generated row says which
(``depth_source``):

``model:<name>``
    A callable (the configured depth model, e.g. Depth Anything, when its weights are real) that maps an
    ``(H, W, 3)`` float32 RGB image in [0, 1] to its **relative inverse depth** (disparity: larger is nearer, any
    scale, any resolution), as Depth Anything's ``predicted_depth`` is. :func:`depth_from_disparity` turns it into
    metres: the 99th-percentile disparity is ``near_m``, depth is inversely proportional to disparity, and every
    depth is capped at ``far_m`` (so the sky, disparity ~0, is ``far_m``).

``prior:ground-sky-darkchannel/v1`` (:data:`PRIOR_SOURCE`)
    The documented geometric prior of :func:`geometric_depth`, for when no real depth model is available (tiny
    random weights, or none). An outdoor photo is a ground plane seen from ``camera_height_m`` under a sky:

    1. **Sky**: bright, smooth, bluish-or-grey regions connected to the top edge (:func:`sky_mask`); depth
       ``far_m``.
    2. **Horizon**: just below the sky's lower boundary (median over the columns that have sky), clipped to
       [0.2, 0.75] of the height; a photo without sky is taken to look down at the ground, horizon 0.25 of the
       height above the frame.
    3. **Ground** below the horizon: perspective depth ``d = camera_height_m · f / (y − y_horizon)`` with a focal
       length ``f`` of one image height (~53° vertical field of view), capped at ``far_m``; anything that is not
       sky above the horizon stands on the ground some way off (the ground depth 10 % of the height below the
       horizon: 16 m with the defaults).
    4. **Aerial-perspective cue**: in a clean daylight photo, bright unsaturated regions (a high dark channel,
       He et al. 2009) tend to be far; ``log d += depth_cue · (D − median D)`` with ``D`` the smoothed dark
       channel.
    5. The log-depth is smoothed edge-aware by a guided filter with the photo's luminance as the guide (He et al.
       2010), so haze follows object edges instead of bleeding across them.

    It is a prior, not a measurement: buildings, cars and people get the depth of the ground behind or below
    them. It is good enough to make haze grow with distance and to vary within an image.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from PIL import Image
from scipy.ndimage import (
    binary_closing,
    gaussian_filter,
    gaussian_gradient_magnitude,
    label,
    minimum_filter,
    uniform_filter,
)

#: Recorded as ``depth_source`` for depths from :func:`geometric_depth`.
PRIOR_SOURCE = "prior:ground-sky-darkchannel/v1"

#: A depth model: ``(H, W, 3)`` float32 RGB in [0, 1] -> relative inverse depth (larger = nearer), any size.
DepthFn = Callable[[np.ndarray], np.ndarray]


def luminance(image: np.ndarray) -> np.ndarray:
    """Rec. 601 luma of an ``(H, W, 3)`` image in [0, 1], ``(H, W)`` float32."""
    return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)


def guided_filter(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """He et al.'s guided filter (grey guide): an edge-preserving smoothing of ``source`` following ``guide``."""
    size = 2 * radius + 1

    def mean(x: np.ndarray) -> np.ndarray:
        return uniform_filter(x, size=size, mode="reflect")

    mean_i, mean_p = mean(guide), mean(source)
    cov = mean(guide * source) - mean_i * mean_p
    var = mean(guide * guide) - mean_i * mean_i
    a = cov / (var + eps)
    b = mean_p - a * mean_i
    return (mean(a) * guide + mean(b)).astype(np.float32)


def sky_mask(image: np.ndarray) -> np.ndarray:
    """Boolean ``(H, W)``: bright, smooth, bluish-or-grey regions connected to the top edge of the frame."""
    h, w = image.shape[:2]
    gray = luminance(image)
    texture = uniform_filter(gaussian_gradient_magnitude(gray, 1.0), size=max(3, min(h, w) // 40))
    r, b = image[..., 0], image[..., 2]
    saturation = image.max(axis=2) - image.min(axis=2)
    bluish_or_grey = (b >= r - 0.02) | (saturation < 0.12)
    candidate = (gray > 0.45) & (texture < 0.03) & bluish_or_grey
    candidate[int(0.8 * h) :] = False  # the sky is never at the bottom of an upright photo
    # Close small holes (birds, wires); padding by edge values keeps the closing from eroding the frame's border.
    padded = np.pad(candidate, 3, mode="edge")
    candidate = binary_closing(padded, iterations=2)[3:-3, 3:-3]
    regions, _ = label(candidate)
    touching = np.unique(regions[0][regions[0] > 0])
    mask = np.isin(regions, touching)
    if mask.sum() < 0.01 * h * w:  # a few bright pixels at the top are no sky
        return np.zeros((h, w), dtype=bool)
    return mask


def horizon_row(sky: np.ndarray) -> float:
    """The horizon's row (may be negative: above the frame) from the sky mask, see the module docstring."""
    h = sky.shape[0]
    columns = sky.any(axis=0)
    if not columns.any():
        return -0.25 * h
    lowest = h - 1 - np.argmax(sky[::-1, columns], axis=0)  # the lowest sky row in each column with sky
    return float(np.clip(np.median(lowest) + 0.03 * h, 0.2 * h, 0.75 * h))


def geometric_depth(
    image: np.ndarray, *, camera_height_m: float, far_m: float, depth_cue: float
) -> np.ndarray:
    """The geometric prior (module docstring) for an ``(H, W, 3)`` float32 photo: ``(H, W)`` float32 metres."""
    h, w = image.shape[:2]
    sky = sky_mask(image)
    horizon = horizon_row(sky)
    focal = float(h)
    rows = np.arange(h, dtype=np.float32)[:, None]
    below = rows - horizon
    ground = camera_height_m * focal / np.maximum(below, 1.0)
    beyond = camera_height_m * focal / (0.1 * h)  # objects standing on the ground some way off
    depth = np.where(below > 0.1 * h, ground, beyond)
    depth = np.broadcast_to(np.minimum(depth, far_m), (h, w)).astype(np.float32)
    log_depth = np.log(depth)
    if depth_cue > 0:
        dark = minimum_filter(image.min(axis=2), size=max(3, min(h, w) // 50))
        dark = gaussian_filter(dark, sigma=max(1.0, 0.02 * min(h, w)))
        log_depth = log_depth + depth_cue * (dark - np.median(dark))
    log_depth = np.where(sky, np.log(far_m), log_depth)
    smooth = guided_filter(luminance(image), log_depth.astype(np.float32), max(2, min(h, w) // 30), 1e-3)
    smooth = np.where(sky, np.log(far_m), smooth)
    return np.clip(np.exp(smooth), 0.5, far_m).astype(np.float32)


def depth_from_disparity(
    disparity: np.ndarray, size: tuple[int, int], *, near_m: float, far_m: float
) -> np.ndarray:
    """A depth model's relative inverse depth -> metres at ``size = (h, w)`` (see the module docstring)."""
    disparity = np.asarray(disparity, dtype=np.float32).squeeze()
    if disparity.ndim != 2 or not np.isfinite(disparity).all():
        raise ValueError(f"a depth model must return a finite (H, W) map, got shape {disparity.shape}")
    h, w = size
    if disparity.shape != (h, w):
        disparity = np.asarray(Image.fromarray(disparity).resize((w, h), Image.Resampling.BILINEAR))
    reference = float(np.percentile(disparity, 99))
    if reference <= 0:
        return np.full((h, w), far_m, dtype=np.float32)
    scaled = np.clip(disparity / reference, near_m / far_m, None)
    return np.clip(near_m / scaled, near_m, far_m).astype(np.float32)


def photo_depth(
    image: np.ndarray,
    *,
    near_m: float,
    camera_height_m: float,
    far_m: float,
    depth_cue: float,
    depth_fn: DepthFn | None = None,
    depth_name: str = "depth-model",
) -> tuple[np.ndarray, str]:
    """``(depth in metres, depth_source)`` of an ``(H, W, 3)`` float32 photo: the model's if given, else the prior."""
    if depth_fn is not None:
        disparity = depth_fn(image)
        return depth_from_disparity(
            disparity, image.shape[:2], near_m=near_m, far_m=far_m
        ), f"model:{depth_name}"
    return geometric_depth(
        image, camera_height_m=camera_height_m, far_m=far_m, depth_cue=depth_cue
    ), PRIOR_SOURCE
