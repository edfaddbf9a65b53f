"""VLM backend on Hugging Face transformers: any image-text-to-text model (LLaVA, Qwen-VL, ...), CPU or GPU.

Rating is one batched forward pass reading the last position's logits; descriptions use greedy ``generate``.
Batches are left-padded so the last position of every row is that row's real next token.
"""

from __future__ import annotations

import numpy as np
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor

from fairweather.contracts.config.vlm import VLMConfig

from .requests import check_one_image_per_prompt, render_prompt, to_pil
from .tokens import RatingTokenIds

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def pick_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else is passed to ``torch.device``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class TransformersBackend:
    """``AutoProcessor`` + ``AutoModelForImageTextToText`` loaded from ``model_path`` (HF id or local folder)."""

    def __init__(self, model_path: str, cfg: VLMConfig) -> None:
        self.model_id = model_path
        self.device = pick_device(cfg.device)
        if cfg.dtype == "auto":
            # Half precision is slow or unsupported on CPU: keep float32 there, the checkpoint's dtype on GPU.
            dtype: torch.dtype | str = "auto" if self.device.type == "cuda" else torch.float32
        else:
            dtype = _DTYPES[cfg.dtype]
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.processor.tokenizer.padding_side = "left"
        if self.processor.tokenizer.pad_token is None:
            # Llama-style tokenizers ship without a pad token; padding positions are masked anyway.
            self.processor.tokenizer.pad_token = self.processor.tokenizer.eos_token
        self.model = (
            AutoModelForImageTextToText.from_pretrained(model_path, dtype=dtype).to(self.device).eval()
        )
        #: prompt -> the five rating-word ids after its rendered template (the VLMBackend method)
        self.rating_token_ids = RatingTokenIds(self.processor)

    def _inputs(self, images: list[np.ndarray] | None, prompts: list[str]) -> dict[str, torch.Tensor]:
        """Rendered, tokenized, left-padded batch on the model's device (pixel values in the model's dtype)."""
        texts = [render_prompt(self.processor, prompt, with_image=images is not None) for prompt in prompts]
        pil = None if images is None else [to_pil(image, f"images[{i}]") for i, image in enumerate(images)]
        batch = self.processor(images=pil, text=texts, padding=True, return_tensors="pt")
        inputs = {name: value.to(self.device) for name, value in batch.items()}
        if "pixel_values" in inputs:
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        return inputs

    @torch.inference_mode()
    def rating_logprobs(self, images: list[np.ndarray], prompt: str) -> list[dict[int, float]]:
        """Last-position logits of the five rating ids for each ``(H, W, 3)`` uint8 image, one forward pass."""
        if not images:
            return []
        token_ids = self.rating_token_ids(prompt)
        logits = self.model(**self._inputs(images, [prompt] * len(images))).logits  # (N, L, V)
        scores = logits[:, -1, list(token_ids)].float().cpu()  # (N, 5)
        return [dict(zip(token_ids, row.tolist(), strict=True)) for row in scores]

    @torch.inference_mode()
    def generate(self, images: list[np.ndarray] | None, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per prompt (and image, when given); the prompt and special tokens are removed."""
        check_one_image_per_prompt(images, prompts)
        if not prompts:
            return []
        inputs = self._inputs(images, prompts)
        output = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
        new_tokens = output[:, inputs["input_ids"].shape[1] :]
        return [text.strip() for text in self.processor.batch_decode(new_tokens, skip_special_tokens=True)]
