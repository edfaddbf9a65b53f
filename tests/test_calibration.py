"""The image-level colour calibration: it learns a veil from examples, leaves clear images alone, and travels in a
checkpoint as plain data."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from fairweather.contracts.config import ConfigError, load_config
from fairweather.metrics.tiled import psnr
from fairweather.training.calibration import (
    CONTRAST_RANGE,
    CONTRAST_SPREAD,
    RETREAT_RANGE,
    SHIFT_RANGE,
    Calibration,
    best_map,
    fit_calibration,
    pair_features,
)
from fairweather.training.calibration_fit import lighter_degradation


def scene(rng: np.random.Generator, size: tuple[int, int] = (72, 96)) -> np.ndarray:
    """A clear ``(H, W, 3)`` uint8 image: smooth colour fields plus texture, its own brightness and contrast."""
    h, w = size
    coarse = rng.uniform(0, 1, (4, 5, 3))
    field = np.kron(coarse, np.ones((h // 4 + 1, w // 5 + 1, 1)))[:h, :w]
    texture = rng.normal(0, 0.08, (h, w, 1))
    image = rng.uniform(0.05, 0.3) + rng.uniform(0.3, 0.7) * field + texture
    return (np.clip(image, 0, 1) * 255).round().astype(np.uint8)


def veiled(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The scattering model with one transmission for the whole image: ``I = J t + A (1 - t)``."""
    t, airlight = rng.uniform(0.35, 0.8), rng.uniform(0.8, 1.0)
    return (image.astype(np.float64) * t + 255 * airlight * (1 - t)).round().astype(np.uint8)


@pytest.fixture(scope="module")
def fitted() -> Calibration:
    """Fitted as training fits it: each pair's input and its clean target, restored by an identity "network"."""
    rng = np.random.default_rng(0)
    examples = []
    for _ in range(60):
        clear = scene(rng)
        hazy = veiled(clear, rng)
        examples += [(hazy, hazy.copy(), clear, "haze"), (clear, clear.copy(), clear, "haze")]
    return fit_calibration(examples, gamma=0.05, ridge=10.0)


def test_a_veil_learnt_from_examples_comes_off_new_images_and_clear_ones_keep_their_colours(fitted):
    rng = np.random.default_rng(1)
    gains, clear_psnrs = [], []
    for _ in range(10):
        clear = scene(rng)
        hazy = veiled(clear, rng)
        gains.append(psnr(fitted.apply(hazy, hazy.copy()), clear) - psnr(hazy, clear))
        clear_psnrs.append(psnr(fitted.apply(clear, clear.copy()), clear))
    assert np.mean(gains) > 10.0, gains
    # A clear image is left (almost) as it is: 35 dB is under 5 grey levels of change.
    assert np.median(clear_psnrs) > 35.0 and min(clear_psnrs) > 28.0, clear_psnrs


def blurred(image: np.ndarray) -> np.ndarray:
    """A "network" that does harm: it smooths away the detail of any image (5x5 box blur)."""
    from scipy.ndimage import uniform_filter

    return uniform_filter(image.astype(np.float64), size=(5, 5, 1)).round().astype(np.uint8)


def test_the_best_map_finds_how_much_of_the_networks_change_to_take_back():
    rng = np.random.default_rng(7)
    clear = scene(rng)
    restored = blurred(clear)
    assert best_map(clear, restored, clear)[0] == 1.0  # the target is the input: take the whole change back
    assert best_map(clear, restored, restored)[0] == 0.0  # the target is the restoration: keep it
    mixed = (0.3 * restored.astype(np.float64) + 0.7 * clear).round().astype(np.uint8)
    found = best_map(clear, restored, mixed)
    assert abs(found[0] - 0.7) <= 0.02 and np.all(np.abs(found[1:]) < 0.02), found


