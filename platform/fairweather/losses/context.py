"""What a loss term reads (:class:`LossContext`) and what a loss term is (:class:`LossTerm`).

Kept apart from the terms and from their weighted sum so that both import this module and nothing imports in a
circle: ``context`` <- each term module <- ``composite``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from fairweather.contracts.config.loss import Domain


@dataclass
class LossContext:
    """Everything a loss term may read for one batch of one domain. Images are ``(N, 3, H, W)`` in [0, 1].

    domain: ``"paired"`` (labeled synthetic pairs) or ``"real"`` (the unlabeled real pool); each term acts only on
        the domains ``loss.domains.<term>`` names.
    restored: ŷ, the network output.  degraded: the network input.  target: clean target (labeled pairs) or None.
    pseudo_label: current pseudo-labels (real images) or None; has_pseudo: ``(N,)`` bool, which rows have one.
    d_pos / d_neg: N clear-weather / original descriptions (real images) or None.
    aux: side outputs of the network (``model(x, return_aux=True)``), e.g. ``"sar_residual"`` for CLIP-SRD; rows
        are the same images as ``restored``.
    """

    restored: torch.Tensor
    degraded: torch.Tensor
    domain: Domain
    target: torch.Tensor | None = None
    pseudo_label: torch.Tensor | None = None
    has_pseudo: torch.Tensor | None = None
    d_pos: Sequence[str] | None = None
    d_neg: Sequence[str] | None = None
    aux: dict[str, torch.Tensor] = field(default_factory=dict)


@runtime_checkable
class LossTerm(Protocol):
    """One named term: ``applies(ctx)`` says whether the batch has its inputs; calling it returns a scalar.

    ``needs_aux``: True when the term reads ``ctx.aux``, so the network must be run with ``return_aux=True``.
    """

    name: str
    needs_aux: bool

    def applies(self, ctx: LossContext) -> bool: ...

    def __call__(self, ctx: LossContext) -> torch.Tensor: ...
