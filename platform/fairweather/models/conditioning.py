"""Weather conditioning: one network that knows which weather it is restoring (feature-wise affine modulation).

Why: measured on real benchmark pairs (docs/real-weather.md), a small network trained on rain, haze and snow
together learns one answer for all three, "take off a veil": on light rain, which has none, it darkens the photo
and loses 1-3 dB (Rain100L), while the same network trained on rain alone gains on it. Told the weather, the same
network and steps gained on Rain100L and Rain12 as well as on Rain100H and haze. The weather comes with every
labeled pair, with every labeled real image (its VLM label) and with every test set, so it costs no extra input.

FiLM (Perez et al., 2018): after each stage of the U-Net, every channel ``c`` of the ``(N, C, H, W)`` features
becomes ``f * (1 + scale[w, c]) + shift[w, c]`` for the image's condition ``w``. Scales and shifts start at zero,
so a conditioned network starts as the unconditioned one. The conditions are :data:`CONDITIONS`; any other weather
(``clear``, ``unknown``, none given) is ``unknown``, which training also shows a fraction of the pairs under
(``train.weather_dropout``), so a photo of unknown weather gets a network trained for that case.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from fairweather.contracts.vocab import CONDITIONED_WEATHER

#: The weathers a conditioned network tells apart, then the condition of everything else.
CONDITIONS: tuple[str, ...] = (*CONDITIONED_WEATHER, "unknown")
UNKNOWN = CONDITIONS.index("unknown")


def condition_of(weather: str | None) -> int:
    """The condition index of a weather word (``unknown`` for anything but rain, haze and snow)."""
    return CONDITIONS.index(weather) if weather in CONDITIONS else UNKNOWN


def condition_tensor(weathers: Sequence[str | None]) -> torch.Tensor:
    """``(N,)`` int64 condition indices of ``N`` weather words."""
    return torch.tensor([condition_of(weather) for weather in weathers], dtype=torch.long)


class WeatherFiLM(nn.Module):
    """Per-condition channel scale and shift at each of ``len(channels)`` sites of a network (``channels[k]``:
    the channel count at site ``k``). Zero-initialised: the identity until trained."""

    def __init__(self, channels: Sequence[int]):
        super().__init__()
        # (conditions, 2, C): [w, 0] the scale minus one, [w, 1] the shift, of condition w.
        self.sites = nn.ParameterList(nn.Parameter(torch.zeros(len(CONDITIONS), 2, c)) for c in channels)

    def forward(self, site: int, features: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``(N, C, H, W)`` features of site ``site`` modulated by ``condition``, ``(N,)`` int64 indices."""
        params = self.sites[site][condition].to(features.dtype)  # (N, 2, C)
        return features * (1 + params[:, 0, :, None, None]) + params[:, 1, :, None, None]


def batch_condition(weather: torch.Tensor | None, batch: int, device: torch.device) -> torch.Tensor:
    """The ``(batch,)`` condition of a forward: ``weather`` as given (``(batch,)`` indices, or one index for the
    whole batch, e.g. every tile of a photo), or ``unknown`` for all when None."""
    if weather is None:
        return torch.full((batch,), UNKNOWN, dtype=torch.long, device=device)
    weather = weather.to(device=device, dtype=torch.long)
    if weather.ndim == 0 or weather.numel() == 1:
        return weather.reshape(1).expand(batch)
    if weather.shape != (batch,):
        raise ValueError(f"weather condition of shape {tuple(weather.shape)} for a batch of {batch} images")
    return weather
