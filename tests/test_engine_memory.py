"""The engine's actors hold a photo's bytes once: pixel columns are read in place from Arrow, a restored row leaves
the restore actor as its own table wrapping the restored array without a copy, read tasks yield row by row; and
the tiled scorers score those rows exactly as the float path does (no Ray needed: the actors are plain classes)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.metrics import build_scorer
from fairweather.stages.engine.actors import RestoreActor, ScoreActor, batch_rows, rows_table
from fairweather.stages.engine.rows import (
    KIND_CHECKPOINT,
    KIND_INPUT,
    ROW_SCHEMA,
    read_batch,
    read_rows,
    work_row,
)
from fairweather.stages.engine.score import score_rows
from tests.test_evaluate import png, scene


class Brighter:
    def restore(self, rgb: np.ndarray, weather: str | None = None) -> np.ndarray:
        return (rgb.astype(int) + 10).clip(0, 255).astype(np.uint8)


def _rows(tmp_path, count: int = 3) -> pa.Table:
    work = []
    for i in range(count):
        clean, noisy = scene(i, size=40 + 8 * i)
        (tmp_path / f"in{i}.png").write_bytes(png(noisy))
        (tmp_path / f"t{i}.png").write_bytes(png(clean))
        common = {"group": "g", "image": f"{i}", "weather": "rain", "target_uri": str(tmp_path / f"t{i}.png")}
        work.append(
            work_row(**common, source="input", kind=KIND_INPUT, source_uri=str(tmp_path / f"in{i}.png"))
        )
        work.append(
            work_row(**common, source="ema", kind=KIND_CHECKPOINT, source_uri=str(tmp_path / f"in{i}.png"))
        )
    return pa.Table.from_pylist(work)


def test_a_read_task_imports_no_torch():
    """The read tasks' function lives in a module without torch: a read task's process does not map torch's
    libraries (0.45 GiB of RSS per process on this machine)."""
    import subprocess
    import sys

    probe = "import sys, fairweather.stages.engine.rows as r; r.read_rows; print('torch' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
        == "False\n"
    )
    assert read_rows.__module__ == "fairweather.stages.engine.rows"


def test_the_evaluate_driver_builds_its_pipeline_and_checks_its_checkpoints_without_torch(tmp_path):
    """``fairweather evaluate``'s driver process never maps torch (0.45 GiB of RSS next to actors that hold big
    photos): its module, the engine's pipeline and actor classes, the metric registry and the checkpoint check
    (:func:`~fairweather.training.checkpoint_file.peek_state`) import none; the actors import it when they start."""
    import subprocess
    import sys

    import torch

    torch.save({"format": 1, "arch": "nafnet", "ema": {"w": torch.zeros(2)}}, tmp_path / "state.pt")
    probe = (
        "import sys\n"
        "import fairweather.stages.evaluate.driver\n"
        "from fairweather.stages.engine.pipeline import RestoreAndScoreActor, restore_and_score\n"
        "from fairweather.contracts.config.evaluate import ScorerConfig\n"
        "from fairweather.contracts.config.vlm import VLMConfig\n"
        "from fairweather.metrics import METRICS, missing_weights\n"
        "for name in ('niqe', 'piqe', 'psnr', 'lpips'):\n"
        "    missing_weights(name, ScorerConfig(), vlm=VLMConfig())\n"
        "from fairweather.training.checkpoint_file import peek_state\n"
        f"assert peek_state({str(tmp_path)!r}, arch='nafnet')['arch'] == 'nafnet'\n"
        "print('torch' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout == "False\n"


def test_read_tasks_yield_one_row_at_a_time(tmp_path):
    work = _rows(tmp_path)
    parts = list(read_rows(work, max_pixels=10**8, short_side=None))
    assert [p.num_rows for p in parts] == [1] * work.num_rows
    assert pa.concat_tables(parts).equals(read_batch(work, max_pixels=10**8, short_side=None))


def test_pixel_columns_are_read_in_place_and_a_restored_row_is_wrapped_without_a_copy(tmp_path):
    batch = read_batch(_rows(tmp_path), max_pixels=10**8, short_side=None)
    rows = batch_rows(batch)
    data = batch.column("pixels").chunk(0).buffers()[2]
    first = np.frombuffer(rows[0]["pixels"], np.uint8)
    assert first.__array_interface__["data"][0] == data.address  # the Arrow buffer itself, not a copy
    assert rows == batch_rows(batch) and rows[0]["input"] is None

    restored = np.full((5, 7, 3), 9, np.uint8)
    row = {**rows[1], "pixels": restored, "height": 5, "width": 7}
    table = rows_table([row], ROW_SCHEMA)
    view = np.frombuffer(table.column("pixels").chunk(0).buffers()[2], np.uint8)
    assert view.__array_interface__["data"][0] == restored.__array_interface__["data"][0]
    several = rows_table([row, rows[0]], ROW_SCHEMA)  # several rows: copied into one Arrow buffer
    assert several.column("pixels").to_pylist() == [restored.tobytes(), rows[0]["pixels"].to_pybytes()]


def test_restore_actor_yields_each_row_and_scores_equal_the_float_path(tmp_path, monkeypatch):
    batch = read_batch(_rows(tmp_path), max_pixels=10**8, short_side=None)
    actor = RestoreActor.__new__(RestoreActor)  # the loaded restorers replaced by a stub
    actor.restorers, actor.keep_input = {"ema": Brighter()}, True
    parts = list(actor(batch))
    assert [p.num_rows for p in parts] == [1] * batch.num_rows and parts[0].schema == batch.schema
    restored = pa.concat_tables(parts)
    ema = [r for r in restored.to_pylist() if r["source"] == "ema"]
    assert all(r["input"] is not None and r["restore_seconds"] > 0 for r in ema)

    names = ("piqe",), ("psnr", "ssim")
    scorer = ScoreActor.__new__(ScoreActor)
    scorer.scorers = {n: build_scorer(n, ScorerConfig()) for n in names[0]}
    scorer.reference = {n: build_scorer(n, ScorerConfig()) for n in names[1]}
    scorer.input_checks = None
    scored = scorer(restored).to_pylist()
    assert "pixels" not in scored[0] and all(r["status"] == "ok" for r in scored)

    class FloatOnly:  # the same metrics through the float tensor interface (no score_uint8)
        def __init__(self, name):
            self.inner = build_scorer(name, ScorerConfig())
            self.spec = self.inner.spec

        def __call__(self, images, targets=None):
            return self.inner(images, targets)

    floats = score_rows(
        restored.to_pylist(),
        {n: FloatOnly(n) for n in names[0]},
        {n: FloatOnly(n) for n in names[1]},
    )
    for got, want in zip(scored, floats, strict=True):
        got, want = json.loads(got["scores"]), json.loads(want["scores"])
        assert got.keys() == want.keys() == {"piqe", "psnr", "ssim"}
        assert got == pytest.approx(want, rel=1e-6)  # the float path rounds to float32
