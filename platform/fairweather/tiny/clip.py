"""A tiny random open_clip CLIP (ViT image tower, 2-layer text tower) saved as an open_clip ``local-dir`` folder.

The folder holds ``open_clip_config.json`` (``model_cfg`` + ``preprocess_cfg``) and ``open_clip_model.safetensors``,
the layout open_clip's ``create_model("local-dir:<folder>")`` loads, so the tiny model goes through the same
``open_clip.create_model`` call as ``ViT-B-32`` + ``openai``. The text tower keeps CLIP's real BPE tokenizer
(bundled with open_clip), so any prompt text works.
"""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import torch
from safetensors.torch import save_file

MODEL_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 48, "head_width": 24, "patch_size": 8},
    "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
PREPROCESS_CFG = {
    "mean": [0.48145466, 0.4578275, 0.40821073],
    "std": [0.26862954, 0.26130258, 0.27577711],
    "interpolation": "bicubic",
    "resize_mode": "shortest",
}


def build(out_dir: Path) -> None:
    """Write the tiny CLIP into ``out_dir`` (random weights, seed 0)."""
    torch.manual_seed(0)
    model = open_clip.CLIP(**MODEL_CFG)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"model_cfg": MODEL_CFG, "preprocess_cfg": PREPROCESS_CFG}
    (out_dir / "open_clip_config.json").write_text(json.dumps(config, indent=2))
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(out_dir / "open_clip_model.safetensors"),
    )