def test_the_change_of_a_network_that_ruins_clear_images_is_taken_back():
    rng = np.random.default_rng(8)
    examples = []
    for _ in range(40):
        clear = scene(rng)
        hazy = veiled(clear, rng)
        examples += [(hazy, hazy.copy(), clear, "haze"), (clear, blurred(clear), clear, "haze")]
    fitted = fit_calibration(examples, gamma=0.05, ridge=10.0)
    before, after = [], []
    for _ in range(8):
        clear = scene(rng)
        restored = blurred(clear)
        before.append(psnr(restored, clear))
        after.append(psnr(fitted.apply(clear, restored.copy()), clear))
    assert np.mean(after) > np.mean(before) + 6.0, (before, after)


def test_a_photo_is_mapped_band_by_band_as_one_image_and_a_prediction_stays_in_bounds(fitted):
    rng = np.random.default_rng(2)
    big = veiled(scene(rng, (700, 530)), rng)
    restored = blurred(big)
    retreat, contrast, shift = fitted.predict(pair_features(big, restored))
    blend = restored + retreat * (big.astype(np.float64) - restored)
    mean = blend.reshape(-1, 3).mean(axis=0)
    expected = np.clip((blend - mean) * (1 + contrast) + mean + shift * 255, 0, 255)
    mapped = fitted.apply(big, restored.copy())
    np.testing.assert_allclose(mapped, expected.round(), atol=1)
    # Far outside every example: the map is clipped, never inverted or blown out.
    retreat, contrast, shift = fitted.predict(fitted.mean + 1e3 * fitted.scale)
    assert RETREAT_RANGE[0] <= retreat <= RETREAT_RANGE[1]
    assert np.all((CONTRAST_RANGE[0] <= contrast) & (contrast <= CONTRAST_RANGE[1]))
    assert np.all((SHIFT_RANGE[0] <= shift) & (shift <= SHIFT_RANGE[1]))


def test_it_travels_in_a_weights_only_checkpoint_and_predicts_the_same(fitted):
    buffer = io.BytesIO()
    torch.save({"calibration": fitted.to_state()}, buffer)
    loaded = torch.load(io.BytesIO(buffer.getvalue()), weights_only=True)["calibration"]
    again = Calibration.from_state(loaded)
    features = pair_features(scene(np.random.default_rng(3)), scene(np.random.default_rng(4)))
    for a, b in zip(fitted.predict(features), again.predict(features), strict=True):
        np.testing.assert_allclose(a, b)
    assert again.weathers == fitted.weathers and again.weather_distance == fitted.weather_distance
    np.testing.assert_allclose(again.predict(features, "haze")[1], fitted.predict(features, "haze")[1])
    # A calibration saved before the map had a retreat (six outputs) loads and takes nothing back.
    older = Calibration.from_state({**loaded, "weights": fitted.weights[:, 1:].tolist()})
    assert older.predict(features)[0] == 0.0
    # One saved before it was told the weather: the same map whatever the weather.
    untold = {k: v for k, v in loaded.items() if k not in ("weathers", "told_weights", "weather_distance")}
    plain = Calibration.from_state(untold)
    np.testing.assert_allclose(plain.predict(features, "haze")[1], fitted.predict(features)[1])


