"""Typed configs: every YAML in the repository validates; bad keys/types/files are named in the error."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fairweather.contracts.config import (
    ConfigError,
    FairweatherConfig,
    flatten,
    load_config,
    load_sweep,
    to_dict,
)

from .conftest import REPO

#: Ray cluster-launcher keys that `ray up` requires.
LAUNCHER_KEYS = {"cluster_name", "provider", "head_node_type", "available_node_types"}


#: Folders of generated or installed files, never part of the source (a source tarball has none of them).
NOT_SOURCE = {"runs", "build", "dist", "node_modules", "__pycache__"}


def repo_yaml_files() -> list[Path]:
    """Every YAML file of the source tree, found by walking it (no git: a source tarball has no checkout)."""
    found = []
    for folder, subfolders, files in os.walk(REPO):
        subfolders[:] = [
            d
            for d in subfolders
            if not d.startswith(".") and d not in NOT_SOURCE and not d.endswith(".egg-info")
        ]
        found += [Path(folder) / f for f in files if f.endswith((".yaml", ".yml"))]
    return sorted(found)


def validate_yaml(path: Path) -> None:
    """Dispatch by location: fairweather profiles, sweep spaces, the Ray cluster launcher file."""
    relative = path.relative_to(REPO)
    if relative.parts[:3] == ("platform", "fairweather", "profiles"):
        load_config(path)
    elif relative.parts[0] == "sweeps":
        sweep = load_sweep(path)
        assert sweep.params or sweep.variants
    elif relative == Path("cluster.yaml"):
        data = yaml.safe_load(path.read_text())
        assert set(data) >= LAUNCHER_KEYS, f"{path}: missing {LAUNCHER_KEYS - set(data)}"
        assert data["head_node_type"] in data["available_node_types"]
    else:
        pytest.fail(f"{relative}: a YAML file that no test validates")


def test_every_yaml_in_the_repository_validates():
    files = repo_yaml_files()
    assert len(files) > 0
    assert any(p.parent.name == "profiles" for p in files)
    for path in files:
        validate_yaml(path)


def test_profiles_differ_where_they_should():
    smoke, paper = load_config("smoke"), load_config("paper")
    assert smoke.vlm.model_id.startswith("tiny:") and paper.vlm.model_id == "llava-hf/llava-1.5-7b-hf"
    assert (paper.train.rounds, paper.train.iterations_per_round) == (4, 40_000)
    assert (
        paper.loss.weights.ps,
        paper.loss.weights.wpl,
        paper.loss.weights.sem,
        paper.loss.weights.feat,
    ) == (
        0.5,
        0.2,
        0.05,
        0.2,
    )


def test_overrides_are_typed_and_frozen():
    cfg = load_config("smoke", ["loss.weights.ps=0.3", "synth.size=[64, 48]", "model.arch=nafnet"])
    assert cfg.loss.weights.ps == 0.3 and cfg.synth.size == (64, 48) and cfg.model.arch == "nafnet"
    with pytest.raises(AttributeError):
        cfg.model.arch = "msbdn"  # type: ignore[misc]
    assert isinstance(load_config("smoke", ["loss.weights.sup=1"]).loss.weights.sup, float)


@pytest.mark.parametrize(
    ("overrides", "key"),
    [
        (["loss.weights.w9=1"], "loss.weights.w9"),
        (["nosuch.key=1"], "nosuch"),
        (["loss.weights.ps=abc"], "loss.weights.ps"),
        (["model.arch=unet"], "model.arch"),
        (["synth.size=[1,2,3]"], "synth.size"),
        (["label.batch_size=true"], "label.batch_size"),
        (["loss.weights.ps.x=1"], None),
    ],
)
def test_bad_overrides_name_the_key(overrides, key):
    with pytest.raises(ConfigError) as err:
        load_config("smoke", overrides)
    if key:
        assert f"'{key}'" in str(err.value)


def test_bad_files_name_the_file(tmp_path):
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("model:\n  arch: msbdn\n  widht: 3\n")
    with pytest.raises(ConfigError, match=r"unknown.yaml.*'model.widht'"):
        load_config(unknown)
    malformed = tmp_path / "malformed.yaml"
    malformed.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match=r"malformed.yaml.*malformed YAML"):
        load_config(malformed)
    with pytest.raises(ConfigError, match="no such config file or profile"):
        load_config("does-not-exist")
    with pytest.raises(ConfigError, match=r"missing.yaml.*cannot read"):
        load_config(tmp_path / "missing.yaml")


def test_round_trip_and_flatten(tmp_path):
    cfg = load_config("paper")
    path = tmp_path / "copy.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    assert load_config(path) == cfg
    flat = flatten(cfg)
    assert flat["loss.weights.ps"] == 0.5 and flat["vlm.model_id"] == "llava-hf/llava-1.5-7b-hf"
    assert load_config(tmp_path / "copy.yaml") == FairweatherConfig(
        **{k: getattr(cfg, k) for k in to_dict(cfg)}
    )


def test_cli_reports_config_errors_without_traceback():
    result = subprocess.run(
        [sys.executable, "-m", "fairweather.cli", "synth", "loss.weights.nope=1"],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "loss.weights.nope" in result.stderr and "Traceback" not in result.stderr


def test_sweep_space_addresses_loss_weight_keys(tmp_path):
    space = load_sweep(REPO / "sweeps" / "paper.yaml")
    assert set(space.params) == {
        "loss.weights.ps",
        "loss.weights.wpl",
        "loss.weights.sem",
        "loss.weights.feat",
        "train.lr",
    }
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metric: m\nmode: max\nnum_samples: 2\nparams:\n  loss.weights.w1: {distribution: uniform, low: 0, high: 1}\n"
    )
    with pytest.raises(ConfigError, match="w1"):
        load_sweep(bad)
    bad.write_text(
        "metric: m\nmode: max\nnum_samples: 2\nparams:\n  loss.weights.ps: {distribution: loguniform, low: 0, high: 1}\n"
    )
    with pytest.raises(ConfigError, match="low > 0"):
        load_sweep(bad)


@pytest.mark.parametrize(
    "override",
    [
        "runtime.num_cpus=0",
        "runtime.seed=-1",
        "encoders.depth.input_size=0",
        "model.msbdn.width=0",
        "model.nafnet.middle_blocks=-1",
        "model.restormer.ffn_expansion=.nan",
        "model.promptir.prompt_dims=[16, 0, 64]",
        "model.clip_prior.prior_tokens=-2",
        "synth.seed=-3",
        "synth.rain_opacity=[0.2, 1.5]",
        "synth.haze_beta=[2.0, 1.0]",
        "synth.rain_angle_deg=[-95, 10]",
        "synth.veil_beta=[0, .inf]",
        "train.lr=0",
        "train.ema_decay=1",
        "train.crop_size=60",
        "train.scaling.num_workers=0",
        "train.real_batch_size=-1",
    ],
)
def test_out_of_range_values_are_rejected_at_load_time_naming_the_key(override):
    key = override.partition("=")[0]
    # The value came from the command line: the override is named, not the profile it overrides.
    with pytest.raises(ConfigError, match=rf"^in override '{re.escape(override)}' at '{key}': must be"):
        load_config("smoke", [override])


def test_range_checks_accept_their_bounds():
    cfg = load_config("smoke", ["runtime.num_cpus=1", "synth.rain_opacity=[0, 1]", "synth.num_paired=0"])
    assert cfg.runtime.num_cpus == 1 and cfg.synth.rain_opacity == (0.0, 1.0)


def test_sweep_num_samples_must_be_positive(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metric: m\nmode: max\nnum_samples: 0\nparams:\n  loss.weights.ps: {distribution: uniform, low: 0, high: 1}\n"
    )
    with pytest.raises(ConfigError, match=r"bad.yaml at 'num_samples': must be >= 1, got 0"):
        load_sweep(bad)


def test_a_profile_name_is_not_shadowed_by_a_folder_of_that_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "smoke").mkdir()
    assert load_config("smoke").profile == "smoke"
    with pytest.raises(ConfigError, match=r"smoke.*cannot read"):
        load_config("./smoke")  # a path names the folder


def test_finding_the_yaml_files_needs_no_git(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no git executable to be found
    assert REPO / "cluster.yaml" in repo_yaml_files()


def test_sweep_bounds_must_be_finite(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "metric: m\nmode: max\nnum_samples: 2\nparams:\n  loss.weights.ps: {distribution: uniform, low: 0, high: .inf}\n"
    )
    with pytest.raises(ConfigError, match=r"at 'params.loss.weights.ps.high': must be a finite number"):
        load_sweep(bad)


@pytest.mark.parametrize("profile", ["smoke", "paper"])
def test_runs_dir_alone_moves_tables_data_and_model_cache(tmp_path, profile):
    """Only runtime.runs_dir is set: the tables, generated data, pool and model cache follow it."""
    runs = tmp_path / "elsewhere"
    cfg = load_config(profile, [f"runtime.runs_dir={runs}"])
    assert cfg.data.tables == f"{runs}/tables"
    assert cfg.synth.out == f"{runs}/data"
    assert (cfg.data.pool, cfg.data.paired) == (f"{runs}/data/pool", f"{runs}/data/paired")
    assert cfg.runtime.model_cache_dir == f"{runs}/models"
    # The profile's own runs folder, and explicit paths, are kept.
    default = load_config(profile)
    assert default.data.tables == f"runs/{profile}/tables" and default.synth.out == f"runs/{profile}/data"
    assert default.runtime.model_cache_dir == f"runs/{profile}/models"
    moved = load_config(profile, [f"runtime.runs_dir={runs}", "data.tables=/t", f"synth.out={tmp_path}/d/"])
    assert moved.data.tables == "/t" and moved.data.pool == f"{tmp_path}/d/pool"
    assert moved.runtime.model_cache_dir == f"{runs}/models"


def test_a_yaml_with_only_runs_dir_derives_every_path(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("runtime:\n  runs_dir: s3://bucket/fw/\n")
    cfg = load_config(path)
    assert (cfg.data.tables, cfg.synth.out, cfg.data.pool) == (
        "s3://bucket/fw/tables",
        "s3://bucket/fw/data",
        "s3://bucket/fw/data/pool",
    )
    # Without a runs_dir, the fields' defaults (those of runs_dir "runs").
    (tmp_path / "bare.yaml").write_text("profile: bare\n")
    bare = load_config(tmp_path / "bare.yaml")
    assert (bare.data.tables, bare.runtime.model_cache_dir, bare.data.pool) == (
        FairweatherConfig().data.tables,
        FairweatherConfig().runtime.model_cache_dir,
        FairweatherConfig().data.pool,
    )
