"""The Ray Train callback that logs every report: it runs in Ray Train's controller, which Ray pins to the
driver's node, so the embedded MLflow store has one writer."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ray.train
from ray import cloudpickle

from fairweather.contracts.metric_logger import MetricLogger
from fairweather.training.checkpoint_file import GRID_FILE

#: Tag of a run resumed with changed training settings: ``after step <n>: key: old -> new; ...``.
RESUME_TAG = "fairweather.resume_changes"


class ReportToLogger(ray.train.UserCallback):
    """Ray Train callback (runs in the controller): rank 0's metrics of every report, and each checkpoint's
    validation grid, go to the run's logger.

    A resumed run replays the steps between its last checkpoint and the point where it stopped; those were logged
    already. The steps the run holds per metric are read once, when the callback is made (in the driver, before the
    trainer starts; :func:`~fairweather.stages.infra.tracking.logged_steps`), and a metric is logged only at a
    later step, so every step of a curve has one value.

    Ray Train ships the run config, this callback with it, to every training worker as well as to the controller
    that calls it. The logger therefore travels as pickled bytes, unpickled at its first use in the controller: a
    worker never imports MLflow (1.6 CPU-s per worker start) nor connects to a tracking store it has no use for,
    and may not reach (a SQLite file on the driver's disk).
    """

    def __init__(self, logger: MetricLogger, resumed: Mapping[str, Any] | None = None):
        """resumed: the metrics of the registered checkpoint the run resumes from. Ray Train registers a checkpoint
        before its callbacks see the report, so a driver killed in between left that step unlogged, and the resumed
        run starts after it: logged here, where missing."""
        # Imported here, where the callback is made: at the module's top it would bring MLflow into every worker
        # that unpickles the callback.
        from fairweather.stages.infra.tracking import logged_steps

        self._logger: MetricLogger | bytes = logger
        self.logged = logged_steps(logger)
        if resumed:
            self._log(resumed)

    @property
    def logger(self) -> MetricLogger:
        if isinstance(self._logger, bytes):
            self._logger = cloudpickle.loads(self._logger)
        return self._logger

    def __getstate__(self) -> dict[str, Any]:
        logger = self._logger
        return {
            **self.__dict__,
            "_logger": logger if isinstance(logger, bytes) else cloudpickle.dumps(logger),
        }

    def _log(self, reported: Mapping[str, Any]) -> bool:
        """Log the metrics of ``reported`` not logged at its step yet; whether any were."""
        step = int(reported["step"])
        fresh = {
            k: float(v)
            for k, v in reported.items()
            if isinstance(v, int | float) and k != "step" and step > self.logged.get(k, -1)
        }
        if fresh:
            self.logger.log_metrics(fresh, step=step)
            self.logged.update(dict.fromkeys(fresh, step))
        return bool(fresh)

    def after_report(
        self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: ray.train.Checkpoint | None
    ):
        step = int(metrics[0]["step"])
        if not self._log(metrics[0]) or checkpoint is None:
            return  # a replayed step (logged by the process that first trained it), or no checkpoint
        with checkpoint.as_directory() as folder, tempfile.TemporaryDirectory() as out:
            grid = Path(folder) / GRID_FILE
            if grid.exists():
                named = Path(out) / f"step-{step:07d}.png"
                shutil.copyfile(grid, named)
                self.logger.log_artifact(named, "validation")
