"""restore_tiled_uint8: the uint8 result of restore_tiled + to_uint8, written tile by tile into a preallocated output
with no float copy of the image (a band of tiles at most), for any tile / overlap, including images of one tile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fairweather.contracts.config import load_config
from fairweather.data.batches import to_tensor
from fairweather.models import build_model, restore_tiled, restore_tiled_uint8
from fairweather.training.validate import to_uint8

CASES = [
    (100, 130, 64, 16),
    (64, 64, 64, 8),
    (50, 200, 48, 40),
    (129, 77, 32, 0),
    (40, 30, 64, 8),
    (97, 97, 33, 20),
]


def _float_path(model, rgb: np.ndarray, tile: int, overlap: int) -> np.ndarray:
    with torch.no_grad():
        return to_uint8(restore_tiled(model, to_tensor([rgb]), tile, overlap).clamp(0, 1).float().cpu())


@pytest.mark.parametrize(("h", "w", "tile", "overlap"), CASES)
def test_a_pointwise_model_gives_the_float_path_bit_for_bit(h, w, tile, overlap):
    rgb = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)

    def model(x: torch.Tensor) -> torch.Tensor:  # out of [0, 1] at both ends: the clamp matters
        return x * 1.3 - 0.1

    assert np.array_equal(
        restore_tiled_uint8(model, rgb, tile, overlap), _float_path(model, rgb, tile, overlap)
    )


def test_a_network_agrees_with_the_float_path_within_its_own_rounding():
    """A real network sees contiguous tiles here and views there: a float ulp may move a pixel by one level."""
    torch.manual_seed(0)
    net = build_model(load_config("smoke", []).model).eval()
    for h, w, tile, overlap in CASES[:3]:
        rgb = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        new, old = restore_tiled_uint8(net, rgb, tile, overlap), _float_path(net, rgb, tile, overlap)
        diff = np.abs(new.astype(int) - old)
        assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_buffers_stay_within_one_band_of_tiles(monkeypatch):
    """Every tensor the function allocates is at most one band (tile rows x the image width x 3 float32)."""
    h, w, tile = 600, 500, 64
    rgb = np.zeros((h, w, 3), np.uint8)
    largest = 0
    zeros = torch.zeros

    def spy(*args, **kwargs):
        nonlocal largest
        out = zeros(*args, **kwargs)
        largest = max(largest, out.numel() * out.element_size())
        return out

    monkeypatch.setattr(torch, "zeros", spy)
    seen = []

    def model(x):
        seen.append(tuple(x.shape))
        return x

    out = restore_tiled_uint8(model, rgb, tile, 8)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    assert 0 < largest <= 3 * tile * w * 4 and max(s[-1] * s[-2] for s in seen) == tile * tile


def test_bad_arguments_are_refused():
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        restore_tiled_uint8(lambda x: x, rgb.astype(np.float32), 4, 1)
    with pytest.raises(ValueError, match="overlap"):
        restore_tiled_uint8(lambda x: x, rgb, 4, 4)
