"""Vision-language model used to rate and describe real images, and the labeling job's scale knobs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .loader import AT_LEAST_ONE, NON_NEGATIVE, POSITIVE, Range, check_ranges


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

    def __post_init__(self) -> None:
        check_ranges(
            self,
            max_new_tokens=AT_LEAST_ONE,
            tensor_parallel_size=AT_LEAST_ONE,
            max_model_len=AT_LEAST_ONE,
            gpu_memory_utilization=Range(0, 1, low_open=True),
        )


@dataclass(frozen=True)
class LabelJobConfig:
    """Ray Data scale knobs for ``fairweather label``."""

    #: Images per VLM call inside an actor.
    batch_size: int = 8
    #: Number of backend actors (each holds one model copy).
    concurrency: int = 1
    #: GPUs reserved per actor (fractions share a GPU between actors).
    num_gpus_per_actor: float = 0.0
    #: CPUs reserved per actor; Ray caps the actor's torch threads to this.
    num_cpus_per_actor: float = 1.0
    #: Ray accelerator type the actors must run on (e.g. ``A100``); ``None``: any.
    accelerator_type: str | None = None
    #: Ray retries of a crashed actor's task before its block's files land in the errors table as ``lost``.
    max_task_retries: int = 2
    #: Times Ray restarts a crashed actor (reloading the model) before giving up on it.
    max_restarts: int = 4
    #: Images are downscaled (never upscaled) to this shorter side before leaving the decode stage (LLaVA-1.5
    #: resizes to 336 px itself, so nothing is lost); 0 ships full-size pixels.
    image_short_side: int = 336
    #: Files per read/decode task (one Ray Data block). Larger amortises Ray's per-task cost (64 vs 8 doubled the
    #: tiny model's throughput on 2 CPUs); a block whose actor keeps crashing loses this many files to ``errors``.
    read_block_rows: int = 64
    #: The driver writes ``pool``/``labels``/``errors`` parts every this many finished rows (a crash keeps them) ...
    flush_rows: int = 256
    #: ... or every this many seconds, whichever comes first (a slow model's first rows are kept too).
    flush_seconds: float = 60.0

    def __post_init__(self) -> None:
        check_ranges(
            self,
            batch_size=AT_LEAST_ONE,
            concurrency=AT_LEAST_ONE,
            read_block_rows=AT_LEAST_ONE,
            flush_rows=AT_LEAST_ONE,
            flush_seconds=POSITIVE,
            num_gpus_per_actor=NON_NEGATIVE,
            num_cpus_per_actor=NON_NEGATIVE,
            max_task_retries=NON_NEGATIVE,
            max_restarts=NON_NEGATIVE,
            image_short_side=NON_NEGATIVE,
        )
