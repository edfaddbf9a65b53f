"""Start-up check of the weights a stage needs, and the one weights cache every loader reads.

``runtime.weights_cache`` (``fairweather prefetch --cache DIR``) names one folder for every downloaded weight:
Hugging Face repositories (VLM, Depth Anything, open_clip's CLIP, timm backbones, Q-Align) under
``<cache>/huggingface`` (``HF_HOME``), torch hub files (OpenAI CLIP for CLIP-IQA/LIQE, AlexNet) and pyiqa's own files
and NIQE's parameters under ``<cache>/torch`` (``TORCH_HOME``; pyiqa's folder is ``<cache>/torch/hub/pyiqa`` unless
``evaluate.scorer.weights_dir`` says otherwise).

Where the cache is set, explicitly and once: the command line (the face) calls :func:`export_weights_cache` right
after loading the config and before it imports any stage, so every loader in the process reads the cache from
``HF_HOME`` / ``TORCH_HOME`` (Hugging Face libraries read them once, at import: set later, they would be ignored);
:func:`fairweather.stages.infra.runtime.ray_session` hands :func:`weights_env` to every Ray worker through the job's
``runtime_env`` (``cluster.yaml`` also exports them on every node). Stage code never changes the environment: a
stage called directly (a notebook, a test) with ``runtime.weights_cache`` set in a process whose caches point
elsewhere is refused by :func:`check_weights_cache` (export the variables before starting Python, or run the
``fairweather`` command), instead of loading from, or downloading into, another folder. Workers without network then
run with ``HF_HUB_OFFLINE=1``.

:func:`check_weights` runs at a stage's start, before Ray or MLflow: every missing item is named, with the
``fairweather prefetch`` command that fetches them, instead of a download timeout deep inside a Ray actor.
``tiny:*`` models count as present (they are built locally on first use).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.root import CONFIG_DIR
from fairweather.contracts.errors import FairweatherError

log = logging.getLogger(__name__)

#: open_clip's weight file names in a Hugging Face repository (safetensors first, as open_clip tries them).
_OPEN_CLIP_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")


class WeightsMissingError(FairweatherError):
    """Weights a stage needs are not on this machine; the message lists each and the prefetch command."""


@dataclass(frozen=True)
class Missing:
    """One item a stage needs that is not here: ``what`` (``vlm``, ``clip``, ``depth``, ``metric musiq``), the
    reference from the config, and why (where it was looked for)."""

    what: str
    ref: str
    reason: str


def weights_env(cache: str | os.PathLike) -> dict[str, str]:
    """The environment that points every loader at ``cache`` (see the module docstring)."""
    root = Path(cache).expanduser().resolve()
    return {"HF_HOME": str(root / "huggingface"), "TORCH_HOME": str(root / "torch")}


def export_weights_cache(cache: str | os.PathLike | None) -> dict[str, str]:
    """Point this process's weight caches at ``cache`` (``runtime.weights_cache``; a no-op when None); returns what
    was set. For the face only, once, at process start: before any stage module (hence any Hugging Face library,
    which reads ``HF_HOME`` at import) is imported."""
    if not cache:
        return {}
    env = weights_env(cache)
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None and getattr(constants, "HF_HOME", env["HF_HOME"]) != env["HF_HOME"]:
        log.debug(  # never from the command line (nothing imported it yet); tests and notebooks may see it
            "huggingface_hub was imported before the weights cache was set (its cache: %s): Hugging Face "
            "loaders in this process may not read %s",
            constants.HF_HOME,
            env["HF_HOME"],
        )
    os.environ.update(env)
    return env


def check_weights_cache(cfg: FairweatherConfig) -> None:
    """Refuse to run with ``runtime.weights_cache`` set while this process's caches point elsewhere (a stage called
    directly without the face's :func:`export_weights_cache`): loaders would read, or download into, other folders."""
    if not cfg.runtime.weights_cache:
        return
    wrong = {
        k: os.environ.get(k)
        for k, v in weights_env(cfg.runtime.weights_cache).items()
        if os.environ.get(k) != v
    }
    if wrong:
        now = ", ".join(f"{k}={v or '(unset)'}" for k, v in wrong.items())
        raise FairweatherError(
            f"runtime.weights_cache={cfg.runtime.weights_cache!r} is set, but this process's caches point elsewhere "
            f"({now}): run the `fairweather` command (it points them at the cache at start-up), or export "
            + " ".join(f"{k}={v}" for k, v in weights_env(cfg.runtime.weights_cache).items())
            + " before Python starts"
        )


def hf_hub_cache() -> Path:
    """This process's Hugging Face hub cache, read from the environment now (``HF_HUB_CACHE``, ``HF_HOME``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface"
    )
    return Path(home).expanduser() / "hub"


def _hf_repo_missing(repo: str) -> str | None:
    """Why Hugging Face repository ``repo`` (or a local model folder) cannot load here; None: it can."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    if Path(repo).expanduser().is_dir():
        return None
    try:
        snapshot_download(repo, local_files_only=True, cache_dir=hf_hub_cache())
    except (LocalEntryNotFoundError, OSError, ValueError):
        return f"not in the Hugging Face cache {hf_hub_cache()}"
    return None


