"""Tiles without seams: the Test-time Local Converter (TLC) plus blended overlaps against whole-image inference.

A tiny NAFNet is trained for a few seconds to dehaze smooth 32-px crops with a random global veil, so its channel
attention (a global average pool) really carries the haze level. On a smooth 192-px image whose veil varies across
the frame, tiles of 64 px then each see their own global statistic: plain tiling gives a block grid (seam energy
several times that of whole-image inference). With TLC (window 1.5 x the crop) and the blended overlap, the seam
energy is that of whole-image inference and the tiled output is close to the whole-image output.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch.nn import functional as F

from fairweather.contracts.config.model import ModelConfig, NAFNetConfig
from fairweather.models import NAFNet, build_model, configure_tlc, local_mean, restore_tiled, tlc_base_size
from fairweather.models.tiling import border_pairs, seam_energy
from fairweather.models.tlc import StatsPool

CROP, TILE, OVERLAP, SIZE = 32, 64, 16, 192
TINY = NAFNetConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))


def smooth(n: int, h: int, w: int, grid: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, 3, h, w)`` smooth colour fields in [0, 1]: bicubic up-sampling of a ``grid x grid`` random image."""
    coarse = torch.rand(n, 3, grid, grid, generator=generator)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=True).clamp(0, 1)


