"""`fairweather train` on a private local Ray: the real entry point on a tiny model and generated data."""

from __future__ import annotations

import functools
import math
import runpy
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from ray import cloudpickle

from fairweather.contracts.metric_logger import DiskLogger
from fairweather.stages.synth.driver import run_synth

from . import train_fixtures
from .conftest import REPO
from .train_fixtures import read_records, tiny_config

# Step hooks travel to the Ray workers by value (Ray's cloudpickle: the cloudpickle package's registry is not Ray's).
cloudpickle.register_pickle_by_value(train_fixtures)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("train")
    run_synth(tiny_config(root, model_cache))
    return root


def _loss_curve(logger: DiskLogger) -> dict[int, float]:
    return {int(m["step"]): m["loss/total"] for m in logger.read_metrics() if "loss/total" in m}


@pytest.fixture(scope="module")
def straight(local_ray, data_root, model_cache, tmp_path_factory):
    """One 6-step run from scratch (run name "straight"), trained once for the module: its summary and logger."""
    from fairweather.stages.train.driver import run_train

    logger = DiskLogger(tmp_path_factory.mktemp("straight") / "log")
    summary = run_train(tiny_config(data_root, model_cache, **{"train.run_name": "straight"}), logger)
    return summary, logger


def test_train_logs_every_term_validates_and_scores_the_test_split(straight):
    summary, logger = straight
    assert summary.steps == 6 and summary.run_name == "straight"
    metrics = logger.read_metrics()
    assert [m["step"] for m in metrics if "loss/sup" in m] == [1, 2, 3, 4, 5, 6]
    for key in ("loss/total", "lr", "images_per_s", "data_wait_fraction"):
        assert all(math.isfinite(m[key]) for m in metrics if "loss/sup" in m), key
    validated = [m for m in metrics if "val/psnr/overall" in m]
    assert [m["step"] for m in validated] == [3, 6]  # train.checkpoint_every=3 and the last step
    assert {"val/input_psnr/overall", "val/ssim/overall"} <= set(validated[0])
    assert set(summary.test) >= {"overall"} and set(summary.test["overall"]) == {
        "psnr",
        "ssim",
        "input_psnr",
        "input_ssim",
    }
    artifacts = {
        p.relative_to(logger.folder / "artifacts").as_posix()
        for p in (logger.folder / "artifacts").rglob("*")
        if p.is_file()
    }
    assert {"model/model.pt", "model/config.yaml", "validation/step-0000003.png"} <= artifacts


def test_the_last_checkpoint_of_a_job_carries_the_calibration_that_restoring_applies(straight):
    from fairweather.models import restore_tiled_uint8
    from fairweather.training.calibration import pair_features
    from fairweather.training.restorer import load_restorer
    from fairweather.training.state import load_state

    summary, logger = straight
    folders = sorted(p for p in Path(summary.checkpoint).parent.glob("checkpoint_*") if p.is_dir())
    assert [load_state(f)["calibration"] is not None for f in folders] == [False, True]  # steps 3 and 6
    artifact = load_state(logger.folder / "artifacts" / "model" / "model.pt")
    assert artifact["calibration"] == load_state(summary.checkpoint)["calibration"]
    restorer = load_restorer(summary.checkpoint, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)
    raw = restore_tiled_uint8(restorer.model, image, 256, 16)
    retreat, contrast, shift = restorer.calibration.predict(pair_features(image, raw))
    blend = raw + retreat * (image.astype(np.float64) - raw)
    mean = blend.reshape(-1, 3).mean(axis=0)
    expected = np.clip((blend - mean) * (1 + contrast) + mean + shift * 255, 0, 255).round().astype(np.uint8)
    np.testing.assert_allclose(restorer.restore(image), expected, atol=1)


def test_the_calibration_benchmark_refits_on_the_runs_pairs_and_reproduces_the_stored_one(
    straight, data_root, tmp_path, monkeypatch, capsys
):
    """``benchmarks/bench_calibration.py`` on the straight run: refitted with the run's own settings on its own
    training pairs, the calibration scores what the stored one does; a changed setting is a column of its own."""
    from PIL import Image

    summary, _ = straight
    rng = np.random.default_rng(3)
    for kind in ("input", "target"):
        (tmp_path / "rain_pairs" / kind).mkdir(parents=True)
        for index in range(2):
            image = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
            Image.fromarray(image).save(tmp_path / "rain_pairs" / kind / f"{index}.png")
    argv = [
        summary.checkpoint,
        str(tmp_path / "rain_pairs"),
        "--tables",
        str(data_root / "tables"),
        "--threads",
        "1",
    ]
    argv += ["--variant", "refit:", "--variant", "lighter:train.calibration.lighter=[0.5]"]
    monkeypatch.setattr("sys.argv", ["bench_calibration.py", *argv])
    monkeypatch.syspath_prepend(
        str(REPO / "benchmarks")
    )  # as `python benchmarks/...` has it: its sibling modules
    runpy.run_path(str(REPO / "benchmarks" / "bench_calibration.py"), run_name="__main__")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert rows[0] == "| set | network alone | as stored | refit | lighter |"
    cells = dict(zip(rows[0].split(" | "), rows[1].split(" | "), strict=True))
    assert cells["as stored"] == cells["refit"]
    assert [row.split(" | ")[0] for row in rows[1:]] == ["| rain_pairs", "| all rain"]


