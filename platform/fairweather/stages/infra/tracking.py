"""MLflow behind the metric-logger protocol; the only module that imports MLflow.

Uses an explicit ``MlflowClient`` bound to one tracking URI (no process-global ``mlflow.set_tracking_uri``), so
several stages, Ray workers and Tune trials in one process cannot log into each other's runs.

:func:`open_logger` (or the :func:`stage_run` context manager around it) is the one place a stage's run is opened,
so every stage gets the same record: the flattened config as params, the resolved config as ``config.yaml``, the
package version, code commit, profile, stage, host and PID as tags, and the repair of runs left RUNNING by a killed
process of the same stage.

Credentials: params, ``config.yaml`` and every URL this module prints are masked
(:mod:`fairweather.contracts.redact`); MLflow's own "View run ... at: <tracking URI>" console lines, which would
show ``https://user:password@host``, are switched off through MLflow's ``MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT``
and replaced by a masked log line. Several commands starting at once on a fresh runs folder create the SQLite
store's schema one at a time, under a file lock beside the database (:func:`mlflow_client`).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import logging
import math
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import fairweather
from fairweather.contracts.config import FairweatherConfig, flatten, to_dict, to_yaml
from fairweather.contracts.metric_logger import DiskLogger, MetricLogger, NullLogger
from fairweather.contracts.redact import redact, redact_text
from fairweather.stages.infra.runtime import artifact_root, tracking_uri

log = logging.getLogger(__name__)

# MLflow prints "View run <name> at: <tracking URI>/#/..." when a run on a tracking server ends, credentials
# included; its own switch turns that off in this process and every process it starts (Ray workers, Tune trials).
# MLflowLogger.close logs the same link masked instead.
os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"

#: SQLite stores whose schema this process has seen created (MLflow keeps one store object per URI and process).
_READY_STORES: set[str] = set()
_READY_LOCK = threading.Lock()


def _sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///<path>`` tracking URI; None for any other store (or an in-memory one)."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri.removeprefix("sqlite:///").split("?", 1)[0]
    return None if path in ("", ":memory:") else Path(path)


def mlflow_client(uri: str) -> MlflowClient:
    """An ``MlflowClient`` for ``uri``. The first one of a SQLite store in this process is made under an exclusive
    lock on ``<db>.lock``: creating the client creates (or migrates) the schema, and two processes doing that at
    once on a fresh file fail ("duplicate column name: step", "table latest_metrics already exists")."""
    path = _sqlite_path(uri)
    if path is None or uri in _READY_STORES:
        return MlflowClient(tracking_uri=uri)
    with _READY_LOCK, open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, also if this process dies
        made = MlflowClient(tracking_uri=uri)
        _READY_STORES.add(uri)
    return made


def run_url(uri: str, experiment_id: str, run_id: str) -> str | None:
    """The masked address of a run in the UI of tracking server ``uri`` (None: not a server, e.g. SQLite)."""
    if not uri.startswith(("http://", "https://")):
        return None
    return redact_text(f"{uri.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}")


#: MLflow rejects param values longer than this.
_MAX_PARAM_LEN = 6000
#: Tags that identify the process owning a run; the stale-run repair reads them.
HOST_TAG, PID_TAG, STAGE_TAG = "fairweather.host", "fairweather.pid", "fairweather.stage"
#: A run's identity for find-or-create (resumed runs log into the run they started); MLflow's own nesting tag.
KEY_TAG, PARENT_TAG = "fairweather.key", "mlflow.parentRunId"
#: How a run ended when not by its own process (marked by the next run, closed with its parent, stopped early).
END_TAG = "fairweather.end"
#: On a run reopened by its key: the ``fairweather.end`` it had before (e.g. "its process was gone; ...").
RESUMED_TAG = "fairweather.resumed_after"
#: On a run whose work is being stopped on purpose, as a normal end (a trial the sweep's scheduler stops): a run
#: nested below it that then fails, having lost its workers, ends FINISHED (:meth:`MLflowLogger.close`).
STOPPED_TAG = "fairweather.stopped"


def _experiment_id(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    """The id of experiment ``name``, created when missing; another process creating it at the same moment wins
    the race and its experiment is used."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException as err:
        found = client.get_experiment_by_name(name)
        if err.error_code != "RESOURCE_ALREADY_EXISTS" or found is None:
            raise
        return found.experiment_id


