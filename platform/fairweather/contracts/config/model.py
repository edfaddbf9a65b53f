"""Restoration network choice and per-architecture sizes.

``arch`` picks the network; only the matching sub-section is read. Sizes default to small CPU-friendly values;
the ``paper`` profile sets paper-size values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class MSBDNConfig:
    width: int = 16
    #: Number of scales (each halves the resolution).
    levels: int = 3
    #: Residual blocks in the bottleneck.
    bottleneck_blocks: int = 2


@dataclass(frozen=True)
class RestormerConfig:
    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    heads: tuple[int, ...] = (1, 2, 4, 8)
    refinement_blocks: int = 1
    ffn_expansion: float = 2.66


@dataclass(frozen=True)
class NAFNetConfig:
    width: int = 16
    encoder_blocks: tuple[int, ...] = (1, 1, 1)
    middle_blocks: int = 1
    decoder_blocks: tuple[int, ...] = (1, 1, 1)


@dataclass(frozen=True)
class PromptIRConfig:
    width: int = 16
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    heads: tuple[int, ...] = (1, 2, 4, 8)
    refinement_blocks: int = 1
    ffn_expansion: float = 2.66
    prompt_len: int = 5
    prompt_size: int = 16


@dataclass(frozen=True)
class CLIPPriorConfig:
    width: int = 16
    levels: int = 3
    blocks_per_level: int = 1
    #: Learnable distribution-specific prior tokens fused with the CLIP image feature.
    prior_tokens: int = 8
    attention_heads: int = 2


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
    tile_overlap: int = 32
