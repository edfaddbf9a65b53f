"""Restoration network choice and per-architecture sizes.

``arch`` picks the network; only the matching sub-section is read. Sizes default to small CPU-friendly values;
the ``paper`` profile sets paper-size values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .loader import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, check_ranges


def _check_restormer_like(section: str, width: int, blocks: tuple[int, ...], heads: tuple[int, ...]) -> None:
    """Restormer-style nets have 4 levels of width ``width * 2**level``; each must split evenly into heads."""
    if len(blocks) != 4 or len(heads) != 4:
        raise ValueError(
            f"{section}.blocks and {section}.heads must have 4 entries, got {blocks} and {heads}"
        )
    for level, n_heads in enumerate(heads):
        # Level 0 runs at width in the encoder and 2 * width in the decoder; level l > 0 at width * 2**l.
        for channels in (width * 2**level, 2 * width) if level == 0 else (width * 2**level,):
            if n_heads <= 0 or channels % n_heads:
                raise ValueError(f"{section}.heads[{level}]={n_heads} does not divide {channels} channels")


@dataclass(frozen=True)
class MSBDNConfig:
    """Dong et al. 2020. Paper size: width=16, levels=4, blocks_per_level=3, bottleneck_blocks=18 (~31M params)."""

    #: Channels at full resolution; level ``l`` has ``width * 2**l`` channels.
    width: int = 16
    #: Number of stride-2 down-samplings (each halves the resolution); inputs are padded to ``2**levels``.
    levels: int = 3
    #: Residual blocks per encoder level and per decoder boosting module.
    blocks_per_level: int = 1
    #: Residual blocks in the bottleneck.
    bottleneck_blocks: int = 2

    def __post_init__(self) -> None:
        check_ranges(
            self,
            width=AT_LEAST_ONE,
            levels=AT_LEAST_ONE,
            blocks_per_level=AT_LEAST_ONE,
            bottleneck_blocks=NON_NEGATIVE,
        )


@dataclass(frozen=True)
class RestormerConfig:
    """Zamir et al. 2022. Paper size: width=48, blocks=(4,6,6,8), heads=(1,2,4,8), refinement_blocks=4,
    ffn_expansion=2.66 (~26M params)."""

    #: Channels of level 1; level ``l`` has ``width * 2**l`` channels.
    width: int = 16
    #: Transformer blocks per level (4 levels, 3 down-samplings).
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    #: Attention heads per level.
    heads: tuple[int, ...] = (1, 2, 4, 8)
    #: Transformer blocks at full resolution after the decoder.
    refinement_blocks: int = 1
    #: Hidden-channel factor of the gated-Dconv feed-forward network.
    ffn_expansion: float = 2.66

    def __post_init__(self) -> None:
        check_ranges(
            self,
            width=AT_LEAST_ONE,
            blocks=NON_NEGATIVE,
            refinement_blocks=NON_NEGATIVE,
            ffn_expansion=POSITIVE,
        )
        _check_restormer_like("restormer", self.width, self.blocks, self.heads)


@dataclass(frozen=True)
class NAFNetConfig:
    """Chen et al. 2022. Paper size (GoPro, NAFNet-width32): width=32, encoder_blocks=(1,1,1,28), middle_blocks=1,
    decoder_blocks=(1,1,1,1) (~17M params); SIDD variant: width=64, (2,2,4,8), 12, (2,2,2,2)."""

    #: Channels at full resolution, doubled at each down-sampling.
    width: int = 16
    #: NAF blocks per encoder level; one down-sampling per entry.
    encoder_blocks: tuple[int, ...] = (1, 1, 1)
    #: NAF blocks at the lowest resolution.
    middle_blocks: int = 1
    #: NAF blocks per decoder level (same count of levels as the encoder), lowest resolution first.
    decoder_blocks: tuple[int, ...] = (1, 1, 1)
    #: Weather-conditioned (FiLM after every stage, :mod:`fairweather.models.conditioning`): the network is told
    #: whether it restores rain, haze or snow (from each pair's, label's or test set's weather).
    weather_film: bool = False

    def __post_init__(self) -> None:
        check_ranges(
            self,
            width=AT_LEAST_ONE,
            encoder_blocks=NON_NEGATIVE,
            middle_blocks=NON_NEGATIVE,
            decoder_blocks=NON_NEGATIVE,
        )
        if len(self.encoder_blocks) != len(self.decoder_blocks):
            raise ValueError(
                f"nafnet.encoder_blocks {self.encoder_blocks} and nafnet.decoder_blocks {self.decoder_blocks} "
                "must have the same length"
            )


@dataclass(frozen=True)
class PromptIRConfig:
    """Potlapalli et al. 2023. Paper size: width=48, blocks=(4,6,6,8), heads=(1,2,4,8), refinement_blocks=4,
    ffn_expansion=2.66, prompt_len=5, prompt_size=64, prompt_dims=(64,128,320) (~36M params)."""

    #: Channels of level 1 of the Restormer backbone.
    width: int = 16
    #: Transformer blocks per level (4 levels).
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    #: Attention heads per level.
    heads: tuple[int, ...] = (1, 2, 4, 8)
    #: Transformer blocks at full resolution after the decoder.
    refinement_blocks: int = 1
    #: Hidden-channel factor of the gated-Dconv feed-forward network.
    ffn_expansion: float = 2.66
    #: Number of learnable prompt components mixed by each prompt-generation block.
    prompt_len: int = 5
    #: Spatial size of the finest decoder level's prompts; halved at each coarser level.
    prompt_size: int = 16
    #: Prompt channels at decoder levels 1, 2, 3 (finest first).
    prompt_dims: tuple[int, ...] = (16, 32, 64)

    def __post_init__(self) -> None:
        check_ranges(
            self,
            width=AT_LEAST_ONE,
            blocks=NON_NEGATIVE,
            refinement_blocks=NON_NEGATIVE,
            ffn_expansion=POSITIVE,
            prompt_len=AT_LEAST_ONE,
            prompt_size=AT_LEAST_ONE,
            prompt_dims=AT_LEAST_ONE,
        )
        _check_restormer_like("promptir", self.width, self.blocks, self.heads)
        if len(self.prompt_dims) != 3:
            raise ValueError(f"promptir.prompt_dims must be 3 positive ints, got {self.prompt_dims}")
        # The prompt-interaction blocks run on [features, prompts] with heads[2] heads at every level.
        for level, prompt_dim in enumerate(self.prompt_dims, start=1):
            channels = self.width * 2**level + prompt_dim
            if channels % self.heads[2]:
                raise ValueError(
                    f"promptir: heads[2]={self.heads[2]} does not divide the {channels} channels of "
                    f"prompt-interaction level {level} (width * 2**{level} + prompt_dims[{level - 1}])"
                )


@dataclass(frozen=True)
class CLIPPriorConfig:
    """Tan et al. 2023 (no public code; sizes are our choice). Suggested paper-ish size: width=32, levels=3,
    blocks_per_level=2, prior_tokens=16, prior_dim=256, attention_heads=4, prior_min_level=1 (~6.5M params
    with ViT-B/32 tokens)."""

    #: Channels at full resolution; encoder/decoder level ``l`` has ``width * 2**l`` channels.
    width: int = 16
    #: Number of stride-2 down-samplings; inputs are padded to ``2**levels``; the bottleneck is level ``levels``.
    levels: int = 3
    #: SAR blocks per encoder level and in the bottleneck; plain residual blocks per decoder level.
    blocks_per_level: int = 1
    #: Learnable distribution-specific prior tokens fused with the CLIP image feature.
    prior_tokens: int = 8
    #: Width of the CWP prior tokens (CLIP features are projected to it); keys/values of the cross-attention.
    prior_dim: int = 32
    #: Heads of each decoder cross-attention; must divide ``width * 2**l`` at every attended level ``l``.
    attention_heads: int = 2
    #: Use CLIP's spatial patch tokens of the input as sample-specific prior tokens.
    use_patch_tokens: bool = True
    #: Use CLIP's global image embedding of the input as one more sample-specific prior token.
    use_global_embedding: bool = True
    #: Finest decoder level with prior cross-attention (0 = full resolution, ``levels`` = bottleneck only).
    prior_min_level: int = 1

    def __post_init__(self) -> None:
        check_ranges(
            self,
            width=AT_LEAST_ONE,
            levels=AT_LEAST_ONE,
            blocks_per_level=AT_LEAST_ONE,
            prior_tokens=NON_NEGATIVE,
            prior_dim=AT_LEAST_ONE,
            attention_heads=AT_LEAST_ONE,
        )
        if not (self.use_patch_tokens or self.use_global_embedding or self.prior_tokens):
            raise ValueError(
                "clip_prior: the CWP prior is empty (no patch tokens, no global embedding, 0 tokens)"
            )
        if not 0 <= self.prior_min_level <= self.levels:
            raise ValueError(
                f"clip_prior.prior_min_level must be in [0, {self.levels}], got {self.prior_min_level}"
            )
        for level in range(self.prior_min_level, self.levels + 1):
            if (self.width * 2**level) % self.attention_heads:
                raise ValueError(
                    f"clip_prior.attention_heads={self.attention_heads} does not divide the "
                    f"{self.width * 2**level} channels of decoder level {level}"
                )


@dataclass(frozen=True)
class ModelConfig:
    arch: Literal["msbdn", "restormer", "nafnet", "promptir", "clip_prior"] = "msbdn"
    msbdn: MSBDNConfig = field(default_factory=MSBDNConfig)
    restormer: RestormerConfig = field(default_factory=RestormerConfig)
    nafnet: NAFNetConfig = field(default_factory=NAFNetConfig)
    promptir: PromptIRConfig = field(default_factory=PromptIRConfig)
    clip_prior: CLIPPriorConfig = field(default_factory=CLIPPriorConfig)
    #: Tiled inference: images larger than ``tile`` pixels on a side are restored in overlapping tiles.
    tile: int = 512
    #: Pixels shared by neighbouring tiles, blended with a raised-cosine window to hide seams.
    tile_overlap: int = 32
    #: Test-time Local Converter (Chu et al., ECCV 2022; NAFNet's ``Local_Base``): at inference (eval mode) the
    #: whole-map statistics (NAFNet's channel-attention pool, PromptIR's prompt-weight pool, Restormer's and
    #: PromptIR's channel attention) summarise a ``tlc_base_size`` window around each position instead of the
    #: whole image or tile, as they did on the training crops, so tiles agree at their borders. Training never
    #: changes. MSBDN has no global statistic and is unaffected; CLIP-prior keeps its image-level CLIP prior.
    tlc: bool = True
    #: TLC window in input pixels; 0: 1.5 x the training crop (``train.crop_size``, the published choice),
    #: given to ``build_model(..., train_crop_size=...)``, else 1.5 x 256.
    tlc_base_size: int = 0

    def __post_init__(self) -> None:
        if self.tile <= 0 or not 0 <= self.tile_overlap < self.tile:
            raise ValueError(
                f"model: need tile > 0 and 0 <= tile_overlap < tile, got {self.tile}, {self.tile_overlap}"
            )
        if self.tlc_base_size < 0:
            raise ValueError(
                f"model.tlc_base_size must be >= 0 (0: 1.5 x train.crop_size), got {self.tlc_base_size}"
            )