class MLflowLogger:
    """One MLflow run. ``run_id`` identifies it in the UI and in the ``metrics`` table.

    With ``key``, the run is found again instead of created twice: an existing run of the experiment tagged with
    that key (and the same parent) is reopened (status RUNNING); that is how a resumed training, round, Tune trial or
    pipeline stage logs into the run it started. ``tags`` are set when the run is created, so a concurrent
    find-or-create never sees a keyed run without its key.
    """

    def __init__(
        self,
        uri: str,
        experiment: str,
        run_name: str,
        artifact_location: str | None = None,
        *,
        key: str | None = None,
        parent_run_id: str | None = None,
        tags: Mapping[str, str] | None = None,
    ):
        self.client = mlflow_client(uri)
        self.experiment_id = _experiment_id(self.client, experiment, artifact_location)
        all_tags = dict(tags or {})
        if key is not None:
            all_tags[KEY_TAG] = key
        if parent_run_id is not None:
            all_tags[PARENT_TAG] = parent_run_id
        existing = self._find(key, parent_run_id) if key is not None else None
        self.resumed = existing is not None
        if existing is not None:
            self.run_id = existing
            self.client.update_run(existing, status="RUNNING")
            self.set_tags(all_tags)
            # A reopened run is alive again: how it ended before (killed, marked by the next run) is history.
            ended = self.client.get_run(existing).data.tags.get(END_TAG)
            if ended is not None:
                self.set_tags({RESUMED_TAG: ended})
                self.client.delete_tag(existing, END_TAG)
        else:
            self.run_id = self.client.create_run(
                self.experiment_id, run_name=run_name, tags=all_tags
            ).info.run_id

    def _find(self, key: str, parent_run_id: str | None) -> str | None:
        """The oldest run of this experiment tagged ``key`` under ``parent_run_id`` (None: a top-level run)."""
        where = f"tags.`{KEY_TAG}` = '{key}'"
        if parent_run_id is not None:
            where += f" and tags.`{PARENT_TAG}` = '{parent_run_id}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=where, order_by=["start_time ASC"])
        runs = [r for r in runs if parent_run_id is not None or PARENT_TAG not in r.data.tags]
        return runs[0].info.run_id if runs else None

    @classmethod
    def attach(cls, uri: str, run_id: str) -> MLflowLogger:
        """A logger for an existing run (no new run is created)."""
        logger = cls.__new__(cls)
        logger.client, logger.run_id, logger.resumed = mlflow_client(uri), run_id, True
        logger.experiment_id = logger.client.get_run(run_id).info.experiment_id
        return logger

    def child(self, run_name: str, key: str) -> MLflowLogger:
        """A nested run (tag ``mlflow.parentRunId``), found again by ``key`` under this parent; it inherits the
        parent's process tags so the stale-run repair covers it too."""
        parent_tags = self.client.get_run(self.run_id).data.tags
        inherited = {k: parent_tags[k] for k in (STAGE_TAG, "fairweather.profile") if k in parent_tags}
        return MLflowLogger(
            self.client.tracking_uri,
            self.client.get_experiment(self.experiment_id).name,
            run_name,
            key=key,
            parent_run_id=self.run_id,
            tags={**inherited, HOST_TAG: socket.gethostname(), PID_TAG: str(os.getpid())},
        )

    def __reduce__(self) -> tuple:
        # Pickled into a Ray actor (the Train controller that runs the logging callback): re-attach there to the
        # same run instead of shipping a client with open database connections.
        return (MLflowLogger.attach, (self.client.tracking_uri, self.run_id))

    def log_params(self, params: Mapping[str, Any]) -> None:
        # Credentials (secret keys' values, URI userinfo) never reach the tracking server.
        batch = [Param(k, str(redact(v, k))[:_MAX_PARAM_LEN]) for k, v in params.items()]
        for start in range(0, len(batch), 100):  # MLflow's batch limit is 100 params
            self.client.log_batch(self.run_id, params=batch[start : start + 100])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if math.isfinite(float(v))]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.client.log_batch(self.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])

    def close(self, status: str = "FINISHED") -> None:
        """End the run with ``status``; a run that failed or was killed ends its nested runs still RUNNING the
        same way (tag ``fairweather.end``), so an error or Ctrl-C never leaves a child RUNNING.

        A failure under a run tagged ``fairweather.stopped`` (its parent's or any ancestor's) is that stop, a normal
        end: the run ends FINISHED. A failure does not overwrite an end another process has already given the run.
        Both matter when the sweep's scheduler stops a trial: the driver tags the trial, ends its trainer and ends
        the trial's rounds FINISHED, while the round that lost its trainer closes itself, before or after that."""
        if status != "FINISHED":
            run = self.client.get_run(self.run_id)
            if run.info.status != "RUNNING":
                return
            if stopper := self._stopped_by(run):
                # Tagged before it ends: whoever reads this run FINISHED also reads why (the trial's tidy skips
                # runs that already ended, so it would not add the tag after this close).
                self.set_tags({END_TAG: f"stopped early by {stopper}: a normal end, not a failure"})
                self.client.set_terminated(self.run_id, "FINISHED")
                return
            close_descendants(self, status, {END_TAG: f"its parent run ended {status}"})
        self.client.set_terminated(self.run_id, status)
        if url := run_url(self.client.tracking_uri, self.experiment_id, self.run_id):
            log.info("MLflow run %s (%s): %s", self.run_id, status, url)

    def _stopped_by(self, run: Any) -> str | None:
        """The ``fairweather.stopped`` of the nearest run above ``run`` (its parent, the parent's parent, ...) that
        carries it (who stopped it), or None."""
        while parent := run.data.tags.get(PARENT_TAG):
            run = self.client.get_run(parent)
            if STOPPED_TAG in run.data.tags:
                return run.data.tags[STOPPED_TAG]
        return None


