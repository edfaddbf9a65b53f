"""The one residual output convention shared by every restoration network, plus pad/crop helpers.

Every network restores an image as ``x + residual``: the subclass only predicts the residual, on an input padded
so that its height and width are multiples of ``size_multiple`` (the product of the network's down-sampling
factors). The base class does the padding, the cropping and the final addition, so all networks accept any
image size and share exactly the same output convention.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .conditioning import WeatherFiLM, batch_condition


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad ``x`` on the bottom/right so that H and W are multiples of ``multiple``.

    Args:
        x: ``(N, C, H, W)`` tensor.
        multiple: positive integer; 1 means no padding.
    Returns:
        ``(x_padded, (H, W))``: the ``(N, C, Hp, Wp)`` padded tensor and the original size for :func:`crop`.
    Reflect padding avoids a hard border the network would have to learn to ignore; it needs the pad to be
    smaller than the side, so tiny images (side <= pad) fall back to replicate padding.
    """
    if x.ndim != 4:
        raise ValueError(f"pad_to_multiple expects a (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    if not isinstance(multiple, int) or multiple < 1:
        raise ValueError(f"pad_to_multiple: multiple must be a positive int, got {multiple!r}")
    h, w = x.shape[-2:]
    pad_h, pad_w = (-h) % multiple, (-w) % multiple
    if pad_h == 0 and pad_w == 0:
        return x, (h, w)
    mode = "reflect" if pad_h < h and pad_w < w else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode), (h, w)


def crop(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Undo :func:`pad_to_multiple`: keep the top-left ``size = (H, W)`` of a ``(N, C, Hp, Wp)`` tensor."""
    h, w = size
    if x.shape[-2] < h or x.shape[-1] < w:
        raise ValueError(f"crop: tensor of spatial size {tuple(x.shape[-2:])} is smaller than {size}")
    return x[..., :h, :w]


def check_image_batch(x: torch.Tensor, name: str = "x") -> None:
    """Raise a clear error unless ``x`` is a floating ``(N, 3, H, W)`` image batch."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"{name} must have shape (N, 3, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor in [0, 1], got dtype {x.dtype}")


class RestorationNet(nn.Module):
    """Base class of all restoration networks: ``forward(x) = x + predict_residual(pad(x))`` cropped back.

    Subclasses set ``size_multiple`` (an int, usually ``2 ** number_of_downsamplings``) and implement
    :meth:`predict_residual`.

    Clamping: in training mode the output is *not* clamped, so pixels pushed past [0, 1] still get gradients
    (a clamp would zero them and stall learning on saturated regions); in eval mode the output is clamped to
    [0, 1] so downstream metrics and saved images always see a valid image.
    """

    size_multiple: int = 1
    #: The layout of the weights and of every forward's input (:meth:`use_memory_format`).
    memory_format: torch.memory_format = torch.contiguous_format
    #: Submodules that feed only the side outputs of ``forward(x, return_aux=True)`` (e.g. CLIP-SRD's projection).
    aux_heads: tuple[str, ...] = ()

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        """Map a padded ``(N, 3, Hp, Wp)`` image in [0, 1] to its ``(N, 3, Hp, Wp)`` residual."""
        raise NotImplementedError(f"{type(self).__name__} must implement predict_residual")

    def predict_residual_and_aux(
        self, x: torch.Tensor, size: tuple[int, int], **condition: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The residual plus side outputs that auxiliary losses read (e.g. CLIP-SRD's ``"sar_residual"``).

        ``size`` is the unpadded ``(H, W)``; ``condition`` is what :meth:`forward` passes a weather-conditioned
        network. Networks without side outputs keep this default (an empty dict).
        """
        return self.predict_residual(x, **condition), {}

    @property
    def conditioned(self) -> bool:
        """Whether the network takes a weather condition: it then holds a :class:`WeatherFiLM` as ``film`` and its
        ``predict_residual`` takes ``condition``, ``(N,)`` int64 indices of
        :data:`fairweather.models.conditioning.CONDITIONS`."""
        return isinstance(getattr(self, "film", None), WeatherFiLM)

    def use_memory_format(self, memory_format: torch.memory_format) -> RestorationNet:
        """Keep the 4-D weights in ``memory_format`` and run every forward on its input in it; returns ``self``.

        Why channels-last: cuDNN's and oneDNN's convolutions run faster on it, depth-wise ones most (NAFNet trains
        about 1.2x and restores about 1.7x faster on 2 CPU cores). A convolution picks the layout of its *input*,
        so the weights alone would not do: :meth:`forward` converts the (padded) input, whoever calls it.
        """
        self.memory_format = memory_format
        return self.to(memory_format=memory_format)

    def freeze_aux_heads(self) -> None:
        """Stop training :attr:`aux_heads`, for runs where no loss reads the side outputs.

        Side outputs are computed only when asked for, so an unread head gets no gradient, and DDP (which expects
        one for every parameter that requires it) fails at the next step with "Expected to have finished
        reduction in the prior iteration". Call before wrapping in DDP and before building the optimiser. The
        heads stay in ``state_dict``, so checkpoints keep one layout whichever losses a run used.
        """
        for name in self.aux_heads:
            getattr(self, name).requires_grad_(False)

    def forward(
        self, x: torch.Tensor, return_aux: bool = False, weather: torch.Tensor | None = None
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Restore ``x``: ``(N, 3, H, W)`` in [0, 1], any H and W -> ``(N, 3, H, W)``; with ``return_aux`` also
        the side-output dict of :meth:`predict_residual_and_aux` (computed only then: an output nobody reads would
        leave its head without gradient, which DDP does not allow).

        weather: the images' conditions, ``(N,)`` int64 or one index for all
        (:func:`fairweather.models.conditioning.condition_tensor`); None is ``unknown``. A network without
        weather conditioning (:attr:`conditioned`) restores the same whatever it is given.
        """
        check_image_batch(x)
        padded, size = pad_to_multiple(x, self.size_multiple)
        padded = padded.contiguous(memory_format=self.memory_format)
        condition = {"condition": batch_condition(weather, x.shape[0], x.device)} if self.conditioned else {}
        if return_aux:
            residual, aux = self.predict_residual_and_aux(padded, size, **condition)
        else:
            residual, aux = self.predict_residual(padded, **condition), {}
        if residual.shape != padded.shape:
            raise RuntimeError(
                f"{type(self).__name__} predicted a residual of shape {tuple(residual.shape)}, "
                f"expected {tuple(padded.shape)}"
            )
        out = x + crop(residual, size)
        out = out if self.training else out.clamp(0.0, 1.0)
        return (out, aux) if return_aux else out


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of a ``(N, C, H, W)`` map, per pixel, with a learnable affine.

    Both Restormer and NAFNet normalise channels at each pixel (not over H, W), so the statistics do not depend
    on the image size and tiled inference sees the same normalisation as whole-image inference.
    """

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # torch's fused layer_norm over the last dimension of the (N, H, W, C) view: one kernel forward and one
        # backward instead of eight elementwise ops each (the biased variance and eps inside the root, as before);
        # NAFNet's training step and tiled inference on CPU ran 10-20 % faster.
        channels_last = x.permute(0, 2, 3, 1)
        return F.layer_norm(channels_last, (x.shape[1],), self.weight, self.bias, self.eps).permute(
            0, 3, 1, 2
        )


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
