"""PSNR, SSIM and PIQE computed tile by tile in float32: memory bounded by the tile, whatever the photo's size.

pyiqa computes these on the whole image at once, SSIM in float64 with an 11 x 11 convolution (a 24-Mpx pair took
about 77 s and up to 12.8 GiB in a score actor), PIQE with whole-image index grids. Each is a sum over local
windows, so it decomposes exactly by tiles with a halo of the window's reach:

- **PSNR** (pyiqa ``psnr``): ``10 log10(1 / (mse + 1e-8))`` of images in [0, 1], mse over every channel and
  pixel; the squared errors are summed per tile (float32) and the sums added in float64.
- **SSIM** (pyiqa ``ssimc``: RGB, no Y conversion, no downsampling, no border crop): pixels ``round(255 x)``, the
  11 x 11 Gaussian window (sigma 1.5, separable: two 11-tap passes) applied ``valid``, ``C1 = (0.01 * 255)^2``,
  ``C2 = (0.03 * 255)^2``, the contrast-structure term clipped at 0 (``relu``), the SSIM map averaged over the
  channels and the ``(H - 10) x (W - 10)`` valid positions. A tile of the map needs its input plus 10 pixels on the
  right and bottom. Variances are formed from values centred on the tile's own mean (``E[(x-c)^2] - E[x-c]^2`` is
  ``E[x^2] - E[x]^2`` without its cancellation), so float32 suffices.
- **PIQE** (pyiqa ``piqe``): the Y channel scaled by the image's maximum (a first pass over the tiles), the image
  symmetrically padded by ``size % 16`` pixels on the bottom and right as pyiqa pads it, normalised by a 7 x 7
  Gaussian local mean and deviation (replicate padding: a 3-pixel halo), then cut into 16 x 16 blocks whose
  activity, noise and edge-artifact criteria are pyiqa's; the tiles are whole blocks, and the score pools the
  blocks' sums and counts over the tiles.

Every function takes one ``(H, W, 3)`` uint8 image (no float copy of the whole image is made) or, through
:class:`TiledScorer`, ``(N, 3, H, W)`` float tensors in [0, 1] (the scorer interface), and agrees with pyiqa 0.1.16
within 1e-4 (``tests/test_tiled_metrics.py``). Only torch and numpy are used: pyiqa is not imported.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .registry import METRICS, MetricSpec

#: Side of a tile (of the SSIM map, of the PIQE block grid, of the PSNR sum) in pixels.
TILE = 512
#: pyiqa's SSIM window: 11 taps, sigma 1.5; the map is ``valid``, so a tile reaches 10 pixels beyond itself.
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5
SSIM_C1, SSIM_C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
#: pyiqa's PIQE: 16 x 16 blocks, a 7 x 7 Gaussian (sigma 7/6) for the local normalisation, thresholds.
PIQE_BLOCK, PIQE_KERNEL, PIQE_SIGMA = 16, 7, 7.0 / 6
PIQE_ACTIVITY, PIQE_IMPAIRED, PIQE_SEGMENT = 0.1, 0.1, 6
#: ``rgb2yiq``'s first row: the Y (luma) weights pyiqa uses.
YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.5959, -0.2746, -0.3213], [0.2115, -0.5227, 0.3112]])


class ImageSource:
    """Tiles of one image as ``(1, 3, h, w)`` float32 in [0, 1]: from ``(H, W, 3)`` uint8 (``value / 255``, as
    :func:`fairweather.data.batches.to_tensor` converts) or from a ``(3, H, W)`` float tensor (clamped to [0, 1], as
    the pyiqa scorers clamp)."""

    def __init__(self, image: np.ndarray | torch.Tensor):
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
            self.height, self.width = image.shape[:2]
        else:
            if image.ndim != 3 or image.shape[0] != 3:
                raise ValueError(f"expected a (3, H, W) image tensor, got {tuple(image.shape)}")
            self.height, self.width = image.shape[1:]
        self.image = image

    def tile(self, rows: slice | np.ndarray, cols: slice | np.ndarray) -> torch.Tensor:
        """Rows ``rows`` x columns ``cols`` (slices, or index arrays that may repeat pixels) as float32."""
        if isinstance(self.image, np.ndarray):
            part = self.image[np.ix_(rows, cols)] if isinstance(rows, np.ndarray) else self.image[rows, cols]
            tensor = torch.from_numpy(np.array(part)).permute(2, 0, 1)[None]  # a copy of the tile only
            return tensor.float().div_(255.0)
        part = self.image[:, rows][:, :, cols] if isinstance(rows, np.ndarray) else self.image[:, rows, cols]
        return part[None].to(torch.float32).clamp(0, 1)


def spans(size: int, tile: int) -> list[tuple[int, int]]:
    """``[(start, end)]`` cutting ``0 .. size`` into runs of ``tile`` (the last one shorter)."""
    return [(start, min(start + tile, size)) for start in range(0, size, tile)]


def _source(image: np.ndarray | torch.Tensor | ImageSource) -> ImageSource:
    return image if isinstance(image, ImageSource) else ImageSource(image)


def _check_pair(x: ImageSource, y: ImageSource, name: str) -> None:
    if (x.height, x.width) != (y.height, y.width):
        raise ValueError(f"{name}: image {x.height}x{x.width} and target {y.height}x{y.width} differ in size")


def psnr(image, target, *, tile: int = TILE) -> float:
    """pyiqa's PSNR (data range 1, eps 1e-8, RGB) of ``image`` against ``target``, tile by tile."""
    x, y = _source(image), _source(target)
    _check_pair(x, y, "psnr")
    total = 0.0
    for top, bottom in spans(x.height, tile):
        for left, right in spans(x.width, tile):
            rows, cols = slice(top, bottom), slice(left, right)
            total += float((x.tile(rows, cols) - y.tile(rows, cols)).square_().sum())
    mse = total / (3 * x.height * x.width)
    return 10 * math.log10(1.0 / (mse + 1e-8))