def test_a_killed_worker_resumes_from_the_last_checkpoint_and_ends_as_the_straight_run(
    straight, local_ray, data_root, model_cache, tmp_path
):
    """Rank 0 dies after step 5, before its checkpoint at 6: the driver retries, the restarted worker continues
    after the checkpoint at 3, and the run ends where 6 straight steps end (loss curve, final weights,
    calibration): the checkpoint holds everything a step depends on. (Resuming by running the same command again
    goes through the same checkpoint: the changed-lr test below.)"""
    from fairweather.stages.train.driver import run_train
    from fairweather.training.state import load_state

    (a, straight_log), log = straight, DiskLogger(tmp_path / "log")
    steps, marker = tmp_path / "steps.jsonl", tmp_path / "died"
    hook = functools.partial(train_fixtures.record_then_die_once, str(steps), str(marker), 5)
    b = run_train(tiny_config(data_root, model_cache, **{"train.run_name": "killed"}), log, step_hook=hook)
    assert marker.exists() and b.steps == 6
    assert [r["step"] for r in read_records(steps)] == [1, 2, 3, 4, 5, 4, 5, 6]
    # The replayed steps 4 and 5 were logged by the first try: not logged again.
    curve_a, curve_b = _loss_curve(straight_log), _loss_curve(log)
    assert [m["step"] for m in log.read_metrics() if "loss/total" in m] == [1, 2, 3, 4, 5, 6]
    for step, value in curve_a.items():
        assert curve_b[step] == pytest.approx(value, rel=1e-5, abs=1e-7), step
    state_a, state_b = load_state(a.checkpoint), load_state(b.checkpoint)
    for key, value in state_a["teacher"].items():
        torch.testing.assert_close(state_b["teacher"][key], value, rtol=1e-5, atol=1e-6)
    # The same teacher on the same pairs: the same calibration.
    for key in ("mean", "support", "weights"):
        np.testing.assert_allclose(
            state_b["calibration"][key], state_a["calibration"][key], rtol=1e-3, atol=1e-4
        )


def test_a_changed_config_is_a_new_run_and_new_run_forces_one(data_root, model_cache):
    from fairweather.stages.train.driver import run_name

    versions = {"paired": "20:abc"}
    base = run_name(tiny_config(data_root, model_cache), versions)
    assert base.startswith("train-")
    assert run_name(tiny_config(data_root, model_cache, **{"train.log_every": 5}), versions) == base
    assert run_name(tiny_config(data_root, model_cache, **{"train.lr": 0.01}), versions) != base
    assert run_name(tiny_config(data_root, model_cache), {"paired": "21:def"}) != base
    forced = run_name(tiny_config(data_root, model_cache, **{"train.new_run": True}), versions)
    assert forced.startswith(base + "-") and forced != base


def test_no_pairs_is_a_clear_error(local_ray, model_cache, tmp_path):
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import run_train

    with pytest.raises(FairweatherError, match="fairweather synth"):
        run_train(tiny_config(tmp_path, model_cache), DiskLogger(tmp_path / "log"))


def test_workers_that_do_not_fit_the_local_cpus_are_refused_before_ray_starts(
    data_root, model_cache, tmp_path
):
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import run_train

    cfg = tiny_config(data_root, model_cache, **{"train.scaling.num_workers": 3})
    with pytest.raises(FairweatherError, match="num_workers"):
        run_train(cfg, DiskLogger(tmp_path / "log"))


def test_a_non_finite_loss_before_the_first_checkpoint_is_one_line_saying_none_was_saved(tmp_path):
    """The driver's reading of a worker's NonFiniteLossError (``train_step``'s, tested in test_training_step) when
    the run has no checkpoint yet. How Ray wraps a worker's error on the way: the next test."""
    import ray.train

    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import stop_reason
    from fairweather.training.step import NonFiniteLossError

    failure = NonFiniteLossError("the loss became non-finite at step 1 (sup: inf)")
    reason = stop_reason(ray.train.WorkerGroupError("worker 0 failed", {0: failure}), "nan", str(tmp_path))
    assert type(reason) is FairweatherError and "\n" not in str(reason)
    assert str(reason).startswith("training stopped: the loss became non-finite at step 1 (sup: inf)")
    assert "no checkpoint had been saved yet" in str(reason)