def test_told_the_weather_the_map_comes_from_that_weathers_examples():
    """Two weathers whose images look alike to global statistics but want opposite maps: a veil to take off
    (haze) and the same veil to keep (a rain set whose targets are their inputs). Told the weather, each photo gets
    its own weather's map; told nothing, the map fitted without the weather (between the two); with
    weather_distance 0 the weather changes nothing."""
    rng = np.random.default_rng(9)
    examples = []
    for _ in range(40):
        clear = scene(rng)
        hazy, kept = veiled(clear, rng), veiled(scene(rng), rng)
        examples += [(hazy, hazy.copy(), clear, "haze"), (kept, kept.copy(), kept, "rain")]
    told = fit_calibration(examples, gamma=0.05, ridge=10.0, weather_distance=4.0)
    untold = fit_calibration(examples, gamma=0.05, ridge=10.0)
    assert untold.told_weights is None and told.weathers.count("rain") == 40
    haze_gain, rain_kept, unknown_gain = [], [], []
    for _ in range(8):
        clear = scene(rng)
        hazy = veiled(clear, rng)
        haze_gain.append(psnr(told.apply(hazy, hazy.copy(), "haze"), clear) - psnr(hazy, clear))
        rain_kept.append(psnr(told.apply(hazy, hazy.copy(), "rain"), hazy))
        unknown_gain.append(psnr(told.apply(hazy, hazy.copy(), None), clear) - psnr(hazy, clear))
        for weather in ("haze", "rain", None):  # untold: the weather is ignored
            np.testing.assert_array_equal(
                untold.apply(hazy, hazy.copy(), weather), untold.apply(hazy, hazy.copy())
            )
    assert np.mean(haze_gain) > 8.0, haze_gain
    assert np.mean(rain_kept) > 30.0, rain_kept  # under 8 grey levels of change
    assert 0.5 < np.mean(unknown_gain) < np.mean(haze_gain) - 2.0, (unknown_gain, haze_gain)
    # A weather no example has (snow here) gets the map fitted without the weather, as an unknown one does.
    np.testing.assert_array_equal(told.apply(hazy, hazy.copy(), "snow"), told.apply(hazy, hazy.copy()))


def test_the_channel_contrasts_stay_close_so_a_grey_image_stays_nearly_grey():
    """Unbounded, per-channel contrasts once stretched a near-grey hazy photo's green and blue 2.5-3x and its red
    1.3x (orange-red foliage): each now lies within CONTRAST_SPREAD of the three's mean."""
    rng = np.random.default_rng(6)
    grey = np.repeat(veiled(scene(rng), rng)[..., :1], 3, axis=2)
    restored = blurred(grey)
    features = pair_features(grey, restored)
    # One example at this image's features: the prediction is its map (retreat 0.2, contrasts 0.3 / 1.5 / 1.8).
    wild = np.array([[0.2, 0.3, 1.5, 1.8, 0.0, 0.0, 0.0]])
    calibration = Calibration(features, np.ones_like(features), np.zeros((1, features.size)), wild, 1.0)
    _, contrast, _ = calibration.predict(features)
    np.testing.assert_allclose(contrast, 1.2 + np.array([-1, 1, 1]) * CONTRAST_SPREAD)  # about the mean, 1.2
    mapped = calibration.apply(grey, restored).astype(np.int16)
    blend = 0.8 * restored + 0.2 * grey.astype(np.float64)
    inside = ((mapped > 0) & (mapped < 255)).all(axis=2)  # not clipped in any channel
    assert inside.mean() > 0.5
    bound = 2 * CONTRAST_SPREAD * np.abs(blend[..., 0] - blend[..., 0].mean()) + 1
    for a, b in ((0, 1), (1, 2)):
        assert np.all(np.abs(mapped[..., a] - mapped[..., b])[inside] <= bound[inside])


def test_too_few_examples_and_bad_settings_are_refused():
    image = scene(np.random.default_rng(5))
    with pytest.raises(ValueError, match="at least 2 examples"):
        fit_calibration([(image, image, image, None)], gamma=0.05, ridge=3.0)
    with pytest.raises(ConfigError, match=r"train\.calibration\.gamma"):
        load_config("smoke", ["train.calibration.gamma=0"])
    with pytest.raises(ConfigError, match=r"train\.calibration\.lighter"):
        load_config("smoke", ["train.calibration.lighter=[0.5,1.0]"])
    with pytest.raises(ConfigError, match=r"train\.calibration\.weather_distance"):
        load_config("smoke", ["train.calibration.weather_distance=-1"])


