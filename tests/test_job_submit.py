"""``ray job submit`` end to end: a real head (token authentication on, as Ray 2.60 does by default, dashboard and
jobs API on 127.0.0.1, its own ports and temp dir) runs the smoke jobs submitted through Ray's job client; the test
waits for SUCCEEDED and checks the MLflow runs and tables the jobs made, then stops that head by its own PIDs."""

from __future__ import annotations

import os
import shlex
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import mlflow
import psutil
import pytest
from ray.job_submission import JobStatus, JobSubmissionClient

from fairweather.contracts.tables import TableStore

from .ray_head import ray_head
from .train_fixtures import tiny_overrides

REPO = Path(__file__).resolve().parents[1]
#: The jobs the submitted entrypoint chains, each ``jobs/<name>.py --config smoke <overrides>``: generated data,
#: then the whole pipeline (label -> init pseudo-labels -> prompts -> rounds -> evaluate).
JOBS = ("synth", "pipeline")
#: What `--working-dir .` uploads leaves out (Ray also honours .gitignore): the venv, local runs, git history.
EXCLUDES = [".venv", "runs", ".git", "**/__pycache__"]


def entrypoint(overrides: list[str]) -> str:
    """The job's shell command. ``sys.executable``: on a cluster, ``python`` must be the project's environment (an
    image or a venv Ray was started from); here it is this venv's interpreter, whatever ``python`` is on PATH."""
    python, args = shlex.quote(sys.executable), " ".join(shlex.quote(o) for o in overrides)
    return " && ".join(f"{python} jobs/{job}.py --config smoke {args}" for job in JOBS)


def wait_for(client: JobSubmissionClient, job_id: str, timeout: float) -> JobStatus:
    deadline = time.monotonic() + timeout
    while (status := client.get_job_status(job_id)) not in {
        JobStatus.SUCCEEDED,
        JobStatus.FAILED,
        JobStatus.STOPPED,
    }:
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            pytest.fail(
                f"job {job_id} still {status} after {timeout:.0f} s:\n{client.get_job_logs(job_id)[-4000:]}"
            )
        time.sleep(1)
    return status


def connect(url: str, token: str, timeout: float = 60) -> JobSubmissionClient:
    """The job client with the cluster's token (an explicit header: no process-wide auth state is touched)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return JobSubmissionClient(url, headers={"Authorization": f"Bearer {token}"})
        except (ConnectionError, RuntimeError):  # the dashboard is still starting
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow  # ~110 s on the idle 2-core machine: the whole pipeline as a Ray job
def test_smoke_jobs_run_through_ray_job_submit(tmp_path, model_cache):
    token = uuid.uuid4().hex
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_ADDRESS", None)
    # A cluster runs jobs on shared storage: file:// is what every node of this one-machine cluster reaches.
    overrides = tiny_overrides(
        tmp_path,
        model_cache,
        **{"runtime.storage_path": (tmp_path / "train").as_uri(), "synth.num_unlabeled": 3},
    )
    with ray_head(num_cpus=2, dashboard=True, env=env) as head:
        assert head.dashboard_url is not None
        client = connect(head.dashboard_url, token)
        # Token authentication is on: the jobs API refuses a request without the token.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{head.dashboard_url}/api/jobs/", timeout=10)
        assert refused.value.code == 401
        # The dashboard listens on the loopback interface only.
        port = int(head.dashboard_url.rsplit(":", 1)[1])
        listening = {c.laddr.ip for p in head.processes() for c in _listening(p) if c.laddr.port == port}
        assert listening == {"127.0.0.1"}

        job_id = client.submit_job(
            entrypoint=entrypoint(overrides),
            runtime_env={"working_dir": str(REPO), "excludes": EXCLUDES},
        )
        status = wait_for(client, job_id, timeout=600)
        logs = client.get_job_logs(job_id)
        assert status == JobStatus.SUCCEEDED, logs[-4000:]

    # What the jobs made: the tables of every stage, and finished MLflow runs in the runs folder's store.
    store = TableStore(str(tmp_path / "tables"))
    assert store.read("paired").num_rows == 30 and store.read("labels").num_rows == 3
    assert sorted(store.read("pipeline").column("stage").to_pylist()) == [
        "evaluate",
        "init",
        "label",
        "rounds",
    ]
    assert store.read("metrics").num_rows > 0
    tracking = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    runs = tracking.search_runs([e.experiment_id for e in tracking.search_experiments()])
    status = {run.info.run_name: run.info.status for run in runs}
    assert {"label", "init", "rounds", "evaluate", "round-1"} <= set(status), status  # a child run per stage
    assert set(status.values()) == {"FINISHED"}, status
    assert any((tmp_path / "train").rglob("checkpoint_*")), "no checkpoint under runtime.storage_path"


def _listening(process: psutil.Process) -> list:
    try:
        return [c for c in process.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN]
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return []
