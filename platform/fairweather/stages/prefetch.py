"""``fairweather prefetch``: put every model the config names into the local caches before a job needs it.

``tiny:*`` references are built locally (random weights, for tests and the smoke profile); real ones are downloaded
into the Hugging Face / open_clip caches that the loading code reads. The weights of the configured metrics
(``evaluate.metrics`` and ``evaluate.reference_metrics``) go where the scorers look for them: pyiqa's files into
``evaluate.scorer.weights_dir``, torch hub files into ``$TORCH_HOME/hub``, Hugging Face repositories into the HF cache
(see :mod:`fairweather.metrics.weights`). On a cluster, run it once per node (or point ``HF_HOME`` / ``TORCH_HOME``
/ ``evaluate.scorer.weights_dir`` at shared storage) so that Ray actors never download at start-up; nodes without
network then run with ``HF_HUB_OFFLINE=1``.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.metrics import METRICS
from fairweather.metrics.registry import NIQE_PARAMS
from fairweather.metrics.weights import WeightFetchError, fetch_weights
from fairweather.tiny import is_tiny, resolve_model_ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchSummary:
    #: role -> local folder or cache path of the model
    models: dict[str, str]
    #: metric -> local paths of the files it loads (metrics that need none are absent)
    metrics: dict[str, list[str]]
    seconds: float


def _fetch_hf(model_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id)


def _fetch_open_clip(model_name: str, pretrained: str) -> str:
    import open_clip

    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not pretrained_cfg:
        raise ValueError(f"open_clip has no pretrained weights '{pretrained}' for model '{model_name}'")
    return open_clip.download_pretrained(pretrained_cfg)


def run_prefetch(cfg: FairweatherConfig) -> PrefetchSummary:
    """Build or download the VLM, the CLIP encoder and the Depth Anything encoder named by ``cfg``, and the
    weights of its evaluation metrics."""
    start = time.perf_counter()
    cache = cfg.runtime.model_cache_dir
    clip = cfg.encoders.clip
    fetchers = {
        "vlm": (cfg.vlm.model_id, lambda: _fetch_hf(cfg.vlm.model_id)),
        "clip": (clip.model_name, lambda: _fetch_open_clip(clip.model_name, clip.pretrained)),
        "depth": (cfg.encoders.depth.model_id, lambda: _fetch_hf(cfg.encoders.depth.model_id)),
    }
    models = {}
    for role, (ref, download) in fetchers.items():
        log.info("prefetch %s: %s", role, ref)
        if is_tiny(ref):
            models[role] = resolve_model_ref(ref, cache)
            continue
        try:
            models[role] = download()
        except (OSError, ValueError, RuntimeError) as err:  # no network, unknown id, gated repo, bad tag
            raise FairweatherError(f"cannot fetch the {role} model {ref!r}: {err}") from err
    metrics = {
        name: _fetch_metric(name, cfg)
        for name in dict.fromkeys(cfg.evaluate.metrics + cfg.evaluate.reference_metrics)
        if METRICS[name].files
    }
    return PrefetchSummary(models=models, metrics=metrics, seconds=round(time.perf_counter() - start, 2))


def _fetch_metric(name: str, cfg: FairweatherConfig) -> list[str]:
    log.info("prefetch metric %s", name)
    try:
        return [str(path) for path in fetch_weights(name, cfg.evaluate.scorer)]
    except WeightFetchError as err:
        from_hub = err.file.store in ("pyiqa", "hf") and err.file != NIQE_PARAMS
        offline = " (HF_HUB_OFFLINE is set: unset it to download)" if from_hub and _hf_offline() else ""
        raise FairweatherError(f"cannot fetch the weights of metric {name!r}{offline}: {err}") from err


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")
