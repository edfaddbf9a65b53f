"""The ``fairweather`` console script: help on every subcommand, honest refusals, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from fairweather.cli import COMMANDS, build_parser, main

from .conftest import REPO

EXPECTED = {
    "label",
    "pseudolabel",
    "train",
    "sweep",
    "evaluate",
    "pipeline",
    "demo",
    "restore",
    "prefetch",
    "synth",
}


def test_every_subcommand_exists_with_help(capsys):
    assert set(COMMANDS) == EXPECTED
    for name in EXPECTED:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([name, "--help"])
        assert exit_.value.code == 0
        assert "--config" in capsys.readouterr().out


@pytest.mark.parametrize("name", sorted(n for n, c in COMMANDS.items() if c.target is None))
def test_unbuilt_stages_say_so_and_fail(name, capsys):
    assert main([name]) == 2
    assert "not built yet" in capsys.readouterr().err


def test_missing_config_is_one_line_not_a_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "fairweather.cli", "label", "--config", "/nonexistent/x.yaml"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "x.yaml" in result.stderr and "Traceback" not in result.stderr


def test_prefetch_builds_tiny_models_once(tmp_path, capsys):
    overrides = [f"runtime.model_cache_dir={tmp_path}", "encoders.depth.model_id=tiny:depth-anything"]
    assert main(["prefetch", *overrides]) == 0
    assert {p.name for p in tmp_path.iterdir() if not p.name.startswith(".")} == {
        "llava",
        "clip",
        "depth-anything",
    }
    assert all((tmp_path / n / ".complete").exists() for n in ("llava", "clip", "depth-anything"))


@pytest.mark.parametrize("job", sorted((REPO / "jobs").glob("*.py")), ids=lambda p: p.name)
def test_every_job_entry_point_runs_its_subcommand(job):
    assert job.stem in COMMANDS
    result = subprocess.run([sys.executable, str(job), "--help"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0 and f"fairweather {job.stem}" in result.stdout


def test_prefetch_of_an_unreachable_model_is_one_line(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = subprocess.run(
        [sys.executable, "-m", "fairweather.cli", "prefetch", "vlm.model_id=nobody/no-such-model"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert (
        "cannot fetch the vlm model 'nobody/no-such-model'" in result.stderr
        and "Traceback" not in result.stderr
    )
