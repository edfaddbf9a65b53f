"""Restormer-style network (Zamir et al., CVPR 2022), and the blocks PromptIR reuses.

- MDTA (multi-Dconv head transposed attention): queries/keys/values from a 1x1 then a depth-wise 3x3
  convolution; attention is computed *across channels* (a ``C/h x C/h`` map per head), so its cost is linear in
  the number of pixels. Queries and keys are L2-normalised and scaled by a learned per-head temperature.
- GDFN (gated-Dconv feed-forward network): 1x1 expand, depth-wise 3x3, ``gelu(a) * b`` gate, 1x1 project.
- A 4-level encoder-decoder: down-sampling = 3x3 conv halving channels + pixel-unshuffle (so channels double),
  up-sampling = 3x3 conv doubling channels + pixel-shuffle; skip connections are concatenated (then reduced by a
  1x1 conv, except at the top level, which stays at ``2 * width``); refinement blocks at full resolution.

Convolutions have no bias, as in the paper; the layer norms keep theirs.

MDTA's channel attention is a statistic over the whole feature map (the Gram matrix of L2-normalised queries and
keys over every pixel), so, like NAFNet's pool, it sees a crop in training and the whole image or one tile at test
time. With the Test-time Local Converter configured (:mod:`fairweather.models.tlc`), at inference it is computed
in windows of ``base_size / scale`` feature pixels (half-overlapping, blended with a raised cosine), as TLC's
``LocalAttention`` does for Restormer; in training it stays global.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.contracts.config.model import RestormerConfig

from .common import LayerNorm2d, RestorationNet
from .tlc import windowed


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: ``(N, C, H, W) -> (N, C, H, W)``; ``scale``: down-sampling of its
    map from the network input (sizes the TLC window, :attr:`kernel`, 0 = global)."""

    tlc_aware = True

    def __init__(self, channels: int, heads: int, scale: int = 1):
        super().__init__()
        if channels % heads:
            raise ValueError(f"MDTA: {heads} heads do not divide {channels} channels")
        self.heads = heads
        self.scale, self.kernel = int(scale), 0
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.qkv_dw = nn.Conv2d(3 * channels, 3 * channels, 3, padding=1, groups=3 * channels, bias=False)
        self.project = nn.Conv2d(channels, channels, 1, bias=False)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Transposed attention of ``(N, C, h, w)`` queries, keys and values over all their pixels."""
        n, c, h, w = q.shape
        # (N, heads, C/heads, h*w): each head attends over its channels, not over pixels.
        q, k, v = (t.reshape(n, self.heads, c // self.heads, h * w) for t in (q, k, v))
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)  # (N, heads, C/h, C/h)
        return (attn @ v).reshape(n, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv_dw(self.qkv(x)).chunk(3, dim=1)
        h, w = x.shape[-2:]
        if self.training or self.kernel <= 0 or (h <= self.kernel and w <= self.kernel):
            return self.project(self.attend(q, k, v))
        return self.project(windowed(self.attend, (q, k, v), self.kernel))


class GDFN(nn.Module):
    """Gated-Dconv feed-forward network: ``(N, C, H, W) -> (N, C, H, W)``."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, 2 * hidden, 1, bias=False)
        self.dw = nn.Conv2d(2 * hidden, 2 * hidden, 3, padding=1, groups=2 * hidden, bias=False)
        self.project = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.dw(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    """Pre-norm ``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))``; shape-preserving."""

    def __init__(self, channels: int, heads: int, ffn_expansion: float, scale: int = 1):
        super().__init__()
        self.norm1 = LayerNorm2d(channels)
        self.attn = MDTA(channels, heads, scale)
        self.norm2 = LayerNorm2d(channels)
        self.ffn = GDFN(channels, ffn_expansion)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def transformer_stage(
    channels: int, blocks: int, heads: int, ffn_expansion: float, scale: int = 1
) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(channels, heads, ffn_expansion, scale) for _ in range(blocks)))


