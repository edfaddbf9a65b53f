"""Pixel losses: L_sup to the clean target and L_ps (L_app) to the pseudo-label."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from .context import LossContext


class PixelLoss(nn.Module):
    """Mean L1 ``|ŷ − y|`` or Charbonnier ``sqrt((ŷ − y)² + ε²)`` over ``(N, 3, H, W)`` images."""

    def __init__(self, kind: Literal["l1", "charbonnier"] = "l1", eps: float = 1e-3):
        super().__init__()
        if kind not in ("l1", "charbonnier"):
            raise ValueError(f"unknown pixel loss {kind!r} (known: l1, charbonnier)")
        self.kind, self.eps = kind, eps

    def forward(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if prediction.shape != target.shape:
            raise ValueError(
                f"pixel loss: prediction {tuple(prediction.shape)} vs target {tuple(target.shape)}"
            )
        if self.kind == "l1":
            return F.l1_loss(prediction, target)
        return torch.sqrt((prediction - target) ** 2 + self.eps**2).mean()


class SupervisedLoss(nn.Module):
    """``sup``: L_sup = pixel(ŷ, y) on labeled pairs."""

    name = "sup"
    needs_aux = False

    def __init__(self, pixel: PixelLoss):
        super().__init__()
        self.pixel = pixel

    def applies(self, ctx: LossContext) -> bool:
        return ctx.target is not None

    def forward(self, ctx: LossContext) -> torch.Tensor:
        return self.pixel(ctx.restored, ctx.target)


class PseudoLabelLoss(nn.Module):
    """``ps``: L_ps = L_app(ŷ, y_ps) = mean L1 to the pseudo-label over the images that have one (``has_pseudo``)."""

    name = "ps"
    needs_aux = False

    def applies(self, ctx: LossContext) -> bool:
        return ctx.pseudo_label is not None and (ctx.has_pseudo is None or bool(ctx.has_pseudo.any()))

    def forward(self, ctx: LossContext) -> torch.Tensor:
        restored, pseudo = ctx.restored, ctx.pseudo_label
        if ctx.has_pseudo is not None:
            restored, pseudo = restored[ctx.has_pseudo], pseudo[ctx.has_pseudo]
        return F.l1_loss(restored, pseudo)
