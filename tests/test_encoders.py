"""Frozen CLIP and Depth Anything encoders on the tiny local models: shapes, same load path, frozen weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from fairweather.contracts.config.encoders import CLIPEncoderConfig
from fairweather.encoders import FrozenCLIP, FrozenDepthEncoder
from fairweather.tiny import resolve_model_ref


def test_tiny_models_are_plain_local_folders(clip: FrozenCLIP, model_cache: Path) -> None:
    clip_dir = Path(resolve_model_ref("tiny:clip", model_cache))
    config = json.loads((clip_dir / "open_clip_config.json").read_text())
    assert config["model_cfg"]["embed_dim"] == clip.embed_dim
    assert (clip_dir / "open_clip_model.safetensors").is_file()
    depth_dir = Path(resolve_model_ref("tiny:depth-anything", model_cache))
    assert (depth_dir / "config.json").is_file()
    # A second load reads the same folder again and gives the same weights (built once, seed fixed).
    again = FrozenCLIP.from_config(CLIPEncoderConfig(model_name="tiny:clip"), model_cache)
    for (name, a), b in zip(clip.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_unknown_tiny_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="tiny:nope"):
        FrozenCLIP.from_config(CLIPEncoderConfig(model_name="tiny:nope"), tmp_path)


def test_clip_shapes_and_normalisation(clip: FrozenCLIP) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 52)
    assert clip.preprocess(x).shape == (2, 3, clip.image_size, clip.image_size)
    image = clip.encode_image(x)
    assert image.shape == (2, clip.embed_dim)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(2))
    tokens = clip.encode_image_tokens(x)
    gh, gw = clip.grid_size
    assert tokens.shape == (2, gh * gw, clip.token_dim)
    text = clip.encode_text(["a photo of rain.", "a clear day", "snow"])
    assert text.shape == (3, clip.embed_dim)
    torch.testing.assert_close(text.norm(dim=-1), torch.ones(3))
    assert clip.logit_scale > 1.0


def test_preprocess_is_identity_up_to_normalisation_at_clip_size(clip: FrozenCLIP) -> None:
    torch.manual_seed(0)
    x = torch.rand(1, 3, clip.image_size, clip.image_size)
    restored = clip.preprocess(x) * clip.std[:, None, None] + clip.mean[:, None, None]
    torch.testing.assert_close(restored, x)


def test_prompt_embedding_path_matches_encode_text(clip: FrozenCLIP) -> None:
    texts = ["a photo of rain.", "the weather looks good."]
    tokens = clip.tokenize(texts)
    embeddings = clip.token_embeddings(tokens)
    torch.testing.assert_close(clip.encode_text_embeddings(embeddings, tokens), clip.encode_text(texts))
    # Changing one spliced-in vector changes only that prompt's embedding.
    torch.manual_seed(0)
    changed = embeddings.clone()
    changed[0, 1] = torch.randn(embeddings.shape[-1])  # not a constant shift: LayerNorm would erase that
    out = clip.encode_text_embeddings(changed, tokens)
    assert not torch.allclose(out[0], clip.encode_text(texts[:1])[0])
    torch.testing.assert_close(out[1], clip.encode_text(texts[1:])[0])


def test_depth_features_shape_and_patch_multiple(depth: FrozenDepthEncoder) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 60)
    pre = depth.preprocess(x)
    assert pre.shape[-2] % depth.patch_size == 0 and pre.shape[-1] % depth.patch_size == 0
    assert pre.shape[-2] == 28  # shorter side -> input_size, kept a multiple of the patch size
    features = depth(x)
    n_tokens = (pre.shape[-2] // depth.patch_size) * (pre.shape[-1] // depth.patch_size)
    assert features.shape == (2, n_tokens, depth.feature_dim)


class Parent(nn.Module):
    """A trainable module holding a frozen encoder, as a network or loss would."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.head = nn.Linear(2, 2)
        self.encoder = encoder


@pytest.mark.parametrize("which", ["clip", "depth"])
def test_frozen_encoders_pass_gradients_to_the_image_only(which: str, request: pytest.FixtureRequest) -> None:
    encoder = request.getfixturevalue(which)
    forward = encoder.encode_image_tokens if which == "clip" else encoder
    parent = Parent(encoder).train()
    assert parent.head.training and not encoder.training
    assert not any(module.training for module in encoder.modules())
    assert not any(p.requires_grad for p in encoder.parameters())

    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    torch.manual_seed(0)
    image = torch.rand(2, 3, 32, 32, requires_grad=True)
    optimizer = torch.optim.SGD([image], lr=0.5)
    forward(image).square().mean().backward()
    assert image.grad is not None and image.grad.abs().sum() > 0
    assert all(p.grad is None for p in encoder.parameters())
    optimizer.step()
    for name, value in encoder.state_dict().items():
        assert torch.equal(value, before[name]), name
