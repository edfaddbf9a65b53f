"""Tiled inference: exact where the image fits one tile, seamless (exact for per-pixel models) otherwise."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from fairweather.contracts.config.model import NAFNetConfig
from fairweather.models import NAFNet, RestorationNet, restore_tiled
from fairweather.models.tiling import tile_starts


class PerPixelNet(RestorationNet):
    """A network whose output at a pixel depends only on that pixel (1x1 convs), so tiling cannot change it."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 1), nn.Tanh(), nn.Conv2d(16, 3, 1))

    def predict_residual(self, x: torch.Tensor) -> torch.Tensor:
        return 0.3 * self.body(x)


class CountingNet(nn.Module):
    """Records the input shapes it sees and returns its input unchanged."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        return x


def test_fits_in_one_tile_is_one_exact_forward() -> None:
    torch.manual_seed(0)
    model = NAFNet(
        NAFNetConfig(width=8, encoder_blocks=(1, 1), middle_blocks=1, decoder_blocks=(1, 1))
    ).eval()
    x = torch.rand(2, 3, 40, 48)
    with torch.no_grad():
        assert torch.equal(restore_tiled(model, x, tile=48, overlap=8), model(x))
    counter = CountingNet()
    restore_tiled(counter, x, tile=64, overlap=16)
    assert counter.shapes == [(2, 3, 40, 48)]


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"), [(100, 130, 48, 16), (70, 40, 32, 8), (65, 97, 32, 0)]
)
def test_per_pixel_model_is_exact_when_tiled(h: int, w: int, tile: int, overlap: int) -> None:
    torch.manual_seed(1)
    model = PerPixelNet().eval()
    x = torch.rand(1, 3, h, w)
    counter = CountingNet()
    restore_tiled(counter, x, tile, overlap)
    assert len(counter.shapes) > 1  # really tiled
    assert all(s[-2] <= tile and s[-1] <= tile for s in counter.shapes)
    with torch.no_grad():
        tiled, whole = restore_tiled(model, x, tile, overlap), model(x)
    assert tiled.shape == x.shape
    torch.testing.assert_close(tiled, whole, atol=1e-6, rtol=0)


def test_identity_is_reproduced_with_nonuniform_weights() -> None:
    """Weights are normalised: the identity comes back exactly even where several ramps overlap."""
    x = torch.rand(2, 3, 90, 75, dtype=torch.float64)
    torch.testing.assert_close(restore_tiled(CountingNet(), x, tile=40, overlap=24), x, atol=1e-12, rtol=0)


def test_blend_hides_seams_of_a_per_tile_offset() -> None:
    """A model that adds a different constant to each tile: the blend must change smoothly, without jumps."""
    calls = iter(range(100))

    def offset_per_tile(t: torch.Tensor) -> torch.Tensor:
        return t + 0.1 * next(calls)

    x = torch.zeros(1, 3, 32, 120, dtype=torch.float64)
    out = restore_tiled(offset_per_tile, x, tile=48, overlap=16)[0, 0, 0]  # one row across the tiles
    last = 0.1 * (len(tile_starts(120, 48, 16)) - 1)
    jumps = (out[1:] - out[:-1]).abs()
    assert out[0] == pytest.approx(0.0) and out[-1] == pytest.approx(last)
    assert jumps.max() < 0.1 / 4  # a hard seam would jump by the full 0.1 between neighbouring pixels


def test_tile_starts_cover_with_overlap() -> None:
    assert tile_starts(40, 64, 8) == [0]
    starts = tile_starts(130, 48, 16)
    assert starts[0] == 0 and starts[-1] == 130 - 48
    assert all(b - a <= 48 - 16 for a, b in itertools.pairwise(starts))


def test_rejects_bad_arguments() -> None:
    x = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="overlap"):
        restore_tiled(CountingNet(), x, tile=8, overlap=8)
    with pytest.raises(ValueError, match="tile"):
        restore_tiled(CountingNet(), x, tile=0, overlap=0)
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        restore_tiled(CountingNet(), torch.rand(1, 1, 16, 16), tile=8, overlap=2)
