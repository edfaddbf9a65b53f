"""What every frozen encoder shares: no parameter gradients, always eval mode, never copied, differentiable resizing;
and the one way a network or loss holds an encoder it uses but does not own (:func:`share_encoder`).

Placement: a shared encoder lives on whatever device and dtype its *creator* puts it (``clip.to(device)`` once, in
the training worker, before building the network, the EMA teacher and the losses that share it). The modules
that share it never move it: ``net.to(device)`` moves the network's own weights only, and since every sharer holds
the same object, one ``encoder.to(device)`` is seen by all of them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class FrozenModule(nn.Module):
    """Base of the frozen encoders: weights never train, and a parent's ``.train()`` cannot switch off eval mode
    (dropout/batch-norm statistics must not change), but gradients still flow through to the input image."""

    def freeze(self) -> None:
        self.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> FrozenModule:
        return super().train(False)

    def __deepcopy__(self, memo: dict) -> FrozenModule:
        # Nothing about a frozen encoder can change, so a copy would only cost memory: deep copies of the modules
        # that share it (an EMA teacher, ``AveragedModel``) keep sharing this one object.
        return self


def share_encoder(owner: nn.Module, name: str, encoder: nn.Module) -> None:
    """Make ``encoder`` available as ``owner.<name>`` without making it a submodule of ``owner``.

    So its weights never join ``owner.parameters()`` / ``state_dict()`` (optimisers and checkpoints see only what
    ``owner`` trains), ``owner.to(...)`` does not move it (see the module docstring for who places it), and deep
    copies of ``owner`` share it instead of copying it (:meth:`FrozenModule.__deepcopy__`).

    Raises TypeError unless ``encoder`` is a :class:`FrozenModule`: sharing is only safe for weights nobody trains.
    """
    if not isinstance(encoder, FrozenModule):
        raise TypeError(
            f"{type(owner).__name__}.{name}: a shared encoder must be a FrozenModule, got {type(encoder).__name__}"
        )
    owner.__dict__[name] = encoder  # bypasses nn.Module.__setattr__, which would register a submodule


def resize_shortest_and_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """Differentiable CLIP-style resize: shortest side to ``size`` (bicubic, antialiased), centre crop to square.

    x: ``(N, 3, H, W)`` -> ``(N, 3, size, size)``.
    """
    h, w = x.shape[-2:]
    scale = size / min(h, w)
    new_h, new_w = max(size, round(h * scale)), max(size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return x[..., top : top + size, left : left + size]


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """``(x − mean) / std`` per channel; mean/std are ``(3,)`` tensors on any device."""
    return (x - mean.to(x)[None, :, None, None]) / std.to(x)[None, :, None, None]