def _clip_missing(model_name: str, pretrained: str) -> str | None:
    """Why open_clip's ``model_name`` + ``pretrained`` weights cannot load here; None: they can."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    if not pretrained:
        return None  # random initialisation: nothing to load
    if Path(pretrained).expanduser().is_file():
        return None
    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        return f"open_clip has no pretrained weights {pretrained!r} for {model_name!r}"
    if cfg.get("hf_hub"):
        repo, filename = os.path.split(cfg["hf_hub"])  # "org/name/" (default file names) or "org/name/file"
        names = (filename,) if filename else _OPEN_CLIP_FILES
        for name in names:
            if isinstance(try_to_load_from_cache(repo, name, cache_dir=hf_hub_cache()), str):
                return None
        return f"{repo} ({' or '.join(names)}) not in the Hugging Face cache {hf_hub_cache()}"
    target = Path("~/.cache/clip").expanduser() / os.path.basename(
        cfg["url"]
    )  # open_clip's URL download folder
    return None if target.is_file() else f"{target} does not exist"


def _model_missing(role: str, ref: str, extra: str = "") -> Missing | None:
    from fairweather.tiny import is_tiny

    if is_tiny(ref):
        return None  # built locally from its config on first use
    reason = _clip_missing(ref, extra) if role == "clip" else _hf_repo_missing(ref)
    return Missing(role, f"{ref}:{extra}" if extra else ref, reason) if reason else None


def missing_weights_for(cfg: FairweatherConfig, stage: str, metrics: Iterable[str] = ()) -> list[Missing]:
    """Every weight ``stage`` needs under ``cfg`` that is not on this machine.

    label: the VLM. train: CLIP and Depth Anything where the model or the loss weights use them (as
    :func:`fairweather.training.setup.load_encoders` decides). Any stage: the files of ``metrics`` (``vlm_vis``
    needs the VLM). Stages that restore with a CLIP-prior network need CLIP too.
    """
    from fairweather.training.setup import needs_clip

    missing: list[Missing | None] = []
    if stage == "label":
        missing.append(_model_missing("vlm", cfg.vlm.model_id))
    if needs_clip(cfg) if stage == "train" else cfg.model.arch == "clip_prior":
        clip = cfg.encoders.clip
        missing.append(_model_missing("clip", clip.model_name, clip.pretrained or ""))
    if stage == "train" and cfg.loss.weights.on("feat"):
        missing.append(_model_missing("depth", cfg.encoders.depth.model_id))
    for name in dict.fromkeys(metrics):
        if name == "vlm_vis":
            missing.append(_model_missing("vlm", cfg.vlm.model_id))
        else:
            missing += _metric_missing(name, cfg)
    return list({m: None for m in missing if m is not None})


def _metric_missing(name: str, cfg: FairweatherConfig) -> list[Missing]:
    """The files of metric ``name`` that are not here (:data:`fairweather.metrics.METRICS` lists them)."""
    from huggingface_hub import try_to_load_from_cache

    from fairweather.metrics import METRICS
    from fairweather.metrics.registry import local_path

    missing = []
    for file in METRICS[name].files:
        if file.store != "hf":
            path = local_path(file, cfg.evaluate.scorer)
            if path is None or not path.exists():
                missing.append(Missing(f"metric {name}", file.name, f"{path} does not exist"))
        elif file.file is not None:
            if not isinstance(try_to_load_from_cache(file.name, file.file, cache_dir=hf_hub_cache()), str):
                missing.append(
                    Missing(f"metric {name}", f"{file.name}/{file.file}", f"not in {hf_hub_cache()}")
                )
        elif reason := _hf_repo_missing(file.name):
            missing.append(Missing(f"metric {name}", file.name, reason))
    return missing


def prefetch_command(cfg: FairweatherConfig) -> str:
    """The command that fetches what ``cfg`` needs into its weights cache."""
    config = cfg.profile if (CONFIG_DIR / f"{cfg.profile}.yaml").is_file() else "<your config>"
    cache = (
        f" --cache {cfg.runtime.weights_cache}" if cfg.runtime.weights_cache else " --cache <shared folder>"
    )
    return f"fairweather prefetch --config {config}{cache}"


def check_weights(cfg: FairweatherConfig, stage: str, metrics: Iterable[str] = ()) -> None:
    """Fail at start-up, naming every missing item and the prefetch command, when ``stage`` cannot load its weights.

    Call it before Ray starts and before an MLflow run opens. ``metrics``: the metric names the stage scores with
    (pseudolabel: ``cfg.pseudo.metrics`` plus ``vlm_vis`` when ``cfg.pseudo.use_vlm``).
    """
    check_weights_cache(cfg)
    missing = missing_weights_for(cfg, stage, metrics)
    if not missing:
        return
    offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
    items = "; ".join(f"{m.what} {m.ref!r}: {m.reason}" for m in missing)
    raise WeightsMissingError(
        f"{stage} needs weights that are not on this machine{offline}: {items}. Fetch them where the network is "
        f"reachable with `{prefetch_command(cfg)}` (onto storage every node mounts), then run with "
        "runtime.weights_cache set to that folder"
    )
