"""The pyiqa metrics that need no downloaded weights: PSNR and SSIM against a target, PIQE without one.

Convention (recorded with every number): RGB in [0, 1], no border crop, no Y-channel conversion — pyiqa's
``psnr`` and ``ssimc`` (its ``ssim`` would score the Y channel only). PIQE is no-reference and lower is better.
They reproduce pyiqa's published values offline, which makes them safe inside training validation.
"""

from __future__ import annotations

from typing import ClassVar

import torch


class WeightFreeScorer:
    """Lazily built pyiqa PSNR / SSIM / PIQE on one device. Images are ``(N, 3, H, W)`` float in [0, 1]."""

    #: Our name -> pyiqa's metric name.
    METRICS: ClassVar[dict[str, str]] = {"psnr": "psnr", "ssim": "ssimc", "piqe": "piqe"}

    def __init__(self, device: torch.device | str = "cpu"):
        self.device = torch.device(device)
        self._metrics: dict[str, torch.nn.Module] = {}

    def _metric(self, name: str) -> torch.nn.Module:
        if name not in self._metrics:
            import pyiqa  # heavy import (hundreds of ms): only when a score is first asked for

            self._metrics[name] = pyiqa.create_metric(self.METRICS[name], device=self.device, as_loss=False)
        return self._metrics[name]

    @torch.no_grad()
    def full_reference(self, restored: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"psnr": (N,), "ssim": (N,)}`` of ``restored`` against ``target`` (dB and [0, 1], higher is better)."""
        restored, target = restored.to(self.device).clamp(0, 1), target.to(self.device).clamp(0, 1)
        return {
            name: self._metric(name)(restored, target).flatten().float().cpu() for name in ("psnr", "ssim")
        }

    @torch.no_grad()
    def piqe(self, images: torch.Tensor) -> torch.Tensor:
        """``(N,)`` PIQE in [0, 100], lower is better; one image at a time (sizes may differ between calls)."""
        return self._metric("piqe")(images.to(self.device).clamp(0, 1)).flatten().float().cpu()
