"""Frozen foundation encoders: CLIP (open_clip) and Depth Anything (transformers)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .loader import AT_LEAST_ONE, check_ranges


@dataclass(frozen=True)
class CLIPEncoderConfig:
    #: open_clip model name (``tiny:clip`` builds a random tiny model locally).
    model_name: str = "ViT-B-32"
    #: open_clip pretrained tag (ignored for ``tiny:`` models).
    pretrained: str = "openai"


@dataclass(frozen=True)
class DepthEncoderConfig:
    #: Hugging Face id or local folder (``tiny:depth-anything`` builds a random tiny model locally).
    model_id: str = "depth-anything/Depth-Anything-V2-Small-hf"
    #: Shorter side (pixels) the image is resized to before the encoder (Depth Anything uses 518).
    input_size: int = 518

    def __post_init__(self) -> None:
        check_ranges(self, input_size=AT_LEAST_ONE)


@dataclass(frozen=True)
class EncodersConfig:
    clip: CLIPEncoderConfig = field(default_factory=CLIPEncoderConfig)
    depth: DepthEncoderConfig = field(default_factory=DepthEncoderConfig)
