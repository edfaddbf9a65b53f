"""Several commands starting at once on a fresh runs folder share one MLflow SQLite store (issue 19: they raced on
its schema creation, "duplicate column name: step" / "table latest_metrics already exists", and one died)."""

from __future__ import annotations

import multiprocessing
import traceback
from pathlib import Path

#: Processes opening the store at once (three were enough to fail every time before the lock).
PROCESSES = 3


def _open_run(uri: str, artifacts: str, index: int, barrier, results) -> None:
    """One command's first use of the store: import first (slow), then all open their run at the same moment."""
    try:
        from fairweather.stages.infra.tracking import MLflowLogger

        barrier.wait(timeout=300)
        logger = MLflowLogger(uri, "fairweather", f"run-{index}", artifact_location=artifacts)
        logger.log_metrics({"x": float(index)}, step=1)
        logger.close()
        results.put((index, None))
    except BaseException:  # reported to the parent: a failure in a child must fail the test
        results.put((index, traceback.format_exc(limit=3)))


def test_parallel_first_use_of_a_fresh_store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(PROCESSES), ctx.Queue()
    workers = [
        ctx.Process(target=_open_run, args=(uri, (tmp_path / "art").as_uri(), i, barrier, results))
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    outcome = dict(results.get(timeout=600) for _ in workers)
    for worker in workers:
        worker.join(timeout=60)
    assert {i: error for i, error in outcome.items() if error} == {}

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("fairweather")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.info.run_name for r in runs) == [f"run-{i}" for i in range(PROCESSES)]
    assert {r.info.status for r in runs} == {"FINISHED"}


def test_an_experiment_created_meanwhile_by_another_process_is_used(tmp_path: Path, monkeypatch):
    """Between "no such experiment" and creating it, another command created it: use that one, do not fail."""
    from mlflow.tracking import MlflowClient

    from fairweather.stages.infra.tracking import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    existing = MlflowClient(tracking_uri=uri).create_experiment("fairweather")
    real = MlflowClient.get_experiment_by_name
    calls = []

    def first_misses(self, name):  # this process looked before the other one created it
        calls.append(name)
        return None if len(calls) == 1 else real(self, name)

    monkeypatch.setattr(MlflowClient, "get_experiment_by_name", first_misses)
    logger = MLflowLogger(uri, "fairweather", "late", artifact_location=(tmp_path / "art").as_uri())
    assert logger.experiment_id == existing
    logger.close()
