"""Loss terms and their weights. Paper A: L = L_sup + w1 L_ps + w2 L_wpl + w3 L_sem + w4 L_feat."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass(frozen=True)
class LossWeights:
    """Weight per named term; 0 skips the term entirely (no encoder forward). Tune sweeps ps/wpl/sem/feat."""

    sup: float = 1.0
    ps: float = 0.5  # w1 (reported default, unverified)
    wpl: float = 0.2  # w2
    sem: float = 0.05  # w3
    feat: float = 0.2  # w4
    srd: float = 0.0  # Tan et al.'s CLIP-SRD, only meaningful with model.arch=clip_prior


@dataclass(frozen=True)
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    pixel: Literal["l1", "charbonnier"] = "l1"
    charbonnier_eps: float = 1e-3
    #: Learnable context tokens per weather prompt (t_c, t_r, t_h, t_s), as in CLIP-LIT.
    prompt_context_len: int = 16
    #: Optimiser steps of stage-1 weather prompt learning (CLIP frozen, only the prompt context trains).
    prompt_fit_steps: int = 100
    #: Adam learning rate of the prompt context vectors in stage 1.
    prompt_fit_lr: float = 5e-3
    #: Weather-labelled images per stage-1 step.
    prompt_fit_batch_size: int = 16
