"""Stage 1 of Paper A: learn the four weather prompts (clear, rain, haze, snow) with CLIP frozen.

Images of each weather come from the labeled pairs (inputs are rain / haze / snow, targets are clear) and from the
labeled real pool (its weather hint or the VLM's class). The learned context vectors are saved with every
checkpoint and reloaded frozen, so stage 2's ``L_wpl`` always scores against the same prompts.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from fairweather.contracts.config import FairweatherConfig
from fairweather.data.batches import load_rgb, to_tensor
from fairweather.encoders.frozen import resize_shortest_and_crop
from fairweather.losses import WEATHERS, WeatherPrompts, fit_weather_prompts


def weather_examples(
    paired: Sequence[dict], real: Sequence[dict], per_weather: int, seed: int
) -> list[tuple[str, str]]:
    """``(uri, weather)`` examples, at most ``per_weather`` per class of ``WEATHERS``, chosen reproducibly.

    paired: rows with ``input_uri``, ``target_uri``, ``weather``; real: rows with ``uri`` and ``weather``.
    """
    pools: dict[str, list[str]] = {weather: [] for weather in WEATHERS}
    for row in paired:
        pools["clear"].append(row["target_uri"])
        if row["weather"] in pools:
            pools[row["weather"]].append(row["input_uri"])
    for row in real:
        if row["weather"] in pools:
            pools[row["weather"]].append(row["uri"])
    rng = np.random.default_rng(seed)
    chosen = []
    for weather, uris in pools.items():
        unique = sorted(set(uris))
        picks = rng.permutation(len(unique))[:per_weather]
        chosen += [(unique[i], weather) for i in sorted(picks)]
    return chosen


def learn_prompt_context(
    cfg: FairweatherConfig, clip: nn.Module, examples: Sequence[tuple[str, str]]
) -> tuple[torch.Tensor, list[float]]:
    """Fit the prompts on ``examples``; returns the context ``(4, prompt_context_len, D)`` on CPU and the loss curve.

    Every image is brought to CLIP's square input size first (shortest side, centre crop), so images of any size
    stack into one batch.
    """
    missing = [w for w in WEATHERS if w not in {weather for _, weather in examples}]
    if missing:
        raise ValueError(
            f"stage 1 (weather prompts) has no images of {missing}: loss.weights.wpl > 0 needs every weather "
            "among the pairs' inputs/targets or the labeled real pool"
        )
    size = int(clip.image_size)
    images = torch.cat(
        [
            resize_shortest_and_crop(to_tensor([load_rgb(uri, cfg.data.max_image_pixels)]), size)
            for uri, _ in examples
        ]
    )
    labels = torch.tensor([WEATHERS.index(weather) for _, weather in examples])
    device = next(clip.parameters()).device
    torch.manual_seed(cfg.runtime.seed)
    prompts = WeatherPrompts(clip, cfg.loss.prompt_context_len).to(device)
    history = fit_weather_prompts(
        prompts,
        images.to(device),
        labels,
        steps=cfg.loss.prompt_fit_steps,
        lr=cfg.loss.prompt_fit_lr,
        batch_size=cfg.loss.prompt_fit_batch_size,
        seed=cfg.runtime.seed,
    )
    return prompts.context.detach().cpu(), history
