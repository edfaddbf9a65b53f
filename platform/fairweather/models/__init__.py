"""Restoration networks; all share the residual output convention of :class:`RestorationNet`.

:func:`build_model` turns a :class:`ModelConfig` into a network, choosing the constructor by ``cfg.arch`` from a
plain dict. The CLIP-prior network (Tan et al.) is imported lazily because it needs a CLIP model at construction.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fairweather.contracts.config.model import ModelConfig

from .common import RestorationNet, count_parameters, crop, pad_to_multiple
from .msbdn import MSBDN
from .nafnet import NAFNet
from .promptir import PromptIR
from .restormer import Restormer
from .tiling import restore_tiled


def _build_clip_prior(cfg: ModelConfig, clip: Any) -> RestorationNet:
    if clip is None:
        raise ValueError("build_model: arch 'clip_prior' needs a CLIP model; pass clip=<loaded CLIP encoder>")
    from .clip_prior import CLIPPriorNet  # lazy: only this arch depends on the CLIP encoder code

    return CLIPPriorNet(cfg.clip_prior, clip=clip)


#: arch name -> constructor taking (the whole model config, the optional CLIP model).
BUILDERS: dict[str, Callable[[ModelConfig, Any], RestorationNet]] = {
    "msbdn": lambda cfg, clip: MSBDN(cfg.msbdn),
    "restormer": lambda cfg, clip: Restormer(cfg.restormer),
    "nafnet": lambda cfg, clip: NAFNet(cfg.nafnet),
    "promptir": lambda cfg, clip: PromptIR(cfg.promptir),
    "clip_prior": _build_clip_prior,
}


def build_model(cfg: ModelConfig, clip: Any = None) -> RestorationNet:
    """Build the restoration network named by ``cfg.arch`` from its config section.

    ``clip`` is only used (and then required) by ``arch="clip_prior"``.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(cfg).__name__}")
    if cfg.arch not in BUILDERS:
        raise ValueError(f"build_model: unknown arch {cfg.arch!r} (known: {', '.join(sorted(BUILDERS))})")
    return BUILDERS[cfg.arch](cfg, clip)


__all__ = [
    "BUILDERS",
    "MSBDN",
    "NAFNet",
    "PromptIR",
    "RestorationNet",
    "Restormer",
    "build_model",
    "count_parameters",
    "crop",
    "pad_to_multiple",
    "restore_tiled",
]
