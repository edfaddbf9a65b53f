"""Generated data: the physics of each degradation, determinism, counts, idempotent reruns, real-photo mode."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from fairweather.contracts.config.synth import SynthConfig
from fairweather.synth import CleanPhotoShortage, degrade, generate, haze, procedural_scene, sample_params

SIZE = (48, 64)


@pytest.fixture
def scene():
    return procedural_scene(np.random.default_rng(0), SIZE)


def test_scene_is_valid(scene):
    image, depth = scene
    assert image.shape == (*SIZE, 3) and depth.shape == SIZE
    assert image.min() >= 0 and image.max() <= 1 and depth.min() > 0
    assert depth[0].mean() > depth[-1].mean()  # sky far, foreground near


def test_haze_transmission_is_monotonic_in_depth():
    clean = np.full((1, 50, 3), 0.2, dtype=np.float32)
    depth = np.linspace(0.05, 1.0, 50, dtype=np.float32)[None, :]
    hazy = haze(clean, depth, beta=1.5, airlight=0.9)[0, :, 0]
    assert np.all(np.diff(hazy) > 0)  # farther pixels are closer to the airlight
    assert np.all(np.abs(hazy - 0.9) <= np.abs(clean[0, :, 0] - 0.9))


def test_haze_limits(scene):
    image, depth = scene
    assert np.array_equal(haze(image, depth, beta=0.0, airlight=0.8), image)
    assert np.allclose(haze(image, depth, beta=1e3, airlight=0.8), 0.8, atol=1e-6)


@pytest.mark.parametrize("weather", ["rain", "snow", "haze"])
def test_degradations_change_the_image_and_stay_in_range(scene, weather):
    image, depth = scene
    rng = np.random.default_rng(1)
    out = degrade(image, depth, weather, sample_params(weather, SynthConfig(), rng), rng)
    assert out.shape == image.shape and out.dtype == np.float32
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - image).mean() > 0.01


def test_rain_brightens_and_snow_occludes():
    image, depth = procedural_scene(np.random.default_rng(0), (96, 128))
    cfg = dataclasses.replace(SynthConfig(), veil_beta=(0.0, 0.0))
    rng = np.random.default_rng(2)
    rainy = degrade(image, depth, "rain", sample_params("rain", cfg, rng), rng)
    assert np.all(rainy >= image - 1e-6)  # screen compositing only adds light
    heavy = dataclasses.replace(cfg, snow_density=(0.004, 0.004), snow_opacity=(1.0, 1.0))
    snowy = degrade(image, depth, "snow", sample_params("snow", heavy, rng), rng)
    near_white = (snowy.min(axis=2) > 0.85) & (image.min(axis=2) < 0.6)
    assert near_white.sum() > 5  # flakes cover dark pixels


def small_cfg(tmp_path, **changes) -> SynthConfig:
    return SynthConfig(out=str(tmp_path / "data"), num_paired=6, num_unlabeled=4, size=(32, 40), **changes)


def test_generate_counts_records_and_determinism(tmp_path):
    result = generate(small_cfg(tmp_path))
    pool = pq.read_table(f"{result.pool_dir}/manifest.parquet").to_pylist()
    assert (result.num_paired, result.num_unlabeled, len(result.pairs), len(pool)) == (6, 4, 6, 4)
    assert not (tmp_path / "data/paired/manifest.parquet").exists()  # the paired table lists the pairs
    assert {p.weather for p in result.pairs} == {"rain", "haze", "snow"}
    assert {p.dataset for p in result.pairs} == {"synth"}
    for pair in result.pairs:
        assert Image.open(pair.input).size == (40, 32) and Image.open(pair.target).size == (40, 32)
        assert (pair.width, pair.height) == (40, 32) and pair.pair_id == f"synth/{Path(pair.input).stem}"
    assert sorted(p.name for p in (tmp_path / "data" / "pool").rglob("*.png")) == sorted(
        r["name"] + ".png" for r in pool
    )
    again = generate(small_cfg(tmp_path / "copy"))
    first, second = (
        (tmp_path / "data/paired/input/rain_00000.png"),
        (tmp_path / "copy/data/paired/input/rain_00000.png"),
    )
    assert first.read_bytes() == second.read_bytes() and again.files_written == result.files_written
    assert [(p.pair_id, p.split) for p in again.pairs] == [(p.pair_id, p.split) for p in result.pairs]
    other = generate(small_cfg(tmp_path / "other", seed=1))
    assert (tmp_path / "other/data/paired/input/rain_00000.png").read_bytes() != first.read_bytes()
    assert other.num_paired == 6


def test_rerun_is_idempotent(tmp_path):
    cfg = small_cfg(tmp_path)
    generate(cfg)
    before = {
        p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "data").rglob("*") if p.is_file()
    }
    assert generate(cfg).files_written == 0
    after = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in (tmp_path / "data").rglob("*") if p.is_file()}
    assert {p: v[0] for p, v in after.items()} == {p: v[0] for p, v in before.items()}
    assert all(after[p][1] == before[p][1] for p in before if p.suffix == ".png")  # images untouched


def test_real_photo_mode_refuses_non_images_with_a_reason(tmp_path):
    photos = tmp_path / "clean"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for name, shape in (("a.jpg", (60, 90, 3)), ("b.png", (70, 50, 3)), ("c.png", (64, 64, 3))):
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)).save(photos / name)
    (photos / "notes.png").write_text("not an image")
    result = generate(small_cfg(tmp_path, clean=str(photos)))
    assert result.num_paired == 6 and result.photo_splits == {
        "train": 2,
        "val": 0,
        "test": 1,
    }  # 6 pairs: no val
    assert [(e.uri, e.reason) for e in result.errors] == [(str(photos / "notes.png"), "not_an_image")]
    rows = pq.read_table(f"{result.pool_dir}/manifest.parquet").to_pylist()
    assert {r["source"] for r in rows} <= {str(photos / n) for n in ("a.jpg", "b.png", "c.png")}
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.jpg").write_bytes(b"")
    with pytest.raises(CleanPhotoShortage, match="0 usable photo"):
        generate(small_cfg(tmp_path, clean=str(empty)))
    with pytest.raises(FileNotFoundError, match="not a folder"):
        generate(small_cfg(tmp_path, clean=str(tmp_path / "missing")))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="weathers"):
        SynthConfig(weathers=("fog",))
    with pytest.raises(ValueError, match="size"):
        SynthConfig(size=(4, 4))
    with pytest.raises(ValueError, match="val_fraction"):
        SynthConfig(val_fraction=0.5, test_fraction=0.5)


def test_run_synth_prints_a_summary_and_writes_the_paired_table(tmp_path, capsys):
    from fairweather.contracts.config import load_config
    from fairweather.contracts.tables import TableStore
    from fairweather.stages.synth.driver import run_synth

    overrides = [
        f"synth.out={tmp_path / 'data'}",
        f"data.tables={tmp_path / 'tables'}",
        "synth.num_paired=2",
        "synth.num_unlabeled=1",
        "synth.size=[32,32]",
    ]
    summary = run_synth(load_config("smoke", overrides))
    assert (summary.num_paired, summary.num_unlabeled, summary.files_written, summary.rows_written) == (
        2,
        1,
        5,
        2,
    )
    assert sum(summary.splits.values()) == 2
    assert TableStore(str(tmp_path / "tables")).read("paired").num_rows == 2
    out = capsys.readouterr().out
    assert "synth: 2 paired" in out and "2 table row(s)" in out


def test_run_synth_on_a_folder_of_clean_photos_records_depth_and_refusals(tmp_path, capsys):
    """synth.clean lists a folder by the pool's rules; every row names its clean photo, its degradation's
    parameters and where its depth came from; a file that is no image becomes an errors row."""
    import json

    from fairweather.contracts.config import load_config
    from fairweather.contracts.tables import TableStore
    from fairweather.stages.synth.driver import run_synth
    from fairweather.synth import bundled_clean_photos

    clean = tmp_path / "clean"
    clean.mkdir()
    for name, data in bundled_clean_photos()[:8]:
        (clean / name.partition(":")[2]).write_bytes(data)
    (clean / "broken.jpg").write_bytes(b"not a jpeg")
    overrides = [
        f"synth.out={tmp_path / 'data'}",
        f"data.tables={tmp_path / 'tables'}",
        f"synth.clean={clean}",
        "synth.num_paired=6",
        "synth.num_unlabeled=1",
        "synth.size=[48,48]",
    ]
    summary = run_synth(load_config("smoke", overrides))
    store = TableStore(str(tmp_path / "tables"))
    rows = store.read("paired").to_pylist()
    assert len(rows) == summary.num_paired == 6 and {r["dataset"] for r in rows} == {"synth-photo"}
    assert all(r["clean_source"] and r["depth_source"].startswith("prior:") for r in rows)
    assert all(json.loads(r["degradation"]) for r in rows)
    assert summary.clean_errors == 1
    assert [e["uri"].rpartition("/")[2] for e in store.read("errors").to_pylist()] == ["broken.jpg"]
    assert "random weights" in capsys.readouterr().out
