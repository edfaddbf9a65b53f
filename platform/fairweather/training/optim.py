"""AdamW with a linear warm-up and a cosine decay, from ``TrainConfig``."""

from __future__ import annotations

import math

import torch
from torch import nn

from fairweather.contracts.config.train import TrainConfig


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters; no weight decay on biases and norm gains (1-d tensors), as usual for
    conv/transformer restorers, where decaying a gain only fights the normalisation."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=cfg.lr, betas=(0.9, 0.999))


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` at ``step``: linear from ~0 to 1 over the warm-up, then cosine to ``min_lr_ratio``
    at the run's last step (``rounds * iterations_per_round``)."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(1, cfg.total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig) -> torch.optim.lr_scheduler.LambdaLR:
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, cfg))


def ema_decay_at(step: int, decay: float) -> float:
    """The EMA decay used after ``step``: ``min(decay, (1 + step) / (10 + step))``, so early teachers follow the
    student closely instead of averaging in the random initialisation (a 600-step run with 0.999 would otherwise
    keep ~55 % of its initial weights)."""
    return min(decay, (1 + step) / (10 + step))
