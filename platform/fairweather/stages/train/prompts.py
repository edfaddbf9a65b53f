"""Stage 1 of Paper A, the weather prompts, learned once per run on the driver before the trainer starts."""

from __future__ import annotations

import io

import torch

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.io import atomic_write_bytes, read_bytes
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.stages.infra.console import say
from fairweather.training.prompt_stage import learn_prompt_context, weather_examples
from fairweather.training.setup import load_encoders

#: Name of the stage-1 prompt context file beside the run's checkpoints.
PROMPTS_FILE = "weather_prompts.pt"


def learn_prompts(cfg: FairweatherConfig, rows: dict[str, list[dict]], run_folder: str, logger: MetricLogger):
    """Stage 1 (weather prompts) once per run: reuse ``<run>/weather_prompts.pt`` when a rerun finds it.

    Returns the context ``(4, M, D)``. Runs on the driver: it is a few hundred CLIP image embeddings and a small
    optimisation of the prompt vectors only.
    """
    path = f"{run_folder}/{PROMPTS_FILE}"
    try:
        return torch.load(io.BytesIO(read_bytes(path)), weights_only=True)
    except OSError:
        pass  # first run of this name
    clip, _ = load_encoders(cfg, torch.device("cpu"), depth=False)
    examples = weather_examples(
        rows["train"], rows["real"], cfg.train.prompt_images_per_weather, cfg.runtime.seed
    )
    context, history = learn_prompt_context(cfg, clip, examples)
    for step, value in enumerate(history):
        logger.log_metrics({"stage1/prompt_loss": value}, step=step)
    buffer = io.BytesIO()
    torch.save(context, buffer)
    atomic_write_bytes(path, buffer.getvalue())
    say(
        f"train: stage 1 learned the weather prompts on {len(examples)} images (loss {history[0]:.3f} -> {history[-1]:.3f})"
    )
    return context
