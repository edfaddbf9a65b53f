"""PromptIR-style network (Potlapalli et al., NeurIPS 2023): a Restormer with prompts in the decoder.

Before each decoder level, a *prompt-generation block* builds an input-conditioned prompt: ``prompt_len`` learnable
prompt components ``(prompt_dim, s, s)`` are mixed by softmax weights predicted (one linear layer) from the
globally pooled decoder feature, resized to the feature's resolution and passed through a 3x3 conv. A
*prompt-interaction block* concatenates feature and prompt, applies one Restormer transformer block, and a 1x1
conv maps back to the feature's channels. The encoder, decoder levels and transformer blocks are those of
:mod:`fairweather.models.restormer`.

The prompt weights come from a global average pool; with the Test-time Local Converter configured
(:mod:`fairweather.models.tlc`) they come, at inference, from a local window around each position instead (one mix
of the components per pixel), and the transformer blocks' channel attention is windowed as in Restormer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.contracts.config.model import PromptIRConfig

from .common import RestorationNet
from .restormer import DecoderLevel, RestormerEncoder, TransformerBlock, transformer_stage
from .tlc import StatsPool


class PromptGeneration(nn.Module):
    """``(N, C, H, W)`` feature -> ``(N, prompt_dim, H, W)`` prompt, a weighted mix of learned components."""

    def __init__(self, feature_dim: int, prompt_dim: int, prompt_len: int, prompt_size: int, scale: int = 1):
        super().__init__()
        self.components = nn.Parameter(torch.rand(prompt_len, prompt_dim, prompt_size, prompt_size))
        self.weights = nn.Linear(feature_dim, prompt_len)
        self.conv = nn.Conv2d(prompt_dim, prompt_dim, 3, padding=1, bias=False)
        self.pool = StatsPool(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.pool(x)  # (N, C, 1, 1) global; (N, C, H, W) with TLC at inference
        size = x.shape[-2:]
        if pooled.shape[-2:] == (1, 1):
            weights = self.weights(pooled.flatten(1)).softmax(dim=1)  # (N, prompt_len)
            prompt = torch.einsum("nl,lchw->nchw", weights, self.components)
            prompt = F.interpolate(prompt, size=size, mode="bilinear", align_corners=False)
        else:  # one mix per pixel; interpolation is linear, so a constant mix gives the global result
            logits = torch.einsum("nchw,lc->nlhw", pooled, self.weights.weight)
            weights = (logits + self.weights.bias[:, None, None]).softmax(dim=1)  # (N, prompt_len, H, W)
            components = F.interpolate(self.components, size=size, mode="bilinear", align_corners=False)
            prompt = torch.einsum("nlhw,lchw->nchw", weights, components)
        return self.conv(prompt)


class PromptInteraction(nn.Module):
    """Generate a prompt for ``x`` and fuse it: ``(N, C, H, W) -> (N, out_dim, H, W)``."""

    def __init__(
        self,
        feature_dim: int,
        prompt_dim: int,
        prompt_len: int,
        prompt_size: int,
        heads: int,
        ffn: float,
        out_dim: int,
        scale: int = 1,
    ):
        super().__init__()
        self.generate = PromptGeneration(feature_dim, prompt_dim, prompt_len, prompt_size, scale)
        self.block = TransformerBlock(feature_dim + prompt_dim, heads, ffn, scale)
        self.reduce = nn.Conv2d(feature_dim + prompt_dim, out_dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce(self.block(torch.cat([x, self.generate(x)], dim=1)))


class PromptIR(RestorationNet):
    """Restormer encoder, prompt-conditioned decoder. Input/output ``(N, 3, H, W)`` in [0, 1]."""

    size_multiple = 8

    def __init__(self, cfg: PromptIRConfig):
        super().__init__()
        w, e = cfg.width, cfg.ffn_expansion
        self.encoder = RestormerEncoder(w, cfg.blocks, cfg.heads, e)
        # prompts[l] conditions the coarser feature (width * 2**(l+1) channels) entering decoder level l. As in
        # the released PromptIR: every interaction block uses the third level's head count, and the one on the
        # latent also halves its channels (8w + p -> 4w), so decoder level 2 up-samples 4w, not 8w, channels.
        out_dims = (2 * w, 4 * w, 4 * w)
        self.prompts = nn.ModuleList(
            PromptInteraction(
                w * 2 ** (lvl + 1),
                cfg.prompt_dims[lvl],
                cfg.prompt_len,
                max(1, cfg.prompt_size // 2**lvl),
                cfg.heads[2],
                e,
                out_dims[lvl],
                2 ** (lvl + 1),
            )
            for lvl in range(3)
        )
        self.decoder = nn.ModuleList(
            DecoderLevel(w, lvl, cfg.blocks[lvl], cfg.heads[lvl], e, in_channels=out_dims[lvl])
            for lvl in range(3)
        )
        self.refinement = transformer_stage(2 * w, cfg.refinement_blocks, cfg.heads[0], e)
        self.head = nn.Conv2d(2 * w, 3, 3, padding=1, bias=False)

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` with H, W multiples of 8 -> residual ``(N, 3, H, W)``."""
        feats = self.encoder(x)
        out = feats[3]
        for level in (2, 1, 0):
            out = self.decoder[level](self.prompts[level](out), feats[level])
        return self.head(self.refinement(out))
