"""One scoring interface over pyiqa's metrics and the labeling VLM's visibility rating.

``build_scorer(name, cfg)`` checks the metric's files first, so a missing weight fails at start-up with the file
and the ``fairweather prefetch`` command, never deep inside a worker; heavy imports (pyiqa, the VLM engine) happen
only there. A scorer maps ``(N, 3, H, W)`` float images in [0, 1] to ``(N,)`` float scores on CPU, in chunks of
``cfg.batch_size``; the direction of each metric is ``scorer.spec.higher_better``.

Convention of the full-reference metrics (recorded with every number): RGB in [0, 1], no border crop, no
Y-channel conversion (pyiqa's ``psnr`` and ``ssimc``). PSNR, SSIM and PIQE are computed by
:mod:`fairweather.metrics.tiled` (pyiqa's definitions, tile by tile in float32, on the CPU: memory bounded by the
tile, and ``score_uint8`` scores an ``(H, W, 3)`` uint8 image without a float copy of it), NIQE by
:mod:`fairweather.metrics.tiled_niqe` (pyiqa's feature code on tiles); the other metrics run pyiqa (or the VLM)
on the whole image.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import torch

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import VLMBackend, build_backend, rate_images

from .registry import METRICS, NIQE_PARAMS, MetricSpec, MissingWeightsError, local_path, missing_weights
from .tiled import TILED, TiledScorer


class Scorer(Protocol):
    """A loaded metric. ``targets`` is required by full-reference metrics and ignored by the others."""

    spec: MetricSpec

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """images/targets: ``(N, 3, H, W)`` float in [0, 1], one size within a call -> ``(N,)`` float32 on CPU."""
        ...


def _check_batch(spec: MetricSpec, images: torch.Tensor, targets: torch.Tensor | None) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"{spec.name}: images must be (N, 3, H, W), got {tuple(images.shape)}")
    if spec.reference:
        if targets is None:
            raise ValueError(f"{spec.name} is a full-reference metric: it needs the clean targets")
        if targets.shape != images.shape:
            raise ValueError(
                f"{spec.name}: targets {tuple(targets.shape)} must match images {tuple(images.shape)}"
            )


def _chunks(count: int, size: int) -> Iterable[slice]:
    return (slice(start, start + size) for start in range(0, count, size))


class PyiqaScorer:
    """A pyiqa metric on one device; its weights come from this machine's caches (pyiqa never downloads)."""

    def __init__(self, spec: MetricSpec, cfg: ScorerConfig, device: torch.device):
        import pyiqa  # heavy import (hundreds of ms, more for the learned metrics): only when a scorer is built

        self.spec, self.batch_size, self.device = spec, cfg.batch_size, device
        kwargs = {}
        if spec.model_file is not None:
            kwargs["pretrained_model_path"] = str(local_path(spec.model_file, cfg))
        self.metric = pyiqa.create_metric(spec.pyiqa_name, as_loss=False, device=device, **kwargs)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        _check_batch(self.spec, images, targets)
        scores = []
        for part in _chunks(len(images), self.batch_size):
            args = [images[part]] + ([targets[part]] if self.spec.reference else [])
            args = [a.to(self.device, torch.float32).clamp(0, 1) for a in args]
            scores.append(self.metric(*args).reshape(-1).float().cpu())
        out = torch.cat(scores) if scores else torch.empty(0)
        if len(out) != len(images):
            raise RuntimeError(f"{self.spec.name} returned {len(out)} scores for {len(images)} images")
        return out


class VLMVisScorer:
    """VLM-Vis = (r_vlm - 1) / 4 in [0, 1] from the labeling backend's visibility rating (METHOD.md); NaN where
    the backend did not score all five rating words."""

    def __init__(self, backend: VLMBackend, vlm: VLMConfig, batch_size: int):
        self.spec, self.backend, self.vlm, self.batch_size = METRICS["vlm_vis"], backend, vlm, batch_size

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        _check_batch(self.spec, images, targets)
        # The backend takes (H, W, 3) uint8 RGB, as in labeling: round to the nearest level.
        arrays = (
            (images.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        )
        values: list[float] = []
        for part in _chunks(len(arrays), self.batch_size):
            ratings = rate_images(self.backend, list(arrays[part]), self.vlm)
            values += [r.vlm_vis if r.complete else math.nan for r in ratings]
        return torch.tensor(values, dtype=torch.float32)


def build_scorer(
    name: str,
    cfg: ScorerConfig,
    *,
    device: torch.device | str | None = None,
    vlm: VLMConfig | None = None,
    model_cache_dir: str | Path = "runs/models",
    backend: VLMBackend | None = None,
) -> Scorer:
    """Load metric ``name`` on ``device`` (default ``cfg.device``); raises :class:`MissingWeightsError` before
    loading anything if a file is missing here.

    ``vlm_vis`` needs the VLM: ``vlm`` (``cfg.vlm``; ``tiny:`` references are built under ``model_cache_dir``, as in
    labeling; the model runs on ``device`` like every metric), or an already loaded ``backend`` with its ``vlm``.
    """
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r} (known: {', '.join(METRICS)})")
    reason = missing_weights(name, cfg, vlm=vlm if backend is None else None)
    if reason:
        raise MissingWeightsError(reason)
    if name in TILED:
        return TiledScorer(name)
    if name == "niqe":
        from .tiled_niqe import TiledNIQE  # pyiqa's feature code: a heavy import, here only

        path = local_path(NIQE_PARAMS, cfg)
        assert path is not None  # a pyiqa file: missing_weights checked it is there
        return TiledScorer(name, TiledNIQE.from_file(path))
    device = torch.device(cfg.device if device is None else device)
    if name != "vlm_vis":
        return PyiqaScorer(METRICS[name], cfg, device)
    if vlm is None:
        raise ValueError("the vlm_vis scorer needs the VLM config (build_scorer(..., vlm=cfg.vlm))")
    if backend is None:
        vlm = dataclasses.replace(vlm, device=str(device))
        backend = build_backend(vlm, resolve_model_ref(vlm.model_id, model_cache_dir))
    return VLMVisScorer(backend, vlm, cfg.batch_size)


def build_scorers(
    names: Iterable[str],
    cfg: ScorerConfig,
    *,
    device: torch.device | str | None = None,
    vlm: VLMConfig | None = None,
    model_cache_dir: str | Path = "runs/models",
) -> dict[str, Scorer]:
    """``{name: scorer}``; every missing file of every metric is named in one :class:`MissingWeightsError`."""
    names = list(dict.fromkeys(names))
    reasons = [reason for name in names if (reason := missing_weights(name, cfg, vlm=vlm))]
    if reasons:
        raise MissingWeightsError("; ".join(reasons))
    return {
        name: build_scorer(name, cfg, device=device, vlm=vlm, model_cache_dir=model_cache_dir)
        for name in names
    }
