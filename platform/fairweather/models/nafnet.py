"""NAFNet-style network (Chen et al., ECCV 2022: Simple Baselines for Image Restoration).

A U-Net of NAF ("nonlinear activation free") blocks. Each block has two halves, both pre-normalised with a
channel LayerNorm and added back through a learnable per-channel scale initialised at zero (so every block
starts as the identity):

- spatial half: 1x1 expand (x2) -> depth-wise 3x3 -> SimpleGate -> simplified channel attention -> 1x1;
- channel half: 1x1 expand (x2) -> SimpleGate -> 1x1.

SimpleGate (split channels in two halves and multiply them) replaces every nonlinear activation; simplified
channel attention is a global average pool, a 1x1 conv and a multiplication (no sigmoid, no ReLU). At inference
the pool can be the Test-time Local Converter's local window (:mod:`fairweather.models.tlc`, the NAFNet authors'
``Local_Base``): set by :func:`~fairweather.models.tlc.configure_tlc`, which :func:`~fairweather.models.build_model`
calls with ``model.tlc`` / ``model.tlc_base_size``.
Down-sampling is a stride-2 2x2 conv doubling channels; up-sampling a 1x1 conv + pixel-shuffle halving them;
skips are added, not concatenated. Dropout is left out (the paper uses none for restoration).

With ``weather_film`` the network is weather-conditioned (:mod:`fairweather.models.conditioning`): the features
after the intro and after every encoder, middle and decoder stage are modulated by the image's weather.
"""

from __future__ import annotations

import torch
from torch import nn

from fairweather.contracts.config.model import NAFNetConfig

from .common import LayerNorm2d, RestorationNet
from .conditioning import WeatherFiLM
from .tlc import StatsPool


class SimpleGate(nn.Module):
    """``(N, 2C, H, W) -> (N, C, H, W)``: the product of the two channel halves."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=1)
        return a * b


class NAFBlock(nn.Module):
    """Shape-preserving NAF block on ``(N, C, H, W)``; ``scale``: down-sampling of its map from the input."""

    def __init__(self, channels: int, scale: int = 1):
        super().__init__()
        c, hidden = channels, 2 * channels
        self.norm1 = LayerNorm2d(c)
        self.spatial = nn.Sequential(
            nn.Conv2d(c, hidden, 1),
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden),
            SimpleGate(),
        )
        # Global average pool (TLC-local at inference when configured) then 1x1: ``attention.1`` keeps the
        # state-dict key of the former ``AdaptiveAvgPool2d(1)`` layout, so older checkpoints load unchanged.
        self.attention = nn.Sequential(StatsPool(scale), nn.Conv2d(c, c, 1))
        self.spatial_out = nn.Conv2d(c, c, 1)
        self.norm2 = LayerNorm2d(c)
        self.channel = nn.Sequential(nn.Conv2d(c, hidden, 1), SimpleGate(), nn.Conv2d(c, c, 1))
        # Zero-initialised branch scales: the block is the identity at initialisation.
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.spatial(self.norm1(x))
        y = self.spatial_out(y * self.attention(y))
        x = x + self.beta * y
        return x + self.gamma * self.channel(self.norm2(x))


def naf_stage(channels: int, blocks: int, scale: int = 1) -> nn.Sequential:
    return nn.Sequential(*(NAFBlock(channels, scale) for _ in range(blocks)))


class NAFNet(RestorationNet):
    """NAFNet U-Net. Input/output ``(N, 3, H, W)`` in [0, 1]."""

    def __init__(self, cfg: NAFNetConfig):
        super().__init__()
        depth = len(cfg.encoder_blocks)
        self.size_multiple = 2**depth
        chans = [cfg.width * 2**level for level in range(depth + 1)]
        self.intro = nn.Conv2d(3, cfg.width, 3, padding=1)
        self.encoders = nn.ModuleList(
            naf_stage(chans[lvl], n, 2**lvl) for lvl, n in enumerate(cfg.encoder_blocks)
        )
        self.downs = nn.ModuleList(nn.Conv2d(c, 2 * c, 2, stride=2) for c in chans[:-1])
        self.middle = naf_stage(chans[-1], cfg.middle_blocks, 2**depth)
        # ups/decoders are listed coarsest first, matching ``decoder_blocks``.
        self.ups = nn.ModuleList(
            nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)) for c in reversed(chans[1:])
        )
        self.decoders = nn.ModuleList(
            naf_stage(c, n, 2**lvl)
            for lvl, c, n in zip(
                reversed(range(depth)), reversed(chans[:-1]), cfg.decoder_blocks, strict=True
            )
        )
        self.ending = nn.Conv2d(cfg.width, 3, 3, padding=1)
        if cfg.weather_film:
            # Sites in forward order: intro, encoders, middle, decoders (coarsest first).
            self.film = WeatherFiLM([cfg.width, *chans[:-1], chans[-1], *reversed(chans[:-1])])

    def predict_residual(self, x: torch.Tensor, condition: torch.Tensor | None = None) -> torch.Tensor:
        """``(N, 3, H, W)`` with H, W multiples of ``2**len(encoder_blocks)`` -> residual ``(N, 3, H, W)``;
        ``condition``: ``(N,)`` int64 weather conditions, given to (and only to) a ``weather_film`` network."""
        sites = iter(range(len(self.film.sites))) if self.conditioned else None

        def modulate(feat: torch.Tensor) -> torch.Tensor:
            return feat if sites is None else self.film(next(sites), feat, condition)

        feat = modulate(self.intro(x))
        skips = []
        for encoder, down in zip(self.encoders, self.downs, strict=True):
            feat = modulate(encoder(feat))
            skips.append(feat)
            feat = down(feat)
        feat = modulate(self.middle(feat))
        for up, decoder, skip in zip(self.ups, self.decoders, reversed(skips), strict=True):
            feat = modulate(decoder(up(feat) + skip))
        return self.ending(feat)
