"""Where things run and where results go: Ray address, MLflow store, local folders."""

from __future__ import annotations

from dataclasses import dataclass

from .loader import AT_LEAST_ONE, NON_NEGATIVE, check_ranges


@dataclass(frozen=True)
class RuntimeConfig:
    """Embedded by default: local Ray with this machine's resources, MLflow on SQLite under ``runs_dir``."""

    #: ``None`` starts a private local Ray; ``"auto"`` or ``"ray://head:10001"`` joins a cluster.
    ray_address: str | None = None
    #: CPUs for a local Ray (``None``: all of this machine's).
    num_cpus: int | None = None
    #: ``None`` uses ``$MLFLOW_TRACKING_URI`` when set (cluster.yaml sets it on every node), else
    #: ``sqlite:///<runs_dir>/mlflow.db``; set e.g. ``http://mlflow:5000`` for a shared server.
    mlflow_tracking_uri: str | None = None
    experiment: str = "fairweather"
    #: Project runs folder: MLflow store, artifacts, Ray Train runs, reports, locks, and (unless set) the generated
    #: data (``synth.out`` = ``<runs_dir>/data``, and ``data.pool`` / ``data.paired`` below it), the stage tables
    #: (``data.tables`` = ``<runs_dir>/tables``) and the model cache (``<runs_dir>/models``) live below it: setting
    #: only ``runtime.runs_dir`` moves them all (``load_config`` derives each path a file or override leaves unset).
    runs_dir: str = "runs"
    #: Where model references of the form ``tiny:<name>`` are materialised and cached. Unset in a config file:
    #: ``<runs_dir>/models`` (this default is that of ``runs_dir: runs``).
    model_cache_dir: str = "runs/models"
    #: One folder for every downloaded weight (``fairweather prefetch --cache DIR`` fills it): the CLI points
    #: ``HF_HOME`` and ``TORCH_HOME`` below it, so the VLM, encoders and metric files all load from there. On a
    #: cluster, a folder every node mounts. ``None``: the libraries' own caches (``~/.cache/huggingface``, ...).
    weights_cache: str | None = None
    #: Where Ray Train keeps runs and checkpoints (local folder or cloud URI). None: ``<runs_dir>/train``. With a
    #: remote ``ray_address`` it must be a URI every node can reach (``s3://``, ``gs://``, a shared mount).
    storage_path: str | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        check_ranges(self, num_cpus=AT_LEAST_ONE, seed=NON_NEGATIVE)
