"""The start-up weights check and the one weights cache (``fairweather prefetch --cache DIR``). No network: an empty
cache must fail at start-up naming every missing item and the prefetch command; tiny models always pass."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.errors import FairweatherError
from fairweather.stages.infra.preflight import (
    WeightsMissingError,
    check_weights,
    export_weights_cache,
    hf_hub_cache,
    missing_weights_for,
    weights_env,
)

_CACHE_VARS = ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE")


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """An empty weights cache exported as this process's caches (monkeypatch restores the environment)."""
    for name in _CACHE_VARS:
        monkeypatch.delenv(name, raising=False)
    cache = tmp_path / "weights"
    cache.mkdir()
    for name, value in weights_env(cache).items():
        monkeypatch.setenv(name, value)
    return cache


def _paper(cache: Path, *overrides: str):
    return load_config("paper", [f"runtime.weights_cache={cache}", *overrides])


def _fake_hf_repo(cache: Path, repo: str, files: tuple[str, ...] = ("config.json",)) -> None:
    """What ``snapshot_download`` leaves in the hub cache: refs/main -> snapshots/<commit>/<files>."""
    folder = hf_hub_cache() / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(commit)
    for name in files:
        path = folder / "snapshots" / commit / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}")


def test_weights_env_puts_every_cache_below_one_folder(tmp_path, monkeypatch):
    for name in _CACHE_VARS:  # recorded (then removed), so what the export sets is undone after the test
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    assert export_weights_cache(tmp_path) == {
        "HF_HOME": str(tmp_path / "huggingface"),
        "TORCH_HOME": str(tmp_path / "torch"),
    }
    assert os.environ["HF_HOME"] == str(tmp_path / "huggingface")
    assert hf_hub_cache() == tmp_path / "huggingface" / "hub"
    assert export_weights_cache(None) == {}  # unset: the libraries' own caches


def test_a_stage_never_changes_the_caches_and_refuses_a_process_pointed_elsewhere(
    tmp_path, monkeypatch, capsys
):
    """The face sets the weights cache once at start-up; a stage called directly in a process whose caches point
    elsewhere is refused (it used to export the variables itself, after Hugging Face had read them at import)."""
    from fairweather.stages.infra.prefetch import run_prefetch

    for name in _CACHE_VARS:  # recorded (then removed), so what the command below exports is undone too
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "elsewhere"))
    cfg = load_config(
        "smoke", [f"runtime.weights_cache={tmp_path / 'cache'}", f"runtime.model_cache_dir={tmp_path}"]
    )
    for call in (lambda: run_prefetch(cfg), lambda: check_weights(cfg, "label")):
        with pytest.raises(
            FairweatherError, match=r"caches point elsewhere \(HF_HOME=.*elsewhere, TORCH_HOME=\(unset\)"
        ):
            call()
    assert os.environ["HF_HOME"] == str(tmp_path / "elsewhere") and "TORCH_HOME" not in os.environ
    # The command line points them at the cache before any stage runs.
    assert main(["prefetch", "--cache", str(tmp_path / "cache"), f"runtime.model_cache_dir={tmp_path}"]) == 0
    assert os.environ["HF_HOME"] == str(tmp_path / "cache" / "huggingface")


def test_an_empty_cache_names_every_missing_weight_and_the_prefetch_command(empty_cache):
    cfg = _paper(empty_cache)
    with pytest.raises(WeightsMissingError) as label:
        check_weights(cfg, "label")
    message = str(label.value)
    assert "vlm 'llava-hf/llava-1.5-7b-hf'" in message
    assert f"fairweather prefetch --config paper --cache {empty_cache}" in message
    assert "\n" not in message  # one line on the console

    train = {m.what: m.ref for m in missing_weights_for(cfg, "train")}
    assert train == {"clip": "ViT-B-32:openai", "depth": "depth-anything/Depth-Anything-V2-Small-hf"}

    scored = missing_weights_for(cfg, "evaluate", cfg.evaluate.metrics)
    assert {m.what for m in scored} == {
        f"metric {n}" for n in ("nima", "musiq", "clipiqa", "liqe", "qalign")
    } | {"vlm"}
    # Every file of a metric is named, not only the first (LIQE loads its checkpoint and OpenAI's ViT-B/32).
    assert {m.ref for m in scored if m.what == "metric liqe"} == {"liqe_koniq.pt", "clip/ViT-B-32.pt"}
    assert all(str(empty_cache) in m.reason for m in scored)


