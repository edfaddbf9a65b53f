"""One Tune trial of ``fairweather sweep``, and what the driver does when a trial ends.

A trial is a Tune function that runs exactly what ``fairweather train`` runs (:func:`run_rounds`: init
pseudo-labels, ``train.rounds`` rounds of training, pseudo-label updates) on its own config. Its trainer is a Ray
Train V2 run nested in the trial, which brings two duties the trial cannot do itself:

- Tune decides on the reports that reach it, and a stopped trial's trainer must be released: the Train callbacks
  and the registry of :mod:`fairweather.stages.sweep.trainers`; :class:`MarkTrials` releases a trial's trainer when
  the trial ends, then closes the trial's MLflow child run with its status.

MLflow after a trial (:func:`tidy_trial`): no run of it is left RUNNING. A trial that completed or that the scheduler
stopped early (ASHA) ends FINISHED with its runs nested below (its rounds), tagged ``fairweather.trial_status`` =
``completed`` | ``stopped_early`` (and ``fairweather.end`` saying when it was stopped): stopping a hopeless trial is a
normal end of a sweep, and MLflow's KILLED means "killed by the user". The round that was training when ASHA stopped
the trial loses its trainer mid-run and closes itself from inside: the driver (:class:`MarkTrials`) tags the trial
``fairweather.stopped`` before it ends the trainer, so that close ends the round FINISHED, and the driver and the
trial's own task (:func:`_train`) both tag the rounds ``stopped_early``, in whatever order they come. A failed trial
ends FAILED with its runs still RUNNING. The rounds get the trial's sampled values as params and its objective
(``val/psnr/overall``) over their steps as a metric, so any of these runs can be compared on it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import ray
import ray.train
import ray.tune

from fairweather.contracts.config import FairweatherConfig, SweepConfig, flatten, load_config
from fairweather.contracts.config.sweep import VARIANT_KEY, trial_overrides
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.stages.infra.tracking import (
    END_TAG,
    STOPPED_TAG,
    MLflowLogger,
    close_descendants,
    descendants,
    share_with_descendants,
)
from fairweather.stages.sweep.trainers import RecordTrainer, ReportObjective, release_trainer
from fairweather.stages.train.driver import registered_result, storage_path
from fairweather.stages.train.rounds import RoundsSummary, run_rounds
from fairweather.stages.train.worker import StepHook

#: What a trial function itself holds: nothing its trainer needs (the trainer asks for its workers); Ray refuses
#: ``{"cpu": 0}`` alone, so a token amount of memory.
TRIAL_RESOURCES = {"cpu": 0, "memory": 64 * 2**20}
#: Tag on every child run: how its trial ended.
STATUS_TAG = "fairweather.trial_status"


@dataclass(frozen=True)
class TrialJob:
    """What every trial needs besides its sampled values (``tune.with_parameters``)."""

    sweep: SweepConfig
    overrides: tuple[str, ...]
    key: str
    #: The sweep's parent run (an MLflow logger pickles as a re-attach by run id).
    parent: MetricLogger
    step_hook: StepHook | None = None

    @property
    def registry_name(self) -> str:
        """Name of the sweep's :class:`TrainerRegistry` actor (a name, not a handle: Tune pickles its callbacks
        into the experiment, and a restored sweep has a new registry)."""
        return f"fairweather-{self.key}-trainers"

    def config(self, sampled: Mapping[str, Any], trial_id: str) -> FairweatherConfig:
        """The trial's config: the typed path of command-line overrides, its own training run name."""
        overrides = trial_overrides(self.sweep, sampled, self.overrides)
        return load_config(self.sweep.base, [*overrides, f"train.run_name={self.key}-{trial_id}"])


def trial_name(trial: Any) -> str:
    """A trial's name in Tune and MLflow: its variant (ablation row) and id."""
    variant = trial.config.get(VARIANT_KEY)
    return f"{variant} ({trial.trial_id})" if variant else f"trial-{trial.trial_id}"


def run_trial(config: dict[str, Any], job: TrialJob) -> None:
    """One trial: ``fairweather train`` on the trial's config, logged into its child run of the sweep (found
    again by trial id when a restored sweep restarts the trial; its rounds resume from their checkpoints). The
    training run, hence the pseudo-label lineage, is ``<sweep key>-<trial id>``."""
    context = ray.tune.get_context()
    trial_id = context.get_trial_id()
    cfg = job.config(config, trial_id)
    child = job.parent.child(context.get_trial_name(), key=trial_id)
    variant = {VARIANT_KEY: config[VARIANT_KEY]} if VARIANT_KEY in config else {}
    child.log_params({**flatten(cfg), **variant})
    child.set_tags({"fairweather.trial_id": trial_id, STATUS_TAG: "running"})
    callbacks = [ReportObjective(job.sweep.metric), RecordTrainer(job.registry_name, trial_id)]
    # Tune runs each trial in a placement group that captures the trial's child tasks: the training's own tasks
    # (pseudo-label jobs, a GPU run's final test scoring) would have to fit in the trial's token bundle. Run the
    # training in a task of its own outside that group; it ends with the trial (Ray ends the tasks of a dead owner).
    tidy = TrialTidy(job.sweep.metric, sampled(job.sweep, config))
    summary = ray.get(
        _train.options(scheduling_strategy="DEFAULT").remote(cfg, child, job.step_hook, callbacks, tidy)
    )
    if summary is not None and all(r.status == "done" for r in summary.rounds):
        # A restored sweep restarted a trial whose training had finished before the driver was stopped: nothing
        # trained, so nothing reached Tune, which refuses a trial that ends without its metric. Report the final
        # validation Ray Train recorded with the run's last checkpoint.
        final = registered_result(storage_path(cfg), summary.run_name).metrics or {}
        ray.tune.report({job.sweep.metric: final[job.sweep.metric], "step": summary.steps})


