"""A killed driver: SIGKILL the whole `fairweather train` process group mid-run, then the same command resumes.

The CLI runs in its own process group with its own private local Ray (``ray.init(address="local")`` starts
GCS, raylet and the agents as its children, in its group; Ray's workers put themselves in groups of their own
and exit when their raylet dies), so killing the group ends that Ray and nothing else on the machine; this test
never calls ``ray stop``. Every process of that Ray inherits a marker in its environment, which is how the test
checks that none outlived the kill.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from fairweather.stages.synth.driver import run_synth

from .train_fixtures import tiny_config, tiny_overrides

pytestmark = pytest.mark.slow

#: Steps of the run: enough that the kill lands well before the end on a busy 2-core machine, and that the workers,
#: which outlive the killed group until they notice their raylet is gone, cannot finish the run meanwhile (at 30
#: steps they did, once reports stopped waiting 0.5 s for the controller's poll).
STEPS = 150
#: Steps between logged losses and between checkpoints.
LOG_EVERY, CHECKPOINT_EVERY = 5, 10
#: Ray Train's record of the registered checkpoints, beside them in the run folder.
SNAPSHOT = "checkpoint_manager_snapshot.json"


def _registered_step(storage: Path) -> int | None:
    """Step of the newest checkpoint Ray Train has registered for the (one) run under ``storage``, or None."""
    for snapshot in storage.glob(f"*/{SNAPSHOT}"):
        try:
            latest = json.loads(snapshot.read_text()).get("latest_checkpoint_result")
        except (OSError, json.JSONDecodeError):  # being written right now: look again
            return None
        if latest is not None:
            return int(latest["metrics"]["step"])
    return None


def _train_command(root: Path, model_cache: Path) -> list[str]:
    overrides = tiny_overrides(
        root,
        model_cache,
        **{
            "train.iterations_per_round": STEPS,
            "train.checkpoint_every": CHECKPOINT_EVERY,
            "train.log_every": LOG_EVERY,
            "train.keep_checkpoints": 2,
        },
    )
    return [sys.executable, "-m", "fairweather.cli", "train", *overrides]


def _kill_group_after_first_checkpoint(process: subprocess.Popen, storage: Path, timeout: float) -> int:
    """Wait for the first registered checkpoint, SIGKILL the process group; the registered step at the kill."""
    deadline = time.monotonic() + timeout
    while _registered_step(storage) is None:
        if process.poll() is not None:
            pytest.fail(f"`fairweather train` ended (rc {process.returncode}) before its first checkpoint")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"no checkpoint registered under {storage} within {timeout:.0f} s")
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    time.sleep(1)  # let the kernel reap the group's other processes before reading what they left
    step = _registered_step(storage)
    assert step is not None
    return step


def _processes_with(marker: str) -> list[int]:
    """PIDs of this user's processes whose environment holds ``marker`` (the killed run's Ray inherits it)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker.encode() in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:  # gone meanwhile, or another user's
            continue
    return found


def _wait_until_gone(marker: str, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := _processes_with(marker)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


@pytest.fixture()
def ray_tmp():
    """A short private Ray temp dir (Ray's socket paths must stay under ~107 characters)."""
    folder = tempfile.mkdtemp(prefix="fw-kill-", dir="/tmp")
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_killed_driver_resumes_with_the_same_command(model_cache, tmp_path, ray_tmp):
    from mlflow.tracking import MlflowClient

    cfg = tiny_config(tmp_path, model_cache)
    run_synth(cfg)
    storage, command = tmp_path / "train", _train_command(tmp_path, model_cache)
    marker = f"FAIRWEATHER_KILL_TEST={uuid.uuid4().hex}"
    env = {**os.environ, "RAY_TMPDIR": ray_tmp, marker.split("=")[0]: marker.split("=")[1]}
    with (tmp_path / "first.log").open("w") as log:
        first = subprocess.Popen(
            command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        killed_at = _kill_group_after_first_checkpoint(first, storage, timeout=240)
    assert first.returncode == -signal.SIGKILL
    assert CHECKPOINT_EVERY <= killed_at < STEPS, "the kill must land mid-run, after a checkpoint"
    assert not _wait_until_gone(marker, timeout=60), "processes of the killed driver's Ray outlived it"

    second = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=420)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert _registered_step(storage) == STEPS
    assert len(list(storage.glob(f"*/{SNAPSHOT}"))) == 1, "the same command must reuse the same run folder"
    assert not _wait_until_gone(marker, timeout=60), "the finished run left Ray processes behind"

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    runs = sorted(client.search_runs([experiment]), key=lambda run: run.info.start_time)
    # One training run (keyed by its name) and its one round: the rerun marked both KILLED (their process was
    # gone), then reopened and finished them instead of starting new ones; how they had ended is history now.
    name = next(storage.glob(f"*/{SNAPSHOT}")).parent.name
    assert [(run.info.run_name, run.info.status) for run in runs] == [
        (name, "FINISHED"),
        ("round-1", "FINISHED"),
    ]
    assert all("marked by the next run" in run.data.tags["fairweather.resumed_after"] for run in runs)
    assert not [run for run in runs if "fairweather.end" in run.data.tags]
    assert runs[1].data.tags["mlflow.parentRunId"] == runs[0].info.run_id
    history = sorted(client.get_metric_history(runs[0].info.run_id, "loss/total"), key=lambda m: m.timestamp)
    # Each step once: the steps the rerun replayed (after the last registered checkpoint, up to the kill) were
    # logged by the killed process already.
    assert [m.step for m in history] == list(range(LOG_EVERY, STEPS + 1, LOG_EVERY))
    # The rerun continued after the last registered checkpoint; no orphan checkpoint folder is left.
    assert killed_at in [m.step for m in history]
    folders = [p for p in next(storage.glob(f"*/{SNAPSHOT}")).parent.glob("checkpoint_*") if p.is_dir()]
    assert len(folders) == 2  # train.keep_checkpoints