def descendants(logger: MetricLogger) -> list[Any]:
    """The MLflow runs nested under ``logger``'s run, at any depth (children first); empty for other loggers."""
    if not isinstance(logger, MLflowLogger):
        return []
    found, queue = [], [logger.run_id]
    while queue:
        where = f"tags.`{PARENT_TAG}` = '{queue.pop(0)}'"
        runs = logger.client.search_runs([logger.experiment_id], filter_string=where)
        queue += [run.info.run_id for run in runs]
        found += runs
    return found


def close_descendants(
    logger: MetricLogger,
    status: str,
    tags: Mapping[str, str],
    *,
    replace: tuple[str, ...] = ("RUNNING",),
) -> list[str]:
    """Set ``tags`` on the runs nested under ``logger``'s run whose status is in ``replace`` and end them with
    ``status``; returns their ids (none for a logger that is not MLflow's)."""
    ended = []
    for run in descendants(logger):
        if run.info.status in replace:
            assert isinstance(logger, MLflowLogger)
            logger.client.log_batch(run.info.run_id, tags=[RunTag(k, str(v)) for k, v in tags.items()])
            logger.client.set_terminated(run.info.run_id, status)
            ended.append(run.info.run_id)
    return ended


#: Tag of a nested run that trained some steps of its parent's run: ``<first>-<last>`` (a training round).
STEPS_TAG = "fairweather.steps"


