"""Restoration backbones: shapes for any size, the residual convention, trainability, build_model, configs."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from fairweather.contracts.config import load_config
from fairweather.contracts.config.model import (
    ModelConfig,
    MSBDNConfig,
    NAFNetConfig,
    PromptIRConfig,
    RestormerConfig,
)
from fairweather.models import (
    MSBDN,
    NAFNet,
    PromptIR,
    RestorationNet,
    Restormer,
    build_model,
    count_parameters,
    crop,
    pad_to_multiple,
)

from .checks import l1_before_and_after_one_adam_step

#: Tiny sizes so every test runs in a second or two on a shared CPU.
TINY = ModelConfig(
    msbdn=MSBDNConfig(width=8, levels=2, blocks_per_level=1, bottleneck_blocks=1),
    restormer=RestormerConfig(width=8, blocks=(1, 1, 1, 1), heads=(1, 2, 4, 8), refinement_blocks=1),
    nafnet=NAFNetConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1)),
    promptir=PromptIRConfig(
        width=8,
        blocks=(1, 1, 1, 1),
        heads=(1, 2, 4, 8),
        refinement_blocks=1,
        prompt_size=8,
        prompt_dims=(8, 8, 16),
    ),
)
ARCHS = {"msbdn": MSBDN, "restormer": Restormer, "nafnet": NAFNet, "promptir": PromptIR}


def tiny_model(arch: str) -> RestorationNet:
    torch.manual_seed(0)
    return build_model(dataclasses.replace(TINY, arch=arch))


def fixed_pair(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """A smooth clean image and a hazy version of it: ``(1, 3, size, size)`` each, in [0, 1]."""
    gen = torch.Generator().manual_seed(1)
    clean = F.interpolate(
        torch.rand(1, 3, size // 4, size // 4, generator=gen), size=(size, size), mode="bilinear"
    )
    hazy = 0.6 * clean + 0.3  # atmospheric-scattering-like: attenuate and add airlight
    return hazy, clean


@pytest.mark.parametrize("arch", ARCHS)
def test_build_model_picks_arch(arch: str) -> None:
    model = tiny_model(arch)
    assert type(model) is ARCHS[arch]
    assert count_parameters(model) > 0


@pytest.mark.parametrize("arch", ARCHS)
def test_any_size_keeps_shape_and_eval_clamps(arch: str) -> None:
    model = tiny_model(arch)
    torch.manual_seed(2)
    x = torch.rand(2, 3, 37, 45)
    assert model.train()(x).shape == x.shape
    out = model.eval()(x)
    assert out.shape == x.shape
    assert out.min() >= 0.0 and out.max() <= 1.0
    # Padding to the size multiple must also work for images smaller than the pad.
    assert model(torch.rand(1, 3, 3, 5)).shape == (1, 3, 3, 5)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_channels_last_network_runs_its_forward_in_channels_last_and_restores_the_same(arch: str) -> None:
    torch.manual_seed(3)
    x = torch.rand(2, 3, 37, 45)  # contiguous, and padded inside: the forward converts whatever it is given
    plain = tiny_model(arch).eval()
    fast = tiny_model(arch).use_memory_format(torch.channels_last).eval()
    fast.load_state_dict(plain.state_dict())  # the weights keep the layout of the network they load into
    inputs = []
    first_conv = next(m for m in fast.modules() if isinstance(m, torch.nn.Conv2d))
    first_conv.register_forward_hook(lambda module, args, out: inputs.append(args[0]))
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in fast.parameters() if p.ndim == 4)
    out = fast(x)
    assert inputs and inputs[0].is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(out, plain(x), atol=1e-5)


@pytest.mark.parametrize("arch", ARCHS)
def test_one_adam_step_reduces_l1(arch: str) -> None:
    before, after = l1_before_and_after_one_adam_step(tiny_model(arch).train(), *fixed_pair())
    assert after < before


@pytest.mark.parametrize("arch", ARCHS)
def test_overfits_a_pair(arch: str) -> None:
    model = tiny_model(arch).train()
    hazy, clean = fixed_pair()
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    with torch.no_grad():
        start = F.l1_loss(model(hazy), clean).item()
    for _ in range(40):
        opt.zero_grad()
        loss = F.l1_loss(model(hazy), clean)
        loss.backward()
        opt.step()
    with torch.no_grad():
        end = F.l1_loss(model(hazy), clean).item()
    assert end < 0.35 * start, f"{arch}: L1 {start:.4f} -> {end:.4f}"


def test_build_model_rejects_unknown_arch_and_missing_clip() -> None:
    with pytest.raises(ValueError, match="unknown arch 'unet'"):
        build_model(ModelConfig(arch="unet"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs a CLIP model"):
        build_model(ModelConfig(arch="clip_prior"))
    with pytest.raises(TypeError, match="ModelConfig"):
        build_model(TINY.msbdn)  # type: ignore[arg-type]


def test_forward_rejects_bad_input() -> None:
    model = tiny_model("nafnet")
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        model(torch.rand(3, 16, 16))
    with pytest.raises(TypeError, match="floating-point"):
        model(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))


def test_residual_convention_and_training_keeps_gradients() -> None:
    class Shift(RestorationNet):
        size_multiple = 8

        def __init__(self) -> None:
            super().__init__()
            self.bias = torch.nn.Parameter(torch.tensor(0.5))

        def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
            assert x.shape[-1] % 8 == 0 and x.shape[-2] % 8 == 0
            return self.bias.expand_as(x)

    model = Shift()
    x = torch.full((1, 3, 5, 11), 0.8)
    out = model.train()(x)
    assert torch.allclose(out, x + 0.5)  # not clamped in training ...
    out.sum().backward()
    assert model.bias.grad is not None and model.bias.grad.item() == pytest.approx(out.numel())
    assert torch.equal(model.eval()(x), torch.ones_like(x))  # ... clamped to [0, 1] in eval


def test_pad_and_crop_round_trip() -> None:
    x = torch.arange(2 * 3 * 5 * 7, dtype=torch.float32).reshape(2, 3, 5, 7)
    padded, size = pad_to_multiple(x, 4)
    assert padded.shape == (2, 3, 8, 8) and size == (5, 7)
    assert torch.equal(padded[..., 5, :7], x[..., 3, :])  # reflect: row 5 mirrors row 3
    assert torch.equal(crop(padded, size), x)
    tiny, _ = pad_to_multiple(torch.rand(1, 3, 2, 2), 8)  # pad larger than the side: replicate
    assert tiny.shape == (1, 3, 8, 8)
    same, _ = pad_to_multiple(x, 1)
    assert same is x
    with pytest.raises(ValueError, match="multiple"):
        pad_to_multiple(x, 0)


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ValueError, match=r"restormer.heads\[2\]"):
        RestormerConfig(width=6, heads=(1, 2, 5, 8))
    with pytest.raises(ValueError, match="same length"):
        NAFNetConfig(encoder_blocks=(1, 1), decoder_blocks=(1,))
    with pytest.raises(ValueError, match="prompt-interaction level"):
        PromptIRConfig(width=8, heads=(1, 2, 4, 8), prompt_dims=(8, 8, 18))
    with pytest.raises(ValueError, match="tile_overlap"):
        ModelConfig(tile=64, tile_overlap=64)


def test_paper_sizes_match_published_parameter_counts() -> None:
    """Paper-size configs reproduce the published sizes (Restormer 26.13M, NAFNet-w32 17.11M; PromptIR 35.59M
    minus 0.22M of layers the released code defines but never uses; MSBDN ~31M with our 3x3 stem)."""
    paper = load_config("paper").model
    counts = {
        arch: count_parameters(build_model(dataclasses.replace(paper, arch=arch)))
        for arch in ("restormer", "nafnet", "promptir", "msbdn")
    }
    assert counts["restormer"] == pytest.approx(26.13e6, rel=2e-3)
    assert counts["nafnet"] == pytest.approx(17.11e6, rel=2e-3)
    assert counts["promptir"] == pytest.approx(35.59e6 - 0.215e6, rel=2e-3)
    assert counts["msbdn"] == pytest.approx(31.35e6, rel=0.05)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
def test_layer_norm_2d_normalises_each_pixel_over_channels_with_its_affine(memory_format) -> None:
    """The fused LayerNorm2d equals the per-pixel formula (biased variance, eps inside the root), values and
    gradients, in either memory format."""
    from fairweather.models.common import LayerNorm2d

    torch.manual_seed(0)
    norm = LayerNorm2d(6, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
        norm.bias.normal_()
    x = (torch.randn(2, 6, 5, 7) * 3 + 1).contiguous(memory_format=memory_format).requires_grad_()
    mean = x.mean(dim=1, keepdim=True)
    var = (x - mean).pow(2).mean(dim=1, keepdim=True)
    expected = (x - mean) / torch.sqrt(var + 1e-6) * norm.weight[:, None, None] + norm.bias[:, None, None]
    out = norm(x)
    assert out.shape == x.shape
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    (grad_out,) = torch.autograd.grad(out.square().sum(), x)
    (grad_expected,) = torch.autograd.grad(expected.square().sum(), x)
    torch.testing.assert_close(grad_out, grad_expected, rtol=1e-4, atol=1e-4)
