"""Build what one training process holds, from the config: frozen encoders, student, EMA teacher, prompts, loss.

The same function serves a Ray Train worker, the plain ``torch.distributed`` benchmark baseline and the tests, so
all of them train exactly the same objective. Encoders are loaded only when something needs them: CLIP for the
CLIP-prior network and the ``wpl`` / ``sem`` / ``srd`` terms, Depth Anything for ``feat``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fairweather.contracts.config import FairweatherConfig
from fairweather.losses import CompositeLoss, WeatherPrompts, build_composite_loss
from fairweather.models import build_model

from .ema import build_teacher
from .step import freeze_unread_heads


@dataclass
class TrainingParts:
    """The networks of one process. ``prompts`` is None unless ``loss.weights.wpl`` > 0."""

    model: nn.Module
    teacher: nn.Module
    loss: CompositeLoss
    clip: nn.Module | None
    depth: nn.Module | None
    prompts: WeatherPrompts | None


def needs_clip(cfg: FairweatherConfig) -> bool:
    weights = cfg.loss.weights
    return cfg.model.arch == "clip_prior" or any(weights.on(t) for t in ("wpl", "sem", "srd"))


def load_encoders(
    cfg: FairweatherConfig, device: torch.device, *, depth: bool = True
) -> tuple[nn.Module | None, nn.Module | None]:
    """``(clip, depth)`` on ``device``, each None when nothing in the config uses it (or ``depth=False``).

    Each encoder's module is imported only when it is used: CLIP's needs open_clip, which a run without CLIP terms
    (e.g. ``benchmarks/gpu_check.py`` on a machine without it) must not require.
    """
    cache = cfg.runtime.model_cache_dir
    clip = None
    if needs_clip(cfg):
        from fairweather.encoders import FrozenCLIP

        clip = FrozenCLIP.from_config(cfg.encoders.clip, cache).to(device)
    depth_encoder = None
    if depth and cfg.loss.weights.on("feat"):
        from fairweather.encoders import FrozenDepthEncoder

        depth_encoder = FrozenDepthEncoder.from_config(cfg.encoders.depth, cache).to(device)
    return clip, depth_encoder


def frozen_prompts(clip: nn.Module, context: torch.Tensor, context_len: int) -> WeatherPrompts:
    """Stage-1 prompts rebuilt from their learned context ``(4, context_len, D)`` and frozen for stage 2."""
    prompts = WeatherPrompts(clip, context_len).to(context.device)
    with torch.no_grad():
        prompts.context.copy_(context)
    return prompts.freeze()


def memory_format(cfg: FairweatherConfig) -> torch.memory_format:
    """The layout the network trains and restores in: channels-last when ``train.channels_last``, else contiguous."""
    return torch.channels_last if cfg.train.channels_last else torch.contiguous_format


def build_training_parts(
    cfg: FairweatherConfig, device: torch.device, prompt_context: torch.Tensor | None = None
) -> TrainingParts:
    """Encoders, student (seeded by ``runtime.seed``, so every rank starts from the same weights), teacher, loss.

    prompt_context: the stage-1 result, required when ``loss.weights.wpl`` > 0.
    """
    clip, depth = load_encoders(cfg, device)
    prompts = None
    if cfg.loss.weights.on("wpl"):
        if prompt_context is None:
            raise ValueError("loss.weights.wpl > 0 needs the stage-1 weather prompts (prompt_context)")
        prompts = frozen_prompts(clip, prompt_context.to(device), cfg.loss.prompt_context_len)
    torch.manual_seed(cfg.runtime.seed)
    # The training crop sets TLC's window at inference (models.tlc): the network then sees at test time the
    # statistics of the crop-sized areas it was trained on.
    model = build_model(cfg.model, clip, train_crop_size=cfg.train.crop_size).to(device)
    model.use_memory_format(memory_format(cfg))
    teacher = build_teacher(cfg.model, model, clip, train_crop_size=cfg.train.crop_size)
    loss = build_composite_loss(cfg.loss, clip=clip, depth=depth, prompts=prompts).to(device)
    freeze_unread_heads(model, loss)
    return TrainingParts(model, teacher, loss, clip, depth, prompts)


def load_teacher(cfg: FairweatherConfig, state: dict, device: torch.device) -> nn.Module:
    """The EMA teacher of a checkpoint ``state`` (:func:`fairweather.training.state.load_state`), in eval mode.

    Its TLC window (``model.tlc_base_size: 0``) follows the crop it was *trained* on, the one its stored config
    records: ``cfg`` may be another config given for restoring (``--config``), whose ``train.crop_size`` says
    nothing about this network."""
    clip = None
    if cfg.model.arch == "clip_prior":
        clip, _ = load_encoders(cfg, device, depth=False)
    trained_crop = (state.get("config") or {}).get("train", {}).get("crop_size", cfg.train.crop_size)
    teacher = build_model(cfg.model, clip, train_crop_size=trained_crop).to(device)
    teacher.use_memory_format(memory_format(cfg)).load_state_dict(state["teacher"])
    return teacher.eval()
