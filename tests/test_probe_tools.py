"""The measuring tools of benchmarks/ that no other test runs: where a command's CPU goes, the pairs-only probe of a
setting on real pairs, the rain-streak probe and the backbones' layouts (tiny, so that none rots)."""

from __future__ import annotations

import runpy
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fairweather.stages.synth.driver import run_synth

from .conftest import REPO
from .train_fixtures import tiny_config


@pytest.mark.parametrize(
    ("name", "cmdline", "kind"),
    [
        ("ray::RayTrainWor", ["ray::RayTrainWorker.run_train_fn"], "ray::RayTrainWorker"),
        ("ray::IDLE", ["ray::IDLE"], "ray::IDLE"),
        ("raylet", ["/venv/lib/ray/core/src/ray/raylet/raylet", "--node_id=1"], "ray daemon: raylet"),
        ("gcs_server", ["/venv/lib/ray/core/src/ray/gcs/gcs_server", "--port=1"], "ray daemon: gcs_server"),
        ("python", ["/venv/bin/python", "-u", "-c", "import sys;exec(...)"], "pytest worker (xdist)"),
        ("python", ["/venv/bin/python", "-m", "fairweather.cli", "train"], "python -m fairweather.cli"),
        ("python", ["/venv/bin/python", "/x/holder.py", "run"], "python holder.py"),
    ],
)
def test_a_process_counts_as_its_ray_class_daemon_or_command(name, cmdline, kind, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # as `python benchmarks/...` has it
    from cpu_by_process import kind_of

    assert kind_of(name, cmdline) == kind


def test_cpu_by_process_reports_the_command_it_ran_and_its_exit_code():
    busy = (
        "import time; t = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nraise SystemExit(3)"
    )
    command = [sys.executable, str(REPO / "benchmarks" / "cpu_by_process.py"), "--interval", "0.05", "--"]
    done = subprocess.run([*command, sys.executable, "-c", busy], capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("wall ") and "% idle" in lines[0]
    (row,) = [line for line in lines if line.startswith("| python -c |")]
    assert float(row.split(" | ")[2]) >= 0.2  # its CPU seconds, sampled


def test_the_backbone_benchmark_times_both_layouts_in_fresh_processes_and_prints_their_ratio():
    args = [
        "--archs",
        "nafnet",
        "--batch",
        "1",
        "--size",
        "16",
        "--restore-size",
        "16",
        "--warmup",
        "0",
        "--steps",
        "1",
    ]
    done = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "bench_backbones.py"), *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in done.stdout.splitlines()
        if line.startswith("| nafnet |")
    ]
    assert [row[2] for row in rows] == ["contiguous", "channels_last"]
    # channels-last's train and restore speed over the contiguous layout's, on its own line
    assert rows[0][-2:] == ["", ""] and all(cell.endswith("x") for cell in rows[1][-2:])


def test_the_pairs_only_probe_trains_and_scores_every_set(tmp_path, model_cache, monkeypatch, capsys):
    run_synth(tiny_config(tmp_path, model_cache))
    rng = np.random.default_rng(0)
    for name in ("rain_set", "sots_set"):
        for kind in ("input", "target"):
            (tmp_path / name / kind).mkdir(parents=True)
            for index in range(2):
                image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
                Image.fromarray(image).save(tmp_path / name / kind / f"{index}.png")
    argv = ["--tables", str(tmp_path / "tables"), "--steps", "2", "--threads", "1"]
    argv += [str(tmp_path / "rain_set"), str(tmp_path / "sots_set"), "--", "train.crop_size=32"]
    argv += ["train.batch_size=2", "train.calibration.max_pairs=4"]
    monkeypatch.setattr("sys.argv", ["probe_pairs_only.py", *argv])
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))  # its sibling module probe_real_error
    runpy.run_path(str(REPO / "benchmarks" / "probe_pairs_only.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "overrides: train.crop_size=32 train.batch_size=2 train.calibration.max_pairs=4" in out
    assert "2 steps in" in out
    for line in ("  rain_set ", "  sots_set ", "  all rain: alone ", "  all haze: alone "):
        assert line in out, out


def test_the_streak_probe_splits_the_error_and_measures_the_rain_taken_off(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    from probe_rain_streaks import streak_stats

    target = np.full((10, 10, 3), 100, dtype=np.uint8)
    degraded = target.copy()
    degraded[:, :2] += 40  # a fifth of the pixels are streaks, 40 levels brighter
    degraded[:, 2:] += 2  # the rest a little brighter: below the threshold
    halfway = degraded.copy()
    halfway[:, :2] -= 20  # half the streaks taken off, the rest untouched
    stats = streak_stats(degraded, target, halfway, threshold=8)
    assert stats["cover"] == pytest.approx(0.2) and stats["bright"] == pytest.approx(40)
    assert stats["in_streak"] == pytest.approx(0.2 * 1600) and stats["in_rest"] == pytest.approx(0.8 * 4)
    assert stats["out_streak"] == pytest.approx(0.2 * 400) and stats["out_rest"] == pytest.approx(0.8 * 4)
    assert stats["taken"] == pytest.approx(0.5)


def test_the_streak_probe_prints_a_row_per_set_and_the_training_rain(
    tmp_path, model_cache, monkeypatch, capsys
):
    run_synth(tiny_config(tmp_path, model_cache))
    rng = np.random.default_rng(0)
    for kind, offset in (("target", 0), ("input", 30)):
        (tmp_path / "rain_set" / kind).mkdir(parents=True)
        image = rng.integers(0, 200, (24, 32, 3), dtype=np.uint8) + np.uint8(offset)
        Image.fromarray(image).save(tmp_path / "rain_set" / kind / "0.png")
        rng = np.random.default_rng(0)  # the same scene, brighter
    argv = ["probe_rain_streaks.py", "--tables", str(tmp_path / "tables"), str(tmp_path / "rain_set")]
    monkeypatch.setattr("sys.argv", argv)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    capsys.readouterr()  # the synth stage's line
    runpy.run_path(str(REPO / "benchmarks" / "probe_rain_streaks.py"), run_name="__main__")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| set | pairs | streak pixels |") and "PSNR gain" not in lines[0]
    assert lines[2] == "| rain_set | 1 | 100 % | 30 (30-30) |"
    assert lines[3].startswith("| training rain | ")