def veil(clean: torch.Tensor, transmission: torch.Tensor) -> torch.Tensor:
    """Atmospheric scattering with airlight 0.9."""
    return clean * transmission + 0.9 * (1 - transmission)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: the 2-core CI machine runs other work; small convolutions gain nothing from two."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained() -> NAFNet:
    """~5 s on one core: 150 Adam steps of 8 crops, each with a uniform veil of random strength."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    net = NAFNet(TINY)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    for _ in range(150):
        clean = smooth(8, CROP, CROP, 4, gen)
        hazy = veil(clean, torch.rand(8, 1, 1, 1, generator=gen) * 0.6 + 0.3)
        loss = (net(hazy) - clean).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def scene() -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, SIZE), torch.linspace(0, 1, SIZE), indexing="ij")
    return veil(smooth(1, SIZE, SIZE, 3, gen), (0.35 + 0.5 * xx * yy)[None, None])


def outputs(net: NAFNet, x: torch.Tensor, base: int, overlap: int) -> tuple[torch.Tensor, torch.Tensor]:
    configure_tlc(net, base)
    with torch.no_grad():
        return restore_tiled(net, x, TILE, overlap), net(x)


def test_tlc_and_blending_remove_the_seams_that_global_pooling_makes(
    trained: NAFNet, scene: torch.Tensor
) -> None:
    base = tlc_base_size(0, CROP)
    assert base == 48
    # Plain tiling of the global pool: a block grid.
    tiled, whole = outputs(trained, scene, base=0, overlap=0)
    plain = seam_energy(tiled, TILE, 0) / seam_energy(whole, TILE, 0)
    assert plain > 2.0, plain
    # Blending alone smears the jumps, but each tile keeps its own global level.
    tiled, whole = outputs(trained, scene, base=0, overlap=OVERLAP)
    blend_only_gap = (tiled - whole).abs().mean().item()
    # TLC + blending: seam energy of whole-image (TLC) inference, and an output close to it.
    tiled, whole = outputs(trained, scene, base=base, overlap=OVERLAP)
    ratio = seam_energy(tiled, TILE, OVERLAP) / seam_energy(whole, TILE, OVERLAP)
    assert 0.8 < ratio < 1.25, ratio
    gap = (tiled - whole).abs().mean().item()
    assert gap < 0.3 * blend_only_gap, (gap, blend_only_gap)


def test_training_mode_is_unchanged_by_tlc(trained: NAFNet) -> None:
    x = torch.rand(2, 3, 96, 80, generator=torch.Generator().manual_seed(2))
    trained.train()
    try:
        configure_tlc(trained, 0)
        with torch.no_grad():
            reference = trained(x)
        configure_tlc(trained, 24)
        with torch.no_grad():
            assert torch.equal(trained(x), reference)
    finally:
        trained.eval()
    # At inference a window covering the whole input is exactly the global pool.
    configure_tlc(trained, 0)
    with torch.no_grad():
        global_out = trained(x[..., :32, :32])
    configure_tlc(trained, 48)
    with torch.no_grad():
        torch.testing.assert_close(trained(x[..., :32, :32]), global_out, atol=1e-6, rtol=0)


def test_local_mean_matches_a_sliding_average_with_replicated_edges() -> None:
    x = torch.rand(2, 3, 21, 17, dtype=torch.float64)
    reference = F.avg_pool2d(x, (5, 7), stride=1)  # only windows wholly inside
    reference = F.pad(reference, (3, 3, 2, 2), mode="replicate")
    torch.testing.assert_close(local_mean(x, (5, 7)), reference, atol=1e-12, rtol=0)
    assert local_mean(x, 64).shape == (2, 3, 1, 1)  # window >= map: the global mean
    torch.testing.assert_close(local_mean(x, 64), x.mean(dim=(2, 3), keepdim=True))
    assert local_mean(x, (64, 3)).shape == x.shape  # local along one axis only
    # float32 on a large, offset map stays accurate (sums are taken around the global mean).
    big = 1000.0 + torch.rand(1, 1, 600, 700)
    exact = F.avg_pool2d(big.double(), 9, stride=1)
    torch.testing.assert_close(local_mean(big, 9)[..., 4:-4, 4:-4].double(), exact, atol=1e-4, rtol=0)


def test_build_model_sizes_the_window_from_the_crop_and_keeps_checkpoints() -> None:
    cfg = ModelConfig(arch="nafnet", nafnet=TINY)
    kernels = {
        m.scale: m.kernel for m in build_model(cfg, train_crop_size=64).modules() if isinstance(m, StatsPool)
    }
    assert kernels == {1: 96, 2: 48, 4: 24}
    kernels = {m.scale: m.kernel for m in build_model(cfg).modules() if isinstance(m, StatsPool)}
    assert kernels[1] == 384  # 1.5 x the default crop of 256
    fixed = dataclasses.replace(cfg, tlc_base_size=100)
    assert {
        m.kernel for m in build_model(fixed, train_crop_size=64).modules() if isinstance(m, StatsPool)
    } == {
        100,
        50,
        25,
    }
    off = dataclasses.replace(cfg, tlc=False)
    assert {m.kernel for m in build_model(off).modules() if isinstance(m, StatsPool)} == {0}
    # No parameter moved: the state-dict keys are those of the AdaptiveAvgPool2d layout.
    assert "encoders.0.0.attention.1.weight" in build_model(off).state_dict()
    with pytest.raises(ValueError, match="tlc_base_size"):
        ModelConfig(tlc_base_size=-1)


def test_border_pairs() -> None:
    assert border_pairs(100, 100, 8) == []
    assert border_pairs(128, 64, 0) == [64]
    # tiles [0, 64), [48, 112), [64, 128): bands [48, 64] and [64, 112]
    assert border_pairs(128, 64, 16) == list(range(48, 113))


@pytest.mark.parametrize("arch", ["restormer", "promptir"])
def test_restormer_and_promptir_statistics_are_local_at_inference_only(arch: str) -> None:
    """Their channel attention (and PromptIR's prompt-weight pool) is windowed by TLC at inference; a window
    covering the map is exactly the global statistic, and training mode never changes."""
    torch.manual_seed(3)
    net = build_model(ModelConfig(arch=arch), train_crop_size=32)
    kernels = {
        (type(m).__name__, m.scale): m.kernel
        for m in net.modules()
        if hasattr(m, "tlc_aware") or isinstance(m, StatsPool)
    }
    assert kernels[("MDTA", 1)] == 48 and kernels[("MDTA", 8)] == 6
    with torch.no_grad():
        for p in net.parameters():  # away from the identity initialisation
            p.add_(0.02 * torch.randn_like(p))
    x = torch.rand(1, 3, 64, 56, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        train_tlc = net.train()(x)
        configure_tlc(net, 0)
        assert torch.equal(net(x), train_tlc)
        whole = net.eval()(x)
        configure_tlc(net, 1000)
        torch.testing.assert_close(net(x), whole, atol=1e-6, rtol=0)
        configure_tlc(net, 24)
        assert (net(x) - whole).abs().max() > 1e-4  # really local


def test_promptir_per_pixel_prompt_mix_equals_the_global_one_on_a_constant_map() -> None:
    from fairweather.models.promptir import PromptGeneration

    torch.manual_seed(5)
    gen = PromptGeneration(feature_dim=8, prompt_dim=4, prompt_len=3, prompt_size=5, scale=1).eval()
    x = torch.randn(2, 8, 1, 1).expand(2, 8, 20, 24).contiguous()
    with torch.no_grad():
        global_prompt = gen(x)
        gen.pool.kernel = 6
        torch.testing.assert_close(gen(x), global_prompt, atol=1e-5, rtol=0)


def test_windowed_blend_is_exact_for_a_per_pixel_function() -> None:
    from fairweather.models.tlc import windowed

    a, b = torch.rand(1, 2, 37, 29), torch.rand(1, 2, 37, 29)
    torch.testing.assert_close(windowed(lambda p, q: p * q + 1, (a, b), 10), a * b + 1, atol=1e-6, rtol=0)
    torch.testing.assert_close(
        windowed(lambda p: p.mean(dim=(-2, -1), keepdim=True).expand_as(p), (a,), 64),
        a.mean(dim=(-2, -1), keepdim=True).expand_as(a),
    )
