"""Tiled inference: restore images larger than a tile in overlapping tiles blended without seams.

Each tile's output is weighted by a separable window that is 1 inside the tile and falls off with a raised
cosine over the ``overlap`` pixels on every side that borders another tile (sides on the image border keep
weight 1, so border pixels are not down-weighted). Overlapping outputs are averaged with these weights; because
the window is strictly positive, every pixel has a non-zero total weight. A network whose output is a per-pixel
function of its input therefore gives exactly the whole-image result; for real networks the smooth cross-fade
hides the differences between neighbouring tiles. What blending cannot hide is a tile-wide disagreement: a network
with global statistics (NAFNet's channel attention) gives each tile its own level, a block grid; the Test-time
Local Converter (:mod:`fairweather.models.tlc`, ``model.tlc``) removes that cause. :func:`seam_energy` measures
the result against whole-image inference.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Callable

import numpy as np
import torch

from .common import check_image_batch


def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``min(tile, size)`` covering ``[0, size)`` with at least ``overlap``
    pixels shared by neighbours; the last tile is aligned with the end."""
    if size <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def border_pairs(size: int, tile: int, overlap: int) -> list[int]:
    """Indices ``c`` (``0 < c < size``) whose pixel pair ``(c - 1, c)`` lies at a border between tiles along one
    axis of :func:`restore_tiled`: every pair inside a band shared by two neighbouring tiles, plus the pairs
    straddling its ends (with ``overlap = 0``, the one pair across each border)."""
    starts = tile_starts(size, tile, overlap)
    pairs: set[int] = set()
    for left, right in itertools.pairwise(starts):
        pairs.update(range(right, min(left + tile, size) + 1))
    return sorted(c for c in pairs if 0 < c < size)


def seam_energy(image: torch.Tensor, tile: int, overlap: int) -> float:
    """Mean absolute difference between adjacent columns and adjacent rows at the tile borders of
    :func:`restore_tiled` with ``tile`` / ``overlap``.

    Args:
        image: ``(N, C, H, W)`` output, tiled or not (for whole-image inference the same statistic at the same
            places is the reference: a seamless tiling gives about the same value).
    Returns:
        The mean over every border pair (:func:`border_pairs`) of both axes, in the image's units; NaN when
        the image fits one tile.
    """
    h, w = image.shape[-2:]
    cols, rows = border_pairs(w, tile, overlap), border_pairs(h, tile, overlap)
    if not cols and not rows:
        return math.nan
    col_diff = (image[..., 1:] - image[..., :-1]).abs().mean(dim=tuple(range(image.ndim - 1)))  # (W - 1,)
    row_diff = (image[..., 1:, :] - image[..., :-1, :]).abs().transpose(-1, -2)
    row_diff = row_diff.mean(dim=tuple(range(image.ndim - 1)))  # (H - 1,)
    values = torch.cat([col_diff[[c - 1 for c in cols]], row_diff[[r - 1 for r in rows]]])
    return float(values.mean())


def _ramp(length: int, overlap: int, fade_in: bool, fade_out: bool) -> torch.Tensor:
    """1-D window of ``length``: raised-cosine fade in/out over ``overlap`` pixels, strictly positive."""
    window = torch.ones(length, dtype=torch.float64)
    n = min(overlap, length)
    if n > 0:
        # Sample the half cosine at pixel centres so no weight is exactly 0 (or exactly 1 inside the ramp).
        ramp = torch.tensor(
            [0.5 - 0.5 * math.cos(math.pi * (i + 0.5) / n) for i in range(n)], dtype=torch.float64
        )
        if fade_in:
            window[:n] *= ramp
        if fade_out:
            window[length - n :] *= ramp.flip(0)
    return window


