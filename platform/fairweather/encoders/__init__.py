"""Frozen foundation encoders used by the losses and the CLIP-prior network: CLIP (open_clip), Depth Anything."""

from .clip import FrozenCLIP
from .depth import FrozenDepthEncoder

__all__ = ["FrozenCLIP", "FrozenDepthEncoder"]
