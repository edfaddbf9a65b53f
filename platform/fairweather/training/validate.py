"""Validation of a restoration network: PSNR/SSIM on labeled pairs per weather, PIQE on real images, an image grid.

Images are restored whole (tiled with blending above ``model.tile``), never cropped, so the numbers are those of
full images. PSNR/SSIM follow :mod:`fairweather.metrics.scorers` (RGB, [0, 1], no border crop).
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.model import ModelConfig
from fairweather.contracts.vocab import WEATHER_CLASSES
from fairweather.data.batches import load_rgb, to_tensor
from fairweather.metrics import Scorer, build_scorers
from fairweather.models import restore_tiled
from fairweather.models.conditioning import condition_tensor


@torch.no_grad()
def restore_image(
    model: nn.Module, image: np.ndarray, model_cfg: ModelConfig, device: torch.device, weather: str | None
) -> torch.Tensor:
    """``(H, W, 3)`` uint8 of weather ``weather`` -> ``(1, 3, H, W)`` restored in [0, 1] on CPU (``model`` must
    be in eval mode)."""
    x = to_tensor([image]).to(device)
    condition = condition_tensor([weather])
    return (
        restore_tiled(model, x, model_cfg.tile, model_cfg.tile_overlap, condition).clamp(0, 1).float().cpu()
    )


#: What each validation scores: full-reference metrics on the pairs, no-reference ones on real images.
PAIR_METRICS, REAL_METRICS = ("psnr", "ssim"), ("piqe",)
#: The metrics validation scores: weight-free, so they run offline inside training.
VALIDATION_METRICS = PAIR_METRICS + REAL_METRICS


def validation_metric_names(val_real: bool) -> frozenset[str]:
    """Every name a checkpoint's validation can report (:func:`score_pairs` under ``val``, :func:`score_real`
    under ``val_real`` when real images are scored): ``val/psnr/overall``, ``val_real/piqe/rain``, ... (a sweep
    checks its objective against these before any trial starts)."""
    weathers = (*WEATHER_CLASSES, "overall")
    names = {f"val/{kind}{m}/{w}" for kind in ("", "input_") for m in PAIR_METRICS for w in weathers}
    if val_real:
        names |= {
            f"val_real/{kind}{m}/{w}" for kind in ("", "input_") for m in REAL_METRICS for w in weathers
        }
    return frozenset(names)


def validation_scorers(device: torch.device) -> dict[str, Scorer]:
    """The :data:`VALIDATION_METRICS` scorers on ``device`` (one image per call, so no batching knob)."""
    return build_scorers(VALIDATION_METRICS, ScorerConfig(device=str(device)), device=device)


def balanced_subset(rows: Sequence[dict], count: int) -> list[dict]:
    """Up to ``count`` rows taken round-robin over their weathers (all rows when ``count`` is 0), so a small
    validation subset still scores every weather."""
    by_weather: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        by_weather[row["weather"]].append(row)
    interleaved = [
        row for group in itertools.zip_longest(*by_weather.values()) for row in group if row is not None
    ]
    return interleaved[: count or None]


class Scores:
    """Per-image scores gathered per (metric, weather); ``means(prefix)`` flattens them to
    ``{"<prefix>/<metric>/<weather>": mean, "<prefix>/<metric>/overall": mean over all images}``."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))

    def add(self, metric: str, weather: str, value: float) -> None:
        self.values[metric][weather].append(float(value))

    def means(self, prefix: str) -> dict[str, float]:
        out = {}
        for metric, per_weather in self.values.items():
            for weather, values in sorted(per_weather.items()):
                out[f"{prefix}/{metric}/{weather}"] = float(np.mean(values))
            out[f"{prefix}/{metric}/overall"] = float(np.mean([v for vs in per_weather.values() for v in vs]))
        return out


def score_pairs(
    model: nn.Module,
    rows: Sequence[dict],
    model_cfg: ModelConfig,
    scorers: Mapping[str, Scorer],
    *,
    max_pixels: int,
    device: torch.device,
    prefix: str,
) -> tuple[dict[str, float], list[tuple[np.ndarray, np.ndarray, np.ndarray]]]:
    """PSNR/SSIM of ``model`` and of the untouched input against the targets, per weather and overall.

    Returns ``({"<prefix>/psnr/<weather>": ..., "<prefix>/ssim/..", "<prefix>/input_psnr/..", ...}, examples)`` where
    examples are ``(input, restored, target)`` uint8 images of the first rows, for :func:`fairweather.imaging.image_grid`.
    """
    scores, examples = Scores(), []
    for row in rows:
        degraded, target = load_rgb(row["input_uri"], max_pixels), load_rgb(row["target_uri"], max_pixels)
        restored = restore_image(model, degraded, model_cfg, device, row["weather"])
        for kind, image in (("", restored), ("input_", to_tensor([degraded]))):
            for metric in PAIR_METRICS:
                value = scorers[metric](image, to_tensor([target]))[0]
                scores.add(f"{kind}{metric}", row["weather"], value)
        if len(examples) < 4:
            examples.append((degraded, to_uint8(restored), target))
    return scores.means(prefix), examples


def score_real(
    model: nn.Module,
    rows: Sequence[dict],
    model_cfg: ModelConfig,
    scorers: Mapping[str, Scorer],
    *,
    max_pixels: int,
    device: torch.device,
    prefix: str,
) -> tuple[dict[str, float], list[tuple[np.ndarray, ...]]]:
    """Mean PIQE (lower is better) of ``model``'s restorations of real images, and of the inputs, per weather.

    Examples are ``(input, restored[, pseudo-label])`` uint8 images of the first rows.
    """
    scores, examples = Scores(), []
    for row in rows:
        degraded = load_rgb(row["uri"], max_pixels)
        restored = restore_image(model, degraded, model_cfg, device, row["weather"])
        scores.add("piqe", row["weather"], scorers["piqe"](restored)[0])
        scores.add("input_piqe", row["weather"], scorers["piqe"](to_tensor([degraded]))[0])
        if len(examples) < 4:
            pseudo = [load_rgb(row["pseudo_uri"], max_pixels)] if row.get("pseudo_uri") else []
            examples.append((degraded, to_uint8(restored), *pseudo))
    return scores.means(prefix), examples


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """``(1, 3, H, W)`` in [0, 1] -> ``(H, W, 3)`` uint8."""
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