@pytest.mark.usefixtures("straight")
def test_non_finite_weights_as_ray_hands_them_over_name_the_step_and_the_last_good_checkpoint(data_root):
    """A worker's NonFiniteError as Ray Train hands it to the driver (wrapped with its traceback's text by Ray's
    own ``construct_user_exception_with_traceback``), on a run with checkpoints (the straight run's): one line
    naming the step and the kept checkpoint. That such a failure stops the run at once, with no retry and its last
    checkpoint kept, goes through Ray in the full-disk test below (and, for this error, in a slow test)."""
    import ray.train
    from ray.train.v2._internal.util import construct_user_exception_with_traceback

    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import stop_reason, trained_until
    from fairweather.training.step import NonFiniteError

    storage = str(data_root / "train")  # the straight run's, with its checkpoints at steps 3 and 6
    try:
        raise NonFiniteError("the weights became non-finite at step 7 (max |w| inf)")
    except NonFiniteError as error:
        wrapped = construct_user_exception_with_traceback(error)
    reason = stop_reason(ray.train.WorkerGroupError("worker 0 failed", {0: wrapped}), "straight", storage)
    message = str(reason)
    assert type(reason) is FairweatherError and "\n" not in message
    assert message.startswith("training stopped: the weights became non-finite at step 7"), message
    step, checkpoint = trained_until(storage, "straight")
    assert step == 6 and f"the last good checkpoint is kept (step 6: {checkpoint})" in message


# Slow-marked: the unit tests above read the same error (without a checkpoint, and as Ray wraps it),
# test_failure_hygiene's and test_training_step's tests make train_step raise it, and the (slow) test below takes one
# through Ray.
@pytest.mark.slow
def test_a_loss_that_blows_up_stops_the_run_naming_the_step(local_ray, data_root, model_cache, tmp_path):
    """A supervised weight of 1e38 (learning rates are bounded now): the gradient norm overflows at step 1."""
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import run_train

    overrides = {"train.run_name": "nan", "loss.weights.sup": "1.0e+38", "train.grad_clip": 0}
    with pytest.raises(FairweatherError, match=r"training stopped: .*step 1\b.*no checkpoint had been saved"):
        run_train(tiny_config(data_root, model_cache, **overrides), DiskLogger(tmp_path / "log"))


@pytest.mark.slow  # the unit tests above read this error; the full-disk test takes a deterministic stop through Ray
def test_weights_gone_non_finite_stop_at_once_keeping_the_last_good_checkpoint(
    local_ray, data_root, model_cache, tmp_path
):
    """NonFiniteError after step 5 (train.max_failures=1): one line naming the step and the checkpoint of step 3,
    no retry (before: Ray restarted the workers, which failed the same way)."""
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import run_train, trained_until

    steps = tmp_path / "steps.jsonl"
    hook = functools.partial(train_fixtures.record_then_raise, str(steps), 5)
    cfg = tiny_config(data_root, model_cache, **{"train.run_name": "diverged"})
    with pytest.raises(FairweatherError) as caught:
        run_train(cfg, DiskLogger(tmp_path / "log"), step_hook=hook)
    message = str(caught.value)
    assert "\n" not in message and message.startswith("training stopped: the weights became non-finite")
    assert "at step 5" in message and "the last good checkpoint is kept (step 3:" in message
    assert [r["step"] for r in read_records(steps)] == [1, 2, 3, 4, 5]
    assert trained_until(str(data_root / "train"), "diverged")[0] == 3


# The copy case is slow-marked: the writer case checks the same stop (one line, no retry, step 3 kept, the run
# FAILED) and test_a_resume_applies_a_changed_lr_... checks that an unregistered checkpoint folder is removed.
@pytest.mark.parametrize("where", ["writer", pytest.param("copy", marks=pytest.mark.slow)])
def test_a_full_disk_stops_in_one_line_keeps_the_last_checkpoint_and_fails_the_run(
    where, local_ray, data_root, model_cache, tmp_path, capsys
):
    """ENOSPC at the checkpoint of step 6, in our writer or in Ray's copy into the run folder: JobFailedError
    (exit 1) in one line, no retry, the checkpoint of step 3 kept, no half checkpoint, the MLflow run FAILED.
    Before: Ray retried (and the copy case then passed, leaving the half folder), or several tracebacks."""
    from mlflow.tracking import MlflowClient

    from fairweather.contracts.errors import JobFailedError
    from fairweather.stages.train.driver import run_train, trained_until

    name, steps = f"full-{where}", tmp_path / "steps.jsonl"
    hook = functools.partial(train_fixtures.record_then_fill_the_disk, str(steps), 5, where)
    cfg = tiny_config(data_root, model_cache, **{"train.run_name": name})
    with pytest.raises(JobFailedError) as caught:
        run_train(cfg, step_hook=hook)  # its own MLflow run
    message = str(caught.value)
    assert "\n" not in message and f"training run {name} stopped: the disk is full" in message, message
    assert "the last good checkpoint is kept (step 3:" in message
    assert [r["step"] for r in read_records(steps)] == [1, 2, 3, 4, 5, 6]
    step, checkpoint = trained_until(str(data_root / "train"), name)
    assert step == 3
    folders = [p.name for p in (data_root / "train" / name).glob("checkpoint_*") if p.is_dir()]
    assert folders == [Path(checkpoint).name]
    if where == "copy":
        assert "removed 1 checkpoint folder(s) Ray Train had not registered" in capsys.readouterr().out
    client = MlflowClient(f"sqlite:///{data_root / 'runs' / 'mlflow.db'}")
    (run,) = client.search_runs(
        [client.get_experiment_by_name(cfg.runtime.experiment).experiment_id],
        f"attributes.run_name = '{name}'",
    )
    assert run.info.status == "FAILED"