def share_with_descendants(logger: MetricLogger, params: Mapping[str, Any], metric: str) -> None:
    """Give the runs nested under ``logger``'s run the ``params`` they lack, and those tagged with the steps they
    trained (``fairweather.steps``) the points of ``logger``'s ``metric`` within those steps that they lack, so each
    can be compared on its own (a sweep trial's rounds: the sampled values and the objective)."""
    if not isinstance(logger, MLflowLogger):
        return
    client = logger.client
    history = client.get_metric_history(logger.run_id, metric)
    for run in descendants(logger):
        run_id = run.info.run_id
        missing = [Param(k, str(v)) for k, v in params.items() if k not in run.data.params]
        if missing:
            _log_params_once(client, run_id, missing)
        first, _, last = run.data.tags.get(STEPS_TAG, "").partition("-")
        if not (first.isdigit() and last.isdigit()):
            continue
        have = {point.step for point in client.get_metric_history(run_id, metric)}
        points = [m for m in history if int(first) <= m.step <= int(last) and m.step not in have]
        if points:
            client.log_batch(run_id, metrics=points)


def _log_params_once(client: MlflowClient, run_id: str, params: list[Param]) -> None:
    """Log ``params`` that ``run_id`` lacked when it was read. Two writers may tidy the same run at once (a sweep's
    driver and the trial's own task when ASHA stops it): the store refuses the second insert of a key, which is no
    error when the other writer logged the same values."""
    try:
        client.log_batch(run_id, params=params)
    except MlflowException:
        logged = client.get_run(run_id).data.params
        if any(logged.get(param.key) != param.value for param in params):
            raise


def logged_steps(logger: MetricLogger) -> dict[str, int]:
    """``{metric: the last step logged}`` of ``logger``'s run so far (a resumed run's replayed steps are not logged
    again): the latest metrics of an MLflow run, the records of a DiskLogger, nothing for other loggers."""
    if isinstance(logger, MLflowLogger):
        metrics = logger.client.get_run(logger.run_id).data.to_proto().metrics
        return {metric.key: int(metric.step) for metric in metrics}
    if isinstance(logger, DiskLogger):
        steps: dict[str, int] = {}
        for record in logger.read_metrics():
            step = int(record.get("step") or 0)
            for key in record.keys() - {"step", "time"}:
                steps[key] = max(steps.get(key, step), step)
        return steps
    return {}


