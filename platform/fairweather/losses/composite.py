"""The training objective as a list of named, weighted terms, each acting on its own domains, summed generically.

Paper A: ``L = L_sup + w1·L_ps + w2·L_wpl + w3·L_sem + w4·L_feat`` (+ Tan et al.'s CLIP-SRD as ``srd``). Term names
are the keys of ``LossConfig.weights`` (``sup``, ``ps``, ``wpl``, ``sem``, ``feat``, ``srd``), so a Tune search space
over ``loss.weights.*`` addresses exactly these terms. A zero weight means the term is never built: no CLIP or
Depth Anything forward is spent on it. A term acts only on the domains ``loss.domains.<term>`` names (paired
pairs, real images), and skips a batch that lacks its inputs (no pseudo-label yet): skipped, not counted as zero.

The result is a fixed-order vector of term values plus an "applied" mask, the same shape on every rank whatever
each rank's batch held, so a cross-rank all-reduce of sums and counts needs no agreement on keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn

from fairweather.contracts.config.loss import LossConfig, LossDomains

from .context import LossContext, LossTerm
from .depth_feature import DepthFeatureLoss
from .pixel import PixelLoss, PseudoLabelLoss, SupervisedLoss
from .semantic import SemanticLoss
from .srd import CLIPSoftResidualDistillation
from .weather_prompts import WeatherPromptLoss


class LossOutput(NamedTuple):
    """``total``: scalar weighted sum (differentiable). ``values``: ``(T,)`` float32, detached, the unweighted value of
    each term in ``CompositeLoss.names`` order (0 where not applied). ``applied``: ``(T,)`` bool."""

    total: torch.Tensor
    values: torch.Tensor
    applied: torch.Tensor


class CompositeLoss(nn.Module):
    """Weighted sum of terms over one or more domain contexts: ``forward(*contexts) -> LossOutput``.

    A term that applies to several of the given contexts (e.g. ``loss.domains.wpl=[paired, real]``) contributes
    the mean of its per-context values, so its weight means the same whichever domains it acts on.

    Args:
        terms: ``(term, weight)`` pairs, in the order of the output vector.
        domains: term name -> domains it acts on; a term not named here gets the method's default
            (:class:`~fairweather.contracts.config.loss.LossDomains`).
    """

    def __init__(
        self,
        terms: Sequence[tuple[LossTerm, float]],
        domains: Mapping[str, Collection[str]] | None = None,
    ):
        super().__init__()
        names = [term.name for term, _ in terms]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate loss term names: {names}")
        self.terms = nn.ModuleList([term for term, _ in terms])  # type: ignore[misc]
        self.weights = {term.name: float(weight) for term, weight in terms}
        defaults = dataclasses.asdict(LossDomains())
        given = dict(domains or {})
        self.domains = {name: frozenset(given.get(name, defaults.get(name, ()))) for name in names}
        inert = [name for name, acts_on in self.domains.items() if not acts_on]
        if inert:
            raise ValueError(f"loss terms {inert} act on no domain; give them domains (paired / real)")

    @property
    def names(self) -> list[str]:
        return [term.name for term in self.terms]

    @property
    def needs_aux(self) -> bool:
        """True when a term reads the network's side outputs: run it as ``model(x, return_aux=True)``."""
        return any(term.needs_aux for term in self.terms)

    def forward(self, *contexts: LossContext) -> LossOutput:
        if not contexts:
            raise ValueError("CompositeLoss needs at least one LossContext")
        device = contexts[0].restored.device
        total = contexts[0].restored.new_zeros((), dtype=torch.float32)
        values = torch.zeros(len(self.terms), dtype=torch.float32, device=device)
        applied = torch.zeros(len(self.terms), dtype=torch.bool, device=device)
        for index, term in enumerate(self.terms):
            parts = [
                term(ctx) for ctx in contexts if ctx.domain in self.domains[term.name] and term.applies(ctx)
            ]
            if not parts:
                continue
            value = torch.stack(parts).float().mean()
            values[index] = value.detach()
            applied[index] = True
            total = total + self.weights[term.name] * value
        return LossOutput(total, values, applied)


def build_composite_loss(
    cfg: LossConfig,
    *,
    clip: nn.Module | None = None,
    depth: nn.Module | None = None,
    prompts: nn.Module | None = None,
) -> CompositeLoss:
    """The terms of ``cfg.weights`` with a non-zero weight, acting on ``cfg.domains``. Encoders are needed only by
    the terms that use them: ``wpl`` (clip + frozen ``WeatherPrompts``), ``sem`` (clip), ``feat`` (depth),
    ``srd`` (clip)."""

    def need(module: nn.Module | None, what: str, term: str) -> nn.Module:
        if module is None:
            raise ValueError(f"loss.weights.{term} > 0 needs {what}; pass it or set loss.weights.{term}=0")
        return module

    pixel = PixelLoss(cfg.pixel, cfg.charbonnier_eps)
    constructors = {
        "sup": lambda: SupervisedLoss(pixel),
        "ps": lambda: PseudoLabelLoss(),
        "wpl": lambda: WeatherPromptLoss(need(prompts, "learned WeatherPrompts", "wpl")),
        "sem": lambda: SemanticLoss(need(clip, "a CLIP encoder", "sem")),
        "feat": lambda: DepthFeatureLoss(need(depth, "a Depth Anything encoder", "feat")),
        "srd": lambda: CLIPSoftResidualDistillation(need(clip, "a CLIP encoder", "srd")),
    }
    weights = dataclasses.asdict(cfg.weights)
    if set(weights) != set(constructors):
        raise ValueError(f"loss terms {sorted(constructors)} and loss.weights keys {sorted(weights)} differ")
    terms = [(constructors[name](), w) for name, w in weights.items() if cfg.weights.on(name)]
    return CompositeLoss(terms, dataclasses.asdict(cfg.domains))
