"""Images -> label records through a VLM backend: rating, description (d_neg), clear rewrite (d_pos), weather.

Pure orchestration over ``VLMBackend``; the Ray Data job (``fairweather.stages.label.driver``) calls ``label_images``
on each batch inside its actors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fairweather.contracts.config.vlm import VLMConfig

from .backend import VLMBackend
from .describe import clear_rewrite_from_llm, parse_weather, rewrite_to_clear
from .prompts import DESCRIPTION, REWRITE, rating_prompt
from .rating import Rating, rating_from_token_scores
from .requests import check_image


@dataclass(frozen=True)
class ImageLabel:
    """What the VLM says about one image.

    description: d_neg, the VLM's scene description.  d_pos: its clear-weather rewrite ("The weather looks good. …").
    weather: ``clear | rain | haze | snow | unknown``, parsed from the description.
    """

    rating: Rating
    description: str
    d_pos: str
    weather: str


def rate_images(backend: VLMBackend, images: list[np.ndarray], cfg: VLMConfig) -> list[Rating]:
    """Only the rating of each ``(H, W, 3)`` uint8 RGB image (used to score restorations, where no text is needed)."""
    for index, image in enumerate(images):
        check_image(image, f"images[{index}]")
    prompt = rating_prompt(cfg).text
    token_ids = backend.rating_token_ids(prompt)
    scores = backend.rating_logprobs(images, prompt)
    if len(scores) != len(images):
        raise RuntimeError(f"backend returned {len(scores)} rating results for {len(images)} images")
    return [rating_from_token_scores(image_scores, token_ids) for image_scores in scores]


def describe_images(backend: VLMBackend, images: list[np.ndarray], cfg: VLMConfig) -> list[str]:
    """The VLM's scene description (d_neg) of each image."""
    return backend.generate(images, [DESCRIPTION.text] * len(images), cfg.max_new_tokens)


def clear_rewrites(backend: VLMBackend, descriptions: list[str], cfg: VLMConfig) -> list[str]:
    """d_pos for each d_neg: the rule-based rewrite, or (``cfg.rewrite == "llm"``) a text-only LLM rewrite."""
    if cfg.rewrite == "rules":
        return [rewrite_to_clear(text) for text in descriptions]
    if cfg.rewrite == "llm":
        prompts = [REWRITE.format(description=text) for text in descriptions]
        return [clear_rewrite_from_llm(text) for text in backend.generate(None, prompts, cfg.max_new_tokens)]
    raise ValueError(f"unknown VLMConfig.rewrite {cfg.rewrite!r} (known: rules, llm)")


def label_images(backend: VLMBackend, images: list[np.ndarray], cfg: VLMConfig) -> list[ImageLabel]:
    """Rate, describe and classify each image; images are ``(H, W, 3)`` uint8 RGB arrays."""
    ratings = rate_images(backend, images, cfg)
    descriptions = describe_images(backend, images, cfg)
    positives = clear_rewrites(backend, descriptions, cfg)
    return [
        ImageLabel(rating=rating, description=text, d_pos=positive, weather=parse_weather(text))
        for rating, text, positive in zip(ratings, descriptions, positives, strict=True)
    ]
