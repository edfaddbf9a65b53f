"""A sweep trial's nested Ray Train run: the Train callbacks a trial hands its trainer, and the registry that lets
the sweep's driver release a stopped trial's trainer.

- Tune decides on the reports that reach it: :class:`ReportObjective` forwards each checkpoint's validation (the
  objective and ``step``, ASHA's clock) from the Train controller to the trial.
- When ASHA stops a trial, Tune ends the trial's actor and the nested Train controller dies with it. Ray Train's
  own clean-up of the workers' placement group asks the State API, which a private local Ray without a dashboard
  does not serve, so the group (the trainer's CPUs) would stay reserved and no later trainer could start.
  :class:`RecordTrainer` (on Ray Train's internal worker-group hook: :mod:`fairweather.stages.infra.ray_compat`)
  registers each trial's controller and placement groups with a driver-owned :class:`TrainerRegistry`;
  :func:`release_trainer` ends them.

Kept apart from :mod:`fairweather.stages.sweep.trial` because Ray Train ships a run's callbacks to every training
worker: this module imports no MLflow and no stage, so a trial's workers start without them.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.tune.integration.ray_train import TuneReportCallback
from ray.util.placement_group import placement_group_table, remove_placement_group

from fairweather.stages.infra.ray_compat import WorkerGroupCallback, worker_group_placement_group


@ray.remote(num_cpus=0)
class TrainerRegistry:
    """Driver-owned: each trial's Train controller and the placement groups of its workers."""

    def __init__(self) -> None:
        self.trainers: dict[str, list[tuple[Any, Any]]] = {}

    def add(self, trial_id: str, controller: Any, group: Any) -> None:
        self.trainers.setdefault(trial_id, []).append((controller, group))

    def pop(self, trial_id: str) -> list[tuple[Any, Any]]:
        return self.trainers.pop(trial_id, [])


class RecordTrainer(WorkerGroupCallback):
    """Train callback (in the controller): register the controller and each new worker group's placement group."""

    def __init__(self, registry_name: str, trial_id: str):
        self.registry_name, self.trial_id = registry_name, trial_id

    def after_worker_group_start(self, worker_group: Any) -> None:
        group = worker_group_placement_group(worker_group)
        controller = ray.get_runtime_context().current_actor
        ray.get(ray.get_actor(self.registry_name).add.remote(self.trial_id, controller, group))


def release_trainer(registry_name: str, trial_id: str) -> None:
    """End the trial's Train controller (no restart) and remove its workers' placement groups."""
    for controller, group in ray.get(ray.get_actor(registry_name).pop.remote(trial_id)):
        ray.kill(controller, no_restart=True)
        if placement_group_table(group).get("state") != "REMOVED":
            remove_placement_group(group)


class ReportObjective(TuneReportCallback):
    """Forward to Tune only the reports that carry the objective (every checkpoint's validation), with their
    ``step``: Tune rejects results without the metric it optimises."""

    def __init__(self, metric: str):
        super().__init__()
        self.metric = metric

    def after_report(self, run_context: Any, metrics: list[dict[str, Any]], checkpoint: Any) -> None:
        if self.metric in metrics[0]:
            super().after_report(run_context, metrics, checkpoint)
