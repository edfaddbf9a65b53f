"""Embedded or remote runtime: a Ray session and the MLflow store, chosen by ``RuntimeConfig``.

With no cluster and no tracking server everything runs on a private local Ray with this machine's resources and
MLflow on a SQLite file under the project runs folder (``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``).
"Private" means ``ray.init(address="local")``: ``address=None`` would join whatever cluster a ``ray start`` left in
``/tmp/ray/ray_current_cluster``. ``runtime.ray_address``, else ``RAY_ADDRESS`` (set by ``ray job submit``), joins
a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import ray

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


@contextlib.contextmanager
def ray_session(cfg: FairweatherConfig) -> Iterator[None]:
    """Connect to (or start) Ray for the duration of a stage; shut down only what this call started."""
    if ray.is_initialized():
        yield
        return
    runtime = cfg.runtime
    kwargs: dict = {"address": runtime.ray_address, "log_to_driver": True}
    if runtime.weights_cache:
        # Workers on other nodes do not inherit this driver's environment: hand them the weights cache too.
        kwargs["runtime_env"] = {"env_vars": weights_env(runtime.weights_cache)}
    if is_private_local(runtime):
        # A new cluster of our own: this machine's resources unless capped, no dashboard needed.
        kwargs.update(address="local", num_cpus=runtime.num_cpus, include_dashboard=False)
    ray.init(**kwargs)
    log.info("Ray resources: %s", ray.cluster_resources())
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
