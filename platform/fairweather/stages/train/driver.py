"""One Ray Train run (DDP) of the restoration network on labeled pairs and the real pool: each round of
``fairweather train`` and of a sweep trial (:mod:`~fairweather.stages.train.rounds`), and the supervised warm-up.

The driver reads the tables once (``paired`` by split; ``pool`` ⋈ ``labels`` ⋈ selected ``pseudo_labels``), runs
stage 1 (weather prompts) when ``L_wpl`` is on, and hands the views to a ``TorchTrainer`` as Ray Datasets; the
workers (``train_worker``) run the loop. Metrics reach MLflow through a Train callback on the controller, which Ray
places on the driver's node, so the embedded SQLite store has exactly one writer. At the end the EMA teacher of
the final checkpoint is scored on the synthetic ``test`` split against the untouched input, per weather.

Resume: the run is named ``train-<fingerprint>`` of everything that changes training (model, encoders, loss, train
settings, the tables' versions) under ``runtime.storage_path``. Rerunning the same command continues an interrupted
run from its last checkpoint; a changed config is a new run; ``train.run_name`` names one, ``train.new_run=true``
forces a fresh one. On a pinned run name a changed config resumes the run: each changed training setting is said on
the console and tagged on the run (``fairweather.resume_changes``), ``train.lr`` / ``train.weight_decay`` are put
into the restored optimizer (:func:`~fairweather.training.state.resume_training`), and a changed network
(``model.*``) is refused with one line before Ray Train starts (:func:`check_resume`). A new run starts from random
weights, or from another checkpoint's network with ``train.init_weights`` (fine-tuning; checked there too). A
checkpoint folder Ray Train never registered (written after its last registered checkpoint by a process that was
then killed, or half-copied onto a full disk) is removed before the run goes on (:func:`prune_unregistered`); the
steps replayed from the last checkpoint are not logged twice
(:class:`~fairweather.stages.train.callback.ReportToLogger`).

Failures: a worker that dies (OOM kill, node loss) is restarted from the last registered checkpoint up to
``train.max_failures`` times by this driver (:func:`_fit`; Ray Train's own retries are off, because its failure
policy retries every worker error, also the ones that fail the same way every time). Those stop at once with one
line and keep the last good checkpoint (:func:`stop_reason`): weights, a loss or the gradient gone NaN/inf, and a
checkpoint this config cannot resume (exit 2); a full disk (``ENOSPC``/``EDQUOT``, in our checkpoint writer or in
Ray's copy into the run folder; :class:`~fairweather.contracts.errors.JobFailedError`, exit 1). The MLflow runs
close FAILED.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import ray
import ray.train
import torch
from ray.data import ExecutionOptions
from ray.train.torch import TorchTrainer
from ray.train.v2.api.callback import RayTrainCallback

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.errors import FairweatherError, JobFailedError
from fairweather.contracts.io import DiskFullError, filesystem_for, full_uri, has_scheme
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.redact import redact_text
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view, real_view, table_versions
from fairweather.stages.infra.console import say
from fairweather.stages.infra.cpus import check_cpu_budget
from fairweather.stages.infra.locks import run_lock
from fairweather.stages.infra.runtime import is_private_local, ray_session, runs_path
from fairweather.stages.infra.tracking import stage_run, stamped_name
from fairweather.stages.train.callback import RESUME_TAG, ReportToLogger
from fairweather.stages.train.final_score import evaluate_checkpoint, print_test_table
from fairweather.stages.train.prompts import learn_prompts
from fairweather.stages.train.worker import StepHook, WorkerJob, train_loop_per_worker
from fairweather.training.checkpoint_file import CHECKPOINT_PREFIX
from fairweather.training.state import (
    STATE_FILE,
    CheckpointError,
    check_init_weights,
    config_changes,
    load_state,
)
from fairweather.training.step import NonFiniteError, NonFiniteLossError

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
    return stamped_name(name) if cfg.train.new_run else name


def registered_result(storage: str, name: str) -> ray.train.Result | None:
    """What Ray Train registered of run ``name`` under ``storage`` (its checkpoints and the latest one's metrics);
    None before its first checkpoint."""
    try:
        return ray.train.Result.from_path(f"{storage}/{name}")
    except RuntimeError:  # no such run folder, or no checkpoint registered in it yet
        return None


def trained_until(storage: str, name: str) -> tuple[int, str | None]:
    """``(step, checkpoint)`` of run ``name``'s latest registered checkpoint under ``storage``; ``(0, None)``
    before its first checkpoint."""
    result = registered_result(storage, name)
    if result is None or result.checkpoint is None:
        return 0, None
    return int((result.metrics or {})["step"]), full_uri(storage, result.checkpoint.path)


def _absolute_paths(cfg: FairweatherConfig) -> FairweatherConfig:
    """Local folders as absolute paths: workers may run in another working directory."""

    def absolute(path: str) -> str:
        return path if has_scheme(path) else os.path.abspath(os.path.expanduser(path))

    runtime = dataclasses.replace(cfg.runtime, model_cache_dir=absolute(cfg.runtime.model_cache_dir))
    data = dataclasses.replace(cfg.data, tables=absolute(cfg.data.tables))
    init = cfg.train.init_weights and absolute(cfg.train.init_weights)
    train = dataclasses.replace(cfg.train, init_weights=init)
    return dataclasses.replace(cfg, runtime=runtime, data=data, train=train)


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


def _stored_config(checkpoint: str) -> dict:
    """The (masked) config stored in checkpoint folder ``checkpoint``: a local file is memory-mapped, so only the
    config is read (the weights and optimizer state can be gigabytes)."""
    path = f"{checkpoint}/{STATE_FILE}"
    if not has_scheme(checkpoint) and os.path.isfile(path):
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return dict(state.get("config") or {}) if isinstance(state, dict) else {}
        except Exception:
            pass
    return dict(load_state(checkpoint).get("config") or {})


def check_resume(cfg: FairweatherConfig, storage: str, name: str) -> list[str]:
    """Before training resumes run ``name``: the ``key: old -> new`` lines of the training settings that differ
    from its latest checkpoint's config (the worker applies them), each said on the console; a changed network
    (``model.*``, ``loss.prompt_context_len``) raises CheckpointError in one line. Nothing to say for a new run."""
    step, checkpoint = trained_until(storage, name)
    if checkpoint is None:
        if cfg.train.init_weights:
            check_init_weights(_stored_config(cfg.train.init_weights), cfg)
            say(f"train: run {name} starts from the network of {cfg.train.init_weights}")
        return []
    changes, refusals = config_changes(_stored_config(checkpoint), cfg)
    if refusals:
        raise CheckpointError(
            f"cannot resume training run {name} at step {step}: the config changed what its checkpoint's network "
            f"was built with ({'; '.join(refusals)}); start a new run (train.new_run=true or another "
            "train.run_name) or restore those values"
        )
    for line in changes:
        say(f"train: run {name} resumes after step {step} with a changed setting, applied: {line}")
    return [f"after step {step}: {line}" for line in changes]


def prune_unregistered(storage: str, name: str) -> list[str]:
    """Remove the checkpoint folders of run ``name`` that Ray Train never registered; returns their names.

    Ray Train registers a checkpoint (``checkpoint_manager_snapshot.json``) after rank 0 copied it into the run
    folder: a process killed in between leaves a complete folder nobody knows, a copy that failed (a full disk)
    a half one. Neither is ever resumed from, and Ray's ``keep_checkpoints`` pruning does not see them. Call it
    only while no trainer of this run is alive (under the run's lock, before or after ``fit``).
    """
    folder = f"{storage}/{name}"
    result = registered_result(storage, name)
    registered = {
        os.path.basename(checkpoint.path.rstrip("/"))
        for checkpoint, _ in (result.best_checkpoints if result else [])
    }
    fs, path = filesystem_for(folder)
    removed = []
    for info in fs.get_file_info(pafs.FileSelector(path, allow_not_found=True)):
        if (
            info.type == pafs.FileType.Directory
            and info.base_name.startswith(CHECKPOINT_PREFIX)
            and info.base_name not in registered
        ):
            fs.delete_dir(info.path)
            removed.append(info.base_name)
    if removed:
        say(
            f"train: run {name}: removed {len(removed)} checkpoint folder(s) Ray Train had not registered "
            f"(written after its last registered checkpoint, or cut short): {', '.join(sorted(removed))}"
        )
    return sorted(removed)


#: The errors that fail the same way on every try, by class (Ray hands a worker's error over as its text).
_DETERMINISTIC = (NonFiniteLossError, NonFiniteError, CheckpointError)
#: How a full disk or quota reads in an error's text (our writer's DiskFullError, pyarrow's copy in Ray's upload).
_DISK_FULL_TEXT = (
    "No space left on device",
    "Disk quota exceeded",
    "[Errno 28]",
    "[errno 28]",
    "disk full while",
)


def _failure_texts(err: ray.train.WorkerGroupError) -> list[tuple[BaseException, str]]:
    """Each worker's error with its text (Ray's text holds the worker's traceback; chained causes appended)."""
    found = []
    for failure in err.worker_failures.values():
        texts, seen = [str(failure)], failure
        while (seen := seen.__cause__ or seen.__context__) is not None and len(texts) < 10:
            texts.append(f"{type(seen).__name__}: {seen}")
        found.append((failure, "\n".join(texts)))
    return found


def _error_line(text: str, cls: type) -> str | None:
    """The message of the last ``<module.>Cls: message`` line in ``text``."""
    marker = f"{cls.__name__}: "
    lines = [line.strip() for line in text.splitlines() if marker in line]
    return lines[-1].split(marker, 1)[1].strip() if lines else None


def stop_reason(err: ray.train.WorkerGroupError, name: str, storage: str) -> FairweatherError | None:
    """The one-line error of a worker failure a retry would only repeat; None for the others (a killed worker, a
    lost node), which the driver retries.

    A full disk, wherever it hit, is a :class:`JobFailedError` (exit 1); NaN/inf
    (:class:`~fairweather.training.step.NonFiniteError` and its ``NonFiniteLossError``) and a checkpoint that cannot
    be read or resumed (``CheckpointError``) are FairweatherErrors (exit 2: the settings or the checkpoint must
    change). Each names the last good checkpoint, which is kept.
    """
    failures = _failure_texts(err)
    step, checkpoint = trained_until(storage, name)
    kept = (
        f"the last good checkpoint is kept (step {step}: {redact_text(checkpoint)})"
        if checkpoint
        else "no checkpoint had been saved yet"
    )
    for failure, text in failures:
        code = getattr(failure, "errno", None)
        if (
            isinstance(failure, DiskFullError)
            or code in (errno.ENOSPC, errno.EDQUOT)
            or any(marker in text for marker in _DISK_FULL_TEXT)
        ):
            detail = next(
                line
                for line in [*text.splitlines(), str(failure)]
                if any(marker in line for marker in _DISK_FULL_TEXT) or line == str(failure)
            )
            detail = redact_text(detail.strip().split("Error: ", 1)[-1][:200])
            return JobFailedError(
                f"training run {name} stopped: the disk is full ({detail}); {kept}, no partial checkpoint is "
                "left; free some space and rerun the same command to resume"
            )
    for failure, text in failures:
        for cls in _DETERMINISTIC:
            line = str(failure).strip() if isinstance(failure, cls) else _error_line(text, cls)
            if line is None:
                continue
            line = redact_text(line.splitlines()[0] if line else cls.__name__)
            if issubclass(cls, NonFiniteError):
                return FairweatherError(
                    f"training stopped: {line} (nothing of that step was saved; {kept}; lower train.lr, raise "
                    "train.warmup_steps or check the data)"
                )
            return FairweatherError(f"training run {name} stopped: {line}")
    return None


def _first_line(err: ray.train.WorkerGroupError) -> str:
    """A short description of a worker failure for the retry line: the last line of the first worker's text."""
    for _, text in _failure_texts(err):
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if lines:
            return redact_text(lines[-1][:200])
    return type(err).__name__


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
        learn_prompts(cfg, rows, f"{storage}/{name}", logger) if cfg.loss.weights.on("wpl") else None
    )
    job = WorkerJob(cfg, prompt_context, versions, until_step or train.total_steps, step_hook)
    if changes := check_resume(cfg, storage, name):  # before Ray Train starts: a refusal costs nothing
        logger.set_tags({RESUME_TAG: "; ".join(changes)[:5000]})
    named = {"paired": views["train"], "val": views["val"], "real": views["real"]}
    # The datasets inside the session: ray.data.from_arrow with no Ray up would start a default one (all CPUs, a
    # dashboard, none of the private Ray's settings) that outlives this run.
    with ray_session(cfg):
        datasets = {key: ray.data.from_arrow(view) for key, view in named.items() if view.num_rows}
        for dataset in datasets.values():
            # Tiny indexes, read once per worker: their progress bars would only flood the training log.
            dataset.context.enable_progress_bars = False
        result = _fit(cfg, job, datasets, logger, name, storage, callbacks)
        if result.checkpoint is None:
            raise FairweatherError(f"training run {name} ended without a checkpoint")
        test = evaluate_checkpoint(cfg, result.checkpoint, rows["test"], logger)
    steps = int((result.metrics or {}).get("step", job.until_step))
    summary = TrainSummary(name, result.checkpoint.path, steps, round(time.perf_counter() - start, 1), test)
    print_test_table(summary.run_name, summary.checkpoint, test)
    return summary


def _fit(
    cfg: FairweatherConfig,
    job: WorkerJob,
    datasets: dict[str, ray.data.Dataset],
    logger: MetricLogger,
    name: str,
    storage: str,
    callbacks: Sequence[RayTrainCallback],
) -> ray.train.Result:
    """``TorchTrainer.fit`` of run ``name``, restarted from its last registered checkpoint after a worker failure
    up to ``train.max_failures`` times (-1: always); a failure a retry would repeat stops at once
    (:func:`stop_reason`). Unregistered checkpoint folders are removed before each try and after a failure."""
    train = cfg.train
    failures = 0
    while True:
        prune_unregistered(storage, name)
        registered = registered_result(storage, name)
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
                # Retries are this loop's: Ray's failure policy would retry a NaN or a full disk too.
                failure_config=ray.train.FailureConfig(max_failures=0),
                # A fresh callback per try: it reads which steps the run has logged already, and logs the
                # resumed checkpoint's report where a killed driver registered it without logging it.
                callbacks=[ReportToLogger(logger, registered and registered.metrics), *callbacks],
            ),
            datasets=datasets,
            # Every worker gets the whole (small) index and takes its own disjoint share per epoch
            # (fairweather.data.sampling): Ray's equal split would drop up to world_size - 1 images per epoch.
            # Explicit execution options: Ray's defaults for them set the deprecated exclude_resources (a
            # RayDeprecationWarning in every run).
            dataset_config=ray.train.DataConfig(datasets_to_split=[], execution_options=ExecutionOptions()),
        )
        try:
            return trainer.fit()
        except ray.train.WorkerGroupError as err:
            stop = stop_reason(err, name, storage)
            prune_unregistered(storage, name)
            if stop is not None:
                raise stop from err
            failures += 1
            if 0 <= train.max_failures < failures:
                raise
            limit = "" if train.max_failures < 0 else f" {failures} of {train.max_failures}"
            say(
                f"train: run {name}: a worker failed ({_first_line(err)}); restarting from the last registered "
                f"checkpoint (retry{limit})"
            )
