"""Engine-independent request building: image checks/conversion and chat-template rendering.

Shared by the transformers and vLLM backends so both send the model exactly the same text.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image


def check_image(image: Any, name: str = "image") -> None:
    """Raise ``TypeError``/``ValueError`` naming ``name`` unless it is an ``(H, W, 3)`` uint8 RGB array."""
    if not isinstance(image, np.ndarray):
        raise TypeError(f"{name} must be a numpy array (H, W, 3) uint8, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"{name} must be (H, W, 3) uint8 RGB, got shape {image.shape} dtype {image.dtype}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {image.shape})")


def to_pil(image: np.ndarray, name: str = "image") -> Image.Image:
    """``(H, W, 3)`` uint8 RGB array -> PIL RGB image (resizing is left to the model's own image processor)."""
    check_image(image, name)
    return Image.fromarray(np.ascontiguousarray(image), mode="RGB")


def chat_messages(prompt: str, with_image: bool) -> list[dict[str, Any]]:
    """One user turn in the Hugging Face multimodal message format: the image placeholder first, then the text
    (llava-1.5 was trained with the image before the question)."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise ValueError(f"prompt must be a non-empty string, got {prompt!r}")
    content: list[dict[str, Any]] = [{"type": "image"}] if with_image else []
    content.append({"type": "text", "text": prompt})
    return [{"role": "user", "content": content}]


def render_prompt(processor: Any, prompt: str, with_image: bool) -> str:
    """The model's own chat template applied to ``prompt``, assistant turn left open (text, not token ids).

    processor: an HF processor or tokenizer with a chat template (vLLM's ``LLM.get_tokenizer()`` works too).
    """
    if getattr(processor, "chat_template", None) is None:
        raise ValueError(
            f"{type(processor).__name__} has no chat template; this model cannot be prompted as a chat"
        )
    return processor.apply_chat_template(
        chat_messages(prompt, with_image), add_generation_prompt=True, tokenize=False
    )


def check_one_image_per_prompt(images: list[np.ndarray] | None, prompts: list[str]) -> None:
    """A generation batch is text-only (``images`` None) or pairs each prompt with exactly one image."""
    if images is not None and len(images) != len(prompts):
        raise ValueError(f"got {len(images)} images for {len(prompts)} prompts; need one image per prompt")
