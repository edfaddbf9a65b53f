"""L_feat: keep the restoration's Depth Anything features close to those of a reference image."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.encoders.frozen import share_encoder

from .context import LossContext


class DepthFeatureLoss(nn.Module):
    """``feat``: L_feat = mean over images and locations i of (1 − cos(ĝ_i, g*_i)).

    ĝ: Depth Anything encoder features ``(N, L, C)`` of ŷ; g*: those of the pseudo-label where a row has one,
    else of the input image (METHOD.md: "on the pseudo-label / input"), computed without gradient.
    """

    name = "feat"
    needs_aux = False

    def __init__(self, depth: nn.Module):
        super().__init__()
        share_encoder(self, "depth", depth)

    def applies(self, ctx: LossContext) -> bool:
        return True  # needs only images; which domains it acts on is loss.domains.feat

    @staticmethod
    def reference(ctx: LossContext) -> torch.Tensor:
        if ctx.pseudo_label is None:
            return ctx.degraded
        if ctx.has_pseudo is None:
            return ctx.pseudo_label
        return torch.where(ctx.has_pseudo[:, None, None, None], ctx.pseudo_label, ctx.degraded)

    def forward(self, ctx: LossContext) -> torch.Tensor:
        with torch.no_grad():
            target = self.depth(self.reference(ctx))
        features = self.depth(ctx.restored)
        return (1.0 - F.cosine_similarity(features, target, dim=-1)).mean()
