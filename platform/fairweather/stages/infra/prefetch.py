"""``fairweather prefetch``: put every model the config names into the local caches before a job needs it.

``tiny:*`` references are built locally (random weights, for tests and the smoke profile); real ones are downloaded
into the Hugging Face / open_clip caches that the loading code reads. The weights of the configured metrics
(``pseudo.metrics``, ``evaluate.metrics`` and ``evaluate.reference_metrics``) go where the scorers look for them: pyiqa's files into
``evaluate.scorer.weights_dir``, torch hub files into ``$TORCH_HOME/hub``, Hugging Face repositories into the HF cache
(see :mod:`fairweather.metrics.weights`). ``--cache DIR`` (``runtime.weights_cache``) puts all of it into one
folder (:mod:`fairweather.stages.infra.preflight` says where each kind goes); on a cluster that is a folder every node
mounts, so Ray actors never download at start-up and nodes without network run with ``HF_HUB_OFFLINE=1``. The run
ends by checking, with the same code every stage runs at start-up, that nothing the config needs is missing.
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
from fairweather.stages.infra.console import say
from fairweather.stages.infra.preflight import check_weights_cache, hf_hub_cache, missing_weights_for
from fairweather.tiny import is_tiny, resolve_model_ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchSummary:
    #: role -> local folder or cache path of the model
    models: dict[str, str]
    #: metric -> local paths of the files it loads (metrics that need none are absent)
    metrics: dict[str, list[str]]
    #: ``runtime.weights_cache`` (None: the libraries' own caches).
    weights_cache: str | None
    seconds: float


def _fetch_hf(model_id: str) -> str:
    from huggingface_hub import snapshot_download

    return snapshot_download(model_id, cache_dir=hf_hub_cache())


def _fetch_open_clip(model_name: str, pretrained: str) -> str:
    import open_clip

    pretrained_cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not pretrained_cfg:
        raise ValueError(f"open_clip has no pretrained weights '{pretrained}' for model '{model_name}'")
    # Hugging Face-hosted weights (every OpenAI tag) go to the HF cache the start-up check reads.
    return open_clip.download_pretrained(
        pretrained_cfg, cache_dir=str(hf_hub_cache()) if pretrained_cfg.get("hf_hub") else None
    )


def run_prefetch(cfg: FairweatherConfig) -> PrefetchSummary:
    """Build or download the VLM, the CLIP encoder and the Depth Anything encoder named by ``cfg``, and the
    weights of its pseudo-label scorers and evaluation metrics, into ``runtime.weights_cache`` when set."""
    start = time.perf_counter()
    check_weights_cache(cfg)  # the caches point at runtime.weights_cache (the CLI set them at start-up)
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
    stages = {
        "label": (),
        "train": (),
        "pseudolabel": cfg.pseudo.scorer_names,
        "evaluate": cfg.evaluate.metrics + cfg.evaluate.reference_metrics,
    }
    metrics = {
        name: _fetch_metric(name, cfg)
        for name in dict.fromkeys(name for names in stages.values() for name in names)
        if METRICS[name].files
    }
    if left := [m for stage, names in stages.items() for m in missing_weights_for(cfg, stage, names)]:
        raise FairweatherError(f"prefetch finished, but the start-up check still misses: {left}")
    summary = PrefetchSummary(
        models=models,
        metrics=metrics,
        weights_cache=cfg.runtime.weights_cache,
        seconds=round(time.perf_counter() - start, 2),
    )
    weights = f" and {len(metrics)} metric weight file(s)" if metrics else ""
    cache = f" (weights cache {cfg.runtime.weights_cache})" if cfg.runtime.weights_cache else ""
    say(
        f"prefetch: {len(models)} models ({', '.join(refs for refs, _ in fetchers.values())}){weights} ready in "
        f"{summary.seconds:.1f}s{cache}"
    )
    return summary


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
