"""``fairweather prefetch``: put every model the config names into the local caches before a job needs it.

``tiny:*`` references are built locally (random weights, for tests and the smoke profile); real ones are downloaded
into the Hugging Face / open_clip caches that the loading code reads. On a cluster, run it once per node (or point
``HF_HOME`` at shared storage) so that Ray actors never download at start-up.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.tiny import is_tiny, resolve_model_ref

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PrefetchSummary:
    #: role -> local folder or cache path of the model
    models: dict[str, str]
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
    """Build or download the VLM, the CLIP encoder and the Depth Anything encoder named by ``cfg``."""
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
    return PrefetchSummary(models=models, seconds=round(time.perf_counter() - start, 2))
