"""Frozen foundation encoders used by the losses and the CLIP-prior network: CLIP (open_clip), Depth Anything.

``FrozenModule`` and ``share_encoder`` are light; ``FrozenCLIP`` / ``FrozenDepthEncoder`` load on first access, so
code that only holds a shared encoder (losses, networks) does not pay open_clip's and transformers' import time.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .frozen import FrozenModule, share_encoder

if TYPE_CHECKING:
    from .clip import FrozenCLIP
    from .depth import FrozenDepthEncoder

__all__ = ["FrozenCLIP", "FrozenDepthEncoder", "FrozenModule", "share_encoder"]


def __getattr__(name: str) -> Any:
    if name == "FrozenCLIP":
        from .clip import FrozenCLIP

        return FrozenCLIP
    if name == "FrozenDepthEncoder":
        from .depth import FrozenDepthEncoder

        return FrozenDepthEncoder
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
