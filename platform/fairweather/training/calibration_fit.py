"""Which training pairs the colour calibration is fitted on, and the examples they give: each pair's input, its
lighter versions and its clean target, restored by the network told the pair's weather
(:mod:`fairweather.training.calibration` holds the map and its fit)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from fairweather.contracts.config.model import ModelConfig
from fairweather.contracts.config.train import CalibrationConfig
from fairweather.data.batches import load_rgb
from fairweather.imaging import limit_short_side
from fairweather.models import restore_tiled_uint8
from fairweather.models.conditioning import condition_tensor

from .calibration import Calibration, fit_calibration

#: Short side above which a training pair is downscaled before the fit (its cost stays that of a crop).
FIT_SIDE = 256


def lighter_degradation(degraded: np.ndarray, target: np.ndarray, strength: float) -> np.ndarray:
    """``target + strength * (degraded - target)`` as uint8 ``(H, W, 3)``: the same weather, lighter. For haze it
    is the scattering model with a thinner veil (transmission ``1 - strength * (1 - t)``), for additive rain
    streaks ``strength`` times as bright."""
    blend = target.astype(np.float32) + np.float32(strength) * (degraded.astype(np.float32) - target)
    return np.clip(blend, 0.0, 255.0).round().astype(np.uint8)


def fit_pairs(rows: Sequence[dict], count: int) -> list[dict]:
    """``count`` of ``rows``: the first by ``pair_id`` of each (dataset, weather) group in turn (by name; a pair id
    is ``<dataset>/<name>``, from synth and from import-pairs alike), so that every imported set and every weather
    has its share. By ``pair_id`` alone the alphabetically first set could fill the fit, and by dataset alone one
    generated set's first 128 pairs were all haze and rain: its snow was calibrated by maps that had seen no snow."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in sorted(rows, key=lambda row: row["pair_id"]):
        key = (row["pair_id"].split("/", 1)[0], row.get("weather") or "")
        groups.setdefault(key, []).append(row)
    turns = itertools.zip_longest(*(groups[key] for key in sorted(groups)))
    return [row for turn in turns for row in turn if row is not None][:count]


def calibrate_on_pairs(
    model: nn.Module,
    rows: Sequence[dict],
    model_cfg: ModelConfig,
    settings: CalibrationConfig,
    *,
    max_pixels: int,
    device: torch.device,
) -> Calibration:
    """Fit the calibration of ``model`` (in eval mode) on ``settings.max_pairs`` training pairs
    (:func:`fit_pairs`; each pair's input and its clean target, both restored by ``model`` told the pair's
    weather). Pairs larger than :data:`FIT_SIDE` a side are downscaled first, so that imported photo-sized pairs
    cost what crops do."""
    chosen = fit_pairs(rows, settings.max_pairs)

    def examples() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray, str | None]]:
        for row in chosen:
            degraded, target = load_rgb(row["input_uri"], max_pixels), load_rgb(row["target_uri"], max_pixels)
            degraded, target = limit_short_side(degraded, FIT_SIDE), limit_short_side(target, FIT_SIDE)
            if degraded.shape != target.shape:  # a pair whose downscaled sizes round apart
                continue
            lighter = [lighter_degradation(degraded, target, s) for s in settings.lighter]
            condition = condition_tensor([row["weather"]])
            for image in (degraded, *lighter, target):
                restored = restore_tiled_uint8(
                    model, image, model_cfg.tile, model_cfg.tile_overlap, device, condition
                )
                yield image, restored, target, row["weather"]

    return fit_calibration(
        examples(), gamma=settings.gamma, ridge=settings.ridge, weather_distance=settings.weather_distance
    )