def with_weather(
    model: Callable[..., torch.Tensor], weather: torch.Tensor | None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model`` with its weather condition bound; unchanged when there is none or ``model`` is not a
    weather-conditioned network (:attr:`fairweather.models.RestorationNet.conditioned`), so any callable restores."""
    if weather is None or not getattr(model, "conditioned", False):
        return model
    return functools.partial(model, weather=weather)


def restore_tiled(
    model: Callable[..., torch.Tensor],
    x: torch.Tensor,
    tile: int,
    overlap: int,
    weather: torch.Tensor | None = None,
) -> torch.Tensor:
    """Restore ``x`` tile by tile.

    Args:
        model: maps ``(N, 3, h, w)`` to ``(N, 3, h, w)`` (any restoration network; put it in eval mode).
        x: ``(N, 3, H, W)`` images in [0, 1].
        tile: tile side in pixels; an image with ``H <= tile`` and ``W <= tile`` is restored in one forward.
        overlap: pixels shared by neighbouring tiles, ``0 <= overlap < tile``.
        weather: the images' weather conditions, given to every forward of a weather-conditioned network as
            ``model(tile, weather=...)`` (:meth:`fairweather.models.RestorationNet.forward`).
    Returns:
        ``(N, 3, H, W)`` restored images, dtype and device of ``x``.

    Runs one tile (all N images) per forward to bound memory. It does not disable gradients itself: call it
    under ``torch.no_grad()`` (or ``torch.inference_mode()``) for inference.
    """
    check_image_batch(x)
    if not isinstance(tile, int) or tile <= 0:
        raise ValueError(f"restore_tiled: tile must be a positive int, got {tile!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"restore_tiled: overlap must be an int in [0, tile={tile}), got {overlap!r}")
    model = with_weather(model, weather)
    h, w = x.shape[-2:]
    if h <= tile and w <= tile:
        return model(x)

    th, tw = min(tile, h), min(tile, w)
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    out = torch.zeros_like(x)
    total = torch.zeros(h, w, dtype=x.dtype, device=x.device)
    for top in rows:
        wy = _ramp(th, overlap, fade_in=top > 0, fade_out=top + th < h)
        for left in cols:
            wx = _ramp(tw, overlap, fade_in=left > 0, fade_out=left + tw < w)
            weight = torch.outer(wy, wx).to(dtype=x.dtype, device=x.device)  # (th, tw)
            restored = model(x[..., top : top + th, left : left + tw])
            out[..., top : top + th, left : left + tw] += restored * weight
            total[top : top + th, left : left + tw] += weight
    return out / total


@torch.no_grad()
def restore_tiled_uint8(
    model: Callable[..., torch.Tensor],
    rgb: np.ndarray,
    tile: int,
    overlap: int,
    device: torch.device | str = "cpu",
    weather: torch.Tensor | None = None,
) -> np.ndarray:
    """:func:`restore_tiled` of one ``(H, W, 3)`` uint8 image, written straight into a preallocated uint8 output.

    Every pixel sums the same weighted tile outputs in the same order as :func:`restore_tiled`, then is quantised
    as ``fairweather.training.validate.to_uint8`` does (``clamp(x, 0, 1) * 255 + 0.5``, truncated), so the result
    is ``to_uint8(restore_tiled(model, to_tensor([rgb]), tile, overlap))`` up to the network's own float rounding
    (it sees each tile as a contiguous tensor, :func:`restore_tiled` as a view of the image: a pixel may differ by
    one level). No float copy of the image is made: the tiles of one band of rows are read from ``rgb`` one at a
    time and blended into a float32 accumulator of ``tile`` rows x ``W`` (on ``device``); the rows no later tile
    reaches are written out as uint8. Memory: the input and output (uint8), ``16 x tile x W`` bytes and one tile's
    activations, instead of about 20 float32 copies of the image (a 24-Mpx photo: ~0.2 GB instead of ~2 GB).
    Runs without gradients; put the model in eval mode. ``weather``: as :func:`restore_tiled`'s.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(
            f"restore_tiled_uint8: expected an (H, W, 3) uint8 image, got {rgb.shape} {rgb.dtype}"
        )
    if not isinstance(tile, int) or tile <= 0:
        raise ValueError(f"restore_tiled_uint8: tile must be a positive int, got {tile!r}")
    if not isinstance(overlap, int) or not 0 <= overlap < tile:
        raise ValueError(f"restore_tiled_uint8: overlap must be an int in [0, tile={tile}), got {overlap!r}")
    device = torch.device(device)
    model = with_weather(model, weather)
    h, w = rgb.shape[:2]
    out = np.empty_like(rgb)

    def read(top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        # A copy of the tile (small): Ray hands the actors read-only arrays, which torch.from_numpy warns about.
        part = torch.tensor(rgb[top:bottom, left:right]).permute(2, 0, 1)[None]
        return part.float().div_(255.0).to(device)

    def write(rows: slice, values: torch.Tensor) -> None:
        # to_uint8: clamp, x * 255 + 0.5, truncate (float32 throughout, as numpy computes it there)
        pixels = values.clamp(0, 1).mul_(255.0).add_(0.5).to(torch.uint8)
        out[rows] = pixels[0].permute(1, 2, 0).cpu().numpy()

    if h <= tile and w <= tile:
        write(slice(0, h), model(read(0, h, 0, w)).float())
        return out
    th, tw = min(tile, h), min(tile, w)
    rows, cols = tile_starts(h, tile, overlap), tile_starts(w, tile, overlap)
    acc = torch.zeros(1, 3, th, w, dtype=torch.float32, device=device)
    total = torch.zeros(th, w, dtype=torch.float32, device=device)
    for index, top in enumerate(rows):
        wy = _ramp(th, overlap, fade_in=top > 0, fade_out=top + th < h)
        for left in cols:
            wx = _ramp(tw, overlap, fade_in=left > 0, fade_out=left + tw < w)
            weight = torch.outer(wy, wx).to(dtype=torch.float32, device=device)
            restored = model(read(top, top + th, left, left + tw)).float()
            acc[..., left : left + tw] += restored * weight
            total[:, left : left + tw] += weight
        # Rows above the next band's top are final: write them, then slide the band down to the next top.
        done = (rows[index + 1] if index + 1 < len(rows) else h) - top
        write(slice(top, top + done), acc[..., :done, :] / total[:done])
        carry = th - done
        if carry > 0:
            acc[..., :carry, :] = acc[..., done:, :].clone()
            total[:carry] = total[done:].clone()
        acc[..., carry:, :] = 0
        total[carry:] = 0
    return out