def test_a_lighter_degradation_of_a_hazy_pair_is_the_same_haze_thinner():
    """Blending a pair's input toward its target is the scattering model with transmission 1 - s (1 - t)."""
    clear = scene(np.random.default_rng(7))
    t, airlight = 0.4, 0.9
    hazy = (clear * t + 255 * airlight * (1 - t)).round().astype(np.uint8)
    thinner = 1 - 0.5 * (1 - t)
    expected = clear * thinner + 255 * airlight * (1 - thinner)
    np.testing.assert_allclose(lighter_degradation(hazy, clear, 0.5), expected, atol=1.0)
    assert lighter_degradation(hazy, clear, 0.5).dtype == np.uint8


def test_training_fits_on_the_first_pairs_by_id_and_photo_sized_pairs_cost_what_crops_do(tmp_path):
    from PIL import Image

    from fairweather.contracts.config.model import ModelConfig
    from fairweather.contracts.config.train import CalibrationConfig
    from fairweather.imaging import limit_short_side
    from fairweather.training.calibration_fit import FIT_SIDE, calibrate_on_pairs

    rng = np.random.default_rng(6)
    rows, small_rows = [], []
    for index in range(3):
        clear = scene(rng, (450, 600))
        hazy = veiled(clear, rng)
        row, small = ({"pair_id": f"p{2 - index}", "weather": "haze"} for _ in range(2))
        for key, image in (("input_uri", hazy), ("target_uri", clear)):
            Image.fromarray(image).save(path := tmp_path / f"{index}-{key}.png")
            Image.fromarray(limit_short_side(image, FIT_SIDE)).save(
                small_path := tmp_path / f"{index}-{key}-s.png"
            )
            row[key], small[key] = str(path), str(small_path)
        rows.append(row)
        small_rows.append(small)
    settings = CalibrationConfig(max_pairs=2)
    kw = {"max_pixels": 10**8, "device": torch.device("cpu")}
    fitted = calibrate_on_pairs(torch.nn.Identity(), rows, ModelConfig(), settings, **kw)
    assert fitted.support.shape == (4, 24)  # p0 and p1, each with its clean target
    assert fitted.weathers == ("haze",) * 4 and fitted.told_weights is not None  # told the pairs' weather
    lighter = calibrate_on_pairs(
        torch.nn.Identity(), rows, ModelConfig(), CalibrationConfig(max_pairs=2, lighter=(0.3, 0.6)), **kw
    )
    assert lighter.support.shape == (8, 24)  # and each at two lighter strengths
    again = calibrate_on_pairs(torch.nn.Identity(), small_rows, ModelConfig(), settings, **kw)
    np.testing.assert_allclose(fitted.weights, again.weights, atol=1e-6)


def test_the_fit_takes_its_pairs_from_every_dataset_and_weather_in_turn():
    """By pair id alone, 128 pairs of an import of Outdoor-Rain and OTS would all be Outdoor-Rain's (haze would get
    the map of rain); by dataset alone, one generated set's first pairs are its haze and rain, and its snow gets a
    map fitted on no snow."""
    from fairweather.training.calibration_fit import fit_pairs

    rows = [{"pair_id": f"{name}/{i:03d}"} for name in ("ots", "outdoor-rain", "a-snow") for i in range(5)]
    chosen = [row["pair_id"] for row in fit_pairs(rows[::-1], 7)]
    expected = [f"{name}/{i:03d}" for i in range(3) for name in ("a-snow", "ots", "outdoor-rain")]
    assert chosen == expected[:7]
    one = [
        {"pair_id": f"synth-photo/{w}_{i:05d}", "weather": w}
        for w in ("snow", "haze", "rain")
        for i in range(3)
    ]
    chosen = [row["pair_id"] for row in fit_pairs(one[::-1], 4)]
    assert chosen == [f"synth-photo/{w}_00000" for w in ("haze", "rain", "snow")] + ["synth-photo/haze_00001"]