def _gauss(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``size`` taps (MATLAB's ``fspecial`` is the outer product of it with itself)."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).to(torch.float32)


def _fspecial(size: int, sigma: float) -> torch.Tensor:
    """MATLAB's ``fspecial('gaussian', size, sigma)`` as pyiqa builds it (float64, then float32): ``(1, 1, s, s)``."""
    half = (size - 1) / 2
    y, x = np.ogrid[-half : half + 1, -half : half + 1]
    h = np.exp(-(x * x + y * y) / (2.0 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    return torch.from_numpy(h / h.sum()).float().view(1, 1, size, size)


def _ssim_sum(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor) -> float:
    """Sum of the SSIM map of one tile: ``x``, ``y`` ``(1, 3, h, w)`` pixel values 0..255 (rounded)."""
    c = float(torch.cat([x, y]).mean())
    xc, yc = x - c, y - c
    # (1, 15, h, w) channels-last: oneDNN's depthwise convolutions run ~3x faster on it than on NCHW.
    stack = torch.cat([xc, yc, xc * xc, yc * yc, xc * yc], dim=1).contiguous(
        memory_format=torch.channels_last
    )
    channels = stack.shape[1]
    stack = F.conv2d(stack, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    stack = F.conv2d(stack, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    mu1c, mu2c, e11, e22, e12 = stack.split(3, dim=1)
    # In place, term by term: sigma12, sigma1 + sigma2, then cs = relu((2 sigma12 + C2) / (sigma1 + sigma2 + C2)).
    cs = e12.sub_(mu1c * mu2c).mul_(2).add_(SSIM_C2)
    cs.div_(e11.sub_(mu1c * mu1c).add_(e22.sub_(mu2c * mu2c)).add_(SSIM_C2)).relu_()
    mu1, mu2 = mu1c.add_(c), mu2c.add_(c)
    luminance = (mu1 * mu2).mul_(2).add_(SSIM_C1)
    luminance.div_(mu1.square_().add_(mu2.square_()).add_(SSIM_C1))
    ssim_map = luminance.mul_(cs)
    return float(ssim_map.sum(dtype=torch.float64))


def ssim(image, target, *, tile: int = TILE) -> float:
    """pyiqa's ``ssimc`` of ``image`` against ``target``, tile by tile (see the module docstring)."""
    x, y = _source(image), _source(target)
    _check_pair(x, y, "ssim")
    halo = SSIM_WINDOW - 1
    out_h, out_w = x.height - halo, x.width - halo
    if out_h <= 0 or out_w <= 0:
        raise ValueError(
            f"ssim: images of {x.height}x{x.width} are smaller than the {SSIM_WINDOW}-pixel window"
        )
    g = _gauss(SSIM_WINDOW, SSIM_SIGMA)
    total = 0.0
    for top, bottom in spans(out_h, tile):
        for left, right in spans(out_w, tile):
            rows, cols = slice(top, bottom + halo), slice(left, right + halo)
            total += _ssim_sum(
                x.tile(rows, cols).mul_(255.0).round_(), y.tile(rows, cols).mul_(255.0).round_(), g
            )
    return total / (3 * out_h * out_w)


def _luma(rgb: torch.Tensor) -> torch.Tensor:
    """pyiqa's ``to_y_channel(rgb, 1, 'yiq')``: ``(1, 3, h, w)`` -> ``(1, 1, h, w)``."""
    return torch.matmul(rgb.permute(0, 2, 3, 1), YIQ.t().to(rgb))[..., :1].permute(0, 3, 1, 2)


def _padded_index(size: int, halo: int) -> np.ndarray:
    """Source index of every position ``-halo .. padded + halo - 1`` of pyiqa's PIQE image along one axis: the
    image symmetrically padded by ``size % 16`` (pyiqa's ``symm_pad``), then replicate-padded by ``halo``."""
    padded = size + size % PIQE_BLOCK
    positions = np.clip(np.arange(-halo, padded + halo), 0, padded - 1)
    return np.where(positions < size, positions, 2 * size - 1 - positions)


def _std(x: torch.Tensor, dim) -> torch.Tensor:
    return torch.std(x, dim=dim, unbiased=True)


def _piqe_blocks(blocks: torch.Tensor) -> tuple[float, int]:
    """pyiqa's block criteria on ``(1, n, 16, 16)`` normalised blocks: (sum of the distorted blocks' scores,
    number of active blocks)."""
    n = PIQE_BLOCK
    var = torch.var(blocks, dim=[2, 3], unbiased=True)
    active = var > PIQE_ACTIVITY
    # Noise: block deviation against the centre-surround deviation (pyiqa's column choice, kept as it is).
    sigma = torch.sqrt(var)
    c1 = (n - 1 + 1) // 2
    c2 = c1 + 1
    center = torch.stack((blocks[..., c1 - 1], blocks[..., c2 - 1]), dim=3)
    surround = torch.cat((blocks[..., : c1 - 1], blocks[..., c1:]), dim=-1)
    surround = torch.cat((surround[..., : c2 - 1], surround[..., c2:]), dim=-1)
    ratio = torch.nan_to_num(_std(center, [2, 3]) / _std(surround, [2, 3]))
    beta = torch.abs(sigma - ratio) / torch.max(sigma, ratio)
    noise = sigma > 2 * beta
    # Noticeable artifacts: a 6-pixel segment of an edge with (almost) no variation.
    edges = (blocks[:, :, 0, :], blocks[:, :, :, n - 1], blocks[:, :, n - 1, :], blocks[:, :, :, 0])
    impaired = sum((_std(e.unfold(-1, PIQE_SEGMENT, 1), -1) < PIQE_IMPAIRED).sum(dim=2) for e in edges) > 0
    whsa = active.float()
    scores = whsa * impaired.float() * (1 - var) + whsa * noise.float() * var
    return float(scores.sum(dtype=torch.float64)), int(active.sum())


def piqe(image, *, tile: int = 2 * TILE) -> float:
    """pyiqa's PIQE of ``image`` (lower is better), tile by tile (see the module docstring)."""
    x = _source(image)
    tile = max(PIQE_BLOCK, tile // PIQE_BLOCK * PIQE_BLOCK)
    peak = torch.tensor(-math.inf)
    for top, bottom in spans(x.height, tile):
        for left, right in spans(x.width, tile):
            peak = torch.maximum(peak, _luma(x.tile(slice(top, bottom), slice(left, right))).max())
    halo = PIQE_KERNEL // 2
    rows_index, cols_index = _padded_index(x.height, halo), _padded_index(x.width, halo)
    grid_h = (x.height + x.height % PIQE_BLOCK) // PIQE_BLOCK * PIQE_BLOCK
    grid_w = (x.width + x.width % PIQE_BLOCK) // PIQE_BLOCK * PIQE_BLOCK
    kernel = _fspecial(PIQE_KERNEL, PIQE_SIGMA)
    distorted, active = 0.0, 0
    for top, bottom in spans(grid_h, tile):
        for left, right in spans(grid_w, tile):
            part = x.tile(rows_index[top : bottom + 2 * halo], cols_index[left : right + 2 * halo])
            y = torch.round(255 * (_luma(part) / peak))
            mu = F.conv2d(y, kernel)
            sigma = torch.sqrt((F.conv2d(y * y, kernel) - mu * mu).abs() + torch.finfo(y.dtype).eps)
            normalised = (y[..., halo:-halo, halo:-halo] - mu) / (sigma + 1)
            blocks = normalised.unfold(2, PIQE_BLOCK, PIQE_BLOCK).unfold(3, PIQE_BLOCK, PIQE_BLOCK)
            blocks = blocks.contiguous().view(1, -1, PIQE_BLOCK, PIQE_BLOCK)
            tile_sum, tile_active = _piqe_blocks(blocks)
            distorted += tile_sum
            active += tile_active
    return (distorted + 1) / (1 + active) * 100


#: Our metrics computed here, by name.
TILED = {"psnr": psnr, "ssim": ssim, "piqe": piqe}


class TiledScorer:
    """A :data:`TILED` metric behind the scorer interface (``(N, 3, H, W)`` float tensors in [0, 1] -> ``(N,)``),
    plus :meth:`score_uint8` for one ``(H, W, 3)`` uint8 image (and target): no float copy of the whole image."""

    def __init__(self, name: str, fn: Callable[..., float] | None = None):
        """``fn`` scores one image (and target) for a metric with parameters (NIQE: ``tiled_niqe.TiledNIQE``);
        by default the :data:`TILED` function of ``name``."""
        if fn is None and name not in TILED:
            raise ValueError(f"no tiled implementation of {name!r} (tiled: {', '.join(TILED)})")
        self.spec: MetricSpec = METRICS[name]
        self._fn = fn or TILED[name]

    def score_uint8(self, image: np.ndarray, target: np.ndarray | None = None) -> float:
        if self.spec.reference:
            if target is None:
                raise ValueError(f"{self.spec.name} is a full-reference metric: it needs the clean target")
            return self._fn(image, target)
        return self._fn(image)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"{self.spec.name}: images must be (N, 3, H, W), got {tuple(images.shape)}")
        if self.spec.reference:
            if targets is None:
                raise ValueError(f"{self.spec.name} is a full-reference metric: it needs the clean targets")
            if targets.shape != images.shape:
                raise ValueError(
                    f"{self.spec.name}: targets {tuple(targets.shape)} must match images {tuple(images.shape)}"
                )
            values = [
                self._fn(ImageSource(x), ImageSource(y))
                for x, y in zip(images.cpu(), targets.cpu(), strict=True)
            ]
        else:
            values = [self._fn(ImageSource(x)) for x in images.cpu()]
        return torch.tensor(values, dtype=torch.float32)