def test_a_resume_applies_a_changed_lr_refuses_a_changed_network_and_prunes_an_unregistered_checkpoint(
    straight, local_ray, data_root, model_cache, tmp_path, capsys
):
    """On a pinned run name, 3 steps, then the same command again: a changed model.* is refused in one line before
    any step (no retry); a changed train.lr is applied from the checkpoint on, said and tagged on the run; a
    checkpoint folder written after the last registered one (a kill between Ray's copy and its registration) is
    removed. Before: the new lr was silently ignored (the optimizer state brought the old one back) and the folder
    stayed forever."""
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.callback import RESUME_TAG
    from fairweather.stages.train.driver import run_train
    from fairweather.training.optim import lr_factor

    base = {"train.run_name": "changed"}
    run_train(tiny_config(data_root, model_cache, **base), DiskLogger(tmp_path / "log"), until_step=3)
    folder = data_root / "train" / "changed"
    (registered,) = (p for p in folder.glob("checkpoint_*") if p.is_dir())
    orphan = folder / "checkpoint_2999-01-01_00-00-00.000000"
    shutil.copytree(registered, orphan)

    steps = tmp_path / "steps.jsonl"
    wider = tiny_config(data_root, model_cache, **base, **{"model.nafnet.width": 8})
    with pytest.raises(FairweatherError) as caught:
        run_train(
            wider,
            DiskLogger(tmp_path / "log"),
            step_hook=functools.partial(train_fixtures.record_steps, str(steps)),
        )
    message = str(caught.value)
    assert "\n" not in message and "cannot resume training run changed at step 3" in message
    assert "model.nafnet.width: 16 -> 8" in message
    assert not steps.exists()  # refused before a step, and not retried
    # A new run that would start from that checkpoint's network with another network: refused the same way.
    other = {"train.run_name": "fine-tuned", "train.init_weights": str(registered), "model.nafnet.width": 8}
    with pytest.raises(FairweatherError, match=r"cannot start from train\.init_weights=.*width: 16 -> 8"):
        run_train(tiny_config(data_root, model_cache, **other), DiskLogger(tmp_path / "log"))

    faster = tiny_config(data_root, model_cache, **base, **{"train.lr": 0.006})
    summary = run_train(faster, DiskLogger(tmp_path / "log"))
    assert summary.steps == 6
    out = capsys.readouterr().out
    said = "train: run changed resumes after step 3 with a changed setting, applied: train.lr: 0.003 -> 0.006"
    assert said in out
    assert not orphan.exists() and "removed 1 checkpoint folder(s)" in out
    log = DiskLogger(tmp_path / "log")
    assert log.tags[RESUME_TAG] == "after step 3: train.lr: 0.003 -> 0.006"
    lr = {m["step"]: m["lr"] for m in log.read_metrics() if "lr" in m}
    assert sorted(lr) == [1, 2, 3, 4, 5, 6]  # each step once
    # Until the stop, the straight run's steps (the same settings).
    straight_curve, curve = _loss_curve(straight[1]), _loss_curve(log)
    for step in (1, 2, 3):
        assert curve[step] == pytest.approx(straight_curve[step], rel=1e-5, abs=1e-7), step
    for step in (4, 5, 6):
        assert lr[step] == pytest.approx(0.006 * lr_factor(step, faster.train), rel=1e-6), step


def test_a_cluster_needs_a_shared_storage_path(data_root, model_cache, monkeypatch):
    from fairweather.contracts.errors import FairweatherError
    from fairweather.stages.train.driver import storage_path

    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(FairweatherError, match="local path"):
        storage_path(tiny_config(data_root, model_cache))
    assert (
        storage_path(tiny_config(data_root, model_cache, **{"runtime.storage_path": "s3://b/runs"}))
        == "s3://b/runs"
    )
