"""A tiny random Depth Anything (DINOv2 backbone + DPT neck/head) saved with ``save_pretrained``.

Loaded by ``DepthAnythingForDepthEstimation.from_pretrained(folder)``: the same call as
``depth-anything/Depth-Anything-V2-Small-hf``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config


def build(out_dir: Path) -> None:
    """Write the tiny Depth Anything into ``out_dir`` (random weights, seed 0)."""
    torch.manual_seed(0)
    backbone = Dinov2Config(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        mlp_ratio=2,
        patch_size=14,
        image_size=56,
        out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )
    config = DepthAnythingConfig(
        backbone_config=backbone,
        patch_size=14,
        reassemble_hidden_size=32,
        neck_hidden_sizes=[8, 16, 16, 32],
        fusion_hidden_size=16,
        head_hidden_size=8,
    )
    DepthAnythingForDepthEstimation(config).save_pretrained(out_dir)
