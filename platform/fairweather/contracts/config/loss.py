"""Loss terms, their weights and the domains they act on. Paper A: L = L_sup + w1 L_ps + w2 L_wpl + w3 L_sem + w4 L_feat."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Literal

from .loader import AT_LEAST_ONE, LEARNING_RATE, NON_NEGATIVE, POSITIVE, FieldRangeError, check_ranges

#: The two kinds of training images: labeled synthetic ``paired`` data and the unlabeled ``real`` pool.
Domain = Literal["paired", "real"]


@dataclass(frozen=True)
class LossWeights:
    """Weight per named term; 0 skips the term entirely (no encoder forward). Tune sweeps ps/wpl/sem/feat."""

    sup: float = 1.0
    ps: float = 0.5  # w1 (reported default, unverified)
    wpl: float = 0.2  # w2
    sem: float = 0.05  # w3
    feat: float = 0.2  # w4
    srd: float = 0.0  # Tan et al.'s CLIP-SRD, only meaningful with model.arch=clip_prior

    def __post_init__(self) -> None:
        check_ranges(self, **{f.name: NON_NEGATIVE for f in dataclasses.fields(self)})

    def on(self, term: str) -> bool:
        """Whether ``term`` takes part in the loss: the one place that decides it. A term that is off is not built,
        its encoders are not loaded and the stages it needs (e.g. weather prompts for ``wpl``) do not run."""
        return getattr(self, term) > 0


@dataclass(frozen=True)
class LossDomains:
    """The domains each term acts on (same keys as :class:`LossWeights`), e.g. ``loss.domains.wpl=[paired, real]``.

    Defaults follow METHOD.md: L_sup on the labeled pairs; L_ps, L_wpl, L_sem and L_feat on the real images;
    CLIP-SRD on the pairs, since its soft target needs the clean image. A term also skips a batch that lacks its
    inputs (no pseudo-label yet, no descriptions).
    """

    sup: tuple[Domain, ...] = ("paired",)
    ps: tuple[Domain, ...] = ("real",)
    wpl: tuple[Domain, ...] = ("real",)
    sem: tuple[Domain, ...] = ("real",)
    feat: tuple[Domain, ...] = ("real",)
    srd: tuple[Domain, ...] = ("paired",)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            domains = getattr(self, f.name)
            if not domains or len(set(domains)) != len(domains):
                # An empty list would silently disable a weighted term: a zero weight says that explicitly.
                raise FieldRangeError(
                    f.name,
                    f"must list each of 'paired' / 'real' at most once, and at least one, got {domains!r}",
                )


@dataclass(frozen=True)
class LossConfig:
    weights: LossWeights = field(default_factory=LossWeights)
    domains: LossDomains = field(default_factory=LossDomains)
    pixel: Literal["l1", "charbonnier"] = "l1"
    charbonnier_eps: float = 1e-3
    #: Learnable context tokens per weather prompt (t_c, t_r, t_h, t_s), as in CLIP-LIT.
    prompt_context_len: int = 16
    #: Optimiser steps of stage-1 weather prompt learning (CLIP frozen, only the prompt context trains).
    prompt_fit_steps: int = 100
    #: Adam learning rate of the prompt context vectors in stage 1; in (0, 1].
    prompt_fit_lr: float = 5e-3
    #: Weather-labelled images per stage-1 step.
    prompt_fit_batch_size: int = 16

    def __post_init__(self) -> None:
        check_ranges(
            self,
            charbonnier_eps=POSITIVE,
            prompt_context_len=AT_LEAST_ONE,
            prompt_fit_steps=NON_NEGATIVE,
            prompt_fit_lr=LEARNING_RATE,
            prompt_fit_batch_size=AT_LEAST_ONE,
        )
