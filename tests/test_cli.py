"""The ``fairweather`` console script: help on every subcommand, honest refusals, one-line errors."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from fairweather.cli import COMMANDS, build_parser, main
from fairweather.contracts.config import load_config

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
    "import-pairs",
    "config",
}


def test_every_subcommand_exists_with_help(capsys):
    assert set(COMMANDS) == EXPECTED
    for name in EXPECTED:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([name, "show", "--help"] if name == "config" else [name, "--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert "--config" in out and (name == "config" or COMMANDS[name].help.split()[0] in out)


def test_verbose_goes_before_or_after_the_command_and_version_prints_the_package_version(capsys):
    parser = build_parser()
    assert (
        parser.parse_args(["-v", "demo"]).verbose and parser.parse_args(["demo", "-v", "--no-sweep"]).verbose
    )
    assert not parser.parse_args(["demo"]).verbose
    with pytest.raises(SystemExit) as done:
        parser.parse_args(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("fairweather ")


def test_pseudolabel_show_help_is_help_and_show_alone_asks_for_the_image(tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["pseudolabel", "show", "--help"])
    assert done.value.code == 0 and "IMAGE_ID: its sha256" in capsys.readouterr().out
    assert main(["pseudolabel", "show", f"runtime.runs_dir={tmp_path}"]) == 2
    assert "pseudolabel show needs an IMAGE_ID" in capsys.readouterr().err


def test_one_dispatch_table_of_plain_functions():
    """Every subcommand, config show and import-pairs included, is one entry of COMMANDS whose ``run`` is a function
    (its stage imported inside it): no module:function strings, no second dispatch path."""
    source = (REPO / "platform" / "fairweather" / "cli.py").read_text()
    assert "importlib" not in source and "elif args.command" not in source
    assert all(callable(c.run) and callable(c.arguments) for c in COMMANDS.values())


def test_help_is_fast_to_import_and_documents_the_exit_codes():
    code = (
        "import sys\nfrom fairweather.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit as e:\n"
        "    heavy = [m for m in ('torch', 'ray', 'mlflow', 'transformers') if m in sys.modules]\n"
        "    print('HEAVY', heavy, e.code)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert "HEAVY [] 0" in result.stdout, result.stderr
    text = " ".join(result.stdout.split())
    for words in (
        "Exit codes: 0 done",
        "1 the job ran and failed",
        "2 a user or input error",
        "130 interrupted",
    ):
        assert words in text


def test_a_usage_error_is_one_line_with_exit_code_2(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--no-such-flag"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unrecognized arguments: --no-such-flag" in err


def test_a_failed_job_exits_1_and_a_crash_keeps_its_traceback(monkeypatch, capsys):
    import dataclasses

    from fairweather import cli
    from fairweather.contracts.errors import JobFailedError

    def failed(args, cfg):
        raise JobFailedError("no trial of sweep x completed:\n2 trials: ValueError: boom")

    def crashed(args, cfg):
        raise RuntimeError("deep inside, at http://user:pw@host/")

    monkeypatch.setitem(cli.COMMANDS, "synth", dataclasses.replace(cli.COMMANDS["synth"], run=failed))
    assert main(["synth"]) == 1
    assert capsys.readouterr().err.startswith(
        "fairweather synth: failed: no trial of sweep x completed:\n2 trials"
    )
    monkeypatch.setitem(cli.COMMANDS, "synth", dataclasses.replace(cli.COMMANDS["synth"], run=crashed))
    assert main(["synth"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "pw@" not in err.splitlines()[-1]
    assert err.splitlines()[-1] == "fairweather synth: failed: RuntimeError: deep inside, at http://***@host/"


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


def test_help_of_every_subcommand_tells_how_to_see_the_config_keys(capsys):
    for name in COMMANDS:
        with pytest.raises(SystemExit):
            build_parser().parse_args([name, "--help"])
        assert "fairweather config show" in capsys.readouterr().out


def test_config_show_prints_the_resolved_config_as_yaml(tmp_path, capsys):
    overrides = ["label.batch_size=3", "synth.size=[64, 48]"]
    assert main(["config", "show", "--config", "paper", *overrides]) == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(capsys.readouterr().out)
    assert load_config(shown) == load_config("paper", overrides)
    assert main(["config", "show", "model.arch=unet"]) == 2
    assert "'model.arch'" in capsys.readouterr().err


def test_user_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    binary = tmp_path / "weights.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    assert main(["synth", "--config", str(binary)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fairweather synth: error: in {binary}: not a YAML text file (it is not UTF-8 text)"
    )
    (tmp_path / "pool").mkdir()
    Image.new("RGB", (32, 32), "gray").save(tmp_path / "pool" / "a.png")
    runs_file = tmp_path / "runs"
    runs_file.write_text("not a folder")
    # The tables follow runs_dir unless set (then they are the first unusable folder named).
    assert main(["label", f"runtime.runs_dir={runs_file}", f"data.pool={tmp_path / 'pool'}"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and f"data.tables='{runs_file}/tables'" in err
    tables = f"data.tables={tmp_path / 'tables'}"
    assert main(["label", f"runtime.runs_dir={runs_file}", f"data.pool={tmp_path / 'pool'}", tables]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "runtime.runs_dir" in err and "Traceback" not in err


def test_ctrl_c_prints_one_line_and_exits_130(tmp_path):
    out = tmp_path / "data"
    command = [
        sys.executable,
        "-m",
        "fairweather.cli",
        "synth",
        f"synth.out={out}",
        "synth.num_paired=100000",
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 120
    while not any(out.rglob("*.png")) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith(
        "fairweather synth: interrupted;"
    )
    assert "rerun the same command to resume" in err


def test_shipped_profiles_load_from_a_wheel_install_and_are_not_shadowed(tmp_path):
    """Build a wheel from a copy of the source, unpack it, and load `--config smoke` from it in a folder that has a
    `smoke/` folder of its own."""
    source = tmp_path / "src"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "platform", source / "platform", ignore=shutil.ignore_patterns("*.egg-info", "__pycache__")
    )
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--isolated", "-q"]
    subprocess.run([*build, "-w", str(tmp_path / "wheel"), str(source)], check=True, capture_output=True)
    (wheel,) = (tmp_path / "wheel").glob("fairweather-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(tmp_path / "site")
    (tmp_path / "smoke").mkdir()
    code = "import fairweather; from fairweather.contracts.config import load_config as l; print(fairweather.__file__, l('smoke').profile)"
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    module_file, profile = result.stdout.split()
    assert Path(module_file).is_relative_to(tmp_path / "site") and profile == "smoke"


def test_import_pairs_lists_every_layout_of_the_adapter():
    from fairweather.cli import LAYOUT_NAMES
    from fairweather.data.paired_folders import LAYOUTS

    assert sorted(LAYOUT_NAMES) == sorted(LAYOUTS)


def test_import_pairs_from_the_command_line(tmp_path, capsys):
    from PIL import Image

    from fairweather.cli import main

    for folder in ("input", "target"):
        (tmp_path / "set" / folder).mkdir(parents=True)
        for name in ("a", "b"):
            Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / "set" / folder / f"{name}.png")
    argv = [
        "import-pairs",
        "--folder",
        str(tmp_path / "set"),
        "--layout",
        "generic",
        "--dataset",
        "mine",
        "--weather",
        "rain",
    ]
    assert main([*argv, f"data.tables={tmp_path / 'tables'}"]) == 0
    out = capsys.readouterr().out  # the readable line; the summary's JSON goes to the run log
    assert "import-pairs: 2 rain pairs from" in out and '"num_pairs"' not in out
    from fairweather.contracts.tables import TableStore

    assert sorted(TableStore(str(tmp_path / "tables")).read("paired").column("pair_id").to_pylist()) == [
        "mine/input/a",
        "mine/input/b",
    ]


def test_demo_refuses_a_pool_that_is_no_folder_of_images_before_any_work(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.png").write_bytes(b"")
    runs = f"runtime.runs_dir={tmp_path / 'runs'}"
    assert main(["demo", "--no-sweep", "--pool", str(tmp_path / "file.png"), runs]) == 2
    assert "is not a folder of images" in capsys.readouterr().err
    assert main(["demo", "--no-sweep", "--pool", str(tmp_path / "empty"), runs]) == 2
    assert f"--pool '{tmp_path / 'empty'}' lists no image files" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "data").exists()  # nothing generated
