"""Test-time Local Converter (TLC): local instead of global statistics at inference.

Chu et al., *Improving Image Restoration by Revisiting Global Information Aggregation* (ECCV 2022; the remedy the
NAFNet authors ship as ``Local_Base`` / ``AvgPool2d(base_size=1.5 * train_size)``). A network that pools over the
whole feature map (NAFNet's simplified channel attention, PromptIR's prompt weights, Restormer's channel
attention) is trained on crops, so at training time every statistic summarises a crop-sized area. At test time on
a full image the same pool summarises a much larger area (a train/test mismatch), and on a tile it summarises
that tile only, so neighbouring tiles see different statistics and disagree at their borders (a block grid).
TLC replaces the global statistic, at inference only, by the statistic of a window of ``base_size`` input pixels
around each position (``base_size / scale`` at a feature map down-sampled ``scale`` times). Inside a tile, far
enough from its border, a pixel then sees exactly what it sees in whole-image inference; near the border the
window is clamped inside the tile (TLC's replicate edge handling), which the tiler's blended overlap hides.

Training is unchanged: in training mode (and with TLC off) the modules pool globally as before, and they hold no
parameters, so checkpoints keep their layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .tiling import _ramp, tile_starts

#: TLC's published choice: the window is 1.5 times the training crop.
TLC_CROP_FACTOR = 1.5


def tlc_base_size(configured: int, train_crop_size: int) -> int:
    """The TLC window in input pixels: ``configured`` if > 0, else ``round(1.5 * train_crop_size)``."""
    if configured > 0:
        return int(configured)
    if train_crop_size <= 0:
        raise ValueError(f"tlc_base_size: need a positive training crop, got {train_crop_size}")
    return round(TLC_CROP_FACTOR * train_crop_size)


def local_mean(x: torch.Tensor, kernel: int | tuple[int, int]) -> torch.Tensor:
    """Mean of ``x`` over a ``kernel`` window around every position, by an integral image.

    Args:
        x: ``(N, C, H, W)``.
        kernel: window ``k`` or ``(kh, kw)`` in pixels of ``x``; clamped to ``(H, W)``.
    Returns:
        ``(N, C, H, W)``; where the window covers the whole map (``kh >= H`` and ``kw >= W``) the global mean
        ``(N, C, 1, 1)`` instead (same values, broadcastable).

    Only windows lying wholly inside the map are averaged (``(H - kh + 1) x (W - kw + 1)`` of them, each the
    window starting at that offset); the result is centred and padded back to ``(H, W)`` by replicating its edge
    (TLC's ``auto_pad``), so a position near the border takes the statistic of the nearest full window, never a
    window with fewer pixels. The sums are taken around the global mean, which keeps float32 cumulative sums
    accurate on large maps; the cost is two cumulative sums, whatever the window.
    """
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    if kh < 1 or kw < 1:
        raise ValueError(f"local_mean: kernel must be positive, got {kernel!r}")
    h, w = x.shape[-2:]
    kh, kw = min(kh, h), min(kw, w)
    centre = x.mean(dim=(-2, -1), keepdim=True)
    if kh == h and kw == w:
        return centre
    s = (x - centre).cumsum(dim=-1).cumsum(dim=-2)
    s = F.pad(s, (1, 0, 1, 0))  # s[i, j] = sum of the first i rows and j columns
    window = s[..., kh:, kw:] - s[..., :-kh, kw:] - s[..., kh:, :-kw] + s[..., :-kh, :-kw]
    out = window / (kh * kw) + centre  # (N, C, H - kh + 1, W - kw + 1)
    dh, dw = h - out.shape[-2], w - out.shape[-1]
    return F.pad(out, (dw // 2, dw - dw // 2, dh // 2, dh - dh // 2), mode="replicate")


class StatsPool(nn.Module):
    """Average pool for channel statistics: global, or TLC-local at inference.

    ``(N, C, H, W) -> (N, C, 1, 1)`` (global) or ``(N, C, H, W)`` (local); both broadcast against the input.
    ``scale`` is how many times the feature map is down-sampled from the network input; :func:`configure_tlc`
    sets :attr:`kernel` (0 = global). In training mode the pool is always global: TLC is a test-time converter.
    """

    def __init__(self, scale: int = 1):
        super().__init__()
        self.scale = int(scale)
        self.kernel = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training or self.kernel <= 0:
            return x.mean(dim=(-2, -1), keepdim=True)
        return local_mean(x, self.kernel)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, kernel={self.kernel or 'global'}"


def windowed(fn: Callable[..., torch.Tensor], tensors: Sequence[torch.Tensor], kernel: int) -> torch.Tensor:
    """``fn`` applied in ``kernel``-pixel windows, for statistics that are not plain means (Restormer's
    channel attention: TLC's ``LocalAttention``).

    Args:
        fn: maps same-sized crops ``(N, C_i, h, w)`` of ``tensors`` to ``(N, C, h, w)``.
        tensors: ``(N, C_i, H, W)`` maps.
        kernel: window side; windows overlap by half and are blended with the raised-cosine weights of
            :func:`fairweather.models.tiling.restore_tiled`, so the result varies smoothly (TLC's own grid
            averages windows with equal weights, which leaves steps where the window count changes).
    Returns:
        ``(N, C, H, W)``; exactly ``fn`` of the whole maps when the window covers them.
    """
    h, w = tensors[0].shape[-2:]
    kh, kw = min(kernel, h), min(kernel, w)
    out: torch.Tensor | None = None
    total = torch.zeros(h, w, dtype=tensors[0].dtype, device=tensors[0].device)
    for top in tile_starts(h, kh, kh // 2):
        wy = _ramp(kh, kh // 2, fade_in=top > 0, fade_out=top + kh < h)
        for left in tile_starts(w, kw, kw // 2):
            wx = _ramp(kw, kw // 2, fade_in=left > 0, fade_out=left + kw < w)
            weight = torch.outer(wy, wx).to(dtype=total.dtype, device=total.device)
            part = fn(*(t[..., top : top + kh, left : left + kw] for t in tensors))
            if out is None:
                out = part.new_zeros((*part.shape[:-2], h, w))
            out[..., top : top + kh, left : left + kw] += part * weight
            total[top : top + kh, left : left + kw] += weight
    assert out is not None  # at least one window
    return out / total


def configure_tlc(model: nn.Module, base_size: int) -> int:
    """Give every TLC-aware module of ``model`` its window for a ``base_size``-pixel window at the input.

    ``base_size = 0`` switches TLC off (global pooling at inference too). Returns the number of modules set (0
    for a network without global statistics, e.g. MSBDN). Modules are :class:`StatsPool` or anything with a
    ``scale`` and a ``kernel`` attribute and ``tlc_aware = True`` (Restormer's MDTA).
    """
    if base_size < 0:
        raise ValueError(f"configure_tlc: base_size must be >= 0, got {base_size}")
    count = 0
    for module in model.modules():
        if isinstance(module, StatsPool) or getattr(module, "tlc_aware", False):
            module.kernel = max(1, round(base_size / module.scale)) if base_size else 0
            count += 1
    return count
