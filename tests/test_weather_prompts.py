"""Weather prompt learning (stage 1) and L_wpl (stage 2) on the tiny CLIP."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fairweather.encoders import FrozenCLIP
from fairweather.losses import WEATHERS, LossContext, WeatherPromptLoss, WeatherPrompts, fit_weather_prompts


def weather_images(per_class: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random scenes, then per class in WEATHERS order: unchanged (clear), bright vertical streaks (rain),
    low contrast lifted toward white (haze), sparse white dots (snow). Returns ``(4·n, 3, size, size)``, ``(4·n,)``."""
    gen = torch.Generator().manual_seed(seed)

    def scenes() -> torch.Tensor:
        low = torch.rand(per_class, 3, 4, 4, generator=gen)
        return F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)

    streaks = (torch.rand(per_class, 1, 1, size, generator=gen) > 0.7).float()
    dots = (torch.rand(per_class, 1, size, size, generator=gen) > 0.9).float()
    images = [
        scenes(),
        (0.5 * scenes() + 0.6 * streaks).clamp(0, 1),
        0.3 * scenes() + 0.6,
        (0.5 * scenes() + dots).clamp(0, 1),
    ]
    labels = torch.arange(len(WEATHERS)).repeat_interleave(per_class)
    return torch.cat(images), labels


@pytest.fixture(scope="module")
def fitted(clip: FrozenCLIP) -> tuple[WeatherPrompts, list[float]]:
    torch.manual_seed(0)
    prompts = WeatherPrompts(clip, context_len=4)
    images, labels = weather_images(per_class=24, seed=0)
    history = fit_weather_prompts(prompts, images, labels, steps=150, lr=2e-2, batch_size=32)
    return prompts.freeze(), history


def test_prompt_learning_separates_four_weathers(fitted: tuple[WeatherPrompts, list[float]]) -> None:
    prompts, history = fitted
    assert sum(history[-10:]) / 10 < 0.5 * sum(history[:10]) / 10
    images, labels = weather_images(per_class=16, seed=1)  # held-out images
    with torch.no_grad():
        accuracy = (prompts.logits(images).argmax(dim=1) == labels).float().mean()
    assert accuracy >= 0.6  # chance is 0.25


def test_frozen_prompts_are_fixed_and_cached(fitted: tuple[WeatherPrompts, list[float]]) -> None:
    prompts, _ = fitted
    assert not prompts.context.requires_grad
    text = prompts()
    assert text.shape == (len(WEATHERS), prompts.clip.embed_dim) and not text.requires_grad
    assert prompts() is text  # stage 2 spends no text-tower forward


def test_wpl_matches_formula_and_sends_gradient_to_the_image(
    fitted: tuple[WeatherPrompts, list[float]],
) -> None:
    prompts, _ = fitted
    loss = WeatherPromptLoss(prompts)
    torch.manual_seed(0)
    image = torch.rand(3, 3, 32, 32, requires_grad=True)
    value = loss(LossContext(domain="real", restored=image, degraded=image.detach()))
    logits = prompts.clip.logit_scale * prompts.clip.encode_image(image) @ prompts().T
    expected = -F.log_softmax(logits, dim=-1)[:, 0].mean()
    torch.testing.assert_close(value, expected)
    value.backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert prompts.context.grad is None


def test_wpl_is_smallest_for_an_image_that_looks_like_t_clear(
    fitted: tuple[WeatherPrompts, list[float]],
) -> None:
    """Optimise one image per weather toward that prompt's text embedding; the clear one has the lowest L_wpl."""
    prompts, _ = fitted
    clip, text = prompts.clip, prompts()
    torch.manual_seed(0)
    images = torch.full((len(WEATHERS), 3, 32, 32), 0.5).requires_grad_(True)
    optimizer = torch.optim.Adam([images], lr=0.05)
    for _ in range(60):
        cosine = (clip.encode_image(images) * text).sum(dim=-1)  # image k against prompt k
        optimizer.zero_grad()
        (1 - cosine).sum().backward()
        optimizer.step()
    loss = WeatherPromptLoss(prompts)
    with torch.no_grad():
        per_image = [
            float(loss(LossContext(domain="real", restored=im[None], degraded=im[None]))) for im in images
        ]
    assert per_image[0] == min(per_image)
    assert per_image[0] < min(per_image[1:]) - 0.1


def test_bad_inputs_are_clear_errors(clip: FrozenCLIP) -> None:
    with pytest.raises(ValueError, match="context length"):
        WeatherPrompts(clip, context_len=0)
    prompts = WeatherPrompts(clip, context_len=2)
    with pytest.raises(ValueError, match="frozen"):
        WeatherPromptLoss(prompts)
    images = torch.rand(4, 3, 32, 32)
    with pytest.raises(ValueError, match="labels"):
        fit_weather_prompts(prompts, images, torch.zeros(3, dtype=torch.long), steps=1, lr=1e-3, batch_size=2)
    with pytest.raises(ValueError, match="weather labels"):
        fit_weather_prompts(prompts, images, torch.full((4,), 4), steps=1, lr=1e-3, batch_size=2)
    prompts.freeze()
    with pytest.raises(ValueError, match="frozen already"):
        fit_weather_prompts(prompts, images, torch.zeros(4, dtype=torch.long), steps=1, lr=1e-3, batch_size=2)
