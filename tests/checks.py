"""Assertions shared by the network tests."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def l1_before_and_after_one_adam_step(
    model: nn.Module, x: torch.Tensor, target: torch.Tensor, lr: float = 1e-3
) -> tuple[float, float]:
    """L1(model(x), target) before and after one Adam step on that same loss."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    before = F.l1_loss(model(x), target)
    before.backward()
    optimizer.step()
    with torch.no_grad():
        after = F.l1_loss(model(x), target)
    return float(before.detach()), float(after)
