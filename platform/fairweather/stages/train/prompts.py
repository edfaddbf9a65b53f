"""Stage 1 of Paper A, the weather prompts, learned once per run on the driver before the trainer starts, and
shared between runs that would learn the same ones (the trials of a sweep: the prompts do not depend on w1-w4)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import posixpath

import torch

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.io import atomic_write_bytes, read_bytes
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.stages.infra.console import say
from fairweather.training.prompt_stage import learn_prompt_context, weather_examples
from fairweather.training.setup import load_encoders

#: Name of the stage-1 prompt context file beside the run's checkpoints.
PROMPTS_FILE = "weather_prompts.pt"
#: Folder beside the runs where stage-1 contexts are kept by the digest of everything they are learned from.
SHARED_FOLDER = "stage1-prompts"

log = logging.getLogger(__name__)


def stage1_digest(cfg: FairweatherConfig, examples: list[tuple[str, str]]) -> str:
    """sha256 (hex, 16 digits) of what stage 1 learns from: the CLIP encoder's config, the prompt-fitting settings,
    the seed, and each example's weather and file bytes (a regenerated image under the same name changes it)."""
    loss = cfg.loss
    settings = {
        "clip": to_dict(cfg.encoders.clip),
        "fit": [
            loss.prompt_context_len,
            loss.prompt_fit_steps,
            loss.prompt_fit_lr,
            loss.prompt_fit_batch_size,
        ],
        "seed": cfg.runtime.seed,
        "max_image_pixels": cfg.data.max_image_pixels,
    }
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for uri, weather in examples:
        digest.update(weather.encode() + hashlib.sha256(read_bytes(uri)).digest())
    return digest.hexdigest()[:16]


def _load(uri: str) -> torch.Tensor | None:
    try:
        return torch.load(io.BytesIO(read_bytes(uri)), weights_only=True)
    except OSError:
        return None  # not learned there yet


def _load_shared(uri: str) -> torch.Tensor | None:
    """The shared context at ``uri``, or None. It is a cache: an entry that cannot be read as a tensor (a file
    damaged outside the platform, whose writes are atomic) is learned again and replaced, not a failed run."""
    try:
        context = _load(uri)
    except Exception as error:  # torch.load raises UnpicklingError, RuntimeError, EOFError, KeyError, ...
        log.warning("stage 1: the shared prompts %s cannot be read (%s); learning them again", uri, error)
        return None
    return context if isinstance(context, torch.Tensor) else None


def _save(uri: str, context: torch.Tensor) -> None:
    buffer = io.BytesIO()
    torch.save(context, buffer)
    atomic_write_bytes(uri, buffer.getvalue())


def learn_prompts(cfg: FairweatherConfig, rows: dict[str, list[dict]], run_folder: str, logger: MetricLogger):
    """Stage 1 (weather prompts) once per run: reuse ``<run>/weather_prompts.pt`` when a rerun finds it, else the
    context another run learned from the same inputs (``<runs>/stage1-prompts/<digest>.pt``), else learn it.

    Returns the context ``(4, M, D)``. Runs on the driver: it is a few hundred CLIP image embeddings and a small
    optimisation of the prompt vectors only.
    """
    path = f"{run_folder}/{PROMPTS_FILE}"
    context = _load(path)
    if context is not None:
        return context
    examples = weather_examples(
        rows["train"], rows["real"], cfg.train.prompt_images_per_weather, cfg.runtime.seed
    )
    shared = f"{posixpath.dirname(run_folder.rstrip('/'))}/{SHARED_FOLDER}/{stage1_digest(cfg, examples)}.pt"
    context = _load_shared(shared)
    if context is not None:
        say(
            f"train: stage 1's weather prompts reused from {shared} (learned on the same images and settings)"
        )
    else:
        clip, _ = load_encoders(cfg, torch.device("cpu"), depth=False)
        context, history = learn_prompt_context(cfg, clip, examples)
        for step, value in enumerate(history):
            logger.log_metrics({"stage1/prompt_loss": value}, step=step)
        _save(shared, context)
        say(
            f"train: stage 1 learned the weather prompts on {len(examples)} images "
            f"(loss {history[0]:.3f} -> {history[-1]:.3f})"
        )
    _save(path, context)
    return context
