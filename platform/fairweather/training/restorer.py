"""A trained restorer for inference outside training: read a checkpoint, check it fits, build its EMA teacher.

A checkpoint is a training checkpoint folder (``<folder>/state.pt``, :mod:`fairweather.training.state`) or the
``model/model.pt`` artifact of a training run (the same dict without the optimizer). Both carry the ``arch`` and
the whole training config, so by default the network is rebuilt from the checkpoint's own config and needs no
matching ``--config``. When a config is given explicitly, its network (``model.arch`` and that arch's section)
must be the checkpoint's; otherwise the error names both sides.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from fairweather.contracts.config import ConfigError, FairweatherConfig, build, to_dict
from fairweather.contracts.config.loader import apply_overrides, parse_override
from fairweather.contracts.config.root import check_override_key
from fairweather.contracts.errors import FairweatherError
from fairweather.models import restore_tiled_uint8
from fairweather.models.conditioning import condition_tensor

from .calibration import Calibration
from .setup import load_teacher
from .state import CheckpointError, load_state


def stored_config(state: dict[str, Any], path: str, overrides: Sequence[str] = ()) -> FairweatherConfig:
    """The config the checkpoint was trained with, plus dotted ``overrides`` (``model.tile=256``)."""
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"checkpoint {path} stores no config; give one with --config")
    for text in overrides:
        check_override_key(parse_override(text)[0], text)
    source = f"the config stored in checkpoint {path}"
    try:
        return build(FairweatherConfig, apply_overrides(state["config"], overrides), source=source)
    except ConfigError as err:
        raise CheckpointError(
            f"{err}; the checkpoint's config does not load with this version of fairweather "
            "(give a config with the same network via --config)"
        ) from err


def check_matches(cfg: FairweatherConfig, state: dict[str, Any], path: str, source: str) -> None:
    """Refuse a checkpoint whose network is not the one ``cfg`` (read from ``source``) describes, naming both."""
    arch = cfg.model.arch
    if state.get("arch") != arch:
        raise CheckpointError(
            f"checkpoint {path} holds a '{state.get('arch')}' network, but {source} sets model.arch='{arch}'; "
            "leave --config out to use the checkpoint's own config, or give a config with the same network"
        )
    stored = (state.get("config") or {}).get("model", {}).get(arch)
    wanted = to_dict(getattr(cfg.model, arch))
    if stored is None or stored == wanted:
        return  # no stored section to compare: the weights themselves are checked when they are loaded
    keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
    differences = ", ".join(f"model.{arch}.{k}: {wanted.get(k)!r} vs {stored.get(k)!r}" for k in keys)
    raise CheckpointError(
        f"checkpoint {path} holds a '{arch}' network of another size than {source} describes "
        f"({source} vs checkpoint: {differences})"
    )


@dataclass
class Restorer:
    """The EMA teacher of a checkpoint in eval mode, with the tiling settings of ``cfg.model``, and the colour
    calibration the checkpoint carries (None: a checkpoint saved before the end of its job, or trained with
    ``train.calibration.enabled=false``)."""

    model: nn.Module
    cfg: FairweatherConfig
    device: torch.device
    arch: str
    step: int
    calibration: Calibration | None = None

    def restore(self, rgb: np.ndarray, weather: str | None = None) -> np.ndarray:
        """``(H, W, 3)`` uint8 RGB -> restored ``(H, W, 3)`` uint8; ``weather`` (rain, haze, snow; anything else
        or None: unknown) is what a weather-conditioned network is told. Tiled above ``model.tile`` pixels a side and
        written tile by tile into the uint8 result (:func:`fairweather.models.restore_tiled_uint8`): neither the
        network's activations nor any float buffer grows with the photo beyond one band of tiles. The calibration
        then maps the whole image at once (one blend with the input, and a contrast and mean change per channel: no
        tile seams)."""
        model = self.cfg.model
        condition = condition_tensor([weather])
        restored = restore_tiled_uint8(
            self.model, rgb, model.tile, model.tile_overlap, self.device, condition
        )
        return restored if self.calibration is None else self.calibration.apply(rgb, restored, weather)


def pick_device(name: str) -> torch.device:
    """``auto``: the first CUDA device when there is one, else the CPU; anything else as torch spells it."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise FairweatherError(f"device {name!r} asked for, but this machine has no CUDA device")
    return torch.device(name)


def load_restorer(
    path: str,
    cfg: FairweatherConfig | None = None,
    *,
    source: str = "--config",
    overrides: Sequence[str] = (),
    device: str = "auto",
) -> Restorer:
    """Read checkpoint ``path`` and build its EMA teacher on ``device``.

    cfg: an explicit config (``source`` names where it came from, for errors); its network must match the
    checkpoint's. None: the checkpoint's stored config with ``overrides`` applied.
    """
    state = load_state(path)
    if cfg is None:
        # Overrides of the stored config may still change the network (model.nafnet.width=...): checked below.
        cfg, source = stored_config(state, path, overrides), f"the overrides {list(overrides)}"
    check_matches(cfg, state, path, source)
    target = pick_device(device)
    try:
        model = load_teacher(cfg, state, target)
    except (KeyError, RuntimeError) as err:  # no teacher weights, or weights of another shape
        raise CheckpointError(
            f"checkpoint {path}: its '{cfg.model.arch}' weights do not load: {err}"
        ) from err
    stored = state.get("calibration")
    calibration = Calibration.from_state(stored) if stored else None
    return Restorer(model, cfg, target, cfg.model.arch, int(state.get("step", 0)), calibration)
