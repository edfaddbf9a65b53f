"""VLM assessment of images (METHOD.md "Image assessment with a VLM"): rating math, prompts, token ids,
engine backends (transformers, optional vLLM), descriptions and their clear-weather rewrites.

No Ray here: ``fairweather.stages.label.driver`` runs ``label_images`` inside Ray Data actors.
"""

from fairweather.contracts.vocab import WEATHER_CLASSES

from .backend import VLMBackend, build_backend
from .describe import CLEAR_PREFIX, clear_rewrite_from_llm, parse_weather, rewrite_to_clear
from .label import ImageLabel, label_images, rate_images
from .prompts import DESCRIPTION, QUALITY, REWRITE, VISIBILITY, Prompt, prompt_versions, rating_prompt
from .rating import RATING_WEIGHTS, RATING_WORDS, Rating, rating_from_logits, rating_from_token_scores
from .tokens import resolve_rating_token_ids

__all__ = [
    "CLEAR_PREFIX",
    "DESCRIPTION",
    "QUALITY",
    "RATING_WEIGHTS",
    "RATING_WORDS",
    "REWRITE",
    "VISIBILITY",
    "WEATHER_CLASSES",
    "ImageLabel",
    "Prompt",
    "Rating",
    "VLMBackend",
    "build_backend",
    "clear_rewrite_from_llm",
    "label_images",
    "parse_weather",
    "prompt_versions",
    "rate_images",
    "rating_from_logits",
    "rating_from_token_scores",
    "rating_prompt",
    "resolve_rating_token_ids",
    "rewrite_to_clear",
]
