"""The real-world ablation command (benchmarks/bench_realworld.py) end to end on a tiny setting: three arms trained,
real pairs imported as a test split, one table of input vs. every arm; a rerun reuses the finished arms."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from .conftest import REPO


def _folder(root, n: int, *, pairs: bool) -> None:
    rng = np.random.default_rng(n)
    for role in ("input", "target") if pairs else ("input",):
        (root / role).mkdir(parents=True)
    for i in range(n):
        clean = rng.integers(40, 200, (56, 72, 3), dtype=np.uint8)
        streaks = np.clip(clean.astype(int) + (rng.random((56, 72, 1)) > 0.97) * 120, 0, 255).astype(np.uint8)
        Image.fromarray(streaks).save(root / "input" / f"{i:03d}.png")
        if pairs:
            Image.fromarray(clean).save(root / "target" / f"{i:03d}.png")


@pytest.mark.slow
def test_the_ablation_trains_three_arms_and_prints_one_table(tmp_path, model_cache):
    _folder(tmp_path / "rainpairs", 3, pairs=True)
    _folder(tmp_path / "pool" / "rain", 3, pairs=False)
    out = tmp_path / "out"
    command = [
        sys.executable,
        str(REPO / "benchmarks" / "bench_realworld.py"),
        "--real-pairs",
        f"rain={tmp_path / 'rainpairs'}",
        "--real-pool",
        str(tmp_path / "pool"),
        "--steps",
        "4",
        "--tiny",
        "--out",
        str(out),
        "runtime.num_cpus=2",
        f"runtime.model_cache_dir={model_cache}",
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "real-world ablation" in done.stdout
    results = json.loads((out / "ablation.json").read_text())["results"]
    assert set(results) == {"a_generated", "b_photo", "c_photo_pool"}
    for rows in results.values():
        psnr = {
            r["method"]: r["value"]
            for r in rows
            if r["dataset"] == "paired:rainpairs:test" and r["metric"] == "psnr"
        }
        assert len(psnr) == 2 and "input" in psnr  # input and the arm, on the imported real pairs
    table = (out / "ablation.md").read_text()
    assert (
        "| paired:rainpairs:test | psnr |" in table
        and "| input | a_generated | b_photo | c_photo_pool |" in table
    )

    # A rerun (after a crash, or to add an arm) reuses every finished arm and prints the same table.
    again = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stdout.count("done before, reused") == 3
    assert (out / "ablation.md").read_text() == table
