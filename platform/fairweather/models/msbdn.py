"""MSBDN-style network (Dong et al., CVPR 2020: Multi-Scale Boosted Dehazing Network with Dense Feature Fusion).

The backbone Paper A trains. Design, at configurable size:

- Encoder: a full-resolution stem, then ``levels`` stride-2 convolutions, each doubling the channels. After each
  down-sampling a *dense feature fusion* (DFF) module corrects the new feature with the errors it makes against
  every earlier (finer) encoder feature, by back-projection.
- Bottleneck: residual blocks at the coarsest scale.
- Decoder: at each scale a *strengthen-operate-subtract* (SOS) boosting module,
  ``j_n = G(i_n + up(j_{n+1})) - up(j_{n+1})``, followed by a DFF module fusing every earlier (coarser)
  decoder feature.

Departures from the released code, all size/detail choices: a 3x3 stem instead of 11x11, stride-2 transposed
convolutions of kernel 4 for up-sampling (the input is padded to a multiple of ``2**levels`` so sizes match
exactly), and the network predicts a residual (the shared convention of :class:`RestorationNet`).
"""

from __future__ import annotations

import torch
from torch import nn

from fairweather.contracts.config.model import MSBDNConfig

from .common import RestorationNet


class ResidualBlock(nn.Module):
    """``x + conv(prelu(conv(x)))`` at constant channels and resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.PReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def residual_group(channels: int, blocks: int) -> nn.Sequential:
    return nn.Sequential(*(ResidualBlock(channels) for _ in range(blocks)))


def down_step(in_ch: int) -> nn.Sequential:
    """Halve the resolution, double the channels: ``(N, C, H, W) -> (N, 2C, H/2, W/2)``."""
    return nn.Sequential(nn.Conv2d(in_ch, 2 * in_ch, 3, stride=2, padding=1), nn.PReLU())


def up_step(in_ch: int) -> nn.Sequential:
    """Double the resolution, halve the channels: ``(N, C, H, W) -> (N, C/2, 2H, 2W)``."""
    return nn.Sequential(nn.ConvTranspose2d(in_ch, in_ch // 2, 4, stride=2, padding=1), nn.PReLU())


class DenseFeatureFusion(nn.Module):
    """DFF: correct a feature with back-projected errors against the features of ``num_prev`` other scales.

    ``direction="encoder"``: the current feature (``channels``, scale s) is compared with finer features at
    scales s-1, s-2, ... (``channels/2**t`` channels, ``2**t`` times larger). ``direction="decoder"``: with
    coarser features at scales s+1, s+2, ... (``channels*2**t`` channels, ``2**t`` times smaller).

    For the t-th other feature ``f_t`` (nearest scale first):
        ``cur = cur + back_t(f_t - toward_t(cur))``
    where ``toward_t`` projects to ``f_t``'s scale and ``back_t`` projects the error back. The projection steps
    are shared across t (``toward_t`` = the first t steps), as in the released MSBDN, which keeps the parameter
    count linear in the number of scales.
    """

    def __init__(self, channels: int, num_prev: int, direction: str):
        super().__init__()
        if direction not in ("encoder", "decoder"):
            raise ValueError(
                f"DenseFeatureFusion: direction must be 'encoder' or 'decoder', got {direction!r}"
            )
        toward, back = [], []
        for step in range(num_prev):
            if direction == "encoder":  # toward finer scales: up-sample, halve channels
                ch = channels // 2**step
                toward.append(up_step(ch))
                back.append(down_step(ch // 2))
            else:  # toward coarser scales: down-sample, double channels
                ch = channels * 2**step
                toward.append(down_step(ch))
                back.append(up_step(2 * ch))
        self.toward = nn.ModuleList(toward)
        self.back = nn.ModuleList(back)

    def forward(self, x: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
        """``x``: ``(N, C, H, W)``; ``others``: features of the other scales, nearest scale first."""
        if len(others) != len(self.toward):
            raise ValueError(
                f"DenseFeatureFusion expects {len(self.toward)} other features, got {len(others)}"
            )
        for t, other in enumerate(others, start=1):
            projected = x
            for step in self.toward[:t]:
                projected = step(projected)
            error = other - projected
            for step in reversed(self.back[:t]):
                error = step(error)
            x = x + error
        return x


class MSBDN(RestorationNet):
    """Multi-scale boosted decoder with dense feature fusion. Input/output ``(N, 3, H, W)`` in [0, 1]."""

    def __init__(self, cfg: MSBDNConfig):
        super().__init__()
        self.size_multiple = 2**cfg.levels
        chans = [cfg.width * 2**level for level in range(cfg.levels + 1)]
        self.stem = nn.Sequential(nn.Conv2d(3, cfg.width, 3, padding=1), nn.PReLU())
        self.enc_blocks = nn.ModuleList(residual_group(c, cfg.blocks_per_level) for c in chans[:-1])
        self.downs = nn.ModuleList(down_step(c) for c in chans[:-1])
        self.enc_fusions = nn.ModuleList(
            DenseFeatureFusion(chans[level], level, "encoder") for level in range(1, cfg.levels + 1)
        )
        self.bottleneck = residual_group(chans[-1], cfg.bottleneck_blocks)
        # Decoder modules are indexed by the scale they produce, finest (0) first.
        self.ups = nn.ModuleList(up_step(c) for c in chans[1:])
        self.boosters = nn.ModuleList(residual_group(c, cfg.blocks_per_level) for c in chans[:-1])
        self.dec_fusions = nn.ModuleList(
            DenseFeatureFusion(chans[level], cfg.levels - level, "decoder") for level in range(cfg.levels)
        )
        self.head = nn.Conv2d(cfg.width, 3, 3, padding=1)

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` with H, W multiples of ``2**levels`` -> residual ``(N, 3, H, W)``."""
        feat = self.stem(x)
        encoder = []  # encoder[l]: (N, width * 2**l, H / 2**l, W / 2**l)
        for level, down in enumerate(self.downs):
            feat = self.enc_blocks[level](feat)
            encoder.append(feat)
            feat = self.enc_fusions[level](down(feat), encoder[::-1])
        decoder = [feat + self.bottleneck(feat)]  # coarsest first
        for level in reversed(range(len(self.ups))):
            coarse = self.ups[level](decoder[-1])
            strengthened = encoder[level] + coarse
            boosted = self.boosters[level](strengthened) - coarse  # operate, then subtract
            decoder.append(self.dec_fusions[level](boosted, decoder[::-1]))
        return self.head(decoder[-1])
