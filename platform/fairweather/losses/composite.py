"""The training objective as a list of named, weighted terms summed generically.

Paper A: ``L = L_sup + w1·L_ps + w2·L_wpl + w3·L_sem + w4·L_feat`` (+ Tan et al.'s CLIP-SRD as ``srd``). Term names
are the keys of ``LossConfig.weights`` (``sup``, ``ps``, ``wpl``, ``sem``, ``feat``, ``srd``), so a Tune search space
over ``loss.weights.*`` addresses exactly these terms. A zero weight means the term is never built: no CLIP or
Depth Anything forward is spent on it. A term whose inputs a batch lacks (no target on real images, no
pseudo-label yet) is skipped for that batch, not counted as zero.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from fairweather.contracts.config.loss import LossConfig


@dataclass
class LossContext:
    """Everything a loss term may read for one batch. Images are ``(N, 3, H, W)`` in [0, 1].

    restored: ŷ, the network output.  degraded: the network input.  target: clean target (labeled pairs) or None.
    pseudo_label: current pseudo-labels (real images) or None; has_pseudo: ``(N,)`` bool, which rows have one.
    d_pos / d_neg: N clear-weather / original descriptions (real images) or None.
    aux: side outputs of the network, e.g. ``"sar_residual"`` for CLIP-SRD.
    """

    restored: torch.Tensor
    degraded: torch.Tensor
    target: torch.Tensor | None = None
    pseudo_label: torch.Tensor | None = None
    has_pseudo: torch.Tensor | None = None
    d_pos: Sequence[str] | None = None
    d_neg: Sequence[str] | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class LossTerm(Protocol):
    """One named term: ``applies(ctx)`` says whether the batch has its inputs; calling it returns a scalar."""

    name: str

    def applies(self, ctx: LossContext) -> bool: ...

    def __call__(self, ctx: LossContext) -> torch.Tensor: ...


class CompositeLoss(nn.Module):
    """Weighted sum of terms. ``forward(ctx) -> (total, {name: value})``; values are detached, for logging."""

    def __init__(self, terms: Sequence[tuple[LossTerm, float]]):
        super().__init__()
        names = [term.name for term, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate loss term names: {names}")
        self.terms = nn.ModuleList([term for term, _ in terms])  # type: ignore[misc]
        self.weights = {term.name: float(weight) for term, weight in terms}

    @property
    def names(self) -> list[str]:
        return [term.name for term in self.terms]

    def forward(self, ctx: LossContext) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        total = ctx.restored.new_zeros(())
        values: dict[str, torch.Tensor] = {}
        for term in self.terms:
            if not term.applies(ctx):
                continue
            value = term(ctx)
            values[term.name] = value.detach()
            total = total + self.weights[term.name] * value
        return total, values


def build_composite_loss(
    cfg: LossConfig,
    *,
    clip: nn.Module | None = None,
    depth: nn.Module | None = None,
    prompts: nn.Module | None = None,
) -> CompositeLoss:
    """The terms of ``cfg.weights`` with a non-zero weight. Encoders are needed only by the terms that use them:
    ``wpl`` (clip + frozen ``WeatherPrompts``), ``sem`` (clip), ``feat`` (depth), ``srd`` (clip)."""
    from .depth_feature import DepthFeatureLoss
    from .pixel import PixelLoss, PseudoLabelLoss, SupervisedLoss
    from .semantic import SemanticLoss
    from .weather_prompts import WeatherPromptLoss

    def need(module: nn.Module | None, what: str, term: str) -> nn.Module:
        if module is None:
            raise ValueError(f"loss.weights.{term} > 0 needs {what}; pass it or set loss.weights.{term}=0")
        return module

    def srd() -> nn.Module:
        from .srd import CLIPSoftResidualDistillation  # Tan et al.'s term, only with the CLIP-prior network

        return CLIPSoftResidualDistillation(need(clip, "a CLIP encoder", "srd"))

    pixel = PixelLoss(cfg.pixel, cfg.charbonnier_eps)
    constructors = {
        "sup": lambda: SupervisedLoss(pixel),
        "ps": lambda: PseudoLabelLoss(),
        "wpl": lambda: WeatherPromptLoss(need(prompts, "learned WeatherPrompts", "wpl")),
        "sem": lambda: SemanticLoss(need(clip, "a CLIP encoder", "sem")),
        "feat": lambda: DepthFeatureLoss(need(depth, "a Depth Anything encoder", "feat")),
        "srd": srd,
    }
    weights = dataclasses.asdict(cfg.weights)
    if set(weights) != set(constructors):
        raise ValueError(f"loss terms {sorted(constructors)} and loss.weights keys {sorted(weights)} differ")
    return CompositeLoss([(constructors[name](), w) for name, w in weights.items() if w != 0])
