"""Frozen CLIP through open_clip: image embeddings, spatial patch tokens, text and learnable-prompt embeddings.

``FrozenCLIP.from_config`` loads ``model_name`` + ``pretrained`` tag (e.g. ``ViT-B-32`` + ``openai``) with
``open_clip.create_model``; a ``tiny:clip`` name is first built locally and then loaded through the same call as
``local-dir:<folder>``. Only ViT image towers are supported (the losses and the CLIP-prior network need patch tokens).
"""

from __future__ import annotations

from pathlib import Path

import open_clip
import torch
import torch.nn.functional as F

from fairweather.contracts.config.encoders import CLIPEncoderConfig
from fairweather.tiny import is_tiny, resolve_model_ref

from .frozen import FrozenModule, normalize, resize_shortest_and_crop


class FrozenCLIP(FrozenModule):
    """A frozen open_clip CLIP. Images are ``(N, 3, H, W)`` in [0, 1]; CLIP's resize and normalisation are done
    differentiably here, so losses on its embeddings send gradients back to the restored image.

    Attributes: ``embed_dim`` (D, joint space), ``token_dim`` (C, width of patch tokens), ``grid_size`` ((gh, gw)
    of the patch grid), ``image_size`` (S), ``logit_scale`` (a float, CLIP's learned temperature, exponentiated).
    """

    def __init__(self, model: open_clip.CLIP, tokenizer, name: str):
        super().__init__()
        visual = model.visual
        if not isinstance(visual, open_clip.transformer.VisionTransformer):
            raise ValueError(
                f"CLIP model {name!r}: only ViT image towers are supported (patch tokens are needed)"
            )
        visual.output_tokens = True  # visual(x) -> (pooled embedding, patch tokens), one forward for both
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.image_size = int(visual.image_size[0])
        self.grid_size = tuple(int(g) for g in visual.grid_size)
        self.embed_dim = int(model.text_projection.shape[-1])
        self.token_dim = int(visual.transformer.width)
        self.logit_scale = float(model.logit_scale.detach().exp())
        mean, std = visual.preprocess_cfg["mean"], visual.preprocess_cfg["std"]
        self.register_buffer("mean", torch.tensor(mean), persistent=False)
        self.register_buffer("std", torch.tensor(std), persistent=False)
        self.freeze()

    @classmethod
    def from_config(cls, cfg: CLIPEncoderConfig, cache_dir: str | Path) -> FrozenCLIP:
        if is_tiny(cfg.model_name):
            name, pretrained = f"local-dir:{resolve_model_ref(cfg.model_name, cache_dir)}", None
        else:
            name, pretrained = cfg.model_name, cfg.pretrained or None
        model = open_clip.create_model(name, pretrained=pretrained)
        return cls(model, open_clip.get_tokenizer(name), cfg.model_name)

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, 3, S, S)`` resized, centre-cropped and normalised as CLIP expects."""
        return normalize(resize_shortest_and_crop(x, self.image_size), self.mean, self.std)

    def encode_image_and_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward: ``((N, D) L2-normalised embedding, (N, L, C) patch tokens without the class token)``."""
        pooled, tokens = self.model.visual(self.preprocess(x))
        return F.normalize(pooled, dim=-1), tokens

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, D)`` L2-normalised image embeddings."""
        return self.encode_image_and_tokens(x)[0]

    def encode_image_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [0, 1] -> ``(N, L, C)`` spatial patch tokens, ``L = gh * gw`` in row-major order."""
        return self.encode_image_and_tokens(x)[1]

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """``T`` strings -> ``(T, context_length)`` token ids on this module's device."""
        return self.tokenizer(texts).to(self.mean.device)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """``T`` strings -> ``(T, D)`` L2-normalised text embeddings."""
        return self.model.encode_text(self.tokenize(texts), normalize=True)

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """``(T, L)`` token ids -> ``(T, L, W)`` input embeddings of the text transformer (to splice prompts into)."""
        return self.model.token_embedding(tokens)

    def encode_text_embeddings(self, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Run the text tower on given input embeddings (CoOp / CLIP-LIT learnable prompts).

        embeddings: ``(T, L, W)`` token embeddings, some replaced by learnable vectors; tokens: ``(T, L)`` the ids
        they stand for (used only to find each sequence's end-of-text position for pooling). Returns ``(T, D)``
        L2-normalised, exactly ``encode_text`` when ``embeddings == token_embeddings(tokens)``.
        """
        model = self.model
        x = embeddings + model.positional_embedding.to(embeddings.dtype)
        x = model.ln_final(model.transformer(x, attn_mask=model.attn_mask))
        x = open_clip.transformer.text_global_pool(
            x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None)
        )
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )
        return F.normalize(x, dim=-1)
