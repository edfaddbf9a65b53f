"""Frozen Depth Anything visual encoder (transformers): dense features of an image for L_feat.

``FrozenDepthEncoder.from_config`` loads ``DepthAnythingForDepthEstimation`` from a Hugging Face id or folder
(``tiny:depth-anything`` is built locally first) and keeps only its DINOv2 backbone: L_feat compares the encoder's
patch features, not the predicted depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import DepthAnythingForDepthEstimation

from fairweather.contracts.config.encoders import DepthEncoderConfig
from fairweather.tiny import resolve_model_ref

from .frozen import FrozenModule, normalize

#: Depth Anything's own normalisation (ImageNet statistics).
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class FrozenDepthEncoder(FrozenModule):
    """``forward(x)``: ``(N, 3, H, W)`` in [0, 1] -> ``(N, L, C)`` last-layer patch features of the DINOv2 backbone.

    The image is resized (bilinear, differentiable) so its shorter side is ``input_size`` and both sides are
    multiples of the patch size, keeping the aspect ratio as Depth Anything's processor does.
    """

    def __init__(self, model: DepthAnythingForDepthEstimation, input_size: int, name: str):
        super().__init__()
        self.backbone, self.name = model.backbone, name
        self.patch_size = int(model.config.patch_size)
        self.input_size = input_size
        self.feature_dim = int(model.config.backbone_config.hidden_size)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD), persistent=False)
        self.freeze()

    @classmethod
    def from_config(cls, cfg: DepthEncoderConfig, cache_dir: str | Path) -> FrozenDepthEncoder:
        model = DepthAnythingForDepthEstimation.from_pretrained(resolve_model_ref(cfg.model_id, cache_dir))
        return cls(model, cfg.input_size, cfg.model_id)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, H', W')`` normalised, H' and W' multiples of the patch size."""
        h, w = x.shape[-2:]
        scale = self.input_size / min(h, w)
        p = self.patch_size
        size = (max(p, round(h * scale / p) * p), max(p, round(w * scale / p) * p))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        return normalize(x, self.mean, self.std)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.backbone(self.preprocess(x))
        features = out.feature_maps[
            -1
        ]  # (N, L + 1, C) with the class token first (reshape_hidden_states=False)
        return features[:, 1:] if features.ndim == 3 else features.flatten(2).transpose(1, 2)


class DepthEstimator:
    """Depth Anything's whole model as a depth map for ``fairweather synth``: ``(H, W, 3)`` float RGB in [0, 1] ->
    ``(h, w)`` relative inverse depth (larger = nearer, the model's own resolution), as
    :mod:`fairweather.synth.depth` expects. Only worth using with real weights: a tiny random model's map is noise,
    so the synth stage uses the geometric prior then."""

    def __init__(self, model: DepthAnythingForDepthEstimation, input_size: int):
        self.model = model.eval()
        self.input_size = input_size
        self.patch_size = int(model.config.patch_size)

    @classmethod
    def from_config(cls, cfg: DepthEncoderConfig, cache_dir: str | Path) -> DepthEstimator:
        model = DepthAnythingForDepthEstimation.from_pretrained(resolve_model_ref(cfg.model_id, cache_dir))
        return cls(model, cfg.input_size)

    @torch.no_grad()
    def __call__(self, image: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(image, dtype=torch.float32).permute(2, 0, 1)[None]
        h, w = x.shape[-2:]
        scale, p = self.input_size / min(h, w), self.patch_size
        size = (max(p, round(h * scale / p) * p), max(p, round(w * scale / p) * p))
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return self.model(pixel_values=(x - mean) / std).predicted_depth[0].numpy()
