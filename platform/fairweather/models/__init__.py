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
from .tiling import restore_tiled, restore_tiled_uint8
from .tlc import configure_tlc, local_mean, tlc_base_size

#: ``train.crop_size``'s default: the TLC window is 1.5 x this when the caller does not give the training crop.
DEFAULT_TRAIN_CROP = 256


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


def build_model(cfg: ModelConfig, clip: Any = None, *, train_crop_size: int | None = None) -> RestorationNet:
    """Build the restoration network named by ``cfg.arch`` from its config section.

    ``clip`` is only used (and then required) by ``arch="clip_prior"``. ``train_crop_size`` (``train.crop_size``)
    sizes the Test-time Local Converter when ``model.tlc_base_size`` is 0 (1.5 x the crop; without it 1.5 x
    256); with ``model.tlc`` off the network pools globally at inference too. Training mode is never affected.
    """
    if not isinstance(cfg, ModelConfig):
        raise TypeError(f"build_model expects a ModelConfig, got {type(cfg).__name__}")
    if cfg.arch not in BUILDERS:
        raise ValueError(f"build_model: unknown arch {cfg.arch!r} (known: {', '.join(sorted(BUILDERS))})")
    net = BUILDERS[cfg.arch](cfg, clip)
    base = tlc_base_size(cfg.tlc_base_size, train_crop_size or DEFAULT_TRAIN_CROP) if cfg.tlc else 0
    configure_tlc(net, base)
    return net


__all__ = [
    "BUILDERS",
    "MSBDN",
    "NAFNet",
    "PromptIR",
    "RestorationNet",
    "Restormer",
    "build_model",
    "configure_tlc",
    "count_parameters",
    "crop",
    "local_mean",
    "pad_to_multiple",
    "restore_tiled",
    "restore_tiled_uint8",
    "tlc_base_size",
]
