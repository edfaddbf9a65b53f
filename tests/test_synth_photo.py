"""Synth from real clean photos: physics, depth sources, recorded parameters, determinism, bad input."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fairweather.contracts.config import load_config
from fairweather.contracts.config.synth import PhotoSynthConfig, SynthConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.schemas import PAIRED
from fairweather.contracts.tables import TableStore
from fairweather.synth import (
    PHOTO_DATASET,
    PRIOR_SOURCE,
    CleanPhotoShortage,
    bundled_clean_photos,
    degrade_photo,
    depth_from_disparity,
    errors_table,
    generate,
    geometric_depth,
    load_clean_photos,
    sample_photo_params,
    synthesize,
    write_pairs,
)
from fairweather.synth.photo import haze_field, settle_haze

#: Small working resolution and crops keep every test here well under a second or two.
PHOTO = PhotoSynthConfig(short_side=(48, 64))


def photo_cfg(tmp_path: Path, **changes) -> SynthConfig:
    base = {
        "out": str(tmp_path / "data"),
        "num_paired": 12,
        "num_unlabeled": 3,
        "size": (32, 32),
        "photo": PHOTO,
    }
    return SynthConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def bundled() -> list[tuple[str, bytes]]:
    return bundled_clean_photos()


@pytest.fixture(scope="module")
def street(bundled) -> np.ndarray:
    data = dict(bundled)["bundled:Depth-Anything-V2__demo01.jpg"]
    image = Image.open(io.BytesIO(data)).convert("RGB")
    image.thumbnail((120, 120))
    return np.asarray(image, dtype=np.float32) / 255.0


def encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def test_bundled_photos_are_shipped_with_sources_and_licences(bundled):
    folder = Path(__file__).resolve().parents[1] / "platform/fairweather/synth/assets/clean"
    with open(folder / "SOURCES.csv", newline="") as handle:
        sources = {row["file"]: row for row in csv.DictReader(handle)}
    names = [name.removeprefix("bundled:") for name, _ in bundled]
    assert len(names) >= 30 and set(names) == set(sources)
    assert all(sources[n]["license"] and sources[n]["source_repo"] for n in names)
    assert sum(len(data) for _, data in bundled) < 2_000_000
    assert (folder / "README.md").is_file()


def test_geometric_prior_puts_the_sky_far_and_the_ground_near():
    h, w = 64, 96
    rng = np.random.default_rng(0)
    image = np.empty((h, w, 3), dtype=np.float32)
    image[: h // 3] = [0.55, 0.7, 0.95]  # smooth blue sky
    image[h // 3 :] = 0.3 + 0.2 * rng.random((h - h // 3, w, 3))  # textured ground
    depth = geometric_depth(image, camera_height_m=1.6, far_m=60.0, depth_cue=0.7)
    assert depth.shape == (h, w) and depth.dtype == np.float32
    assert np.allclose(depth[: h // 4], 60.0, rtol=0.05)  # the sky is as far as anything gets
    rows = depth[h // 3 + 4 :].mean(axis=1)
    assert np.all(np.diff(rows) < 0) and rows[-1] < 5.0  # the ground comes nearer toward the bottom


def test_model_depth_is_inverse_disparity_in_metres():
    disparity = np.tile(
        np.linspace(0.0, 2.0, 20, dtype=np.float32)[:, None], (1, 10)
    )  # top: sky, bottom: near
    depth = depth_from_disparity(disparity, (40, 20), near_m=3.0, far_m=60.0)
    assert depth.shape == (40, 20)
    assert depth[0].min() == pytest.approx(60.0) and depth[-1].max() == pytest.approx(3.0, rel=0.05)
    with pytest.raises(ValueError, match="finite"):
        depth_from_disparity(np.full((4, 4), np.nan), (4, 4), near_m=3.0, far_m=60.0)


@pytest.mark.parametrize("weather", ["haze", "rain", "snow"])
def test_parameters_are_in_range_json_able_and_reproducible(street, weather):
    depth = geometric_depth(street, camera_height_m=1.6, far_m=60.0, depth_cue=0.7)
    first, params = synthesize(street, depth, weather, PHOTO, np.random.default_rng(7))
    again, same = synthesize(street, depth, weather, PHOTO, np.random.default_rng(7))
    assert np.array_equal(first, again) and params == same
    assert json.loads(json.dumps(params)) == params and params["weather"] == weather
    assert first.shape == street.shape and first.dtype == np.float32 and first.min() >= 0 and first.max() <= 1
    assert np.abs(first - street).mean() > 0.005
    if weather == "haze":
        assert PHOTO.haze_beta[0] <= params.get("beta_drawn", params["beta"]) <= PHOTO.haze_beta[1]
    else:
        assert PHOTO.__getattribute__(f"{weather}_layers")[0] <= params["layers"]


def test_rain_density_is_drawn_log_uniformly_so_light_rain_is_as_likely_as_heavy():
    rng = np.random.default_rng(0)
    densities = np.array([sample_photo_params("rain", PHOTO, rng)["density"] for _ in range(2000)])
    low, high = PHOTO.rain_density
    assert low <= densities.min() and densities.max() <= high
    # Each half of the range in log space holds half the draws (a uniform draw would put 85 % above the middle).
    middle = np.sqrt(low * high)
    assert 0.45 < (densities < middle).mean() < 0.55


def test_haze_follows_depth_and_close_ups_still_get_haze():
    clean = np.full((1, 50, 3), 0.2, dtype=np.float32)
    depth = np.linspace(1.0, 60.0, 50, dtype=np.float32)[None, :]
    params = {"weather": "haze", "beta": 0.1, "airlight": 0.9, "airlight_tint": [0.0, 0.0, 0.0]}
    hazy = degrade_photo(clean, depth, "haze", params, np.random.default_rng(0))[0, :, 0]
    assert np.all(np.diff(hazy) > 0)  # farther pixels are closer to the airlight
    near = np.full((8, 8), 2.0, dtype=np.float32)  # a close-up: t = exp(-0.04 * 2) = 0.92 would be haze-free
    settled = settle_haze({**params, "beta": 0.04}, near, max_mean_t=0.65)
    assert settled["beta_drawn"] == 0.04 and np.exp(-settled["beta"] * near).mean() == pytest.approx(
        0.65, abs=1e-3
    )
    assert settle_haze(params, np.full((8, 8), 30.0, dtype=np.float32), 0.65) == params  # far enough already


def test_non_homogeneous_haze_varies_over_patches_not_with_depth_alone():
    field = haze_field((90, 120), sigma=1.0, patch_px=40.0, rng=np.random.default_rng(0))
    assert field.shape == (90, 120) and field.dtype == np.float32 and field.min() > 0
    assert np.log(field).mean() == pytest.approx(-0.5, abs=1e-3) and np.log(field).std() == pytest.approx(1.0)
    assert np.abs(np.diff(np.log(field), axis=1)).max() < 0.2  # smooth: patches, not noise
    assert np.array_equal(haze_field((9, 9), 0.0, 40.0, np.random.default_rng(0)), np.ones((9, 9)))
    grey, depth = np.full((48, 64, 3), 0.2, np.float32), np.full((48, 64), 20.0, np.float32)
    patchy = dataclasses.replace(PHOTO, haze_patchiness=1.0, haze_patch_px=(16.0, 16.0), haze_max_mean_t=1.0)
    hazy, params = synthesize(grey, depth, "haze", patchy, np.random.default_rng(1))
    again, same = synthesize(grey, depth, "haze", patchy, np.random.default_rng(1))
    assert np.array_equal(hazy, again) and params == same
    assert 0 <= params["patchiness"] <= 1 and params["patch_px"] == 16.0
    uniform, plain = synthesize(grey, depth, "haze", PHOTO, np.random.default_rng(1))
    assert "patchiness" not in plain and np.ptp(uniform[..., 0]) < 1e-6  # homogeneous by default, as RESIDE
    assert np.ptp(hazy[..., 0]) > 0.05  # one scene, one depth: the haze varies by patch


def test_rain_only_adds_light_and_snow_occludes(street):
    depth = np.full(street.shape[:2], 10.0, dtype=np.float32)
    rng = np.random.default_rng(3)
    rain = {**sample_photo_params("rain", PHOTO, rng), "veil_beta": 0.0, "raindrops": 0, "density": 0.01}
    rainy = degrade_photo(street, depth, "rain", rain, rng)
    assert np.all(rainy >= street - 1e-6) and (rainy - street).max() > 0.3
    snow = {**sample_photo_params("snow", PHOTO, rng), "veil_beta": 0.0, "blur": 0.0, "density": 0.001}
    snowy = degrade_photo(np.zeros_like(street), depth, "snow", snow, rng)
    assert (
        snowy.max() > 0.8 and 0.01 < (snowy.max(axis=2) > 0.5).mean() < 0.9
    )  # opaque flakes, not a white sheet


def test_real_photos_become_paired_rows_with_parameters_and_depth_source(tmp_path, bundled):
    cfg = photo_cfg(tmp_path)
    result = generate(cfg, clean_sources=bundled[:6])
    assert (result.num_paired, result.num_unlabeled, result.errors) == (12, 3, ())
    assert result.depth_sources == (PRIOR_SOURCE,)
    store = TableStore(str(tmp_path / "tables"))
    assert write_pairs(store, result.pairs) == 12
    rows = store.read("paired").to_pylist()
    assert {r["dataset"] for r in rows} == {PHOTO_DATASET} and {r["depth_source"] for r in rows} == {
        PRIOR_SOURCE
    }
    photo_split = defaultdict(set)
    for row in rows:
        params = json.loads(row["degradation"])
        assert params["weather"] == row["weather"] and params["model"] == "photo/v1" and params["seed"] == 0
        assert params["crop"]["height"] == 32 and row["clean_source"].startswith("bundled:")
        photo_split[row["clean_source"]].add(row["split"])
        image = Image.open(store.root + "/" + row["input_uri"])
        assert image.size == (32, 32) and image.mode == "RGB"
    assert all(len(splits) == 1 for splits in photo_split.values())  # no photo in two splits
    pool = pq.read_table(f"{result.pool_dir}/manifest.parquet").to_pylist()
    assert len(pool) == 3 and all(json.loads(r["params"])["weather"] == r["weather"] for r in pool)
    assert {r["source"] for r in pool} <= {s for s, splits in photo_split.items() if splits == {"train"}}


def test_photo_synth_is_deterministic_for_a_seed_and_order_free(tmp_path, bundled):
    first = generate(photo_cfg(tmp_path / "a"), clean_sources=bundled[:6])
    again = generate(photo_cfg(tmp_path / "a"), clean_sources=list(reversed(bundled[:6])))
    assert again.files_written == 0  # same bytes: nothing rewritten, whatever the listing order
    assert [(p.pair_id, p.split, p.clean_source, p.degradation) for p in first.pairs] == [
        (p.pair_id, p.split, p.clean_source, p.degradation) for p in again.pairs
    ]
    other = generate(photo_cfg(tmp_path / "b", seed=1), clean_sources=bundled[:6])
    assert [p.degradation for p in other.pairs] != [p.degradation for p in first.pairs]


def test_an_injected_depth_model_is_used_and_recorded(tmp_path, bundled):
    calls = []

    def fake_depth(image: np.ndarray) -> np.ndarray:  # nearer at the bottom, like a ground plane
        calls.append(image.shape)
        return np.tile(np.linspace(0.0, 1.0, 16, dtype=np.float32)[:, None], (1, 16))

    cfg = photo_cfg(tmp_path, num_paired=6, num_unlabeled=0)
    result = generate(cfg, clean_sources=bundled[:4], depth_fn=fake_depth, depth_name="fake-da")
    assert result.depth_sources == ("model:fake-da",) and {p.depth_source for p in result.pairs} == {
        "model:fake-da"
    }
    assert 1 <= len(calls) <= 4  # once per photo used, not once per pair


def test_bad_files_become_error_rows_and_odd_modes_are_converted(tmp_path, bundled):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
    sixteen = Image.fromarray((rng.integers(0, 65535, (48, 48))).astype(np.uint16))
    sources = [
        *bundled[:3],
        ("gray.png", encoded(Image.fromarray(pixels[..., 0], mode="L"))),
        ("cmyk.jpg", encoded(Image.fromarray(pixels).convert("CMYK"), "JPEG")),
        ("sixteen.png", encoded(sixteen)),
        ("tiny.png", encoded(Image.fromarray(pixels[:20, :20]))),
        ("notes.png", b"not an image"),
        ("empty.jpg", b""),
        (bundled[0][0] + "-copy", bundled[0][1]),
        str(tmp_path / "missing.jpg"),
    ]
    result = generate(photo_cfg(tmp_path, num_paired=18), clean_sources=sources)
    reasons = {e.uri: e.reason for e in result.errors}
    assert reasons == {
        "tiny.png": "too_small",
        "notes.png": "not_an_image",
        "empty.jpg": "empty",
        bundled[0][0] + "-copy": "duplicate",
        str(tmp_path / "missing.jpg"): "unreadable",
    }
    assert (
        sum(result.photo_splits.values()) == 6
    )  # 3 RGB photos + the converted grayscale, CMYK and 16-bit ones
    photos, _ = load_clean_photos(sources, min_size=(32, 32), max_short_side=64, max_pixels=10**7)
    modes = {photo.source: photo.converted_from for photo in photos}
    assert modes["gray.png"] == "L" and modes["cmyk.jpg"] == "CMYK" and modes["sixteen.png"].startswith("I")
    assert all(modes[name] is None for name, _ in bundled[:3])
    assert all(photo.image.dtype == np.uint8 and photo.image.shape[2] == 3 for photo in photos)
    recorded = {p.clean_source: json.loads(p.degradation).get("converted_from") for p in result.pairs}
    assert all(recorded[source] == mode for source, mode in modes.items() if source in recorded)
    table = errors_table(result.errors)
    assert table.num_rows == 5 and set(table.column("stage").to_pylist()) == {"synth"}


def test_too_few_photos_is_one_clear_error_before_any_work(tmp_path, bundled):
    cfg = photo_cfg(tmp_path, num_paired=30)
    sources = [*bundled[:2], ("broken.jpg", b"\xff\xd8 truncated")]
    with pytest.raises(
        CleanPhotoShortage, match=r"2 usable photo\(s\) \(refused: 1 \w+\).*at least 3"
    ) as err:
        generate(cfg, clean_sources=sources)
    assert isinstance(err.value, FairweatherError)
    assert not (tmp_path / "data").exists()  # nothing written
    assert generate(dataclasses.replace(cfg, val_fraction=0.0), clean_sources=sources).num_paired == 30


def test_config_keys_load_and_are_validated():
    cfg = load_config("smoke", ["synth.clean=bundled", "synth.photo.haze_beta=[0.05, 0.1]"])
    assert cfg.synth.clean == "bundled" and cfg.synth.photo.haze_beta == (0.05, 0.1)
    with pytest.raises(FairweatherError, match=r"synth\.photo\.rain_layers"):
        load_config("smoke", ["synth.photo.rain_layers=[3, 1]"])
    with pytest.raises(FairweatherError, match=r"synth\.photo\.rain_density"):
        load_config("smoke", ["synth.photo.rain_density=[0, 0.01]"])  # log-uniform: 0 has no logarithm
    with pytest.raises(FairweatherError, match=r"synth\.photo\.far_m"):
        load_config("smoke", ["synth.photo.far_m=2", "synth.photo.near_m=3"])


def test_paired_parts_written_before_the_new_columns_still_read(tmp_path):
    store = TableStore(str(tmp_path))
    old = pa.table({f.name: pa.array([], f.type) for f in PAIRED.fields if f.name not in {"clean_source",
                                                                                         "degradation",
                                                                                         "depth_source"}})  # fmt: skip
    old = pa.concat_tables([old, pa.table({
        "pair_id": ["x/a"], "dataset": ["x"], "split": ["train"], "weather": ["rain"], "input_uri": ["a"],
        "target_uri": ["b"], "width": pa.array([8], pa.int32()), "height": pa.array([8], pa.int32()),
        "created_at": pa.array([0], pa.timestamp("us", tz="UTC")),
    }).cast(old.schema)])  # fmt: skip
    (tmp_path / "paired").mkdir()
    pq.write_table(
        old.replace_schema_metadata(PAIRED.schema.metadata), tmp_path / "paired" / "part-0.parquet"
    )
    row = store.read("paired").to_pylist()[0]
    assert row["pair_id"] == "x/a" and row["clean_source"] is None and row["depth_source"] is None
