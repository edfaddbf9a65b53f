"""Embedded or remote runtime: a Ray session and the MLflow store, chosen by ``RuntimeConfig``.

With no cluster and no tracking server everything runs on a private local Ray with this machine's resources and
MLflow on a SQLite file under the project runs folder (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``).
"Private" means ``ray.init(address="local")``: ``address=None`` would join whatever cluster a ``ray start`` left in
``/tmp/ray/ray_current_cluster``. ``runtime.ray_address``, else ``RAY_ADDRESS`` (set by ``ray job submit``), joins
a cluster.

The private Ray listens on 127.0.0.1 only (GCS, raylet, object manager, workers, dashboard and runtime-env agents):
Ray binds its servers to the loopback interface exactly when its node IP is ``127.0.0.1``, and it takes that IP only
when ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is in the environment as Ray is imported (``ray.init``'s
``_node_ip_address="127.0.0.1"`` is turned back into the machine's reachable address). The CLI therefore runs
every command inside :func:`private_ray_on_loopback`, before any stage imports Ray. This module imports Ray only
inside :func:`ray_session`, so importing it early changes nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.runtime import RuntimeConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import check_writable
from fairweather.stages.infra.preflight import weights_env

log = logging.getLogger(__name__)


def runs_path(runtime: RuntimeConfig, *parts: str) -> Path:
    """An absolute path below the runs folder (created); a user error names ``runtime.runs_dir``."""
    path = Path(runtime.runs_dir).expanduser().resolve().joinpath(*parts)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # the runs folder (or a parent) is a file, or is not writable
        raise FairweatherError(
            f"runtime.runs_dir={runtime.runs_dir!r}: cannot create the folder {path} ({err.strerror or err})"
        ) from err
    return path


def remote_tracking_uri(runtime: RuntimeConfig) -> str | None:
    """``runtime.mlflow_tracking_uri``, else MLflow's own ``MLFLOW_TRACKING_URI`` (how ``cluster.yaml`` hands every
    node the cluster's server), else None."""
    return runtime.mlflow_tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or None


def tracking_uri(runtime: RuntimeConfig) -> str:
    """The configured MLflow tracking URI (:func:`remote_tracking_uri`), else a SQLite store under the runs folder."""
    return remote_tracking_uri(runtime) or f"sqlite:///{runs_path(runtime) / 'mlflow.db'}"


def artifact_root(runtime: RuntimeConfig) -> str | None:
    """Where a locally created experiment keeps artifacts (None: let a remote server decide)."""
    return None if remote_tracking_uri(runtime) else runs_path(runtime, "mlartifacts").as_uri()


def is_private_local(runtime: RuntimeConfig) -> bool:
    """True when stages start their own local Ray (no address configured, not inside ``ray job submit``)."""
    return runtime.ray_address is None and "RAY_ADDRESS" not in os.environ


#: Ray's switch for single-node operation (read once, when ``ray`` is imported): with ``0`` the node IP is
#: ``127.0.0.1`` and every server of a Ray started by this process binds the loopback interface only.
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: What a private local Ray's node IP is when :func:`private_ray_on_loopback` took effect.
LOOPBACK = "127.0.0.1"


@contextlib.contextmanager
def private_ray_on_loopback(runtime: RuntimeConfig | None) -> Iterator[bool]:
    """Run the body so that a private local Ray it starts listens on 127.0.0.1 only; yields whether this call set
    the environment for it.

    Effective only while Ray is not imported yet in this process (the CLI enters it before importing a stage): the
    variable is in the environment while the body imports Ray (and while Ray starts its daemons, which inherit
    it), and the previous environment is restored afterwards, so nothing else this process starts later sees
    it. ``runtime`` None (``sweep`` or ``restore`` without ``--config``): private unless ``RAY_ADDRESS`` is set.
    A config that joins a cluster is left alone: its nodes must reach each other.
    """
    private = "RAY_ADDRESS" not in os.environ if runtime is None else is_private_local(runtime)
    if not private or "ray" in sys.modules or SINGLE_NODE_ENV in os.environ:
        yield False  # a cluster, too late (Ray already imported), or the user's own setting
        return
    os.environ[SINGLE_NODE_ENV] = "0"
    try:
        yield True
    finally:
        os.environ.pop(SINGLE_NODE_ENV, None)


#: Ray Train settings for a private local Ray, set for the session in the environment Ray's daemons and workers
#: inherit (unless the user set them). Off: services that serve a shared cluster and cost a process start and CPU
#: on every training run, which a 2-core machine feels: the preemption watcher (an actor per run; a workstation is
#: not preempted) and the Prometheus metrics export (no dashboard or Prometheus runs here). The controller's poll
#: of its workers every 0.1 s instead of 2 s: a worker's ``ray.train.report`` waits for the next poll to take its
#: result (at 0.5 s, a 6-step run reporting every step spent 3 s in those waits), a run's end is seen sooner, and
#: over loopback a poll costs next to nothing.
PRIVATE_RAY_ENV = {
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    "RAY_TRAIN_METRICS_ENABLED": "0",
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.1",
}


@contextlib.contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the body (a variable already set keeps its value), then as before."""
    added = [key for key in values if key not in os.environ]
    os.environ.update({key: values[key] for key in added})
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


@contextlib.contextmanager
def ray_session(cfg: FairweatherConfig) -> Iterator[None]:
    """Connect to (or start) Ray for the duration of a stage; shut down only what this call started.

    Ray's worker logs come to this driver (``log_to_driver``): the CLI's run log holds them
    (:mod:`fairweather.stages.infra.console`), the console shows none.
    """
    import ray

    if ray.is_initialized():
        yield
        return
    runtime = cfg.runtime
    kwargs: dict = {"address": runtime.ray_address, "log_to_driver": True}
    if runtime.weights_cache:
        # Workers on other nodes do not inherit this driver's environment: hand them the weights cache too.
        kwargs["runtime_env"] = {"env_vars": weights_env(runtime.weights_cache)}
    private = is_private_local(runtime)
    if private:
        # A new cluster of our own: this machine's resources unless capped, no dashboard needed.
        kwargs.update(address="local", num_cpus=runtime.num_cpus, include_dashboard=False)
    with _environment(PRIVATE_RAY_ENV if private else {}):
        yield from _session(ray, kwargs, private)


def _session(ray, kwargs: dict, private: bool) -> Iterator[None]:
    ray.init(**kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())
    if private and (address := ray.util.get_node_ip_address()) != LOOPBACK:
        # Ray was imported before private_ray_on_loopback (a notebook, a test process): token auth still guards it.
        log.info(
            "the private Ray listens on every interface (node IP %s): Ray was imported too early", address
        )
    try:
        yield
    finally:
        ray.shutdown()


def check_output_locations(cfg: FairweatherConfig) -> None:
    """Prove every folder a stage writes to (tables, runs, model cache) is writable, before Ray or MLflow start.

    Raises :class:`fairweather.contracts.io.LocationError` naming the config key, so a bad ``data.tables`` is
    found in a second instead of at the first flush after all the work.
    """
    for key, uri in (
        ("data.tables", cfg.data.tables),
        ("runtime.runs_dir", cfg.runtime.runs_dir),
        ("runtime.model_cache_dir", cfg.runtime.model_cache_dir),
    ):
        check_writable(uri, key)
