"""The metric-logger protocol: disk logger for tests, MLflow on a local SQLite store, stage run hygiene."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys

import pytest

import fairweather
from fairweather.contracts.config import load_config
from fairweather.contracts.metric_logger import DiskLogger, MetricLogger, NullLogger
from fairweather.stages.infra.tracking import MLflowLogger, code_commit, open_logger, stage_run


def test_disk_and_null_loggers_follow_the_protocol(tmp_path):
    disk = DiskLogger(tmp_path / "run")
    for logger in (disk, NullLogger()):
        assert isinstance(logger, MetricLogger)
        logger.log_params({"a": 1})
        logger.log_metrics({"loss/sup": 0.5}, step=3)
        logger.close()
    assert disk.read_metrics()[0]["loss/sup"] == 0.5 and disk.read_metrics()[0]["step"] == 3
    assert disk.status == "FINISHED" and disk.params == {"a": 1}


def test_mlflow_logger_on_local_sqlite(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}"])
    logger = open_logger(cfg, "unit-test", stage="test")
    assert isinstance(logger, MLflowLogger)
    logger.log_metrics({"x": 1.0, "nan": float("nan")}, step=1)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    logger.log_artifact(artifact, "notes")
    logger.close()
    run = logger.client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"x": 1.0}  # non-finite values are dropped, not stored
    assert run.data.params["loss.weights.ps"] == "0.5" and run.data.tags["fairweather.stage"] == "test"
    assert (tmp_path / "mlflow.db").exists()
    assert [a.path for a in logger.client.list_artifacts(logger.run_id, "notes")] == ["notes/note.txt"]
    assert isinstance(open_logger(cfg, "rank1", rank=1, stage="test"), NullLogger)


def test_every_stage_run_records_config_version_commit_and_process(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}", "label.batch_size=3"])
    with stage_run(cfg, "test") as logger:
        pass
    run = logger.client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["fairweather.version"] == fairweather.__version__ and tags["fairweather.profile"] == "smoke"
    assert tags["fairweather.host"] == socket.gethostname() and tags["fairweather.pid"] == str(os.getpid())
    # The commit tag exists exactly when the package is a git checkout (the test does not require one).
    commit = code_commit()
    assert tags.get("fairweather.commit") == commit
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}(\+dirty)?", commit)
    folder = logger.client.download_artifacts(logger.run_id, "config.yaml", str(tmp_path / "download"))
    assert load_config(folder) == cfg


def test_stage_run_closes_failed_on_errors_and_killed_on_ctrl_c(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}"])
    for error, status in ((ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")):
        with pytest.raises(type(error)), stage_run(cfg, "test") as logger:
            raise error
        assert logger.client.get_run(logger.run_id).info.status == status


def test_a_run_whose_process_was_killed_is_marked_killed_by_the_next_run(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}"])
    script = (
        "import os, signal, sys\n"
        "from fairweather.contracts.config import load_config\n"
        "from fairweather.stages.infra.tracking import open_logger\n"
        f"logger = open_logger(load_config('smoke', ['runtime.runs_dir={tmp_path}']), stage='test')\n"
        "print(logger.run_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    stale_id = killed.stdout.split()[-1]
    with stage_run(cfg, "other-stage") as other:  # another stage's run leaves it alone
        assert other.client.get_run(stale_id).info.status == "RUNNING"
    alive = open_logger(cfg, stage="test")  # a RUNNING run whose process (this one) is alive stays RUNNING
    with stage_run(cfg, "test") as logger:
        assert logger.client.get_run(stale_id).info.status == "KILLED"
        assert logger.client.get_run(alive.run_id).info.status == "RUNNING"
    alive.close()


def test_children_are_nested_and_found_again_by_key_never_duplicated(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}"])
    with stage_run(cfg, "test", "parent", key="sweep-1") as parent:
        first = parent.child("round-0", key="round-0")
        first.log_metrics({"loss": 1.0}, step=1)
        first.close("KILLED")  # an interrupted round...
        again = parent.child("round-0", key="round-0")  # ...is resumed into the same run
        assert again.run_id == first.run_id and again.resumed
        again.close()
        other = parent.child("round-1", key="round-1")
        other.close()
    client = parent.client
    children = client.search_runs([parent.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.run_id}'")
    assert sorted(r.info.run_name for r in children) == ["round-0", "round-1"]
    assert {r.info.status for r in children} == {"FINISHED"}
    assert all(r.data.tags["fairweather.stage"] == "test" for r in children)
    # The parent too is reopened by its key, with its params left as they were.
    with stage_run(cfg, "test", "parent", key="sweep-1") as reopened:
        assert reopened.run_id == parent.run_id and reopened.resumed
    top = client.search_runs([parent.experiment_id], "tags.`fairweather.key` = 'sweep-1'")
    assert len(top) == 1 and top[0].info.status == "FINISHED"


def test_disk_logger_children_live_in_their_own_folder(tmp_path):
    parent = DiskLogger(tmp_path / "run")
    child = parent.child("round-0", key="round-0")
    child.log_metrics({"x": 1.0}, step=1)
    assert DiskLogger(tmp_path / "run" / "children" / "round-0").tags["run_name"] == "round-0"
    assert isinstance(NullLogger().child("a", key="a"), NullLogger)