@ray.remote(num_cpus=0, max_retries=0)  # a crash fails the trial; Tune decides what happens next
def _train(
    cfg: FairweatherConfig,
    logger: MetricLogger,
    step_hook: StepHook | None,
    callbacks: list,
    tidy: TrialTidy,
) -> RoundsSummary | None:
    """The trial's training; its summary, or None when the scheduler stopped it."""
    try:
        return run_rounds(cfg, logger, step_hook=step_hook, callbacks=callbacks)
    except Exception:
        # The scheduler stopped this trial (the driver tagged it before ending its trainer): the round that was
        # training has just ended; it is a normal end.
        if _status(logger) == "stopped_early":
            tidy(logger, "stopped_early")
            return None
        raise


def _status(logger: MetricLogger) -> str | None:
    """The trial's ``fairweather.trial_status`` as the store has it now (None for a logger that is not MLflow's)."""
    if not isinstance(logger, MLflowLogger):
        return None
    return logger.client.get_run(logger.run_id).data.tags.get(STATUS_TAG)


def sampled(sweep: SweepConfig, config: Mapping[str, Any]) -> dict[str, Any]:
    """The trial's sampled values (and its variant) by config key."""
    return {key: config[key] for key in (VARIANT_KEY, *sweep.params) if key in config}


@dataclass(frozen=True)
class TrialTidy:
    """What a trial's MLflow runs get when it ends (see the module docstring): callable with the trial's run."""

    metric: str
    params: dict[str, Any]

    def __call__(self, trial: MetricLogger, status: str, step: int | None = None) -> None:
        """Give the runs nested under ``trial`` the sampled params and the objective over their steps, then end
        those left RUNNING (and, when the trial was stopped early, those its stop failed) as the trial ended."""
        share_with_descendants(trial, self.params, self.metric)
        if status == "failed":
            close_descendants(trial, "FAILED", {STATUS_TAG: status, END_TAG: "its trial failed"})
            return
        ended = {STATUS_TAG: status}
        if status == "stopped_early":
            at = f" after step {step}" if step is not None else ""
            ended[END_TAG] = f"stopped early by the sweep's scheduler{at}: a normal end, not a failure"
        replace = ("RUNNING", "FAILED", "KILLED") if status == "stopped_early" else ("RUNNING",)
        close_descendants(trial, "FINISHED", ended, replace=replace)
        if status == "stopped_early" and isinstance(trial, MLflowLogger):
            # The round that lost its trainer may have closed itself FINISHED before this (it reads the trial's
            # fairweather.stopped), and a round that completed before the stop is FINISHED too: they get the status.
            for run in descendants(trial):
                if STATUS_TAG not in run.data.tags:
                    trial.client.set_tag(run.info.run_id, STATUS_TAG, status)


def trial_status(metrics: Mapping[str, Any], failed: bool, total_steps: int) -> str:
    """completed | stopped_early | failed, from a trial's last result."""
    if failed:
        return "failed"
    return "completed" if int(metrics.get("step", 0)) >= total_steps else "stopped_early"


class MarkTrials(ray.tune.Callback):
    """Driver-side: as each trial ends, tag its status, release its trainer, tidy and close its MLflow runs."""

    def __init__(self, job: TrialJob):
        self.job = job

    def _mark(self, trial: Any, failed: bool) -> None:
        total = self.job.config(trial.config, trial.trial_id).train.total_steps
        status = trial_status(trial.last_result or {}, failed, total)
        child = self.job.parent.child(trial_name(trial), key=trial.trial_id)
        # Before the trainer goes: the trial's task, which sees its round fail then, reads it, and the round's own
        # close reads fairweather.stopped (a stopped trial's round ends FINISHED whoever closes it first).
        tags = {STATUS_TAG: status}
        if status == "stopped_early":
            tags[STOPPED_TAG] = "the sweep's scheduler"
        child.set_tags(tags)
        release_trainer(self.job.registry_name, trial.trial_id)
        step = (trial.last_result or {}).get("step")
        TrialTidy(self.job.sweep.metric, sampled(self.job.sweep, trial.config))(child, status, step)
        if status == "stopped_early":
            child.set_tags({END_TAG: f"stopped early by the sweep's scheduler after step {step}"})
        child.close("FAILED" if failed else "FINISHED")

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mark(trial, failed=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._mark(trial, failed=True)
