"""What every frozen encoder shares: no parameter gradients, always eval mode, differentiable resizing."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenModule(nn.Module):
    """Base of the frozen encoders: weights never train, and a parent's ``.train()`` cannot switch off eval mode
    (dropout/batch-norm statistics must not change), but gradients still flow through to the input image."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:
        return super().train(False)


def resize_shortest_and_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable CLIP-style resize: shortest side to ``size`` (bicubic, antialiased), centre crop to square.

    x: ``(N, 3, H, W)`` -> ``(N, 3, size, size)``.
    """
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x − mean) / std`` per channel; mean/std are ``(3,)`` tensors on any device."""
    return (x - mean.to(x)[None, :, None, None]) / std.to(x)[None, :, None, None]
