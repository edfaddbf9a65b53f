"""Image-level colour calibration of a trained restorer: the veil and tone a small network leaves on a photo.

Why: measured on real benchmark pairs, the smoke profile's network takes off a third to a half of a photo's veil
(SOTS: inputs 32 grey levels brighter than their targets, outputs still 20), and changing each output channel's
contrast and mean by the amounts that fit its target best (an oracle) would gain +8 to +11 dB on real haze and
+8 dB on Rain100H (benchmarks/probe_real_error.py; docs/real-weather.md). Most of that error is one map per channel
and image, which global statistics of the input and of the network's output predict: a kernel ridge regression
fitted at the end of training on the training pairs (each also as a (clean, clean) pair, so that a clear image
keeps its colours) learns the map from those statistics. It is part of the trained restorer: stored in the
checkpoint, applied by :class:`fairweather.training.restorer.Restorer` after the network, to the whole image at
once (no tile seams).

The map also takes back part of the network's change where that does harm (``retreat``): on light rain the small
network, unless told the weather (``model.nafnet.weather_film``), loses 0.6-2 dB (it darkens the whole image as if
removing a veil the photo does not have; the fine detail of its change is worth under 0.2 dB either way on every
real set), and a clear image is best left as it is. Learnt with the rest (the clean pairs teach "take it all
back"), it cost Rain12 and Rain100L 0.4-1.5 dB less than the map without it on the same networks, Rain100H under
0.1 dB, and moved real haze by -0.1 to +0.7 dB (docs/real-weather.md).

Features come from thumbnails (short side at most :data:`THUMB_SIDE`): the statistics then mean the same on a
96-px training image and a 24-Mpx photo, and cost no memory that grows with the photo.

The calibration is told the weather the network is told (``train.calibration.weather_distance``): a photo's map is
then predicted mostly from the examples of its own weather, since light rain and a thin veil look alike to global
statistics but want different maps. On three networks and all pairs of eight real sets this gained Rain100L
and Rain12 +0.18 to +0.37 dB and moved every other set by 0.06 dB or less (docs/real-weather.md). A photo of unknown
weather gets the map fitted without the weather.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.ndimage import minimum_filter, uniform_filter

from fairweather.imaging import limit_short_side

#: Short side of the thumbnails the features are computed on (the smoke profile trains on 96-px images).
THUMB_SIDE = 128
#: The map is ``blend = restored + retreat * (degraded - restored)``, then per channel ``(blend - mean) * (1 +
#: contrast) + mean + shift`` (values in [0, 1], ``mean`` the blend's channel mean). ``retreat`` takes back part
#: of the network's change where the network does harm (on light rain it darkens the image as if removing a veil;
#: on a clear image the best answer is the image itself), one number per image. Contrast about the mean and the
#: change of the mean are predicted apart, so an error in the one does not move the other (a gain and an offset
#: are strongly anti-correlated; predicted apart, their errors darkened light rain). A prediction is clipped to
#: these bounds so that a photo far from every training image cannot be inverted or blown out.
RETREAT_RANGE = (0.0, 1.0)
CONTRAST_RANGE = (-0.5, 2.0)
SHIFT_RANGE = (-1.0, 1.0)
#: How far each channel's contrast may lie from the three's mean. Unbounded, the prediction for a near-grey hazy
#: image stretched green and blue 2.5-2.9x about their means and red 1.3x (orange-red foliage under a blue sky,
#: -3.7 dB against the network alone); on 377 real pairs the three differ by 0.05 at the median and this bound
#: changed no set's PSNR by 0.01 dB, while fitting one contrast for all three cost real haze 0.6 dB
#: (docs/real-weather.md).
CONTRAST_SPREAD = 0.1
#: Retreats the fit tries for each training example (its contrast and shift follow in closed form).
RETREAT_GRID = np.linspace(*RETREAT_RANGE, 101)
#: Rows of a photo mapped at a time: the float copy never holds more than this band.
BAND_ROWS = 256


def image_statistics(rgb: np.ndarray) -> np.ndarray:
    """``(9,)`` global statistics of an ``(H, W, 3)`` uint8 thumbnail: mean colour, the mean and 10th/90th
    percentiles of its dark channel (He et al.: haze lifts it), contrast, saturation, and the darkest 5 %."""
    image = rgb.astype(np.float32) / 255.0
    lowest = image.min(axis=2)
    dark = minimum_filter(lowest, size=max(3, min(image.shape[:2]) // 20))
    return np.array(
        [
            *image.mean(axis=(0, 1)),
            dark.mean(),
            *np.percentile(dark, [10, 90]),
            image.std(),
            (image.max(axis=2) - lowest).mean(),
            np.percentile(lowest, 5),
        ]
    )


def pair_features(degraded: np.ndarray, restored: np.ndarray) -> np.ndarray:
    """``(24,)`` features of an image and the network's restoration of it (uint8 ``(H, W, 3)``, any size):
    the statistics of both thumbnails, the mean colour change, and how much of the change is fine detail
    (rain streaks, flakes) and how much a smooth veil."""
    small_in, small_out = thumbnail(degraded), thumbnail(restored)
    change = (small_in.astype(np.float32) - small_out.astype(np.float32)).mean(axis=2) / 255.0
    smooth = uniform_filter(change, size=max(3, min(change.shape) // 16))
    detail = change - smooth
    colour = (small_out.astype(np.float32) - small_in.astype(np.float32)).mean(axis=(0, 1)) / 255.0
    return np.concatenate(
        [
            image_statistics(small_in),
            image_statistics(small_out),
            colour,
            [np.abs(detail).mean(), np.abs(smooth).mean(), detail.std()],
        ]
    )


def channel_mean(rgb: np.ndarray) -> np.ndarray:
    """``(3,)`` mean of each channel of an ``(H, W, 3)`` uint8 image in grey levels, summed band by band."""
    total = np.zeros(3)
    for top in range(0, rgb.shape[0], BAND_ROWS):
        total += rgb[top : top + BAND_ROWS].sum(axis=(0, 1), dtype=np.float64)
    return total / (rgb.shape[0] * rgb.shape[1])


def thumbnail(rgb: np.ndarray) -> np.ndarray:
    return limit_short_side(rgb, THUMB_SIDE)


def best_map(degraded: np.ndarray, restored: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``(7,)``: the ``retreat`` and, per channel, the ``contrast`` and ``shift`` that map ``degraded`` and its
    restoration closest to ``target`` in least squares (uint8 images of one size, values taken in [0, 1]): the
    map the calibration learns to predict. For each retreat on :data:`RETREAT_GRID` the best contrast has a
    closed form (the least-squares line through both means, so ``shift`` is the mean difference); the retreat
    that leaves the least residual wins."""
    x = degraded.reshape(-1, 3).astype(np.float64) / 255.0
    o = restored.reshape(-1, 3).astype(np.float64) / 255.0
    y = target.reshape(-1, 3).astype(np.float64) / 255.0
    change = x - o  # what retreating all the way would add back
    oc, dc, yc = o - o.mean(axis=0), change - change.mean(axis=0), y - y.mean(axis=0)
    # The centred blend is oc + r * dc: its products with itself and the target are quadratic and linear in r.
    oy, dy = (oc * yc).sum(axis=0), (dc * yc).sum(axis=0)
    oo, od, dd = (oc * oc).sum(axis=0), (oc * dc).sum(axis=0), (dc * dc).sum(axis=0)
    r = RETREAT_GRID[:, None]
    covariance = oy + r * dy  # (R, 3)
    variance = np.maximum(oo + 2 * r * od + r * r * dd, 1e-12)
    best = int(np.argmax((covariance**2 / variance).sum(axis=1)))  # the residual is sum(yc^2) minus this
    retreat = RETREAT_GRID[best]
    contrast = covariance[best] / variance[best] - 1.0
    shift = y.mean(axis=0) - (o.mean(axis=0) + retreat * change.mean(axis=0))
    return np.concatenate([[retreat], contrast, shift])


