"""vLLM backend's pure parts: request building, sampling arguments, output post-processing (no vLLM needed)."""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
import pytest

from fairweather.contracts.config.vlm import VLMConfig
from fairweather.vlm import rating_from_token_scores
from fairweather.vlm.vllm_backend import (
    build_request,
    completion_text,
    engine_kwargs,
    first_token_logprobs,
    generation_sampling_kwargs,
    logprob_value,
    position_logprobs,
    rating_sampling_kwargs,
)

# Shaped like vllm.logprobs.Logprob, vllm.outputs.CompletionOutput and vllm.outputs.RequestOutput.
Logprob = namedtuple("Logprob", "logprob rank decoded_token")
Completion = namedtuple("Completion", "index text token_ids logprobs")
RequestOutput = namedtuple("RequestOutput", "request_id prompt outputs")

IDS = (101, 102, 103, 104, 105)


def _output(position: dict, text: str = "excellent") -> RequestOutput:
    return RequestOutput("0", "USER: <image>\n... ASSISTANT:", [Completion(0, text, [101], [position])])


def test_all_five_ids_give_a_complete_rating_and_the_sampled_token_is_dropped():
    position = {i: Logprob(math.log(0.2) - 1.0, rank, None) for rank, i in enumerate(IDS, start=1)}
    position[7] = Logprob(-0.1, 1, "x")  # the sampled token, returned in addition to the requested ids
    scores = first_token_logprobs(_output(position), IDS)
    assert set(scores) == set(IDS)
    rating = rating_from_token_scores(scores, IDS)
    assert rating.complete and rating.r_vlm == pytest.approx(3.0)


def test_missing_id_is_left_out_and_flags_the_rating():
    position = {i: Logprob(-1.0, 1, None) for i in IDS[:4]}
    scores = first_token_logprobs(_output(position), IDS)
    assert 105 not in scores
    assert not rating_from_token_scores(scores, IDS).complete


def test_logprob_entry_forms():
    assert logprob_value(Logprob(-0.5, 1, None)) == -0.5
    assert logprob_value({"logprob": -0.25, "rank": 2, "decoded_token": "good"}) == -0.25  # Ray Data LLM form
    assert logprob_value(-1) == -1.0
    with pytest.raises(TypeError, match="str"):
        logprob_value("bad")
    assert position_logprobs({101: {"logprob": -2.0}}, IDS) == {101: -2.0}


def test_no_logprobs_or_no_completion_raises():
    with pytest.raises(RuntimeError, match="no logprobs"):
        first_token_logprobs(RequestOutput("1", "p", [Completion(0, "x", [1], None)]), IDS)
    with pytest.raises(RuntimeError, match="no completion"):
        first_token_logprobs(RequestOutput("2", "p", []), IDS)


def test_completion_text_is_stripped():
    assert completion_text(_output({}, text="  A rainy street.\n")) == "A rainy street."


def test_sampling_and_engine_arguments():
    kwargs = rating_sampling_kwargs(IDS)
    assert kwargs == {"max_tokens": 1, "temperature": 0.0, "logprobs": 5, "logprob_token_ids": list(IDS)}
    assert generation_sampling_kwargs(12) == {"max_tokens": 12, "temperature": 0.0}
    with pytest.raises(ValueError, match="max_new_tokens"):
        generation_sampling_kwargs(0)
    cfg = VLMConfig(backend="vllm", tensor_parallel_size=2, max_model_len=2048, dtype="bfloat16")
    engine = engine_kwargs("/models/llava", cfg)
    assert engine["model"] == "/models/llava" and engine["tensor_parallel_size"] == 2
    assert engine["max_model_len"] == 2048 and engine["dtype"] == "bfloat16"
    assert engine["gpu_memory_utilization"] == cfg.gpu_memory_utilization


def test_build_request_carries_the_image():
    image = np.zeros((12, 20, 3), dtype=np.uint8)
    request = build_request("USER: <image>\nq ASSISTANT:", image)
    assert request["prompt"].startswith("USER: <image>")
    assert request["multi_modal_data"]["image"].size == (20, 12)
    assert build_request("text only", None) == {"prompt": "text only"}
    with pytest.raises(ValueError, match=r"images\[3\]"):
        build_request("p", np.zeros((4, 4), dtype=np.uint8), "images[3]")


def test_backend_without_vllm_says_how_to_install():
    try:
        import vllm  # noqa: F401
    except ImportError:
        from fairweather.vlm.vllm_backend import VLLMBackend

        with pytest.raises(ImportError, match=r"fairweather\[vllm\]"):
            VLLMBackend("/nonexistent", VLMConfig(backend="vllm"))
    else:
        pytest.skip("vllm is installed; the missing-extra message cannot be observed")


def test_with_vllms_own_classes():
    vllm = pytest.importorskip(
        "vllm", reason="vllm not installed (optional [vllm] extra); pure paths tested above"
    )
    from vllm.logprobs import Logprob as VLogprob
    from vllm.outputs import CompletionOutput
    from vllm.outputs import RequestOutput as VRequestOutput

    params = vllm.SamplingParams(**rating_sampling_kwargs(IDS))
    assert list(params.logprob_token_ids) == list(IDS)
    position = {
        i: VLogprob(logprob=-float(k), rank=k, decoded_token=None) for k, i in enumerate(IDS, start=1)
    }
    completion = CompletionOutput(
        index=0, text="excellent", token_ids=[101], cumulative_logprob=None, logprobs=[position]
    )
    output = VRequestOutput(
        request_id="0",
        prompt="p",
        prompt_token_ids=[1],
        prompt_logprobs=None,
        outputs=[completion],
        finished=True,
    )
    scores = first_token_logprobs(output, IDS)
    assert scores == {i: -float(k) for k, i in enumerate(IDS, start=1)}
    assert rating_from_token_scores(scores, IDS).complete
