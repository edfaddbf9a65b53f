"""``fairweather sweep``: Ray Tune over config keys (the loss weights w1-w4, the learning rate, ablation rows).

A trial is exactly ``fairweather train`` on its own config: a Tune function that derives the config (base profile
+ the sweep's fixed overrides + the command line's + the trial's variant and sampled values, through the same
typed path as command-line overrides) and calls :func:`run_rounds`, whose ``TorchTrainer`` reports each
checkpoint's validation to Tune (``stages.sweep_trial``). Ray Train V2 trainers cannot be Tune trainables, so the
trial function reserves almost nothing (``TRIAL_RESOURCES``) and the nested trainer asks for its own workers.

MLflow: the driver creates the store and one parent run per sweep (keyed by the sweep's fingerprint) before any
trial starts; each trial finds-or-creates its child run by trial id (a resumed trial logs into the run it started)
and logs its config, every report and its final model there; the driver marks each child's end
(``fairweather.trial_status`` = completed | stopped_early | failed) and puts the ranked table, the plot and the best
trial's config and checkpoint on the parent.

Resume: the Tune experiment lives at ``<train storage>/<sweep key>``; rerunning the same command restores it
(``resume_errored``): finished trials stay finished, interrupted ones restart and their training resumes from its
own checkpoints (each trial's training run is named ``<sweep key>-<trial id>``). The sweep file's ``seed`` seeds
Tune's random sampling, and the sampler's state is part of the experiment, so a resumed sweep samples the trials
an uninterrupted one would have. One live command per experiment: a second one is refused at start-up
(:mod:`fairweather.stages.infra.locks`).

Failure: a sweep in which no trial completes (every trial failed) raises :class:`JobFailedError` with one line per
distinct failure reason (exit code 1 on the command line) after its report is written.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ray
import ray.tune
from ray.tune.search import BasicVariantGenerator

from fairweather.contracts.config import (
    CONFIG_DIR,
    FairweatherConfig,
    SweepConfig,
    load_config,
    resolve_profile,
)
from fairweather.contracts.config.sweep import VARIANT_KEY, trial_overrides
from fairweather.contracts.errors import FairweatherError, JobFailedError
from fairweather.contracts.metric_logger import MetricLogger, NullLogger
from fairweather.contracts.redact import redact_text
from fairweather.stages.infra.console import progress
from fairweather.stages.infra.locks import run_lock
from fairweather.stages.infra.runtime import ray_session, runs_path
from fairweather.stages.infra.tracking import child_run_ids, stage_run, sweep_view, ui_links
from fairweather.stages.sweep.report import (
    TrialRow,
    best_row,
    compared_keys,
    print_report,
    write_report,
)
from fairweather.stages.sweep.trainers import TrainerRegistry
from fairweather.stages.sweep.trial import (
    TRIAL_RESOURCES,
    MarkTrials,
    TrialJob,
    run_trial,
    trial_name,
    trial_status,
)
from fairweather.stages.train.driver import storage_path
from fairweather.stages.train.worker import StepHook
from fairweather.training.validate import validation_metric_names

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SweepSummary:
    name: str
    #: The sweep's key: its MLflow parent run's key and its Tune experiment's folder name.
    key: str
    experiment_path: str
    trials: int
    completed: int
    stopped_early: int
    failed: int
    #: The best trial (``trial_id``, ``metric``, its sampled values, ``checkpoint``), None if none reported.
    best: dict[str, Any] | None
    #: ``table.md``, ``table.csv``, ``metric_vs_params.png``, ``best_config.yaml`` (also on the parent run).
    artifacts: dict[str, str]
    mlflow_ui: str | None
    compare_url: str | None
    seconds: float


def param_space(sweep: SweepConfig) -> dict[str, Any]:
    """The Tune search space: one entry per sampled key (dotted keys kept whole), plus the variant grid."""
    make = {
        "uniform": lambda p: ray.tune.uniform(p.low, p.high),
        "loguniform": lambda p: ray.tune.loguniform(p.low, p.high),
        "choice": lambda p: ray.tune.choice(list(p.values)),
        "grid": lambda p: ray.tune.grid_search(list(p.values)),
    }
    space = {key: make[p.distribution](p) for key, p in sweep.params.items()}
    if sweep.variants:
        space[VARIANT_KEY] = ray.tune.grid_search([v.name for v in sweep.variants])
    return space


def search_algorithm(sweep: SweepConfig, concurrency: int) -> BasicVariantGenerator:
    """Tune's random/grid sampler seeded with the sweep's ``seed`` (its state is saved with the experiment, so a
    resumed sweep goes on sampling where it stopped), running at most ``concurrency`` trials at once."""
    return BasicVariantGenerator(max_concurrent=concurrency, random_state=sweep.seed)


def absolute_base(sweep: SweepConfig) -> SweepConfig:
    """``sweep`` with a base YAML path made absolute: trials load their config in Ray's working directory, where
    a relative path names nothing. A shipped profile's name stays a name."""
    path = resolve_profile(sweep.base)
    if path == CONFIG_DIR / f"{sweep.base}.yaml":
        return sweep
    return dataclasses.replace(sweep, base=os.path.abspath(path))


