"""The metric-logger protocol: disk logger for tests, MLflow on a local SQLite store."""

from __future__ import annotations

from fairweather.contracts.config import load_config
from fairweather.contracts.metric_logger import DiskLogger, MetricLogger, NullLogger
from fairweather.stages.tracking import MLflowLogger, open_logger


def test_disk_and_null_loggers_follow_the_protocol(tmp_path):
    disk = DiskLogger(tmp_path / "run")
    for logger in (disk, NullLogger()):
        assert isinstance(logger, MetricLogger)
        logger.log_params({"a": 1})
        logger.log_metrics({"loss/sup": 0.5}, step=3)
        logger.close()
    assert disk.read_metrics()[0]["loss/sup"] == 0.5 and disk.read_metrics()[0]["step"] == 3
    assert disk.status == "FINISHED" and disk.params == {"a": 1}


def test_mlflow_logger_on_local_sqlite(tmp_path):
    cfg = load_config("smoke", [f"runtime.runs_dir={tmp_path}"])
    logger = open_logger(cfg, "unit-test", stage="test")
    assert isinstance(logger, MLflowLogger)
    logger.log_metrics({"x": 1.0, "nan": float("nan")}, step=1)
    artifact = tmp_path / "note.txt"
    artifact.write_text("hello")
    logger.log_artifact(artifact, "notes")
    logger.close()
    run = logger.client.get_run(logger.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"x": 1.0}  # non-finite values are dropped, not stored
    assert run.data.params["loss.weights.ps"] == "0.5" and run.data.tags["fairweather.stage"] == "test"
    assert (tmp_path / "mlflow.db").exists()
    assert [a.path for a in logger.client.list_artifacts(logger.run_id, "notes")] == ["notes/note.txt"]
    assert isinstance(open_logger(cfg, "rank1", rank=1, stage="test"), NullLogger)
