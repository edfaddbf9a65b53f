"""The restore-and-score engine's plain steps (no Ray): rows that say what they hold, the input handed to
input-relative checks, failures as rows; and the one CPU budget every stage plans with."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fairweather.contracts.config import load_config
from fairweather.contracts.errors import FairweatherError
from fairweather.metrics import METRICS
from fairweather.stages.engine.rows import KIND_CHECKPOINT, KIND_FILE, KIND_INPUT, work_row
from fairweather.stages.engine.score import restore_and_score_here
from fairweather.stages.infra import cpus
from tests.test_evaluate import png, scene


class Brighter:
    """A restorer stub: +10 levels."""

    def restore(self, rgb: np.ndarray, weather: str | None = None) -> np.ndarray:
        return (rgb.astype(int) + 10).clip(0, 255).astype(np.uint8)


class Brightness:
    spec = METRICS["piqe"]

    def __call__(self, images: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        return images.mean(dim=(1, 2, 3)) * 255


class Checks:
    """Input-relative check stub: mean difference to the input; raises on a marked size to test failures."""

    def __init__(self) -> None:
        self.seen: list[tuple[tuple, tuple]] = []

    def __call__(self, candidate: np.ndarray, degraded: np.ndarray) -> dict[str, float]:
        self.seen.append((candidate.shape, degraded.shape))
        return {"guard/shift": float(candidate.astype(float).mean() - degraded.astype(float).mean())}


def test_work_rows_say_what_they_hold():
    row = work_row(
        group="g", image="a", weather="rain", source="ema", kind=KIND_CHECKPOINT, source_uri="in.png"
    )
    assert (
        row["input_uri"] == "in.png" and row["target_uri"] is None
    )  # a restoration's input is what it reads
    with pytest.raises(ValueError, match="its own input"):
        work_row(
            group="g",
            image="a",
            weather="rain",
            source="input",
            kind=KIND_INPUT,
            source_uri="x",
            input_uri="x",
        )
    with pytest.raises(ValueError, match="kind"):
        work_row(group="g", image="a", weather="rain", source="s", kind="method", source_uri="x")


def test_in_process_engine_hands_inputs_to_checks_and_keeps_failures(tmp_path: Path):
    clean, noisy = scene(0, size=48)
    (tmp_path / "in.png").write_bytes(png(noisy))
    (tmp_path / "target.png").write_bytes(png(clean))
    (tmp_path / "out.png").write_bytes(png(clean[:40, :40]))  # another method's output, cropped
    (tmp_path / "bad.png").write_bytes(b"not an image")
    common = {"group": "lineage", "image": "a", "weather": "rain", "target_uri": str(tmp_path / "target.png")}
    uri = {name: str(tmp_path / f"{name}.png") for name in ("in", "out", "bad")}
    rows = [
        work_row(**common, source="input", kind=KIND_INPUT, source_uri=uri["in"]),
        work_row(**common, source="ema", kind=KIND_CHECKPOINT, source_uri=uri["in"], example=True),
        work_row(**common, source="folder", kind=KIND_FILE, source_uri=uri["out"], input_uri=uri["in"]),
        work_row(**common, source="broken", kind=KIND_FILE, source_uri=uri["bad"], input_uri=uri["in"]),
    ]
    checks = Checks()
    scored = restore_and_score_here(
        rows,
        restorers={"ema": Brighter()},
        scorers={"bright": Brightness()},
        reference={"psnr": Brightness()},
        max_pixels=10**6,
        short_side=None,
        input_checks=checks,
        chunk=3,
    )
    by_source = {row["source"]: row for row in scored}
    assert [row["source"] for row in scored] == ["input", "ema", "folder", "broken"]
    assert by_source["broken"]["status"] == "failed" and by_source["broken"]["scores"] is None
    ema, folder, plain = (json.loads(by_source[s]["scores"]) for s in ("ema", "folder", "input"))
    assert ema["guard/shift"] == pytest.approx(10, abs=0.5)  # against the pixels before restoring
    assert "guard/shift" not in plain  # the input itself has no input to compare with
    assert checks.seen == [((48, 48, 3), (48, 48, 3))] * 2  # the cropped output at the input's size
    assert ema["bright"] == pytest.approx(plain["bright"] + 10, abs=0.5) and "psnr" in folder
    assert by_source["ema"]["restore_seconds"] > 0 and by_source["input"]["restore_seconds"] is None
    assert by_source["ema"]["thumbnail"] and not by_source["input"]["thumbnail"]
    # An example row with a target carries the target's thumbnail too (the report's input | restored | target).
    target = np.asarray(Image.open(io.BytesIO(by_source["ema"]["target_thumbnail"])).convert("RGB"))
    assert target.shape == (160, 160, 3) and not by_source["input"]["target_thumbnail"]
    assert "pixels" not in by_source["ema"] and by_source["folder"]["input_uri"].endswith("in.png")


def test_cgroup_quota_v2_then_v1(tmp_path: Path):
    v2, v1 = tmp_path / "cpu.max", tmp_path / "v1"
    v1.mkdir()
    assert cpus.cgroup_cpu_quota(v2, v1) is None  # no files: no quota
    (v1 / "cpu.cfs_quota_us").write_text("250000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cpus.cgroup_cpu_quota(v2, v1) == 2.5
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.cgroup_cpu_quota(v2, v1) is None
    v2.write_text("150000 100000\n")
    assert cpus.cgroup_cpu_quota(v2, v1) == 1.5
    v2.write_text("max 100000\n")
    assert cpus.cgroup_cpu_quota(v2, v1) is None


@pytest.mark.own_ray  # the budget before a stage starts its Ray: with a Ray up, cpu_budget asks that Ray instead
def test_cpu_budget_and_the_check_every_stage_uses(monkeypatch):
    assert cpus.machine_cpus() >= 1
    monkeypatch.setattr(cpus, "cgroup_cpu_quota", lambda: 0.5)
    assert cpus.machine_cpus() == 1  # a quota below one CPU still runs
    runtime = load_config("smoke", ["runtime.num_cpus=3"]).runtime
    assert cpus.cpu_budget(runtime) == 3.0
    cpus.check_cpu_budget(runtime, 2, "x")
    with pytest.raises(FairweatherError, match=r"x = 2.5 CPUs leave less than 1 of the 3 CPUs"):
        cpus.check_cpu_budget(runtime, 2.5, "x")
    cpus.check_cpu_budget(runtime, 3, "workers", spare=0)
    with pytest.raises(FairweatherError, match="exceed the 3 CPUs"):
        cpus.check_cpu_budget(runtime, 4, "workers", spare=0)
    monkeypatch.setenv("RAY_ADDRESS", "ray://elsewhere:10001")  # a cluster may autoscale: trusted
    cpus.check_cpu_budget(runtime, 64, "x")
