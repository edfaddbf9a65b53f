"""PSNR, SSIM and PIQE tile by tile in float32 (fairweather.metrics.tiled) equal pyiqa 0.1.16's whole-image values
within 1e-4 on small images, whatever the tile (down to tiles smaller than SSIM's window), on uint8 and float
inputs; the engine scores uint8 rows with them without a float copy of the image."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.metrics import build_scorer
from fairweather.metrics.tiled import TiledScorer, piqe, psnr, ssim
from fairweather.synth.clean import bundled_clean_photos

pyiqa = pytest.importorskip("pyiqa")
TOLERANCE = 1e-4


def _images() -> list[tuple[str, np.ndarray]]:
    """Natural photos (the bundled clean set) cropped to odd sizes, noise, flat and near-flat, and tiny images."""
    rng = np.random.default_rng(0)
    out = []
    for i, (_, data) in enumerate(bundled_clean_photos()[:3]):
        photo = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        out.append((f"photo{i}", photo[: 70 + 17 * i, : 90 + 13 * i]))
    out.append(("noise", rng.integers(0, 256, (61, 77, 3), dtype=np.uint8)))
    out.append(("white", np.full((40, 52, 3), 255, np.uint8)))
    out.append(("near-flat", np.clip(200 + rng.normal(0, 2, (45, 35, 3)), 0, 255).astype(np.uint8)))
    out.append(("tiny", rng.integers(0, 256, (12, 20, 3), dtype=np.uint8)))
    return out


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(image.copy()).permute(2, 0, 1)[None].float() / 255


@pytest.fixture(scope="module")
def reference():
    return {
        name: pyiqa.create_metric(pyiqa_name, as_loss=False, device="cpu")
        for name, pyiqa_name in (("psnr", "psnr"), ("ssim", "ssimc"), ("piqe", "piqe"))
    }


@pytest.mark.parametrize("name", ["psnr", "ssim", "piqe"])
def test_tiled_metrics_equal_pyiqa(name, reference):
    rng = np.random.default_rng(1)
    fn = {"psnr": psnr, "ssim": ssim, "piqe": piqe}[name]
    for label, image in _images():
        degraded = np.clip(image.astype(int) + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
        x, y = _tensor(degraded), _tensor(image)
        with torch.no_grad():
            expected = float(reference[name](x) if name == "piqe" else reference[name](x, y))
        # Tiles from far larger than the image to smaller than SSIM's window (PIQE tiles are whole 16-px blocks).
        for tile in (512, 32, 7) if image.size < 20_000 else (512, 32):
            got = fn(degraded, tile=tile) if name == "piqe" else fn(degraded, image, tile=tile)
            assert got == pytest.approx(expected, abs=TOLERANCE), (label, tile)
        scorer = build_scorer(name, ScorerConfig())
        assert isinstance(scorer, TiledScorer)
        assert scorer(x, None if name == "piqe" else y).item() == pytest.approx(expected, abs=TOLERANCE), (
            label
        )
        got = scorer.score_uint8(degraded, None if name == "piqe" else image)
        assert got == pytest.approx(expected, abs=TOLERANCE), label


def test_float_inputs_are_clamped_and_rounded_as_pyiqa_does(reference):
    """Float images that are not 8-bit levels (a restoration before quantising): SSIM rounds to 255 levels and
    PSNR takes the floats as they are, both as pyiqa does."""
    torch.manual_seed(0)
    x, y = (torch.rand(2, 3, 40, 50) * 1.2 - 0.1), torch.rand(2, 3, 40, 50)
    for name in ("psnr", "ssim"):
        with torch.no_grad():
            expected = reference[name](x.clamp(0, 1), y)
        got = build_scorer(name, ScorerConfig())(x, y)
        assert got.shape == (2,) and got.dtype == torch.float32
        assert got.tolist() == pytest.approx(expected.tolist(), abs=TOLERANCE), name


def test_ssim_refuses_images_smaller_than_its_window_and_pairs_of_two_sizes():
    small = np.zeros((10, 40, 3), np.uint8)
    with pytest.raises(ValueError, match="window"):
        ssim(small, small)
    with pytest.raises(ValueError, match="differ in size"):
        psnr(np.zeros((20, 20, 3), np.uint8), np.zeros((20, 21, 3), np.uint8))
    with pytest.raises(ValueError, match="full-reference"):
        TiledScorer("ssim").score_uint8(small)


def test_a_tile_bounds_the_memory_of_a_big_image():
    """The work of a tile does not grow with the image: a 1200 x 900 pair is scored while the largest tensor the
    metric builds is one tile's (measured on the concatenation of the SSIM terms)."""
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (900, 1200, 3), dtype=np.uint8)
    target = np.roll(image, 1, axis=1)
    largest = 0
    original = torch.cat

    def spy(tensors, *args, **kwargs):
        nonlocal largest
        out = original(tensors, *args, **kwargs)
        largest = max(largest, out.numel() * out.element_size())
        return out

    torch.cat = spy
    try:
        value = ssim(image, target, tile=128)
    finally:
        torch.cat = original
    assert 0 < value < 1
    assert largest <= 15 * 138 * 138 * 4  # the 15-channel stack of one 128-px tile and its 10-px halo


def test_tiled_niqe_equals_pyiqa_whatever_the_tile_and_its_halo_is_needed():
    """NIQE tile by tile equals pyiqa's whole-image NIQE with the same pristine parameters (any SPD pair here: the
    tiling, not the parameters, is under test), for tiles of one block up to the whole image; a halo too small
    to hold the normalisation and the half-size resize changes the value (the check can fail)."""
    from pyiqa.archs.niqe_arch import calculate_niqe

    from fairweather.metrics import tiled_niqe

    rng = np.random.default_rng(0)
    a = rng.normal(size=(36, 36))
    mu, cov = rng.normal(size=36), a @ a.T / 36 + np.eye(36)
    photo = np.asarray(Image.open(io.BytesIO(bundled_clean_photos()[0][1])).convert("RGB"))
    image = np.clip(
        np.tile(photo, (2, 3, 1))[:301, :397].astype(int) + rng.normal(0, 6, (301, 397, 3)), 0, 255
    )
    image = image.astype(np.uint8)  # 3 x 4 blocks, a partial row and column cropped as pyiqa crops them
    expected = float(
        calculate_niqe(_tensor(image), 0, True, "yiq", torch.from_numpy(mu), torch.from_numpy(cov))
    )
    for tile in (96, 192, 960):
        assert tiled_niqe.TiledNIQE(mu, cov, tile=tile)(image) == pytest.approx(expected, abs=1e-6), tile
    assert tiled_niqe.TiledNIQE(mu, cov)(_tensor(image)[0]) == pytest.approx(expected, abs=1e-6)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tiled_niqe, "HALO", 2)
        assert abs(tiled_niqe.TiledNIQE(mu, cov, tile=96)(image) - expected) > 1e-5
    with pytest.raises(ValueError, match="smaller than one 96-px block"):
        tiled_niqe.TiledNIQE(mu, cov)(np.zeros((95, 200, 3), np.uint8))