@functools.cache
def code_commit() -> str | None:
    """The git commit of the package source (``+dirty`` when it has uncommitted changes), or None.

    None outside a git checkout, and also for an install whose files git does not track (a wheel inside a venv
    that happens to sit in a checkout), so the tag never names a commit the code did not come from.
    """
    package = Path(fairweather.__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=10)

    try:
        if git("ls-files", "--error-unmatch", "__init__.py").returncode != 0:
            return None
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        dirty = git("diff", "--quiet", "HEAD", "--", ".").returncode != 0
    except (OSError, subprocess.SubprocessError):  # no git on this machine
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def stamped_name(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<6 hex>``: a run name in time order that two runs started in the same second (by
    one process or by several) do not share; tables, report folders and Ray Train storage are keyed by it."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def _process_gone(pid: int) -> bool:
    """True when no process with ``pid`` exists on this host (a reused PID reads as alive: the safe side)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # exists, owned by someone else
        return False
    return False


def repair_stale_runs(client: MlflowClient, experiment_id: str, stage: str) -> list[str]:
    """Mark KILLED the RUNNING runs of ``stage`` whose recorded process, on this host, no longer exists.

    A process killed by SIGKILL or a lost node cannot close its own run; without this it would stay RUNNING in the
    UI forever. Runs of other hosts are left alone (their PIDs cannot be checked from here). Returns the run ids.
    """
    host = socket.gethostname()
    running = client.search_runs(
        [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`{STAGE_TAG}` = '{stage}'"
    )
    repaired = []
    for run in running:
        tags = run.data.tags
        pid = tags.get(PID_TAG, "")
        if tags.get(HOST_TAG) == host and pid.isdigit() and _process_gone(int(pid)):
            client.set_tag(run.info.run_id, "fairweather.end", "its process was gone; marked by the next run")
            client.set_terminated(run.info.run_id, "KILLED")
            repaired.append(run.info.run_id)
    if repaired:
        log.warning("marked %d %s run(s) KILLED whose process was gone: %s", len(repaired), stage, repaired)
    return repaired


def open_logger(
    cfg: FairweatherConfig,
    run_name: str | None = None,
    *,
    rank: int = 0,
    stage: str,
    key: str | None = None,
) -> MetricLogger:
    """A logger for one stage run: MLflow on rank 0, a no-op elsewhere. The caller closes it (or uses
    :func:`stage_run`). The run carries the config (params + ``config.yaml``) and the tags listed above.

    key: find-or-create (see :class:`MLflowLogger`): a rerun of the same work reopens its run instead of adding one.
    """
    if rank != 0:
        return NullLogger()
    # Runs of this stage left RUNNING by a killed process first become KILLED; a keyed rerun then reopens its own.
    store = mlflow_client(tracking_uri(cfg.runtime))
    experiment = store.get_experiment_by_name(cfg.runtime.experiment)
    if experiment is not None:
        repair_stale_runs(store, experiment.experiment_id, stage)
    tags = {
        STAGE_TAG: stage,
        "fairweather.profile": cfg.profile,
        "fairweather.version": fairweather.__version__,
        HOST_TAG: socket.gethostname(),
        PID_TAG: str(os.getpid()),
    }
    if commit := code_commit():
        tags["fairweather.commit"] = commit
    logger = MLflowLogger(
        tracking_uri(cfg.runtime),
        cfg.runtime.experiment,
        run_name or stamped_name(stage),
        artifact_location=artifact_root(cfg.runtime),
        key=key,
        tags=tags,
    )
    if logger.resumed:
        return logger  # params and config.yaml are already there (params cannot change in MLflow)
    logger.log_params(flatten(cfg))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.yaml"
        path.write_text(to_yaml(redact(to_dict(cfg))))
        logger.log_artifact(path)
    return logger


@contextlib.contextmanager
def stage_run(
    cfg: FairweatherConfig, stage: str, run_name: str | None = None, *, rank: int = 0, key: str | None = None
) -> Iterator[MetricLogger]:
    """Open a stage's run (:func:`open_logger`) and close it as :func:`closing` does."""
    with closing(open_logger(cfg, run_name, rank=rank, stage=stage, key=key)) as logger:
        yield logger


@contextlib.contextmanager
def closing(logger: MetricLogger) -> Iterator[MetricLogger]:
    """Close ``logger`` FINISHED, FAILED on an error, KILLED on Ctrl-C (e.g. ``with closing(parent.child(...))``)."""
    try:
        yield logger
    except KeyboardInterrupt:
        logger.close("KILLED")
        raise
    except BaseException:
        logger.close("FAILED")
        raise
    logger.close()


def child_run_ids(parent: MetricLogger) -> dict[str, str]:
    """``{key: run_id}`` of the MLflow runs nested under ``parent`` (empty for a logger that is not MLflow's)."""
    if not isinstance(parent, MLflowLogger):
        return {}
    where = f"tags.`{PARENT_TAG}` = '{parent.run_id}'"
    runs = parent.client.search_runs([parent.experiment_id], filter_string=where, order_by=["start_time ASC"])
    return {run.data.tags[KEY_TAG]: run.info.run_id for run in runs if KEY_TAG in run.data.tags}


#: Where the printed ``mlflow ui`` command serves the UI.
UI_ADDRESS = "http://127.0.0.1:5000"


#: Experiment tag prefix of MLflow's saved (shared) views of the experiment page: search, sort, chart layout.
VIEW_TAG_PREFIX = "mlflow.sharedViewState."


def sweep_view(
    parent: MetricLogger, key: str, title: str, metric: str, params: Sequence[str], mode: str = "max"
) -> str | None:
    """Save an MLflow view of a sweep's trials on the experiment (tag ``mlflow.sharedViewState.<key>``, rewritten
    by a rerun); returns ``key`` (None without MLflow).

    The view, opened by :func:`ui_links`'s URL (``viewStateShareKey``) and listed in the experiment page's views
    menu as ``title``: the runs nested under ``parent`` (the trials), best ``metric`` first, and in the chart view a
    section of its own holding one parallel-coordinates chart of ``metric`` against every one of ``params``.
    MLflow's compare page cannot be opened that way: it plots the first three differing params (alphabetically)
    against the first shared metric, with no URL parameter to choose them.
    """
    if not isinstance(parent, MLflowLogger):
        return None
    section = f"fairweather-{key}"
    state = {
        "searchFilter": f"tags.`{PARENT_TAG}` = '{parent.run_id}'",
        "orderByKey": f"metrics.`{metric}`",
        "orderByAsc": mode == "min",
        "compareRunCharts": [
            {
                "uuid": f"{section}-parallel",
                "type": "PARALLEL",
                "runsCountToCompare": 100,
                "metricSectionId": section,
                "deleted": False,
                "isGenerated": False,
                "selectedParams": list(params),
                "selectedMetrics": [metric],
                "showAllRuns": True,
            }
        ],
        "compareRunSections": [
            {
                "uuid": section,
                "name": title,
                "display": True,
                "isReordered": False,
                "deleted": False,
                "isGenerated": False,
                "columns": 1,
                "cardHeight": 420,
            }
        ],
        "isAccordionReordered": True,
    }
    now = int(time.time() * 1000)
    envelope = {"name": title, "createdAt": now, "updatedAt": now, "state": json.dumps(state)}
    parent.client.set_experiment_tag(parent.experiment_id, VIEW_TAG_PREFIX + key, json.dumps(envelope))
    return key


def mlflow_command() -> str:
    """``mlflow`` when the shell finds it, else the path of the one installed beside this Python (a virtual
    environment that is not activated: ``.venv/bin/mlflow``), so the printed command runs as pasted."""
    beside = Path(sys.executable).parent / "mlflow"
    if shutil.which("mlflow") or not beside.exists():
        return "mlflow"
    try:
        return str(beside.relative_to(Path.cwd()))
    except ValueError:
        return str(beside)


def ui_links(
    cfg: FairweatherConfig, parent: MetricLogger, run_ids: list[str], view: str | None = None
) -> tuple[str, str] | None:
    """How to look at ``run_ids`` side by side: the ``mlflow ui`` command (or the server's address) and a URL.
    With ``view`` (:func:`sweep_view`), the URL opens the experiment page's chart view on that saved view; else
    MLflow's compare page of ``run_ids`` (parallel coordinates, scatter, params/metrics table). MLflow 3 opens in
    GenAI mode, which lists no runs: ``workflowType=machine_learning`` switches to the experiment view. None
    without MLflow. Both are printed: credentials in the tracking URI (``https://user:password@host``) are masked."""
    if not isinstance(parent, MLflowLogger):
        return None
    uri = tracking_uri(cfg.runtime)
    if uri.startswith(("http://", "https://")):
        base, command = uri.rstrip("/"), f"open {uri.rstrip('/')} (the tracking server)"
    else:
        base = UI_ADDRESS
        command = f"{mlflow_command()} ui --backend-store-uri {uri} --host 127.0.0.1 --port {UI_ADDRESS.rsplit(':', 1)[1]}"
    if view is not None:
        # The view's key is no secret (redact_text would mask it: the parameter's name ends in "Key").
        query = urllib.parse.urlencode({"compareRunsMode": "CHART", "viewStateShareKey": view})
        page = redact_text(f"{base}/?workflowType=machine_learning#/experiments/{parent.experiment_id}/runs")
        return redact_text(command), f"{page}?{query}"
    runs = urllib.parse.quote(json.dumps(run_ids, separators=(",", ":")))
    experiments = urllib.parse.quote(json.dumps([parent.experiment_id]))
    return (
        redact_text(command),
        redact_text(
            f"{base}/?workflowType=machine_learning#/compare-runs?runs={runs}&experiments={experiments}"
        ),
    )
