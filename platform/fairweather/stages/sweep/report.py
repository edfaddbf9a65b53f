"""The end of a sweep: trials ranked by the objective (markdown + CSV), the objective against each sampled key
(one scatter per key), the best trial's config; files for the parent run and lines for the console."""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a cluster node
import matplotlib.pyplot as plt
from matplotlib.ticker import NullFormatter

from fairweather.contracts.config import FairweatherConfig, SweepConfig, to_dict, to_yaml
from fairweather.contracts.config.sweep import VARIANT_KEY
from fairweather.contracts.redact import redact, redact_text
from fairweather.stages.infra.console import say


@dataclass(frozen=True)
class TrialRow:
    trial_id: str
    #: completed | stopped_early | failed
    status: str
    #: The trial's sampled values (and ``variant``), by config key.
    params: dict[str, Any]
    #: The objective at the trial's last report (None: it never reported one).
    metric: float | None
    step: int
    #: The trial's last checkpoint (its training run's folder under the train storage).
    checkpoint: str | None


def _scored(row: TrialRow) -> bool:
    return row.metric is not None and math.isfinite(row.metric)


def ranked(rows: list[TrialRow], mode: str) -> list[TrialRow]:
    """Best first; trials without an objective last."""
    sign = -1.0 if mode == "max" else 1.0
    return sorted(rows, key=lambda r: (not _scored(r), sign * r.metric if _scored(r) else 0.0, r.trial_id))


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    first = ranked(rows, mode)[:1]
    return first[0] if first and _scored(first[0]) else None


def compared_keys(sweep: SweepConfig) -> list[str]:
    """The keys that differ between trials: the variant (ablation row), then every sampled key."""
    return ([VARIANT_KEY] if sweep.variants else []) + list(sweep.params)


_keys = compared_keys


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table(rows: list[TrialRow], sweep: SweepConfig) -> tuple[list[str], list[list[str]]]:
    """Header and ranked rows: rank, trial, status, steps, the objective, every sampled key."""
    header = ["rank", "trial", "status", "steps", sweep.metric, *_keys(sweep)]
    body = [
        [
            str(i),
            r.trial_id,
            r.status,
            str(r.step),
            _cell(r.metric),
            *(_cell(r.params.get(k)) for k in _keys(sweep)),
        ]
        for i, r in enumerate(ranked(rows, sweep.mode), 1)
    ]
    return header, body


def markdown(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in body]) + "\n"


def plot(rows: list[TrialRow], sweep: SweepConfig, path: Path) -> None:
    """The objective against each sampled key (log x for log-uniform keys); colour = how the trial ended."""
    keys = list(sweep.params) or [VARIANT_KEY]
    fig, axes = plt.subplots(1, len(keys), figsize=(3.2 * len(keys), 3.0), squeeze=False, sharey=True)
    colours = {"completed": "tab:blue", "stopped_early": "tab:orange", "failed": "tab:red"}
    scored = [r for r in rows if _scored(r)]
    for ax, key in zip(axes[0], keys, strict=True):
        for status, colour in colours.items():
            points = [(r.params.get(key), r.metric) for r in scored if r.status == status]
            if points:
                ax.scatter(*zip(*points, strict=True), c=colour, label=status.replace("_", " "), s=24)
        if key in sweep.params and sweep.params[key].distribution == "loguniform":
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short decade
        ax.set_xlabel(key)
        ax.tick_params(axis="x", labelrotation=30 if key == VARIANT_KEY else 0)
    axes[0][0].set_ylabel(sweep.metric)
    if scored:  # no trial reported the metric (all stopped before their first validation): nothing to label
        axes[0][0].legend(fontsize=7)
    fig.suptitle(f"sweep {sweep.name}: {sweep.metric} ({sweep.mode}) per trial", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(
    rows: list[TrialRow], sweep: SweepConfig, folder: Path, best_config: FairweatherConfig | None
) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``metric_vs_params.png`` and ``best_config.yaml`` under ``folder``."""
    header, body = table(rows, sweep)
    paths = {"table.md": folder / "table.md", "table.csv": folder / "table.csv"}
    paths["table.md"].write_text(markdown(header, body))
    with open(paths["table.csv"], "w", newline="") as out:
        csv.writer(out).writerows([header, *body])
    paths["metric_vs_params.png"] = folder / "metric_vs_params.png"
    plot(rows, sweep, paths["metric_vs_params.png"])
    if best_config is not None:
        paths["best_config.yaml"] = folder / "best_config.yaml"
        # An artifact of the parent run: no credentials (masked like every logged config).
        paths["best_config.yaml"].write_text(to_yaml(redact(to_dict(best_config))))
    return paths


def print_report(
    rows: list[TrialRow], sweep: SweepConfig, artifacts: dict[str, str], links: tuple[str, str] | None
) -> None:
    """The ranked table, where the files are, and how to compare the trials in the MLflow UI; credentials in a
    URI (the tracking server's ``https://user:password@host``, a storage URI) are masked."""
    say(f"sweep {sweep.name}: {len(rows)} trials, ranked by {sweep.metric} ({sweep.mode})")
    say(markdown(*table(rows, sweep)).rstrip("\n"))
    folders = {os.path.dirname(path) for path in artifacts.values()}
    if len(folders) == 1:  # one line: the folder and the file names
        say(
            redact_text(f"  in {folders.pop()}: {', '.join(os.path.basename(p) for p in artifacts.values())}")
        )
    else:
        for name, path in artifacts.items():
            say(redact_text(f"  {name}: {path}"))
    if links:
        say(redact_text(f"MLflow UI: {links[0]}"))
        page, key, view = links[1].partition("viewStateShareKey=")  # a view's key is no secret
        say(redact_text(f"compare the trials: {page}") + key + view)
        keys = ", ".join(compared_keys(sweep))
        if "viewStateShareKey=" in links[1]:
            say(
                f"  (the saved view 'sweep {sweep.name}': the trials best first and a parallel-coordinates chart of "
                f"{sweep.metric} against {keys}; also in the experiment page's views menu, Chart view)"
            )
        else:  # MLflow's compare page plots the first 3 differing params against the first metric
            say(
                f"  (Parallel Coordinates Plot: choose {keys} under Parameters and {sweep.metric} under Metrics)"
            )
