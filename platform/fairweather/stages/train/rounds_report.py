"""The rounds driver's reading of a lineage's ``pseudo_labels`` history: is an update finished, and a picture of it.

The update's numbers (replaced, unchanged, mean combined score, per-weather quantiles) are the pseudo-label job's
own (``PseudolabelSummary``, logged by that job into the run it is given); this adds the histogram of the
selection's combined scores per weather after each update, the MLflow artifact ``pseudo/round-<k>.png``, and next to
it the audit grid of the update (``stages.pseudolabel.audit``: the most improved and the most contested images,
input | previous label | new candidate with their scores and the rule's decision), the artifact
``pseudo-audit/round-<k>.png``, also written as ``<runs_dir>/pseudo-audit/<lineage>/round-<k>.png``.
"""

from __future__ import annotations

import logging
import math
import tempfile
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from fairweather.contracts.config.runtime import RuntimeConfig
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.contracts.vocab import WEATHER_CLASSES
from fairweather.stages.infra.console import say
from fairweather.stages.infra.runtime import runs_path
from fairweather.stages.pseudolabel.audit import DEFAULT_K, write_audit
from fairweather.stages.pseudolabel.tables import lineage_rows

log = logging.getLogger(__name__)


def update_complete(rows: list[dict], round_index: int) -> bool:
    """True when the lineage (``rows``, its history) has candidates of ``round_index`` and every one was decided:
    the job writes all decisions as one table part, so a job that died leaves pending rows, or none."""
    candidates = [row for row in rows if row["round"] == round_index]
    return bool(candidates) and all(row["decided"] for row in candidates)


def _selected_by_weather(rows: list[dict]) -> dict[str, list[float]]:
    by_weather: dict[str, list[float]] = {}
    for row in rows:
        if row["selected"] and math.isfinite(row["combined_score"]):
            by_weather.setdefault(row["weather"], []).append(row["combined_score"])
    order = [w for w in WEATHER_CLASSES if w in by_weather] + sorted(set(by_weather) - set(WEATHER_CLASSES))
    return {w: by_weather[w] for w in order}


def plot_selection(rows: list[dict], round_index: int, path: Path) -> Path:
    """Histogram of the selected pseudo-labels' combined scores per weather after the update of ``round_index``
    (``rows``: the lineage's history) -> PNG at ``path``."""
    by_weather = _selected_by_weather(rows)
    values = [s for scores in by_weather.values() for s in scores]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    bins = np.linspace(low, high if high > low else low + 1.0, 21)
    fig = Figure(figsize=(6, 4), dpi=100)
    ax = fig.add_subplot()
    for weather, scores in by_weather.items():
        ax.hist(scores, bins=bins, alpha=0.5, label=f"{weather} (n={len(scores)})")
    title = "initial pseudo-labels" if round_index == 0 else f"pseudo-labels after round {round_index}"
    ax.set(xlabel="combined score of the selected pseudo-label", ylabel="images", title=title)
    if by_weather:
        ax.legend()
    fig.savefig(path)
    return path


def log_selection_plot(logger: MetricLogger, rows: list[dict], round_index: int) -> None:
    """:func:`plot_selection` as the artifact ``pseudo/round-<round_index>.png`` of ``logger``'s run."""
    with tempfile.TemporaryDirectory() as folder:
        path = plot_selection(rows, round_index, Path(folder) / f"round-{round_index}.png")
        logger.log_artifact(path, "pseudo")


def log_audit_grid(
    logger: MetricLogger,
    runtime: RuntimeConfig,
    store: TableStore,
    rows: list[dict],
    round_index: int,
    lineage: str,
    k: int = DEFAULT_K,
) -> Path | None:
    """The audit grid of the update of ``round_index`` (``rows``: the lineage's history) written as
    ``<runs_dir>/pseudo-audit/<lineage>/round-<k>.png`` and logged as the artifact ``pseudo-audit/round-<k>.png``;
    returns its path (None: nothing decided in that round). A picture that cannot be made is a warning: the
    training run goes on."""
    try:
        path = runs_path(runtime, "pseudo-audit", lineage) / f"round-{round_index}.png"
        written = write_audit(store, rows, round_index, path, lineage=lineage, k=k)
        if written is not None:
            logger.log_artifact(written, "pseudo-audit")
        return written
    except Exception as err:  # a report picture never fails the rounds
        log.warning("pseudo-label audit grid of round %d not written: %s", round_index, err, exc_info=True)
        return None


def report_update(
    logger: MetricLogger, runtime: RuntimeConfig, store: TableStore, lineage: str, round_index: int
) -> None:
    """What one pseudo-label update leaves to look at: the selection's histogram and the audit grid as artifacts of
    ``logger``'s run, and the grid's path on the console (round 0: the init's)."""
    rows = lineage_rows(store, lineage)
    log_selection_plot(logger, rows, round_index)
    audit = log_audit_grid(logger, runtime, store, rows, round_index, lineage)
    if audit is not None:
        say(f"  pseudo-label audit of round {round_index} (input | previous label | new candidate): {audit}")