@dataclass(frozen=True)
class Calibration:
    """A fitted kernel ridge regression from :func:`pair_features` to the map of :func:`best_map` (RBF kernel
    on standardised features, no intercept: far from every example it predicts no change to the network's
    restoration)."""

    mean: np.ndarray  # (F,) feature means of the fit
    scale: np.ndarray  # (F,) feature standard deviations of the fit
    support: np.ndarray  # (N, F) standardised features of the fit's examples
    weights: np.ndarray  # (N, 7) dual weights: retreat, contrast (3), shift (3)
    gamma: float
    #: The weather each example's network was told ("" for none); empty: fitted without the weather.
    weathers: tuple[str, ...] = ()
    #: (N, 7) dual weights of the kernel in which examples of another weather lie ``weather_distance`` further.
    told_weights: np.ndarray | None = None
    weather_distance: float = 0.0

    def predict(
        self, features: np.ndarray, weather: str | None = None
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """``(retreat, contrast, shift)``, the last two ``(3,)``, for one :func:`pair_features` vector of a photo
        whose network was told ``weather`` (None, or a weather no example has: the map fitted without it), each
        clipped to its bounds (and each contrast to within :data:`CONTRAST_SPREAD` of the three's mean)."""
        z = (features - self.mean) / self.scale
        kernel = np.exp(-self.gamma * ((self.support - z) ** 2).sum(axis=1))
        if weather and self.told_weights is not None and weather in self.weathers:
            other = np.asarray(self.weathers) != weather
            values = weather_kernel(kernel, other, self.gamma, self.weather_distance) @ self.told_weights
        else:
            values = kernel @ self.weights
        retreat = float(np.clip(values[0], *RETREAT_RANGE))
        contrast = np.clip(values[1:4], *CONTRAST_RANGE)
        centre = contrast.mean()
        contrast = centre + np.clip(contrast - centre, -CONTRAST_SPREAD, CONTRAST_SPREAD)
        return retreat, contrast, np.clip(values[4:], *SHIFT_RANGE)

    def apply(self, degraded: np.ndarray, restored: np.ndarray, weather: str | None = None) -> np.ndarray:
        """The calibrated restoration, uint8 ``(H, W, 3)``, of a photo whose network was told ``weather``;
        ``restored`` is mapped in place, band by band (the float copies never hold more than one band of either
        image)."""
        retreat, contrast, shift = self.predict(pair_features(degraded, restored), weather)
        mean = (1.0 - retreat) * channel_mean(restored) + retreat * channel_mean(degraded)
        scale = (1.0 + contrast).astype(np.float32)
        offset = (mean * (1.0 - scale) + shift * 255.0).astype(np.float32)
        keep, take_back = np.float32(1.0 - retreat), np.float32(retreat)
        for top in range(0, restored.shape[0], BAND_ROWS):
            rows = slice(top, top + BAND_ROWS)
            blend = restored[rows].astype(np.float32) * keep + degraded[rows].astype(np.float32) * take_back
            restored[rows] = np.clip(blend * scale + offset, 0.0, 255.0).round().astype(np.uint8)
        return restored

    def to_state(self) -> dict[str, Any]:
        """Plain lists and numbers, for a checkpoint that loads with ``weights_only=True``."""
        told = {} if self.told_weights is None else {"told_weights": self.told_weights.tolist()}
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "support": self.support.tolist(),
            "weights": self.weights.tolist(),
            "gamma": float(self.gamma),
            "weathers": list(self.weathers),
            "weather_distance": float(self.weather_distance),
            **told,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Calibration:
        arrays = {
            key: np.asarray(state[key], dtype=np.float64) for key in ("mean", "scale", "support", "weights")
        }
        if arrays["weights"].shape[1] == 6:  # fitted before the map had a retreat: it predicts none
            arrays["weights"] = np.pad(arrays["weights"], ((0, 0), (1, 0)))
        told = state.get("told_weights")  # absent: fitted before the calibration was told the weather
        return cls(
            **arrays,
            gamma=float(state["gamma"]),
            weathers=tuple(state.get("weathers", ())),
            told_weights=None if told is None else np.asarray(told, dtype=np.float64),
            weather_distance=float(state.get("weather_distance", 0.0)),
        )


def weather_kernel(kernel: np.ndarray, other: np.ndarray, gamma: float, distance: float) -> np.ndarray:
    """``kernel`` (RBF values, any shape) where ``other`` (bool, the same shape) marks the pairs of another
    weather: such an example lies ``distance`` further in each of two one-hot dimensions (squared distance
    ``2 * distance**2``), so its value shrinks by ``exp(-2 * gamma * distance**2)``."""
    return np.where(other, kernel * np.exp(-2.0 * gamma * distance**2), kernel)


def fit_calibration(
    examples: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray, str | None]],
    *,
    gamma: float,
    ridge: float,
    weather_distance: float = 0.0,
) -> Calibration:
    """Fit on ``(degraded, restored, target, weather)`` examples: uint8 images and the weather the network was
    told (give each pair's clean target as a degraded image too, restored by the same network, so that clear
    images learn the identity).

    gamma: RBF width on standardised features; ridge: the regulariser, added to the kernel's diagonal;
    weather_distance: > 0 fits a second map in which examples of another weather lie that much further
    (:func:`weather_kernel`), used for photos told a weather.
    """
    features, maps, weathers = [], [], []
    for degraded, restored, target, weather in examples:
        features.append(pair_features(degraded, restored))
        maps.append(best_map(degraded, restored, target))
        weathers.append(weather or "")
    if len(features) < 2:
        raise ValueError(f"a calibration needs at least 2 examples, got {len(features)}")
    x, y = np.array(features), np.array(maps)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    support = (x - mean) / scale
    kernel = np.exp(-gamma * ((support[:, None] - support[None]) ** 2).sum(axis=-1))
    diagonal = ridge * np.eye(len(kernel))
    weights = np.linalg.solve(kernel + diagonal, y)
    told = None
    if weather_distance > 0:
        told_by = np.asarray(weathers)
        other = told_by[:, None] != told_by[None]
        told = np.linalg.solve(weather_kernel(kernel, other, gamma, weather_distance) + diagonal, y)
    return Calibration(mean, scale, support, weights, gamma, tuple(weathers), told, weather_distance)