def check_sweep(job: TrialJob) -> list[FairweatherConfig]:
    """Every error that can be found before a trial starts: each variant at each edge of the space is a valid
    config, the objective is a metric training reports, ASHA's grace period fits in the training. Returns the
    configs it built (their scaling decides the resources a trial needs)."""
    sweep = job.sweep
    variants = [{VARIANT_KEY: v.name} for v in sweep.variants] or [{}]
    edges = [{}] + [{key: value} for key, p in sweep.params.items() for value in p.extremes()]
    configs = [job.config({**variant, **edge}, "check") for variant in variants for edge in edges]
    for cfg in configs:
        known = validation_metric_names(val_real=cfg.train.val_real_images > 0)
        if sweep.metric not in known:
            raise FairweatherError(
                f"sweep metric {sweep.metric!r} is never reported by training with this config (checkpoint "
                f"validation reports e.g. {', '.join(sorted(n for n in known if n.endswith('/overall')))})"
            )
        if sweep.scheduler.kind == "asha" and sweep.scheduler.grace_period > cfg.train.total_steps:
            raise FairweatherError(
                f"scheduler.grace_period={sweep.scheduler.grace_period} steps is longer than a trial's training "
                f"({cfg.train.total_steps} steps): no trial could ever be compared"
            )
    return configs


