"""Checks that need a CUDA device (``pytest -m gpu`` on a GPU node; excluded from the default CPU run).

They run the real engines on the tiny models: vLLM must return exactly the five rating ids and agree with the
transformers backend, and every backbone must train a step in bf16 autocast on CUDA.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fairweather.contracts.config.model import ModelConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.models import build_model
from fairweather.tiny import resolve_model_ref
from fairweather.vlm import build_backend, rate_images

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_vllm_rating_matches_transformers_on_the_tiny_vlm(model_cache):
    pytest.importorskip("vllm", reason="the [vllm] extra is not installed")
    images = [np.random.default_rng(i).integers(0, 255, (48, 64, 3), dtype=np.uint8) for i in range(4)]
    common = VLMConfig(model_id="tiny:llava", dtype="float32", max_new_tokens=8)
    model_path = resolve_model_ref(common.model_id, model_cache)
    reference = rate_images(
        build_backend(dataclasses.replace(common, device="cuda"), model_path), images, common
    )
    vllm_cfg = dataclasses.replace(common, backend="vllm", max_model_len=512, gpu_memory_utilization=0.3)
    ratings = rate_images(build_backend(vllm_cfg, model_path), images, vllm_cfg)
    assert all(rating.complete for rating in ratings)  # all five ids came back
    for got, want in zip(ratings, reference, strict=True):
        assert got.r_vlm == pytest.approx(want.r_vlm, abs=1e-3)


@pytest.mark.parametrize("arch", ["msbdn", "restormer", "nafnet", "promptir"])
def test_backbone_trains_in_bf16_autocast(arch):
    model = build_model(dataclasses.replace(ModelConfig(), arch=arch)).cuda().train()
    x, y = torch.rand(2, 3, 64, 64, device="cuda"), torch.rand(2, 3, 64, 64, device="cuda")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = F.l1_loss(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss) and all(torch.isfinite(p).all() for p in model.parameters())
