"""CLIP-SRD (Tan et al. 2023): soft residual distillation from frozen CLIP into the SAR encoder.

The soft target is CLIP's view of *what the weather changed*, per patch: the residual between the CLIP patch tokens
of the weather image ``x`` and of its clean target ``y``. Our design choices (no code is public):

* Tokens are L2-normalised per patch before the difference, ``r_i = n(E(x)_i) - n(E(y)_i)`` with ``n(v) = v/|v|``:
  the target is then independent of a CLIP model's token magnitude and bounded (``|r_i| <= 2``), and it is 0 for
  identical images and small on patches the weather barely touched (not exactly 0: ViT tokens mix globally). A
  cosine loss would be ill-defined on such near-zero targets; with a distance, those patches teach the gated SAR
  residual to stay silent on clean areas, which is the point of the spatial gate.
* Distance: squared Euclidean distance per patch, averaged over patches and images::

      L_srd = mean_{n, i} || p_{n,i} - r_{n,i} ||^2

  where ``p`` is the network's projected SAR residual ``aux["sar_residual"]`` (N, C, gh, gw) flattened to
  (N, L, C). Because the tokens are unit vectors, ``|r_i|^2 <= 4`` whatever C is, so one ``loss.weights.srd``
  means the same for the tiny CLIP and ViT-B/L (a per-element mean would shrink with C, a per-element smooth L1
  summed over channels would grow with sqrt(C)).

CLIP runs without gradient (frozen, and its inputs are data): the loss trains only the network's SAR encoder and
its projection head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fairweather.encoders.frozen import share_encoder

from .context import LossContext


def clip_residual_target(clip: nn.Module, degraded: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Soft target ``n(E(x)) - n(E(y))``: ``(N, 3, H, W)`` pair in [0, 1] -> ``(N, L, C)`` CLIP token residual."""
    if degraded.shape != target.shape:
        raise ValueError(
            f"CLIP-SRD: degraded {tuple(degraded.shape)} and target {tuple(target.shape)} differ"
        )
    with torch.no_grad():
        tokens = clip.encode_image_tokens(torch.cat([degraded, target], dim=0))
    tokens = F.normalize(tokens.float(), dim=-1)
    weather, clean = tokens.chunk(2, dim=0)
    return weather - clean


class CLIPSoftResidualDistillation(nn.Module):
    """Loss term ``srd``: reads ``ctx.degraded``, ``ctx.target`` and ``ctx.aux["sar_residual"]``.

    Args:
        clip: the frozen CLIP shared with the network (``encode_image_tokens`` ``(N,3,H,W) -> (N, L, C)``,
            ``token_dim`` C, ``grid_size`` (gh, gw) with ``gh * gw == L``), held with ``share_encoder`` like in the
            network, so its weights never join this loss module's parameters or state_dict.
    """

    name = "srd"
    needs_aux = True

    def __init__(self, clip: nn.Module):
        super().__init__()
        share_encoder(self, "clip", clip)

    def distance(self, predicted: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        """``predicted`` ``(N, C, gh, gw)`` vs ``residual`` ``(N, L, C)`` -> scalar loss (formula in module docs)."""
        n, c, gh, gw = predicted.shape
        if residual.shape != (n, gh * gw, c):
            raise ValueError(
                f"CLIP-SRD: projected SAR residual {tuple(predicted.shape)} does not match the CLIP token residual "
                f"{tuple(residual.shape)}; expected (N, L={gh * gw}, C={c})"
            )
        predicted = predicted.flatten(2).transpose(1, 2).float()  # (N, L, C), token order = row-major grid
        return (predicted - residual).pow(2).sum(dim=-1).mean()

    def applies(self, ctx: LossContext) -> bool:
        """Only paired batches have the clean target the soft residual is measured against."""
        return ctx.target is not None

    def forward(self, ctx: LossContext) -> torch.Tensor:
        """Scalar CLIP-SRD loss of a batch; ``CompositeLoss`` skips this term when :meth:`applies` is False."""
        if ctx.target is None:
            raise ValueError(
                "CLIP-SRD needs a clean target (ctx.target is None): skip the term on unpaired data"
            )
        if "sar_residual" not in ctx.aux:
            raise KeyError(
                "CLIP-SRD needs ctx.aux['sar_residual']: run the CLIPPriorNet with return_aux=True"
            )
        return self.distance(
            ctx.aux["sar_residual"], clip_residual_target(self.clip, ctx.degraded, ctx.target)
        )
