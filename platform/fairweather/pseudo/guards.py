"""Fidelity and artifact guards: is a candidate restoration still the same photo as its input?

No-reference scores are easily fooled (issue 20: a strong blue cast, an embossed dot texture and a grid of tile
blocks all improved PIQE and NIQE while SSIM to the target fell). Each guard compares a candidate with the
degraded input it restores and returns one number; :mod:`fairweather.pseudo.select` lets a candidate win only if
every guard is within its limit (``pseudo.guards``). Weather removal brightens or darkens, raises contrast and
saturation (haze) and removes thin bright structures (rain, snow), but keeps the scene's colours, its structure
and its texture statistics; the guards are built to let the first through and catch the second.

All guards are pure functions on float images ``(3, H, W)`` in [0, 1] (torch tensors or numpy arrays; a batch
dimension is not accepted), input first, the candidate at the input's size. :func:`guard_values` computes all of
them under the names :data:`GUARD_NAMES`; :func:`input_checks` is the same on ``(H, W, 3)`` uint8 arrays, the
signature of the scoring engine's ``input_checks`` hook, so the values join a candidate's scores.

- ``guard_colour``: coloured offset, in percent of full scale (10: a strong cast), between low-passed images that
  a per-pixel scattering gain around the input's airlight does not explain (:func:`colour_shift`);
- ``guard_texture``: the strongest spectral peak the candidate adds, in log units (:func:`texture_energy`);
- ``guard_grid``: excess of column/row steps on every line of a periodic grid, in log units (:func:`grid_energy`);
- ``guard_structure``: local correlation of downscaled luminance, SSIM's structure term (:func:`structure`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch
from torch.nn import functional as F

#: guard name -> True when a larger value is worse (a limit is then a maximum, else a minimum).
GUARD_NAMES: dict[str, bool] = {
    "guard_colour": True,
    "guard_texture": True,
    "guard_grid": True,
    "guard_structure": False,
}


def _image(x: torch.Tensor | np.ndarray, name: str) -> torch.Tensor:
    """``(3, H, W)`` float in [0, 1] as float32 torch on the CPU (a 12-Mpx photo: 144 MB)."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"{name} must be a (3, H, W) image, got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise TypeError(f"{name} must be a float image in [0, 1], got dtype {t.dtype}")
    return t.detach().to(device="cpu", dtype=torch.float32)