def _concurrency(sweep: SweepConfig, configs: list[FairweatherConfig]) -> int:
    """Trials at once: what the sweep asks, else what the cluster holds; refuses a trial the cluster cannot hold."""
    resources = ray.cluster_resources()
    cpus = max(c.train.scaling.num_workers * c.train.scaling.cpus_per_worker for c in configs)
    gpus = max(c.train.scaling.num_workers if c.train.scaling.use_gpu else 0 for c in configs)
    have_cpus, have_gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus > have_cpus or gpus > have_gpus:
        raise FairweatherError(
            f"a trial trains on {cpus:g} CPUs and {gpus} GPUs (train.scaling.*), but the cluster has "
            f"{have_cpus:g} CPUs and {have_gpus:g} GPUs: lower train.scaling.num_workers or cpus_per_worker"
        )
    fits = int(have_cpus // cpus) if not gpus else int(min(have_cpus // cpus, have_gpus // gpus))
    return sweep.max_concurrent_trials or max(1, fits)


#: The driver's progress bar of each running sweep (by key): Tune pickles its callbacks, so they name the bar.
_BARS: dict[str, Any] = {}


class TrialProgress(ray.tune.Callback):
    """Tune callback (runs in the driver): one step of the sweep's progress bar per finished trial (completed,
    stopped early by the scheduler, or failed)."""

    def __init__(self, key: str):
        self.key = key

    def _finished(self) -> None:
        if (bar := _BARS.get(self.key)) is not None:
            bar.update(1)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished()

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._finished()


def trial_count(sweep: SweepConfig) -> int:
    """Trials the sweep runs: ``num_samples`` times its grid (variants x ``grid`` values), Tune's rule."""
    grid = len(sweep.variants) or 1
    for p in sweep.params.values():
        if p.distribution == "grid":
            grid *= len(p.values)
    return sweep.num_samples * grid


def _tuner(job: TrialJob, path: str, concurrency: int, total_steps: int) -> ray.tune.Tuner:
    trainable = ray.tune.with_resources(ray.tune.with_parameters(run_trial, job=job), TRIAL_RESOURCES)
    if ray.tune.Tuner.can_restore(path):
        log.info("sweep: resuming %s", path)
        return ray.tune.Tuner.restore(path, trainable, resume_errored=True)
    sweep = job.sweep
    scheduler = None
    if sweep.scheduler.kind == "asha":
        scheduler = ray.tune.schedulers.ASHAScheduler(
            time_attr=sweep.scheduler.time_attr,
            # One past the end: ASHA stops a trial at max_t, which would cut its final test scoring.
            max_t=total_steps + 1,
            grace_period=sweep.scheduler.grace_period,
            reduction_factor=sweep.scheduler.reduction_factor,
        )
    return ray.tune.Tuner(
        trainable,
        param_space=param_space(sweep),
        tune_config=ray.tune.TuneConfig(
            metric=sweep.metric,
            mode=sweep.mode,
            num_samples=sweep.num_samples,
            search_alg=search_algorithm(sweep, concurrency),
            scheduler=scheduler,
            trial_name_creator=trial_name,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=ray.tune.RunConfig(
            name=os.path.basename(path),
            storage_path=os.path.dirname(path),
            callbacks=[MarkTrials(job), TrialProgress(job.key)],
        ),
    )


#: ``pkg.module.SomeError: message`` (or ``SomeError(...)``): how a Python error's line starts in Ray's texts.
_ERROR_LINE = re.compile(
    r"^(?:[A-Za-z_][\w]*\.)*(?P<line>[A-Za-z_]\w*(?:Error|Exception|Interrupt|Exit)\b.*)$"
)


def failure_reason(error: BaseException) -> str:
    """One line for a trial's error: the innermost ``SomeError: message`` line of Ray's text (the original error
    under the task and actor wrappers), module path dropped, credentials masked."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    found = [m["line"] for line in lines if (m := _ERROR_LINE.match(line))]
    line = found[-1] if found else (lines[-1] if lines else type(error).__name__)
    if not found and lines:
        line = f"{type(error).__name__}: {line}"
    return redact_text(line if len(line) <= 300 else line[:297] + "...")


def failure_reasons(results: ray.tune.ResultGrid) -> Counter[str]:
    """Each distinct failure reason of the sweep's trials -> how many trials failed with it."""
    return Counter(failure_reason(r.error) for r in results if r.error is not None)


def _rows(job: TrialJob, results: ray.tune.ResultGrid) -> list[TrialRow]:
    rows = []
    for result in results:
        trial_id = os.path.basename(result.path)
        sampled = dict(result.config or {})
        total = job.config(sampled, trial_id).train.total_steps
        metrics = result.metrics or {}
        rows.append(
            TrialRow(
                trial_id=trial_id,
                status=trial_status(metrics, result.error is not None, total),
                params=sampled,
                metric=metrics.get(job.sweep.metric),
                step=int(metrics.get("step", 0)),
                checkpoint=metrics.get("checkpoint_path"),
            )
        )
    return rows


def run_sweep(
    sweep: SweepConfig,
    overrides: Sequence[str] = (),
    logger: MetricLogger | None = None,
    *,
    step_hook: StepHook | None = None,
) -> SweepSummary:
    """Run (or resume) ``sweep`` on ``sweep.base`` with ``overrides``; log to ``logger`` (default: the sweep's
    keyed MLflow parent run). step_hook: passed to every trial's workers (tests)."""
    start = time.perf_counter()
    sweep = absolute_base(sweep)
    cfg = load_config(sweep.base, trial_overrides(sweep, {}, overrides))
    key = f"sweep-{sweep.name}-{sweep.fingerprint(sweep.base, list(overrides))}"
    storage = storage_path(cfg)
    path = f"{storage}/{key}"
    job = TrialJob(sweep, tuple(overrides), key, NullLogger(), step_hook)
    configs = check_sweep(job)  # before Ray starts or a run opens
    # One live command per Tune experiment: a second one is refused here, before Ray or MLflow start.
    with run_lock(cfg.runtime, "sweep", key, storage, what=f"sweep experiment {path}"), ray_session(cfg):
        concurrency = _concurrency(sweep, configs)  # the cluster's resources are known now
        own = stage_run(cfg, "sweep", key, key=key) if logger is None else contextlib.nullcontext(logger)
        with own as parent:
            # Named, so Tune's pickled callbacks find this driver's registry after a restore too.
            registry = TrainerRegistry.options(name=job.registry_name).remote()
            try:
                return _sweep(cfg, dataclasses.replace(job, parent=parent), path, concurrency, start)
            finally:
                ray.kill(registry)


def _sweep(cfg: FairweatherConfig, job: TrialJob, path: str, concurrency: int, start: float) -> SweepSummary:
    sweep, parent = job.sweep, job.parent
    parent.set_tags({"fairweather.sweep": sweep.name or "", "fairweather.sweep_path": path})
    with progress(trial_count(sweep), "sweep", unit="trial") as bar:
        _BARS[job.key] = bar
        try:
            results = _tuner(job, path, concurrency, cfg.train.total_steps).fit()
        finally:
            _BARS.pop(job.key, None)
    rows = _rows(job, results)
    best = best_row(rows, sweep.mode)
    out = runs_path(cfg.runtime, "sweeps", job.key)
    artifacts = write_report(
        rows, sweep, out, best_config=job.config(best.params, best.trial_id) if best else None
    )
    for artifact in artifacts.values():
        parent.log_artifact(artifact, "summary")
    if best is not None:
        parent.set_tags({"best.trial_id": best.trial_id, "best.checkpoint": best.checkpoint or ""})
        parent.log_metrics({f"best/{sweep.metric}": float(best.metric)})  # type: ignore[arg-type]
    ids = child_run_ids(parent)
    # A saved MLflow view: the trials, best first, and the objective against every sampled key in one chart.
    view = sweep_view(
        parent, job.key, f"sweep {sweep.name or job.key}", sweep.metric, compared_keys(sweep), sweep.mode
    )
    links = ui_links(cfg, parent, [ids[r.trial_id] for r in rows if r.trial_id in ids], view=view)
    counts = {s: sum(r.status == s for r in rows) for s in ("completed", "stopped_early", "failed")}
    summary = SweepSummary(
        name=sweep.name or job.key,
        key=job.key,
        experiment_path=path,
        trials=len(rows),
        **counts,
        best=dataclasses.asdict(best) if best else None,
        artifacts={name: str(p) for name, p in artifacts.items()},
        mlflow_ui=links[0] if links else None,
        compare_url=links[1] if links else None,
        seconds=round(time.perf_counter() - start, 1),
    )
    print_report(rows, sweep, summary.artifacts, links)
    reasons = failure_reasons(results)
    lines = [f"{n} trial{'s' * (n > 1)}: {reason}" for reason, n in reasons.most_common()]
    if not summary.completed and not summary.stopped_early:
        raise JobFailedError(
            f"no trial of sweep {summary.name} completed ({summary.failed} of {summary.trials} failed; report in "
            f"{out}):\n" + "\n".join(lines or ["no trial ran"])
        )
    for line in lines:
        log.warning("sweep: %s", line)
    return summary
