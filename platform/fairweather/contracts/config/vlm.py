"""Vision-language model used to rate and describe real images, and the labeling job's scale knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class VLMConfig:
    #: ``transformers`` runs anywhere (CPU too); ``vllm`` needs the [vllm] extra and a GPU.
    backend: Literal["transformers", "vllm"] = "transformers"
    #: Hugging Face id, local folder, or ``tiny:llava`` (a random tiny model built locally for tests/smoke).
    model_id: str = "llava-hf/llava-1.5-7b-hf"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    #: ``auto`` picks CUDA when available (transformers backend only).
    device: str = "auto"
    #: Which rating prompt of METHOD.md: the paper's visibility prompt or the quality variant.
    rating_prompt: Literal["visibility", "quality"] = "visibility"
    #: Tokens generated for a scene description.
    max_new_tokens: int = 64
    #: d_pos from d_neg: rule-based weather-word rewrite, or an LLM rewrite through the same engine.
    rewrite: Literal["rules", "llm"] = "rules"
    # vLLM engine arguments (ignored by the transformers backend).
    tensor_parallel_size: int = 1
    max_model_len: int = 4096
    gpu_memory_utilization: float = 0.9


@dataclass(frozen=True)
class LabelJobConfig:
    """Ray Data scale knobs for ``fairweather label``."""

    batch_size: int = 8
    #: Number of backend actors (each holds one model copy).
    concurrency: int = 1
    num_gpus_per_actor: float = 0.0
    num_cpus_per_actor: float = 1.0
    accelerator_type: str | None = None
    #: Ray retries of a crashed actor's task before its batch lands in the errors table.
    max_task_retries: int = 2
