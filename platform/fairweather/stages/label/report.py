"""What a labeling run records besides counts: failures by reason, the failed files, rating statistics, a plot.

Everything goes through the metric-logger protocol (MLflow in production), so a user can trust a run without
opening the tables: ``failed.<stage>.<reason>`` and ``listing_skipped.<reason>`` metrics, ``label/failed_files.csv``,
``r_vlm_mean.<weather>``, ``rating_complete_share`` and ``label/r_vlm_by_weather.png``.
"""

from __future__ import annotations

import csv
import math
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pyarrow as pa
from matplotlib.figure import Figure

from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.vocab import WEATHER_CLASSES


def metric_name(text: str) -> str:
    """A string MLflow accepts as (part of) a metric name: other characters become ``_``."""
    return re.sub(r"[^A-Za-z0-9_.\-/ ]", "_", text)


def weather_of(labels: pa.Table) -> list[str]:
    """Per row: the folder/manifest hint, else the VLM's own weather class."""
    hints, parsed = labels.column("weather_hint").to_pylist(), labels.column("weather").to_pylist()
    return [hint or weather for hint, weather in zip(hints, parsed, strict=True)]


def _ordered(classes: list[str]) -> list[str]:
    return [c for c in WEATHER_CLASSES if c in classes] + sorted(set(classes) - set(WEATHER_CLASSES))


def rating_stats(labels: pa.Table) -> dict[str, float]:
    """``r_vlm_mean.<weather>`` over complete ratings, and ``rating_complete_share`` (NaN-free; empty -> {})."""
    if labels.num_rows == 0:
        return {}
    complete = labels.column("rating_complete").to_pylist()
    stats = {"rating_complete_share": sum(complete) / len(complete)}
    classes, values = weather_of(labels), labels.column("r_vlm").to_pylist()
    for name in _ordered(classes):
        chosen = [v for v, c, ok in zip(values, classes, complete, strict=True) if c == name and ok]
        if chosen:
            stats[f"r_vlm_mean.{metric_name(name)}"] = sum(chosen) / len(chosen)
    return stats


def plot_r_vlm(labels: pa.Table, path: Path) -> Path:
    """Histogram of r_vlm per weather class (the folder/manifest hint, else the VLM's own class) -> PNG."""
    classes, values = weather_of(labels), labels.column("r_vlm").to_pylist()
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    bins = [1 + 0.2 * i for i in range(21)]
    for name in _ordered(classes):
        chosen = [v for v, c in zip(values, classes, strict=True) if c == name and math.isfinite(v)]
        ax.hist(chosen, bins=bins, alpha=0.5, label=f"{name} (n={len(chosen)})")
    ax.set(xlabel="r_vlm (1 = bad, 5 = excellent)", ylabel="images", title="VLM rating per weather class")
    if classes:
        ax.legend()
    fig.savefig(path)
    return path


def log_label_report(
    logger: MetricLogger,
    labels: pa.Table,
    failures: list[dict[str, str]],
    failures_by_reason: Mapping[str, int],
    listing_skipped: Mapping[str, list[str]],
) -> None:
    """Log the run's failure and rating metrics and its artifacts (failed files CSV, r_vlm plot).

    labels: this labeler's ``labels`` rows (``r_vlm``, ``rating_complete``, ``weather``, ``weather_hint``).
    failures: ``{uri, stage, error_type, message}`` per failed file of this job.
    """
    metrics = {f"failed.{metric_name(k)}": float(v) for k, v in failures_by_reason.items()}
    metrics.update({f"listing_skipped.{k}": float(len(v)) for k, v in listing_skipped.items()})
    metrics.update(rating_stats(labels))
    if metrics:
        logger.log_metrics(metrics)
    with tempfile.TemporaryDirectory() as folder:
        logger.log_artifact(plot_r_vlm(labels, Path(folder) / "r_vlm_by_weather.png"), "label")
        if failures:
            path = Path(folder) / "failed_files.csv"
            with path.open("w", newline="") as sink:
                writer = csv.DictWriter(sink, fieldnames=["uri", "stage", "error_type", "message"])
                writer.writeheader()
                writer.writerows(failures)
            logger.log_artifact(path, "label")
        if listing_skipped:
            path = Path(folder) / "listing_skipped.csv"
            with path.open("w", newline="") as sink:
                writer = csv.writer(sink)
                writer.writerow(["reason", "uri"])
                writer.writerows((reason, uri) for reason, uris in listing_skipped.items() for uri in uris)
            logger.log_artifact(path, "label")
