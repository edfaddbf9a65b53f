"""``benchmarks/gpu_check.sh`` (the one-call check for a lent GPU machine) in its CPU smoke mode, so it cannot rot.

The lent machine has PyTorch and transformers but no Ray, MLflow, open_clip or pyiqa, and fairweather is not
installed there: the script must take the package from ``platform/`` and import none of those four (they are
installed here, so ``sys.modules`` at the end of the run shows any import that would fail there).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_cpu_smoke_run_writes_every_section_and_imports_nothing_the_gpu_machine_lacks(tmp_path, model_cache):
    out = tmp_path / "gpu_check.json"
    # The script's own time limit ends a run that hangs (about 15 s normally), so that its JSON names the
    # section that was running; the subprocess timeout is only the backstop.
    env = {**os.environ, "PYTHON": sys.executable, "PYTHONPATH": "", "GPU_CHECK_TIMEOUT_S": "200"}
    done = subprocess.run(
        [
            "bash",
            str(REPO / "benchmarks" / "gpu_check.sh"),
            str(out),
            "--cpu-smoke",
            "--model-cache",
            str(model_cache),
        ],
        cwd=tmp_path,  # not the repo root: the script must find platform/ itself
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    sections_so_far = (
        {n: (s.get("status"), s.get("wall_s"), s.get("error")) for n, s in json.loads(out.read_text())["sections"].items()}
        if out.exists()
        else None
    )  # fmt: skip
    assert done.returncode == 0, (sections_so_far, done.stdout[-3000:] + done.stderr[-3000:])
    report = json.loads(out.read_text())

    assert report["forbidden_modules_loaded"] == []
    assert report["mode"] == "cpu-smoke" and report["ok"]
    sections = report["sections"]
    assert list(sections) == ["env", "vlm", "loss", "throughput", "tiled", "gpu_tests", "ddp"]
    for name, section in sections.items():
        assert section["ok"] and section["error"] is None and section["wall_s"] >= 0, (name, section)
    assert Path(sections["env"]["fairweather"]) == REPO / "platform" / "fairweather"

    from fairweather.models import BUILDERS

    rows = sections["throughput"]["backbones"]
    assert list(rows) == list(BUILDERS)  # every backbone the platform can build
    assert all(row["images_per_s"] > 0 and row["timed_steps"] >= 1 for row in rows.values())
    loss = sections["loss"]
    assert loss["terms"] == ["sup", "ps", "feat"] and loss["steps"] >= 1
    assert loss["cpu_fp32"][0]["loss"] == pytest.approx(loss["device_fp32_no_tf32"][0]["loss"], rel=1e-6)
    assert sections["vlm"]["complete"] and sections["vlm"]["max_abs_diff_r_vlm"] <= 1e-3
    assert sections["tiled"]["tiles"] > 1 and sections["tiled"]["fp32"]["finite"]
    assert sections["ddp"]["all_reduce_ok"] and sections["ddp"]["backend"] == "gloo"
    assert sections["gpu_tests"]["collect_only"] and sections["gpu_tests"]["returncode"] == 0


def test_a_failing_section_records_its_error_and_the_others_still_run(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import gpu_check

    def broken(ctx: dict) -> dict:
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gpu_check.RUNNERS, "vlm", broken)
    out = tmp_path / "check.json"
    assert gpu_check.main([str(out), "--cpu-smoke", "--sections", "vlm,env"]) == 1
    report = json.loads(out.read_text())
    assert report["sections"]["vlm"]["error"] == "RuntimeError: planted failure"
    assert not report["sections"]["vlm"]["ok"] and not report["ok"]
    assert report["sections"]["env"]["ok"] and report["sections"]["env"]["torch"]
