"""``fairweather train``: train the restoration network with Ray Train (DDP) on labeled pairs and the real pool.

The driver reads the tables once (``paired`` by split; ``pool`` ⋈ ``labels`` ⋈ selected ``pseudo_labels``), runs
stage 1 (weather prompts) when ``L_wpl`` is on, and hands the views to a ``TorchTrainer`` as Ray Datasets; the
workers (``train_worker``) run the loop. Metrics reach MLflow through a Train callback on the controller, which Ray
places on the driver's node, so the embedded SQLite store has exactly one writer. At the end the EMA teacher of
the final checkpoint is scored on the synthetic ``test`` split against the untouched input, per weather.

Resume: the run is named ``train-<fingerprint>`` of everything that changes training (model, encoders, loss, train
settings, the tables' versions) under ``runtime.storage_path``. Rerunning the same command continues an interrupted
run from its last checkpoint; a changed config is a new run; ``train.run_name`` names one, ``train.new_run=true``
forces a fresh one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.train
import torch
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import RayTrainCallback

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import full_uri, has_scheme
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view, real_view, table_versions
from fairweather.stages.infra.cpus import check_cpu_budget
from fairweather.stages.infra.locks import run_lock
from fairweather.stages.infra.runtime import is_private_local, ray_session, runs_path
from fairweather.stages.infra.tracking import stage_run
from fairweather.stages.train.report import (
    ReportToLogger,
    evaluate_checkpoint,
    learn_prompts,
    print_test_table,
)
from fairweather.stages.train.worker import StepHook, WorkerJob, train_loop_per_worker
from fairweather.training.step import NonFiniteLossError

log = logging.getLogger(__name__)

#: Config sections that change what training produces (runtime, labeling and synth settings do not); ``pseudo``
#: decides which pseudo-labels the rounds train on (the ablation's init / iterate / r_vlm rows are separate runs).
_FINGERPRINT_SECTIONS = ("model", "encoders", "loss", "pseudo", "train")
#: Keys of those sections that change speed, cadence or bookkeeping only: a rerun with another value continues.
_VOLATILE = {
    "train": ("run_name", "new_run", "log_every", "max_failures", "keep_checkpoints"),
    "pseudo": (
        "batch_size",
        "restore_concurrency",
        "score_concurrency",
        "num_cpus_per_actor",
        "num_gpus_per_actor",
        "flush_rows",
        "flush_seconds",
    ),
}


@dataclass(frozen=True)
class TrainSummary:
    run_name: str
    #: Folder (or URI) of the final checkpoint: ``state.pt`` with model, EMA teacher, optimizer, ... .
    checkpoint: str
    steps: int
    seconds: float
    #: ``{"<weather>": {"input_psnr", "psnr", "input_ssim", "ssim"}}`` of the EMA teacher on the ``test`` split.
    test: dict[str, dict[str, float]]


def storage_path(cfg: FairweatherConfig) -> str:
    """Where Ray Train keeps runs: ``runtime.storage_path``, else ``<runs_dir>/train`` on a private local Ray."""
    if (
        cfg.runtime.storage_path
        and not has_scheme(cfg.runtime.storage_path)
        and not is_private_local(cfg.runtime)
    ):
        raise FairweatherError(
            f"runtime.storage_path={cfg.runtime.storage_path!r} is a local path, but Ray runs on a cluster: give a "
            "URI every node can reach (s3://..., gs://..., or file:///<a mount every node shares>)"
        )
    if cfg.runtime.storage_path:
        return (
            cfg.runtime.storage_path
            if has_scheme(cfg.runtime.storage_path)
            else os.path.abspath(cfg.runtime.storage_path)
        )
    if not is_private_local(cfg.runtime):
        raise FairweatherError(
            "runtime.storage_path is required on a Ray cluster: a URI every node can reach (s3://..., gs://..., "
            "or file:///<a mount every node shares>), so checkpoints survive a node"
        )
    return str(runs_path(cfg.runtime, "train"))


def run_name(cfg: FairweatherConfig, versions: dict[str, str]) -> str:
    """``train.run_name``, else ``train-<12 hex of the config sections and table versions that shape training>``."""
    if cfg.train.run_name:
        name = cfg.train.run_name
    else:
        shaping = {section: to_dict(getattr(cfg, section)) for section in _FINGERPRINT_SECTIONS}
        for section, keys in _VOLATILE.items():
            for key in keys:
                shaping[section].pop(key)
        # Pseudo-labels belong to the run (its lineage) and change between its rounds: not part of its name.
        shaping["tables"] = {table: v for table, v in versions.items() if table != "pseudo_labels"}
        shaping["seed"] = cfg.runtime.seed
        digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:12]
        name = f"train-{digest}"
    return f"{name}-{time.strftime('%Y%m%d-%H%M%S')}" if cfg.train.new_run else name


def trained_until(storage: str, name: str) -> tuple[int, str | None]:
    """``(step, checkpoint)`` of run ``name``'s latest registered checkpoint under ``storage``; ``(0, None)``
    before its first checkpoint."""
    try:
        result = ray.train.Result.from_path(f"{storage}/{name}")
    except RuntimeError:  # no such run folder, or no checkpoint registered in it yet
        return 0, None
    if result.checkpoint is None:
        return 0, None
    return int((result.metrics or {})["step"]), full_uri(storage, result.checkpoint.path)


def _absolute_paths(cfg: FairweatherConfig) -> FairweatherConfig:
    """Local folders as absolute paths: workers may run in another working directory."""

    def absolute(path: str) -> str:
        return path if has_scheme(path) else os.path.abspath(os.path.expanduser(path))

    runtime = dataclasses.replace(cfg.runtime, model_cache_dir=absolute(cfg.runtime.model_cache_dir))
    data = dataclasses.replace(cfg.data, tables=absolute(cfg.data.tables))
    return dataclasses.replace(cfg, runtime=runtime, data=data)


def _check_cpu_budget(cfg: FairweatherConfig) -> None:
    """On a private local Ray, refuse workers that cannot all be scheduled (Ray would wait forever)."""
    if not is_private_local(cfg.runtime):
        return
    scaling = cfg.train.scaling
    wanted = scaling.num_workers * scaling.cpus_per_worker
    check_cpu_budget(cfg.runtime, wanted, "train.scaling.num_workers x cpus_per_worker", spare=0)
    if scaling.use_gpu and not torch.cuda.is_available():
        raise FairweatherError("train.scaling.use_gpu=true but this machine has no CUDA device")


def default_lineage(cfg: FairweatherConfig) -> str:
    """The run name ``fairweather train`` gives this config now: the lineage its pseudo-labels are filed under.

    A pinned ``train.run_name`` is the name itself, so the tables are read only when the name is a fingerprint (the
    pipeline and the rounds ask for the lineage of a pinned config at every stage)."""
    if cfg.train.run_name:
        return run_name(cfg, {})
    return run_name(cfg, table_versions(TableStore(cfg.data.tables), ("paired", "pool", "labels")))


def _views(store: TableStore, lineage: str) -> dict[str, pa.Table]:
    views = {split: paired_view(store, split) for split in ("train", "val", "test")}
    if views["train"].num_rows == 0:
        raise FairweatherError(
            f"no labeled pairs in the 'paired' table's train split under {store.root}: run `fairweather synth` "
            "(generated pairs) or import a paired data set first"
        )
    views["real"] = real_view(store, lineage)
    return views


def _stopped_by_a_non_finite_loss(err: ray.train.WorkerGroupError) -> FairweatherError | None:
    """A run that failed because a loss became NaN/inf, as one clear error naming the term and the step.

    The step raises before the optimizer applies anything and before any checkpoint of that step is written, so
    every saved checkpoint is clean. Ray retries a failed worker ``train.max_failures`` times from the last
    checkpoint; a deterministic blow-up fails again at the same step, and this error is what remains.
    """
    for failure in err.worker_failures.values():
        if isinstance(failure, NonFiniteLossError) or "NonFiniteLossError" in str(failure):
            line = next((ln for ln in str(failure).splitlines() if "NonFiniteLossError:" in ln), str(failure))
            return FairweatherError(
                f"training stopped: {line.split('NonFiniteLossError:', 1)[-1].strip()} (no checkpoint of that "
                "step was saved; lower train.lr, raise train.warmup_steps or check the data)"
            )
    return None


def run_train(
    cfg: FairweatherConfig,
    logger: MetricLogger | None = None,
    *,
    until_step: int | None = None,
    step_hook: StepHook | None = None,
    callbacks: Sequence[RayTrainCallback] = (),
) -> TrainSummary:
    """Train until ``until_step`` (default: every round), log to ``logger`` (default: a new MLflow run).

    step_hook: see :data:`~fairweather.stages.train.worker.StepHook` (tests).
    callbacks: more Ray Train callbacks (a Tune trial's report to Tune), after the one that logs to ``logger``.
    """
    cfg = _absolute_paths(cfg)
    _check_cpu_budget(cfg)
    store = TableStore(cfg.data.tables)
    versions = table_versions(store)
    name, storage = run_name(cfg, versions), storage_path(cfg)
    views = _views(store, name)
    if views["real"].num_rows == 0 and cfg.train.real_batch_size:
        log.warning(
            "no labeled real images under %s: training on the pairs alone (run `fairweather label`)",
            store.root,
        )
    # A second command on the same run is refused (re-entrant: the rounds hold this lock already).
    with run_lock(cfg.runtime, "train", name, storage, what=f"training run {name}"):
        if logger is None:
            with stage_run(cfg, "train", name) as own:
                return _train(cfg, own, views, versions, name, storage, until_step, step_hook, callbacks)
        return _train(cfg, logger, views, versions, name, storage, until_step, step_hook, callbacks)


def _train(
    cfg: FairweatherConfig,
    logger: MetricLogger,
    views: dict[str, pa.Table],
    versions: dict[str, str],
    name: str,
    storage: str,
    until_step: int | None,
    step_hook: StepHook | None,
    callbacks: Sequence[RayTrainCallback],
) -> TrainSummary:
    start = time.perf_counter()
    train = cfg.train
    logger.set_tags({"fairweather.run_name": name, **{f"table.{k}": v for k, v in versions.items()}})
    rows = {key: view.to_pylist() for key, view in views.items()}
    prompt_context = (
        learn_prompts(cfg, rows, f"{storage}/{name}", logger) if cfg.loss.weights.wpl > 0 else None
    )
    job = WorkerJob(cfg, prompt_context, versions, until_step or train.total_steps, step_hook)
    named = {"paired": views["train"], "val": views["val"], "real": views["real"]}
    datasets = {key: ray.data.from_arrow(view) for key, view in named.items() if view.num_rows}
    for dataset in datasets.values():
        # Tiny indexes, read once per worker: their progress bars would only flood the training log.
        dataset.context.enable_progress_bars = False
    with ray_session(cfg):
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"job": job},
            scaling_config=ray.train.ScalingConfig(
                num_workers=train.scaling.num_workers,
                use_gpu=train.scaling.use_gpu,
                resources_per_worker={"CPU": train.scaling.cpus_per_worker},
                placement_strategy=train.scaling.placement_strategy,
                accelerator_type=train.scaling.accelerator_type,
            ),
            run_config=ray.train.RunConfig(
                name=name,
                storage_path=storage,
                checkpoint_config=ray.train.CheckpointConfig(num_to_keep=train.keep_checkpoints),
                failure_config=ray.train.FailureConfig(max_failures=train.max_failures),
                callbacks=[ReportToLogger(logger), *callbacks],
            ),
            datasets=datasets,
            # Every worker gets the whole (small) index and takes its own disjoint share per epoch
            # (fairweather.data.sampling): Ray's equal split would drop up to world_size - 1 images per epoch.
            dataset_config=ray.train.DataConfig(datasets_to_split=[]),
        )
        try:
            result = trainer.fit()
        except ray.train.WorkerGroupError as err:
            raise _stopped_by_a_non_finite_loss(err) or err from err
        if result.checkpoint is None:
            raise FairweatherError(f"training run {name} ended without a checkpoint")
        test = evaluate_checkpoint(cfg, result.checkpoint, rows["test"], logger)
    steps = int((result.metrics or {}).get("step", job.until_step))
    summary = TrainSummary(name, result.checkpoint.path, steps, round(time.perf_counter() - start, 1), test)
    print_test_table(summary.run_name, summary.checkpoint, test)
    return summary
