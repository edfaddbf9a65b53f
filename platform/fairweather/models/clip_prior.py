"""Tan et al. 2023's CLIP-prior restoration network: SAR encoder + CWP embedding fused by cross-attention.

No code is public, so dimensions and placement below are our design choices (sizes in ``CLIPPriorConfig``):

* U-Net layout. Level ``l`` runs at ``H / 2**l`` with ``width * 2**l`` channels; the encoder has ``levels``
  stride-2 down-samplings, the bottleneck is level ``levels``; inputs are padded to ``2**levels``.
* **SAR encoder** (Spatially-Adaptive Residual): every encoder and bottleneck block is
  ``out = x + g * body(x)`` with ``g = sigmoid(gate(x))`` of shape ``(N, 1, h, w)``: a learned spatial map that
  lets the block write its residual only where the image is degraded. The gated residual ``g * body(x)`` of the
  *last bottleneck* block (the deepest, most semantic one, closest to CLIP's coarse patch grid) is what CLIP-SRD
  supervises: a 1x1 conv head (``srd_head``, part of this network so the optimiser trains it) projects it to CLIP's
  token width and adaptive average pooling resamples it to CLIP's patch grid (over the centred square that CLIP's
  shortest-side-resize + centre-crop preprocessing sees, so SRD compares the same image region).
* **CWP embedding** (CLIP Weather Prior): the frozen CLIP's patch tokens ``(N, L, C)`` and/or global embedding
  ``(N, D)`` of the input (sample-specific prior), each linearly projected to ``prior_dim``, concatenated with
  ``prior_tokens`` learnable tokens (distribution-specific prior) and layer-normed -> ``(N, T, prior_dim)``.
* **Fusion**: at the bottleneck and every decoder level ``l >= prior_min_level`` a pre-norm cross-attention block
  adds ``attn(q=features, k=v=prior)`` to the features (decoder pixels are the queries). Full resolution is skipped
  by default: attention over every pixel is the costliest and fine detail there is not weather semantics.

The CLIP encoder is shared and frozen: it is held with :func:`~fairweather.encoders.frozen.share_encoder`, so it is
*not* a registered submodule. Its weights never appear in ``state_dict()``/``parameters()`` (checkpoints and
optimisers see only this network), deep copies (``AveragedModel``) share it, and ``.to(device)`` does not move it:
whoever created the CLIP places it on the input's device, once for every network and loss that shares it.

The SRD side outputs are computed only by ``forward(x, return_aux=True)``; ``srd_head`` is this network's
``aux_heads`` (call ``freeze_aux_heads()`` before DDP when no loss reads them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.contracts.config.model import CLIPPriorConfig
from fairweather.encoders.frozen import share_encoder
from fairweather.models.common import LayerNorm2d, RestorationNet


def _conv_body(channels: int) -> nn.Sequential:
    """The residual branch shared by SAR and decoder blocks: conv3x3 - GELU - conv3x3, ``(N, C, h, w)`` -> same."""
    return nn.Sequential(
        nn.Conv2d(channels, channels, 3, padding=1), nn.GELU(), nn.Conv2d(channels, channels, 3, padding=1)
    )


class SARBlock(nn.Module):
    """Spatially-adaptive residual block: ``x + g * body(x)`` with a learned gate ``g`` in [0, 1], ``(N, 1, h, w)``."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = _conv_body(channels)
        hidden = max(channels // 2, 1)
        self.gate = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1), nn.GELU(), nn.Conv2d(hidden, 1, 1), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(N, C, h, w)`` -> ``(out, gated_residual, gate)`` with shapes ``(N, C, h, w)``, same, ``(N, 1, h, w)``."""
        gate = self.gate(x)
        residual = gate * self.body(x)
        return x + residual, residual, gate


class ResBlock(nn.Module):
    """Plain residual block of the decoder: ``x + body(x)``, ``(N, C, h, w)`` -> same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = _conv_body(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class PriorCrossAttention(nn.Module):
    """Pre-norm cross-attention from decoder pixels to prior tokens, added residually.

    ``x``: ``(N, C, h, w)`` queries; ``prior``: ``(N, T, prior_dim)`` keys/values -> ``(N, C, h, w)``.
    """

    def __init__(self, channels: int, prior_dim: int, heads: int):
        super().__init__()
        self.norm = LayerNorm2d(channels)
        self.attn = nn.MultiheadAttention(channels, heads, kdim=prior_dim, vdim=prior_dim, batch_first=True)

    def forward(self, x: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        queries = self.norm(x).flatten(2).transpose(1, 2)  # (N, h*w, C)
        fused, _ = self.attn(queries, prior, prior, need_weights=False)
        return x + fused.transpose(1, 2).reshape(n, c, h, w)


def _grid_hw(grid_size: int | tuple[int, int]) -> tuple[int, int]:
    """CLIP's patch grid as ``(gh, gw)``; open_clip reports a tuple, some wrappers an int."""
    return (grid_size, grid_size) if isinstance(grid_size, int) else (int(grid_size[0]), int(grid_size[1]))


class CLIPPriorNet(RestorationNet):
    """SAR encoder-decoder with a CWP prior; see the module docstring for the design.

    Args:
        cfg: network sizes.
        clip: frozen CLIP encoder (``fairweather.encoders.clip.FrozenCLIP`` or a ``FrozenModule`` with
            ``encode_image_and_tokens`` ``(N,3,H,W) -> ((N, D), (N, L, C))`` and attributes ``embed_dim`` D,
            ``token_dim`` C, ``grid_size`` (gh, gw)). Shared, not owned (not trained, not saved).

    ``forward(x)`` -> ``(N, 3, H, W)``; ``forward(x, return_aux=True)`` -> ``(restored, aux)`` with
    ``aux["sar_residual"]``: ``(N, clip.token_dim, gh, gw)`` projected SAR residual for CLIP-SRD and
    ``aux["sar_gate"]``: ``(N, 1, h, w)`` in [0, 1], the gate of the last bottleneck block (``h = ceil(H / 2**levels)``).
    """

    aux_heads = ("srd_head",)

    def __init__(self, cfg: CLIPPriorConfig, clip: nn.Module):
        super().__init__()
        if clip is None:
            raise ValueError("CLIPPriorNet needs a frozen CLIP encoder (clip=None given)")
        for attr in ("encode_image_and_tokens", "embed_dim", "token_dim", "grid_size"):
            if not hasattr(clip, attr):
                raise TypeError(f"CLIPPriorNet: clip of type {type(clip).__name__} has no attribute {attr!r}")
        share_encoder(self, "clip", clip)  # not a submodule: see the module docstring
        self.cfg = cfg
        self.size_multiple = 2**cfg.levels
        self.grid_hw = _grid_hw(clip.grid_size)
        widths = [cfg.width * 2**level for level in range(cfg.levels + 1)]

        self.stem = nn.Conv2d(3, cfg.width, 3, padding=1)
        self.encoder = nn.ModuleList(
            nn.ModuleList(SARBlock(widths[level]) for _ in range(cfg.blocks_per_level))
            for level in range(cfg.levels)
        )
        self.down = nn.ModuleList(
            nn.Conv2d(widths[lv], widths[lv + 1], 4, stride=2, padding=1) for lv in range(cfg.levels)
        )
        self.bottleneck = nn.ModuleList(SARBlock(widths[-1]) for _ in range(cfg.blocks_per_level))
        self.srd_head = nn.Conv2d(widths[-1], int(clip.token_dim), 1)  # read only by CLIP-SRD: see aux_heads

        # CWP embedding: sample-specific projections of CLIP features + distribution-specific learnable tokens.
        self.patch_proj = nn.Linear(int(clip.token_dim), cfg.prior_dim) if cfg.use_patch_tokens else None
        self.global_proj = nn.Linear(int(clip.embed_dim), cfg.prior_dim) if cfg.use_global_embedding else None
        self.prior_tokens = nn.Parameter(0.02 * torch.randn(cfg.prior_tokens, cfg.prior_dim))
        self.prior_norm = nn.LayerNorm(cfg.prior_dim)

        # Decoder, coarsest first: index i handles level ``levels - 1 - i``; cross-attention keyed by level.
        self.prior_attn = nn.ModuleDict(
            {
                str(level): PriorCrossAttention(widths[level], cfg.prior_dim, cfg.attention_heads)
                for level in range(cfg.prior_min_level, cfg.levels + 1)
            }
        )
        self.up = nn.ModuleList(
            nn.Sequential(nn.Conv2d(widths[lv + 1], widths[lv] * 4, 1), nn.PixelShuffle(2))
            for lv in reversed(range(cfg.levels))
        )
        self.fuse = nn.ModuleList(
            nn.Conv2d(2 * widths[lv], widths[lv], 1) for lv in reversed(range(cfg.levels))
        )
        self.decoder = nn.ModuleList(
            nn.Sequential(*(ResBlock(widths[lv]) for _ in range(cfg.blocks_per_level)))
            for lv in reversed(range(cfg.levels))
        )
        self.head = nn.Conv2d(cfg.width, 3, 3, padding=1)

    def _attend(self, level: int, feats: torch.Tensor, prior: torch.Tensor) -> torch.Tensor:
        """Fuse the prior into level ``level``'s features if that level has cross-attention (``prior_min_level``)."""
        if str(level) not in self.prior_attn:
            return feats
        return self.prior_attn[str(level)](feats, prior)

    def weather_prior(self, x: torch.Tensor) -> torch.Tensor:
        """CWP embedding of ``x``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, T, prior_dim)`` prior tokens.

        CLIP runs without gradient: it is frozen and ``x`` is data, so nothing upstream of it could learn.
        """
        parts = []
        if self.patch_proj is not None or self.global_proj is not None:
            with torch.no_grad():  # one CLIP forward gives both the embedding and the patch tokens
                embedding, patch = self.clip.encode_image_and_tokens(x)
            if self.patch_proj is not None:
                parts.append(self.patch_proj(patch.to(x.dtype)))
            if self.global_proj is not None:
                parts.append(self.global_proj(embedding.to(x.dtype)).unsqueeze(1))
        if self.cfg.prior_tokens:
            parts.append(self.prior_tokens.unsqueeze(0).expand(x.shape[0], -1, -1))
        return self.prior_norm(torch.cat(parts, dim=1))

    def _restore(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Padded ``(N, 3, Hp, Wp)`` in [0, 1] -> ``(residual (N, 3, Hp, Wp), gated SAR residual (N, C, hb, wb),
        gate (N, 1, hb, wb))`` of the last bottleneck block, ``hb = Hp / 2**levels``."""
        prior = self.weather_prior(x)
        feats = self.stem(x)
        skips = []
        for blocks, down in zip(self.encoder, self.down, strict=True):
            for block in blocks:
                feats, _, _ = block(feats)
            skips.append(feats)
            feats = down(feats)
        for block in self.bottleneck:
            feats, sar_residual, sar_gate = block(feats)
        feats = self._attend(self.cfg.levels, feats, prior)
        for level, up, fuse, blocks, skip in zip(
            reversed(range(self.cfg.levels)), self.up, self.fuse, self.decoder, reversed(skips), strict=True
        ):
            feats = blocks(fuse(torch.cat([up(feats), skip], dim=1)))
            feats = self._attend(level, feats, prior)
        return self.head(feats), sar_residual, sar_gate

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        """Padded ``(N, 3, Hp, Wp)`` in [0, 1] -> residual ``(N, 3, Hp, Wp)``; the SRD head is not run."""
        return self._restore(x)[0]

    def predict_residual_and_aux(
        self, x: torch.Tensor, size: tuple[int, int]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Padded ``(N, 3, Hp, Wp)`` in [0, 1] -> residual ``(N, 3, Hp, Wp)`` and the SRD side outputs
        (``size`` = unpadded (H, W); see the class docstring for the aux shapes)."""
        residual, sar_residual, sar_gate = self._restore(x)
        # Drop the bottom/right cells that only see padding, then keep the centred square: FrozenCLIP.preprocess
        # resizes the shortest side and centre-crops, so CLIP's patch grid covers exactly that square of the image.
        h, w = (-(-side // self.size_multiple) for side in size)
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        seen_by_clip = sar_residual[..., top : top + side, left : left + side]
        # Pool first, then project: the 1x1 head is linear, so the order does not matter and pooling first is cheaper.
        projected = self.srd_head(F.adaptive_avg_pool2d(seen_by_clip, self.grid_hw))
        return residual, {"sar_residual": projected, "sar_gate": sar_gate[..., :h, :w]}
