"""VLM backend on vLLM (optional ``[vllm]`` extra, GPU): the same prompts and rating math as transformers.

vLLM is imported inside ``VLLMBackend.__init__`` only, so this module (and its pure helpers, which turn requests
and vLLM output objects into plain Python) imports and is unit-tested without vLLM.

How the five rating ids are scored: ``SamplingParams.logprob_token_ids`` ("Specific token IDs to return logprobs
for ... logprobs for exactly these token IDs will be returned, in addition to the sampled token", vllm-project/vllm
``vllm/sampling_params.py`` @ 00388f65). ``_validate_logprobs`` there requires ``logprobs == len(logprob_token_ids)``
when both are set, and older engines only allocate a logprob container when ``logprobs`` is set
(``LogprobsProcessor.from_new_request`` reads ``sampling_params.logprobs``), so we set both to the five ids.
Logprobs come from the raw logits (default ``logprobs_mode="raw_logprobs"``), i.e. before temperature/penalties.
A top-k request (``logprobs=5`` alone) is *not* used: it can miss a word, which would then look like p = 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import AutoProcessor

from fairweather.contracts.config.vlm import VLMConfig

from .requests import check_one_image_per_prompt, render_prompt, to_pil
from .tokens import RatingTokenIds


def engine_kwargs(model_path: str, cfg: VLMConfig) -> dict[str, Any]:
    """Arguments of ``vllm.LLM`` from the config (one image per prompt is all the labeling job sends)."""
    return {
        "model": model_path,
        "dtype": cfg.dtype,
        "tensor_parallel_size": cfg.tensor_parallel_size,
        "max_model_len": cfg.max_model_len,
        "gpu_memory_utilization": cfg.gpu_memory_utilization,
        "limit_mm_per_prompt": {"image": 1},
    }


def rating_sampling_kwargs(token_ids: Sequence[int]) -> dict[str, Any]:
    """``SamplingParams`` arguments for one rating step: one greedy token, logprobs of exactly ``token_ids``."""
    ids = [int(token_id) for token_id in token_ids]
    return {"max_tokens": 1, "temperature": 0.0, "logprobs": len(ids), "logprob_token_ids": ids}


def generation_sampling_kwargs(max_new_tokens: int) -> dict[str, Any]:
    """``SamplingParams`` arguments for a greedy description / rewrite."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return {"max_tokens": max_new_tokens, "temperature": 0.0}


def build_request(rendered_prompt: str, image: np.ndarray | None, name: str = "image") -> dict[str, Any]:
    """A vLLM prompt dict: the rendered chat text (one image placeholder) and, if given, the image as PIL."""
    if image is None:
        return {"prompt": rendered_prompt}
    return {"prompt": rendered_prompt, "multi_modal_data": {"image": to_pil(image, name)}}


def logprob_value(entry: Any) -> float:
    """A vLLM ``Logprob`` (``.logprob``), its dict form (``{"logprob": ...}``, as Ray Data LLM returns it) or a
    bare float -> float."""
    if hasattr(entry, "logprob"):
        return float(entry.logprob)
    if isinstance(entry, Mapping):
        return float(entry["logprob"])
    if isinstance(entry, (int, float)):
        return float(entry)
    raise TypeError(f"cannot read a log-probability from {type(entry).__name__}")


def position_logprobs(position: Mapping[int, Any], token_ids: Sequence[int]) -> dict[int, float]:
    """One generated position's ``{token_id: Logprob}`` -> ``{token_id: logprob}`` for ``token_ids`` only.

    The sampled token is returned by vLLM too and is dropped here unless it is one of the five. An id vLLM did not
    return is left out (not set to -inf), so ``rating_from_token_scores`` flags the rating incomplete.
    """
    return {
        int(token_id): logprob_value(position[token_id]) for token_id in token_ids if token_id in position
    }


def first_token_logprobs(request_output: Any, token_ids: Sequence[int]) -> dict[int, float]:
    """``RequestOutput`` (``.outputs[0].logprobs``: list of per-position dicts, or ``FlatLogprobs``) -> the five
    ids' logprobs at the first generated position; raises when vLLM returned no logprobs at all."""
    completions = getattr(request_output, "outputs", None)
    if not completions:
        raise RuntimeError(
            f"vLLM output for request {getattr(request_output, 'request_id', '?')} has no completion"
        )
    logprobs = completions[0].logprobs
    if logprobs is None or len(logprobs) == 0:
        raise RuntimeError(
            "vLLM returned no logprobs for a rating request; the installed vLLM may not support "
            "SamplingParams.logprob_token_ids"
        )
    return position_logprobs(logprobs[0], token_ids)


def completion_text(request_output: Any) -> str:
    """The generated text of a ``RequestOutput``'s first completion, stripped."""
    completions = getattr(request_output, "outputs", None)
    if not completions:
        raise RuntimeError(
            f"vLLM output for request {getattr(request_output, 'request_id', '?')} has no completion"
        )
    return completions[0].text.strip()


class VLLMBackend:
    """``vllm.LLM`` with the model's HF processor for chat templates and rating-token resolution."""

    def __init__(self, model_path: str, cfg: VLMConfig) -> None:
        try:
            import vllm
        except ImportError as error:
            raise ImportError(
                "VLMConfig.backend='vllm' needs the optional extra: pip install 'fairweather[vllm]' (GPU only); "
                "use backend='transformers' otherwise"
            ) from error
        self._vllm = vllm
        self.model_id = model_path
        # The HF processor renders exactly the text the transformers backend sends; vLLM expands <image> itself.
        self.processor = AutoProcessor.from_pretrained(model_path)
        self.llm = vllm.LLM(**engine_kwargs(model_path, cfg))
        #: prompt -> the five rating-word ids after its rendered template (the VLMBackend method)
        self.rating_token_ids = RatingTokenIds(self.processor)

    def _run(self, requests: list[dict[str, Any]], sampling: dict[str, Any]) -> list[Any]:
        outputs = self.llm.generate(requests, self._vllm.SamplingParams(**sampling), use_tqdm=False)
        if len(outputs) != len(requests):
            raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(requests)} requests")
        return outputs

    def rating_logprobs(self, images: list[np.ndarray], prompt: str) -> list[dict[int, float]]:
        """One 1-token generation per image with the five ids' logprobs requested explicitly."""
        if not images:
            return []
        token_ids = self.rating_token_ids(prompt)
        rendered = render_prompt(self.processor, prompt, with_image=True)
        requests = [build_request(rendered, image, f"images[{i}]") for i, image in enumerate(images)]
        outputs = self._run(requests, rating_sampling_kwargs(token_ids))
        return [first_token_logprobs(output, token_ids) for output in outputs]

    def generate(self, images: list[np.ndarray] | None, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy answers, one per prompt (and image, when given)."""
        check_one_image_per_prompt(images, prompts)
        if not prompts:
            return []
        requests = [
            build_request(
                render_prompt(self.processor, prompt, with_image=images is not None),
                None if images is None else images[i],
                f"images[{i}]",
            )
            for i, prompt in enumerate(prompts)
        ]
        return [
            completion_text(output)
            for output in self._run(requests, generation_sampling_kwargs(max_new_tokens))
        ]
