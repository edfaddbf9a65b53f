"""The one interface every VLM engine implements, and ``build_backend`` that picks one from the config.

Both methods take the *user-turn text* of a prompt; the backend renders it with the model's own chat template
(image placeholder first, assistant turn left open), so prompts stay engine-agnostic data.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from fairweather.contracts.config.vlm import VLMConfig

from .prompts import rating_prompt


@runtime_checkable
class VLMBackend(Protocol):
    """A loaded vision-language model that can score the five rating words and generate text."""

    #: The reference the model was loaded from (Hugging Face id or local folder), stored with labels.
    model_id: str

    def rating_token_ids(self, prompt: str) -> tuple[int, ...]:
        """Ids of the first token of excellent, good, fair, poor, bad as the assistant turn of ``prompt`` yields
        them (see ``fairweather.vlm.tokens``); raises ``ValueError`` when they are ambiguous or collide."""
        ...

    def rating_logprobs(self, images: list[np.ndarray], prompt: str) -> list[dict[int, float]]:
        """One forward per image: next-token scores of the five rating ids.

        images: each ``(H, W, 3)`` uint8 RGB.  Returns one dict per image mapping token id -> logit (transformers)
        or log-probability (vLLM); both give the same softmax over the five.  A dict may lack an id only if the
        engine did not return it; ``rating_from_token_scores`` then flags the rating incomplete.
        """
        ...

    def generate(self, images: list[np.ndarray] | None, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers to ``prompts`` (one per image, or text-only when ``images`` is None), special tokens and
        the prompt stripped."""
        ...


def build_backend(cfg: VLMConfig, model_path: str | Path) -> VLMBackend:
    """Load the model at ``model_path`` (a Hugging Face id or a local folder) into the engine of ``cfg.backend``.

    ``model_path`` is ``cfg.model_id`` already resolved by the caller (``fairweather.tiny.resolve_model_ref``
    materialises ``tiny:llava``): the tiny builders import this package's prompts, so this package must not import
    them back. The rating token ids of the configured rating prompt are resolved here, so a tokenizer that cannot
    give five distinct ids fails at start-up, not mid-job.
    """
    # Engines are imported on demand: the vLLM module needs the optional extra only when chosen.
    if cfg.backend == "transformers":
        from .transformers_backend import TransformersBackend

        backend: VLMBackend = TransformersBackend(model_path, cfg)
    elif cfg.backend == "vllm":
        from .vllm_backend import VLLMBackend

        backend = VLLMBackend(model_path, cfg)
    else:
        raise ValueError(f"unknown VLM backend {cfg.backend!r} (known: transformers, vllm)")
    backend.rating_token_ids(rating_prompt(cfg).text)
    return backend