def _pair(
    inp: torch.Tensor | np.ndarray, cand: torch.Tensor | np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    a, b = _image(inp, "input"), _image(cand, "candidate")
    if a.shape != b.shape:
        raise ValueError(f"candidate {tuple(b.shape)} must have the input's size {tuple(a.shape)}")
    return a, b


def _downscale(x: torch.Tensor, long_side: int) -> torch.Tensor:
    """``(C, H, W)`` area-averaged so that its long side is at most ``long_side`` (never up-sampled)."""
    h, w = x.shape[-2:]
    factor = max(h, w) / long_side
    if factor <= 1:
        return x
    size = (max(1, round(h / factor)), max(1, round(w / factor)))
    return F.interpolate(x[None], size=size, mode="area")[0]


def luminance(x: torch.Tensor) -> torch.Tensor:
    """``(3, H, W)`` RGB -> ``(H, W)`` Rec. 601 luma."""
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def _gaussian_blur(y: torch.Tensor, sigma: float) -> torch.Tensor:
    """``(H, W)`` separable Gaussian blur with reflected borders."""
    radius = max(1, math.ceil(3 * sigma))
    radius = min(radius, y.shape[-1] - 1, y.shape[-2] - 1)
    if radius < 1:
        return y
    taps = torch.arange(-radius, radius + 1, dtype=y.dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = F.pad(y[None, None], (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, kernel.view(1, 1, 1, -1))
    return F.conv2d(out, kernel.view(1, 1, -1, 1))[0, 0]


def airlight(rgb: torch.Tensor, fraction: float = 0.02) -> torch.Tensor:
    """``(3, h, w)`` RGB -> ``(3,)``: the atmospheric light of a hazy image as He et al.'s dark-channel prior
    estimates it, the mean colour of the ``fraction`` of pixels whose smallest channel is the largest."""
    flat = rgb.reshape(3, -1)
    dark = flat.min(dim=0).values
    index = dark.topk(max(1, round(fraction * dark.numel()))).indices
    return flat[:, index].mean(dim=1)


def colour_shift(
    inp: torch.Tensor | np.ndarray,
    cand: torch.Tensor | np.ndarray,
    *,
    long_side: int = 64,
    iterations: int = 30,
) -> float:
    """Colour cast of ``cand`` against ``inp``: the coloured offset that no physically plausible change explains.

    Args:
        inp, cand: ``(3, H, W)`` float RGB in [0, 1], same size.
        long_side: both are area-averaged to this long side first (a low-pass: edges, rain streaks and local
            contrast do not count, only the colour of regions).
        iterations: alternating least-squares steps of the fit below.
    Returns:
        The chromatic part of ``o`` (``o`` minus its grey component), in percent of full scale (>= 0; 10 is a
        strong cast), where per low-passed pixel ``p`` the candidate is fitted as
        ``cand(p) - A = g(p) * (inp(p) - A) + o``: ``A`` the input's airlight (:func:`airlight`), ``g(p) >= 0``
        a free gain per pixel (the scattering model ``inp = cand * t + A * (1 - t)`` gives ``g = 1 / t``,
        however the transmission ``t`` varies; removing rain or snow leaves most pixels at ``g = 1``), and one
        offset ``o`` for the whole image. A uniform brightness change is grey and does not count; a cast does.
        0 for the input itself. Where the veil itself is coloured, removing it and adding a cast of the veil's
        colour are hard to tell apart: keep the limit loose enough for the former.
    """
    a, b = _pair(inp, cand)
    small_in, small_c = _downscale(a, long_side), _downscale(b, long_side)
    light = airlight(small_in)[:, None]
    rel_in = small_in.reshape(3, -1) - light
    rel_c = small_c.reshape(3, -1) - light
    # Ridge: a pixel at the airlight's colour gives no evidence of a gain (g -> 0).
    norm = (rel_in**2).sum(dim=0) + 1e-3
    offset = torch.zeros(3, 1, dtype=rel_in.dtype)
    for _ in range(iterations):
        gain = (((rel_c - offset) * rel_in).sum(dim=0) / norm).clamp_min(0)
        offset = (rel_c - gain * rel_in).mean(dim=1, keepdim=True)
    return 100.0 * float(torch.linalg.vector_norm(offset - offset.mean()))


def _welch_power(y: torch.Tensor, patch: int, max_patches: int) -> torch.Tensor:
    """``(H, W)`` -> ``(patch, patch)`` mean periodogram of Hann-windowed, mean-removed patches (half-overlapping;
    a regular subset when there are more than ``max_patches``)."""
    tops = torch.arange(0, y.shape[0] - patch + 1, patch // 2)
    lefts = torch.arange(0, y.shape[1] - patch + 1, patch // 2)
    index = torch.arange(len(tops) * len(lefts))
    if len(index) > max_patches:  # a regular subset, chosen before any patch is copied
        index = torch.linspace(0, len(index) - 1, max_patches).round().long()
    offsets = torch.arange(patch)
    rows = (tops[index // len(lefts)][:, None] + offsets)[:, :, None]  # (P, patch, 1)
    cols = (lefts[index % len(lefts)][:, None] + offsets)[:, None, :]  # (P, 1, patch)
    patches = y[rows, cols]  # (P, patch, patch)
    patches = patches - patches.mean(dim=(-2, -1), keepdim=True)
    hann = torch.hann_window(patch, periodic=False, dtype=y.dtype)
    spectrum = torch.fft.fft2(patches * torch.outer(hann, hann))
    return (spectrum.real**2 + spectrum.imag**2).mean(dim=0)


def texture_energy(
    inp: torch.Tensor | np.ndarray,
    cand: torch.Tensor | np.ndarray,
    *,
    patch: int = 32,
    min_cycles: int = 3,
    max_patches: int = 1024,
) -> float:
    """Periodic texture that ``cand`` adds to ``inp``: the strongest spectral peak of the candidate that the input
    does not have (an embossed dot pattern, checkerboard or ringing artifacts).

    Args:
        inp, cand: ``(3, H, W)`` float RGB in [0, 1], same size, full resolution (the textures are fine).
        patch: side of the Welch patches (periods up to ``patch / min_cycles`` pixels are resolved).
        min_cycles: frequencies below this many cycles per patch are left out (illumination, haze).
        max_patches: at most this many patches are averaged (a regular subset of a large image).
    Returns:
        In natural-log units: the maximum over frequencies ``f`` of ``log(P_cand(f) / P_inp(f))`` minus its
        median over the frequencies of the same magnitude ``|f|`` (a ring of the spectrum), with ``P`` the Welch
        power spectrum of the luma (floored at 8-bit quantisation noise). A contrast change, sharpening or
        blurring scale a whole ring alike (about 0); removing rain lowers the streaks' orientation (negative); a
        periodic texture is a narrow peak at a few orientations (2: 7x the ring's gain at one frequency). 0 for
        images smaller than one patch. Non-periodic (noise-like) textures are not what it measures.
    """
    a, b = _pair(inp, cand)
    ya, yb = luminance(a), luminance(b)
    if min(ya.shape) < patch:
        return 0.0
    floor = patch * patch * (0.5 / 255) ** 2
    ratio = (
        (_welch_power(yb, patch, max_patches) + floor) / (_welch_power(ya, patch, max_patches) + floor)
    ).log()
    freq = torch.fft.fftfreq(patch) * patch
    ring = torch.sqrt(freq[:, None] ** 2 + freq[None, :] ** 2).round().long()
    peak = 0.0
    for radius in range(min_cycles, patch // 2 + 1):
        values = ratio[ring == radius]
        peak = max(peak, float(values.max() - values.median()))
    return peak


def _step_prominence(y: torch.Tensor, axis: int, window: int, segment: int) -> np.ndarray:
    """How much each line between neighbouring rows (axis 0) or columns (axis 1) of ``(H, W)`` luma stands out
    as a coherent step: the mean over ``segment``-pixel pieces of the line of ``|mean signed difference|`` (a
    tile seam shifts a whole piece one way; texture averages out), in log, minus the median of its ``window``
    neighbouring lines (slow changes of contrast across the image cancel)."""
    diff = y.diff(dim=axis)  # (H - 1, W) or (H, W - 1)
    diff = diff if axis == 1 else diff.T  # lines along dim 1: (length, lines)
    pieces = max(1, diff.shape[0] // segment)
    means = diff[: pieces * segment].reshape(pieces, -1, diff.shape[1]).mean(dim=1).abs()
    steps = np.log(means.mean(dim=0).numpy() + 0.5 / 255)
    half = window // 2
    padded = np.pad(steps, half, mode="reflect" if len(steps) > half else "edge")
    local = np.median(np.lib.stride_tricks.sliding_window_view(padded, window), axis=1)
    return steps - local


def _comb_floor(excess: np.ndarray, period: int) -> float:
    """Over the phases of a comb with ``period`` (teeth at ``phase + k * period``, at least 2), the largest
    median of its teeth: high only when most teeth are high, as on a grid."""
    teeth = len(excess) // period
    return float(np.median(excess[: teeth * period].reshape(teeth, period), axis=0).max())


def grid_energy(
    inp: torch.Tensor | np.ndarray,
    cand: torch.Tensor | np.ndarray,
    *,
    min_period: int = 32,
    periods: tuple[int, ...] = (),
    window: int = 9,
    segment: int = 16,
) -> float:
    """Block-grid energy of ``cand`` against ``inp``: how much stronger its column and row steps are on a
    periodic grid (tile borders) than elsewhere.

    Args:
        inp, cand: ``(3, H, W)`` float RGB in [0, 1], same size, full resolution (seams are 1-2 px wide).
        min_period: the smallest grid period searched (pixels).
        periods: only these periods (e.g. the tiler's ``tile - tile_overlap``); empty: every period from
            ``min_period`` to half the image side.
        window: a line's step is compared with the median of this many neighbouring lines.
        segment: lines are cut in pieces of this many pixels; a piece's step is its mean signed difference.
    Returns:
        In natural-log units (0.69: every grid line stands out twice as much from its neighbours as in the
        input): the maximum over periods ``P`` of the smaller over both axes (those with at least two lines) of
        the best phase's weakest line, where a line's value is its local prominence as a coherent step in the
        candidate minus that in the input (:func:`_step_prominence`). A contrast change, even one varying across the image, leaves prominence alone (about
        0); an edge that restoration makes visible is one line, not a grid on both axes. 0 when the image is too
        small for two lines at ``min_period``.
    """
    a, b = _pair(inp, cand)
    ya, yb = luminance(a), luminance(b)
    scores: dict[int, list[float]] = {}
    for axis in (0, 1):
        own = _step_prominence(yb, axis, window, segment)
        gained = own - _step_prominence(ya, axis, window, segment)
        excess = np.minimum(own - np.median(own), gained - np.median(gained))
        for period in periods or range(min_period, len(excess) // 2 + 1):
            if period >= 1 and 2 * period <= len(excess):
                scores.setdefault(period, []).append(_comb_floor(excess, period))
    if not scores:
        return 0.0
    return max(0.0, max(float(np.mean(values)) for values in scores.values()))


def structure(
    inp: torch.Tensor | np.ndarray,
    cand: torch.Tensor | np.ndarray,
    *,
    long_side: int = 256,
    sigma: float = 1.5,
) -> float:
    """Structure kept by ``cand``: SSIM's structure term between downscaled lumas, averaged over the image.

    Args:
        inp, cand: ``(3, H, W)`` float RGB in [0, 1], same size.
        long_side: both are area-averaged to this long side first (thin rain streaks and snow flakes mostly
            average out; scene structure stays).
        sigma: Gaussian window of the local statistics.
    Returns:
        Mean of ``(cov + c) / (std_in * std_cand + c)`` with ``c = (0.03)^2 / 2``, in [-1, 1]: 1 for the input
        itself and for any local change of brightness or contrast (the atmospheric scattering model is affine
        per pixel), lower when edges move, vanish or appear (blocks, smeared or invented structure).
    """
    a, b = _pair(inp, cand)
    ya, yb = luminance(_downscale(a, long_side)), luminance(_downscale(b, long_side))
    mu_a, mu_b = _gaussian_blur(ya, sigma), _gaussian_blur(yb, sigma)
    var_a = (_gaussian_blur(ya * ya, sigma) - mu_a**2).clamp_min(0)
    var_b = (_gaussian_blur(yb * yb, sigma) - mu_b**2).clamp_min(0)
    cov = _gaussian_blur(ya * yb, sigma) - mu_a * mu_b
    c = 0.03**2 / 2
    return float(((cov + c) / (var_a.sqrt() * var_b.sqrt() + c)).mean())


def guard_values(
    inp: torch.Tensor | np.ndarray,
    cand: torch.Tensor | np.ndarray,
    *,
    grid_periods: tuple[int, ...] = (),
) -> dict[str, float]:
    """Every guard of ``cand`` against ``inp`` (``(3, H, W)`` float RGB in [0, 1]), by :data:`GUARD_NAMES`."""
    return {
        "guard_colour": colour_shift(inp, cand),
        "guard_texture": texture_energy(inp, cand),
        "guard_grid": grid_energy(inp, cand, periods=grid_periods),
        "guard_structure": structure(inp, cand),
    }


def input_checks(
    candidate: np.ndarray, inp: np.ndarray, *, grid_periods: tuple[int, ...] = ()
) -> Mapping[str, float]:
    """:func:`guard_values` on ``(H, W, 3)`` uint8 RGB arrays, candidate first: the scoring engine's
    ``input_checks(candidate, input)`` hook (the candidate already at the input's size). Bind ``grid_periods``
    (``pseudo.guards.grid_periods``) with :func:`functools.partial`, which keeps it picklable for Ray actors."""

    def chw(x: np.ndarray) -> torch.Tensor:
        # A copy: the engine hands Arrow's read-only buffers.
        return torch.from_numpy(np.array(x)).permute(2, 0, 1).float() / 255.0

    return guard_values(chw(inp), chw(candidate), grid_periods=grid_periods)
