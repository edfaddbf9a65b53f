"""MLflow behind the metric-logger protocol; the only module that imports MLflow.

Uses an explicit ``MlflowClient`` bound to one tracking URI (no process-global ``mlflow.set_tracking_uri``), so
several stages, Ray workers and Tune trials in one process cannot log into each other's runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from fairweather.contracts.config import FairweatherConfig, flatten
from fairweather.contracts.metric_logger import MetricLogger, NullLogger

from .runtime import artifact_root, tracking_uri

#: MLflow rejects param values longer than this.
_MAX_PARAM_LEN = 6000


class MLflowLogger:
    """One MLflow run. ``run_id`` identifies it in the UI and in the ``metrics`` table."""

    def __init__(self, uri: str, experiment: str, run_name: str, artifact_location: str | None = None):
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(experiment)
        experiment_id = (
            found.experiment_id
            if found is not None
            else self.client.create_experiment(experiment, artifact_location=artifact_location)
        )
        self.run_id = self.client.create_run(experiment_id, run_name=run_name).info.run_id

    @classmethod
    def attach(cls, uri: str, run_id: str) -> MLflowLogger:
        """A logger for an existing run (no new run is created)."""
        logger = cls.__new__(cls)
        logger.client, logger.run_id = MlflowClient(tracking_uri=uri), run_id
        return logger

    def __reduce__(self) -> tuple:
        # Pickled into a Ray actor (the Train controller that runs the logging callback): re-attach there to the
        # same run instead of shipping a client with open database connections.
        return (MLflowLogger.attach, (self.client.tracking_uri, self.run_id))

    def log_params(self, params: Mapping[str, Any]) -> None:
        batch = [Param(k, str(v)[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for start in range(0, len(batch), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        import time

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def open_logger(cfg: FairweatherConfig, run_name: str, *, rank: int = 0, stage: str) -> MetricLogger:
    """A logger for one stage run: MLflow on rank 0 (config logged as params, tags set), a no-op elsewhere."""
    if rank != 0:
        return NullLogger()
    logger = MLflowLogger(
        tracking_uri(cfg.runtime),
        cfg.runtime.experiment,
        run_name,
        artifact_location=artifact_root(cfg.runtime),
    )
    logger.set_tags({"fairweather.stage": stage, "fairweather.profile": cfg.profile})
    logger.log_params(flatten(cfg))
    return logger
