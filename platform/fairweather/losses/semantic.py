"""L_sem: pull the restoration's CLIP embedding toward the clear-weather description d_pos, away from d_neg."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.encoders.frozen import share_encoder

from .context import LossContext


class TextEmbeddingCache:
    """CLIP text embeddings by string: each description is encoded once, however many steps reuse it."""

    def __init__(self, clip: nn.Module):
        self.clip = clip
        self.embeddings: dict[str, torch.Tensor] = {}
        self.encoded = 0  # strings sent through the text tower so far

    def __call__(self, texts: Sequence[str]) -> torch.Tensor:
        """``T`` strings -> ``(T, D)`` normalised embeddings (no gradient: CLIP is frozen and texts are data)."""
        missing = sorted(set(texts) - self.embeddings.keys())
        if missing:
            with torch.no_grad():
                encoded = self.clip.encode_text(missing)
            self.embeddings.update(zip(missing, encoded, strict=True))
            self.encoded += len(missing)
        return torch.stack([self.embeddings[text] for text in texts])


class SemanticLoss(nn.Module):
    """``sem``: L_sem = −log softmax over {d_pos, d_neg} of s·cos(E_I(ŷ), E_T(d)) at d_pos, batch mean.

    ctx.d_pos / ctx.d_neg: N strings each (one pair per real image).
    """

    name = "sem"
    needs_aux = False

    def __init__(self, clip: nn.Module):
        super().__init__()
        share_encoder(self, "clip", clip)
        self.texts = TextEmbeddingCache(clip)

    def applies(self, ctx: LossContext) -> bool:
        return ctx.d_pos is not None and ctx.d_neg is not None

    def forward(self, ctx: LossContext) -> torch.Tensor:
        n = ctx.restored.shape[0]
        if len(ctx.d_pos) != n or len(ctx.d_neg) != n:
            raise ValueError(f"L_sem: {n} images but {len(ctx.d_pos)} d_pos and {len(ctx.d_neg)} d_neg")
        image = self.clip.encode_image(ctx.restored)  # (N, D)
        positive, negative = self.texts(ctx.d_pos).to(image), self.texts(ctx.d_neg).to(image)
        logits = self.clip.logit_scale * torch.stack(
            [(image * positive).sum(-1), (image * negative).sum(-1)], dim=1
        )  # (N, 2)
        return F.cross_entropy(logits, torch.zeros(n, dtype=torch.long, device=logits.device))