def test_tiny_models_and_weight_free_metrics_need_nothing(empty_cache):
    cfg = load_config("smoke", [f"runtime.weights_cache={empty_cache}"])
    for stage in ("label", "train"):
        check_weights(cfg, stage)
    check_weights(cfg, "evaluate", ["piqe", "psnr", "ssim", "vlm_vis"])


def test_weights_in_the_cache_count_as_present(empty_cache):
    cfg = _paper(empty_cache)
    _fake_hf_repo(empty_cache, "llava-hf/llava-1.5-7b-hf")
    _fake_hf_repo(empty_cache, "timm/vit_base_patch32_clip_224.openai", ("open_clip_model.safetensors",))
    _fake_hf_repo(empty_cache, "depth-anything/Depth-Anything-V2-Small-hf")
    pyiqa = empty_cache / "torch" / "hub" / "pyiqa"
    pyiqa.mkdir(parents=True)
    (pyiqa / "musiq_koniq_ckpt-e95806b9.pth").write_bytes(b"")
    check_weights(cfg, "label")
    check_weights(cfg, "train")
    check_weights(cfg, "evaluate", ["musiq", "vlm_vis", "psnr"])
    # A CLIP-prior network restores with CLIP: the same check covers stages that only restore.
    check_weights(
        load_config("paper", [f"runtime.weights_cache={empty_cache}", "model.arch=clip_prior"]), "restore"
    )


def test_label_fails_at_start_up_before_ray_or_mlflow(empty_cache, tmp_path, capsys):
    pool = tmp_path / "pool" / "rain"
    pool.mkdir(parents=True)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pool / "a.png")
    runs = tmp_path / "runs"
    overrides = [f"data.pool={pool.parent}", f"runtime.runs_dir={runs}", f"data.tables={tmp_path / 'tables'}",
                 f"runtime.model_cache_dir={tmp_path / 'models'}", "label.concurrency=1",
                 "label.num_cpus_per_actor=0.5", "label.num_gpus_per_actor=0"]  # fmt: skip
    assert main(["label", "--config", "paper", f"runtime.weights_cache={empty_cache}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("fairweather label: error: label needs weights that are not on this machine")
    assert f"fairweather prefetch --config paper --cache {empty_cache}" in err and "Traceback" not in err
    assert not (runs / "mlflow.db").exists()


@pytest.mark.parametrize(
    ("command", "stage"), [("train", "train"), ("pseudolabel", "pseudolabel"), ("pipeline", "label")]
)
def test_train_pseudolabel_and_pipeline_fail_at_start_up_too(empty_cache, tmp_path, capsys, command, stage):
    runs = tmp_path / "runs"
    overrides = [f"runtime.runs_dir={runs}", f"data.tables={tmp_path / 'tables'}", f"data.pool={tmp_path}"]
    assert main([command, "--config", "paper", f"runtime.weights_cache={empty_cache}", *overrides]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{stage} needs weights that are not on this machine" in err and "Traceback" not in err
    assert "fairweather prefetch --config paper --cache" in err
    assert not (runs / "mlflow.db").exists()  # before any tracking run (and before Ray)


def test_prefetch_cache_flag_fills_and_checks_one_folder(empty_cache, tmp_path, capsys):
    models = tmp_path / "models"
    assert (
        main(
            [
                "prefetch",
                "--config",
                "smoke",
                "--cache",
                str(empty_cache),
                f"runtime.model_cache_dir={models}",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert f"(weights cache {empty_cache})" in out and '"weights_cache"' not in out  # its JSON: the run log
    assert {p.name for p in models.iterdir() if not p.name.startswith(".")} == {
        "llava",
        "clip",
        "depth-anything",
    }


@pytest.mark.own_ray  # ray_session starts the Ray with the runtime_env: no shared Ray (tests/conftest.py)
def test_ray_workers_get_the_weights_cache(empty_cache, tmp_path, monkeypatch):
    """Through the job's runtime_env, not by inheritance: workers on other nodes never see the driver's variables."""
    import ray

    from fairweather.stages.infra.runtime import ray_session

    monkeypatch.setenv("HF_HOME", str(tmp_path / "driver-only"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "driver-only"))
    cfg = load_config("smoke", [f"runtime.weights_cache={empty_cache}", "runtime.num_cpus=1"])
    with ray_session(cfg):
        env = ray.get(ray.remote(lambda: {k: os.environ.get(k) for k in ("HF_HOME", "TORCH_HOME")}).remote())
    assert env == weights_env(empty_cache)