def downsample(channels: int) -> nn.Sequential:
    """``(N, C, H, W) -> (N, 2C, H/2, W/2)`` by conv (C -> C/2) and pixel-unshuffle."""
    return nn.Sequential(nn.Conv2d(channels, channels // 2, 3, padding=1, bias=False), nn.PixelUnshuffle(2))


def upsample(channels: int) -> nn.Sequential:
    """``(N, C, H, W) -> (N, C/2, 2H, 2W)`` by conv (C -> 2C) and pixel-shuffle."""
    return nn.Sequential(nn.Conv2d(channels, 2 * channels, 3, padding=1, bias=False), nn.PixelShuffle(2))


class RestormerEncoder(nn.Module):
    """Patch embedding and the 4 encoder levels; shared by :class:`Restormer` and PromptIR.

    Level ``l`` works at ``width * 2**l`` channels and ``1 / 2**l`` resolution; level 3 is the latent.
    """

    def __init__(self, width: int, blocks: tuple[int, ...], heads: tuple[int, ...], ffn_expansion: float):
        super().__init__()
        self.embed = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stages = nn.ModuleList(
            transformer_stage(width * 2**level, blocks[level], heads[level], ffn_expansion, 2**level)
            for level in range(4)
        )
        self.downs = nn.ModuleList(downsample(width * 2**level) for level in range(3))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(N, 3, H, W)``, H and W multiples of 8 -> 4 features, finest first (the last is the latent)."""
        feats = [self.stages[0](self.embed(x))]
        for level in range(1, 4):
            feats.append(self.stages[level](self.downs[level - 1](feats[-1])))
        return feats


class DecoderLevel(nn.Module):
    """Up-sample the coarser decoder feature, concatenate the encoder skip, (reduce), transformer blocks.

    At ``level`` (0..2) the coarser input has ``in_channels`` channels (default ``width * 2**(level+1)``); the
    output has ``width * 2**level``, except at level 0, where the concatenation is kept at ``2 * width``
    channels, as in the paper.
    """

    def __init__(
        self,
        width: int,
        level: int,
        blocks: int,
        heads: int,
        ffn_expansion: float,
        in_channels: int | None = None,
    ):
        super().__init__()
        channels = width * 2**level
        in_channels = 2 * channels if in_channels is None else in_channels
        if level == 0 and in_channels != 2 * width:
            raise ValueError(f"DecoderLevel: level 0 needs {2 * width} input channels, got {in_channels}")
        self.up = upsample(in_channels)
        cat_channels = in_channels // 2 + channels
        self.reduce = nn.Identity() if level == 0 else nn.Conv2d(cat_channels, channels, 1, bias=False)
        out_channels = 2 * width if level == 0 else channels
        self.stage = transformer_stage(out_channels, blocks, heads, ffn_expansion, 2**level)

    def forward(self, coarse: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.stage(self.reduce(torch.cat([self.up(coarse), skip], dim=1)))


class Restormer(RestorationNet):
    """Restormer encoder-decoder. Input/output ``(N, 3, H, W)`` in [0, 1]."""

    size_multiple = 8

    def __init__(self, cfg: RestormerConfig):
        super().__init__()
        w, e = cfg.width, cfg.ffn_expansion
        self.encoder = RestormerEncoder(w, cfg.blocks, cfg.heads, e)
        # decoder[l] produces level l; they run coarsest (2) first.
        self.decoder = nn.ModuleList(
            DecoderLevel(w, lvl, cfg.blocks[lvl], cfg.heads[lvl], e) for lvl in range(3)
        )
        self.refinement = transformer_stage(2 * w, cfg.refinement_blocks, cfg.heads[0], e)
        self.head = nn.Conv2d(2 * w, 3, 3, padding=1, bias=False)

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` with H, W multiples of 8 -> residual ``(N, 3, H, W)``."""
        feats = self.encoder(x)
        out = feats[3]
        for level in (2, 1, 0):
            out = self.decoder[level](out, feats[level])
        return self.head(self.refinement(out))
