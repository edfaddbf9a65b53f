"""NIQE tile by tile: pyiqa's own feature code on tiles with a halo, so memory is bounded by the tile.

pyiqa's ``niqe`` turns the whole image into float64 Y, normalises it (MSCN: a 7 x 7 Gaussian local mean and
deviation, replicate padding), cuts it into 96 x 96 blocks (the image first cropped to whole blocks from the top
left), computes 18 features per block, repeats all of it on the image halved by MATLAB's bicubic ``imresize``
(antialiased; 48 x 48 blocks) and fits one Gaussian to the blocks' 36 features. A 24-Mpx photo took 153 s and
11.1 GiB that way. Every feature is local to its block, so the image decomposes by tiles of whole blocks:

- a tile is read with a halo of :data:`HALO` pixels (an even number, so the half-size grid stays aligned): the
  normalisation reaches 3 pixels, the antialiased half-size resize about 5 pixels at full size, and its
  normalisation 3 half-size pixels (6 at full size); where a tile meets the image's edge there is no halo and
  the padding of pyiqa's own functions (replicate, symmetric) is exactly what it does on the whole image;
- each tile's blocks yield their ``(n, 36)`` features with pyiqa's ``compute_feature``; the rows of all tiles
  are gathered (about 2,600 rows for 24 Mpx) and scored as pyiqa scores them (nan-aware mean and covariance,
  the pseudo-inverse of the pooled covariance).

The result equals pyiqa's NIQE within 1e-6 (``tests/test_tiled_metrics.py``), with the same parameters.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch
from pyiqa.archs.func_util import normalize_img_with_gauss
from pyiqa.archs.niqe_arch import compute_feature
from pyiqa.matlab_utils import blockproc, imresize, nancov, nanmean
from pyiqa.utils.color_util import to_y_channel

from .tiled import ImageSource, spans

#: pyiqa's NIQE blocks at full size (halved at the second scale).
BLOCK = 96
#: Reach of a tile's read beyond its blocks, full-size pixels (see the module docstring).
HALO = 16
#: Default tile side: 5 blocks. pyiqa's feature code makes a few dozen float64 temporaries of its input, so the
#: transient memory grows with the tile's area: on a 24-Mpx photo 960-px tiles took about +0.5 GiB above the
#: photo, 480-px ones +0.1 GiB, at the same speed (the halo's extra reads, 14 % of the area, cost no more than the
#: bigger temporaries did).
TILE = 5 * BLOCK


class TiledNIQE:
    """NIQE with given pristine parameters: ``mu`` ``(36,)`` and ``cov`` ``(36, 36)`` (pyiqa's ``.mat`` keys
    ``mu_prisparam``, ``cov_prisparam``). Call with one ``(H, W, 3)`` uint8 image, a ``(3, H, W)`` float tensor in
    [0, 1] or an :class:`ImageSource`; lower is better."""

    def __init__(self, mu: np.ndarray, cov: np.ndarray, *, tile: int = TILE):
        self.mu = torch.from_numpy(np.ravel(mu).astype(np.float64))
        self.cov = torch.from_numpy(np.asarray(cov, dtype=np.float64))
        self.tile = max(BLOCK, tile // BLOCK * BLOCK)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> TiledNIQE:
        """The parameters from pyiqa's ``.mat`` file (what ``fairweather prefetch`` writes)."""
        params = scipy.io.loadmat(str(path))
        return cls(params["mu_prisparam"], params["cov_prisparam"], **kwargs)

    def features(self, image) -> torch.Tensor:
        """``(blocks, 36)`` float64: each 96-px block's features at full and half size."""
        x = image if isinstance(image, ImageSource) else ImageSource(image)
        height, width = x.height // BLOCK * BLOCK, x.width // BLOCK * BLOCK
        if not height or not width:
            raise ValueError(f"niqe: a {x.height}x{x.width} image is smaller than one {BLOCK}-px block")
        rows = []
        for top, bottom in spans(height, self.tile):
            for left, right in spans(width, self.tile):
                rows.append(self._tile_features(x, (top, bottom), (left, right), (height, width)))
        return torch.cat(rows)

    def _tile_features(self, x: ImageSource, ys: tuple[int, int], xs: tuple[int, int], size) -> torch.Tensor:
        (top, bottom), (left, right), (height, width) = ys, xs, size
        r0, r1 = max(0, top - HALO), min(height, bottom + HALO)
        c0, c1 = max(0, left - HALO), min(width, right + HALO)
        y = to_y_channel(x.tile(slice(r0, r1), slice(c0, c1)), 255, "yiq").round().to(torch.float64)
        scales = []
        for scale in (1, 2):
            normalised = normalize_img_with_gauss(y, padding="replicate")
            inner = normalised[
                ...,
                (top - r0) // scale : (bottom - r0) // scale,
                (left - c0) // scale : (right - c0) // scale,
            ]
            block = BLOCK // scale
            scales.append(blockproc(inner, [block, block], fun=compute_feature))
            if scale == 1:
                y = imresize(y / 255.0, scale=0.5, antialiasing=True) * 255.0
        return torch.cat(scales, -1)[0]

    def __call__(self, image) -> float:
        features = self.features(image)[None]
        mu, cov = nanmean(features, dim=1), nancov(features)
        inverse = torch.linalg.pinv((self.cov[None] + cov) / 2)
        diff = (self.mu[None] - mu).unsqueeze(1)
        return float(torch.sqrt(torch.bmm(torch.bmm(diff, inverse), diff.transpose(1, 2)).squeeze()))
