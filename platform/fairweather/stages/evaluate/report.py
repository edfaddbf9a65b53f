"""The evaluation report: per-weather means, Paper A's two tables side by side with the quoted rows, charts, grid.

Conventions, stated in the report itself: a weather's value is the mean over that weather's images; "Overall" is the
mean over all images of the test set (images of unknown weather count in Overall only), not the mean of the three
weather means. Every number carries the resize policy it was measured with. A metric that could not run shows as an
``n/a (<reason>)`` cell (``weights missing``, ``not configured``), never as a dropped column; "–" means no image of
that weather, or (quoted rows) a value METHOD.md does not quote.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from PIL import Image

from fairweather.imaging import image_grid
from fairweather.stages.engine.scored import weather_means as engine_weather_means
from fairweather.stages.evaluate.paper_numbers import (
    ABLATION_METRICS,
    PUBLISHED_ABLATION,
    PUBLISHED_OVERALL,
    SOURCE,
)

#: Weather columns of the paper's tables, in its order.
WEATHERS: tuple[str, ...] = ("rain", "haze", "snow", "overall")
#: Paper A's two no-reference tables.
PAPER_TABLES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Table 1: NIMA / MUSIQ / CLIP-IQA", ("nima", "musiq", "clipiqa")),
    ("Table 2: LIQE / Q-Align / VLM-Vis", ("liqe", "qalign", "vlm_vis")),
)
#: Column titles and printed decimals per metric (the paper's precision).
LABELS = {
    "nima": "NIMA",
    "musiq": "MUSIQ",
    "clipiqa": "CLIP-IQA",
    "liqe": "LIQE",
    "qalign": "Q-Align",
    "vlm_vis": "VLM-Vis",
    "niqe": "NIQE",
    "brisque": "BRISQUE",
    "piqe": "PIQE",
    "psnr": "PSNR",
    "ssim": "SSIM",
    "lpips": "LPIPS",
}
DECIMALS = {"musiq": 2, "psnr": 2, "piqe": 2, "brisque": 2, "ssim": 4, "lpips": 4}
#: Dataset name of the means over every test set of a run (only when there are several).
ALL_SETS = "all"
NO_VALUE = "–"
#: Key of an example's clean target among its thumbnails (not a method name a config can give: parentheses); the
#: grid's last column, captioned "target".
TARGET = "(target)"


def weather_means(per_image: pd.DataFrame) -> pd.DataFrame:
    """Per-image rows -> mean rows per (method, dataset, resize policy, weather | overall, metric).

    per_image: columns ``method, dataset, resize_policy, weather, image, metric, value``. Returns the same columns
    with ``image`` empty plus ``num_images``; with several test sets, also the means over all of them
    (dataset ``all``). The means are the engine's (:func:`fairweather.stages.engine.scored.weather_means`), which
    ``fairweather train``'s final test table uses too.
    """
    frames = [per_image]
    if per_image["dataset"].nunique() > 1:
        frames.append(per_image.assign(dataset=ALL_SETS))
    keys = ["method", "dataset", "resize_policy"]
    means = engine_weather_means(pd.concat(frames, ignore_index=True), by=keys)
    return means.assign(image="")[[*keys, "weather", "image", "metric", "value", "num_images"]]


@dataclass(frozen=True)
class ReportInfo:
    """What the report says besides the numbers."""

    run_name: str
    resize_policy: str
    #: Our methods in row order (``input`` first, then checkpoints, then baselines).
    methods: tuple[str, ...]
    #: The methods that are checkpoints (the ablation table's rows when there are two or more).
    checkpoints: tuple[str, ...]
    metrics: tuple[str, ...]
    reference_metrics: tuple[str, ...]
    #: metric -> why it has no numbers (``weights missing``); shown in its cells.
    unavailable: dict[str, str] = field(default_factory=dict)
    #: checkpoint name -> training run it came from.
    training_runs: dict[str, str] = field(default_factory=dict)
    #: Lines printed under the header (failures, unmatched baseline outputs, listing skips).
    notes: tuple[str, ...] = ()


def _format(metric: str, value: float) -> str:
    return f"{value:.{DECIMALS.get(metric, 3)}f}"


def _cell(lookup: dict, info: ReportInfo, method: str, weather: str, metric: str) -> str:
    if metric in info.unavailable:
        return f"n/a ({info.unavailable[metric]})"
    if metric not in info.metrics + info.reference_metrics:
        return "n/a (not configured)"
    value = lookup.get((method, weather, metric))
    return NO_VALUE if value is None else _format(metric, value)


def _lookup(means: pd.DataFrame, dataset: str) -> dict[tuple[str, str, str], float]:
    rows = means[means["dataset"] == dataset]
    return {(r.method, r.weather, r.metric): r.value for r in rows.itertuples()}


def _header(weather: str, metric: str, higher_better: dict[str, bool]) -> str:
    arrow = {True: " ↑", False: " ↓"}.get(higher_better.get(metric), "")
    return f"{weather.capitalize()} {LABELS.get(metric, metric)}{arrow}"


def metric_table(
    means: pd.DataFrame,
    dataset: str,
    metrics: tuple[str, ...],
    info: ReportInfo,
    *,
    higher_better: dict[str, bool],
    quoted: bool,
) -> pd.DataFrame:
    """One table as printed: a row per method, a column per (weather, metric) in the paper's order, string cells.

    quoted: append Paper A's published rows (Overall cells only), named ``<method> (quoted)``.
    """
    lookup = _lookup(means, dataset)
    columns = [(w, m) for w in WEATHERS for m in metrics]
    rows = [[method] + [_cell(lookup, info, method, w, m) for w, m in columns] for method in info.methods]
    if quoted:
        for method, values in PUBLISHED_OVERALL.items():
            cells = [
                _format(m, values[m]) if w == "overall" and m in values else NO_VALUE for w, m in columns
            ]
            rows.append([f"{method} (quoted)", *cells])
    return pd.DataFrame(rows, columns=["method", *(_header(w, m, higher_better) for w, m in columns)])


def ablation_table(means: pd.DataFrame, dataset: str, info: ReportInfo) -> pd.DataFrame:
    """Our checkpoints' Overall MUSIQ / CLIP-IQA / VLM-Vis, then the paper's ablation rows (quoted)."""
    lookup = _lookup(means, dataset)
    rows = [
        [name] + [_cell(lookup, info, name, "overall", m) for m in ABLATION_METRICS]
        for name in info.checkpoints
    ]
    rows += [
        [f"{name} (quoted)"] + [_format(m, v[m]) for m in ABLATION_METRICS]
        for name, v in PUBLISHED_ABLATION.items()
    ]
    return pd.DataFrame(rows, columns=["run", *(f"Overall {LABELS[m]}" for m in ABLATION_METRICS)])


def console_lines(means: pd.DataFrame, info: ReportInfo, higher_better: dict[str, bool]) -> list[str]:
    """The Overall column of every test set as a few aligned lines for the console: a header per set (its
    images and each scored metric with its better direction), then a row per method."""
    lines = []
    for dataset in sorted(set(means["dataset"]), key=lambda d: (d == ALL_SETS, d)):
        rows = means[(means["dataset"] == dataset) & (means["weather"] == "overall")]
        scored = set(rows["metric"])
        metrics = [m for m in (*info.metrics, *info.reference_metrics) if m in scored]
        lookup = {(r.method, r.metric): r.value for r in rows.itertuples()}
        images = int(rows["num_images"].max())  # the first method may have none here (every image failed)
        table = [
            [f"{dataset} ({images} images), overall:"]
            + [_header("overall", m, higher_better).removeprefix("Overall ") for m in metrics]
        ]
        table += [
            [f"  {method}"]
            + [_format(m, lookup[(method, m)]) if (method, m) in lookup else NO_VALUE for m in metrics]
            for method in info.methods
        ]
        widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
        lines += [
            row[0].ljust(widths[0])
            + "".join(f"  {cell.rjust(w)}" for cell, w in zip(row[1:], widths[1:], strict=True))
            for row in table
        ]
    return lines


def to_markdown(frame: pd.DataFrame) -> str:
    """A pipe table (pandas' own needs the optional ``tabulate``)."""
    lines = ["| " + " | ".join(frame.columns) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def bar_chart(means: pd.DataFrame, dataset: str, metric: str, methods: tuple[str, ...], path: Path) -> None:
    """Grouped bars: one group per weather, one bar per method, of ``metric``'s means on ``dataset``."""
    lookup = _lookup(means, dataset)
    weathers = [w for w in WEATHERS if any((m, w, metric) in lookup for m in methods)]
    fig = Figure(figsize=(7, 4), dpi=100)
    ax = fig.subplots()
    width = 0.8 / max(1, len(methods))
    for i, method in enumerate(methods):
        values = [lookup.get((method, w, metric), np.nan) for w in weathers]
        ax.bar(np.arange(len(weathers)) + i * width, values, width, label=method)
    ax.set_xticks(np.arange(len(weathers)) + width * (len(methods) - 1) / 2, weathers)
    ax.set_title(f"{LABELS.get(metric, metric)} on {dataset}")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path)


def grid_columns(
    thumbnails: dict[tuple[str, str], dict[str, bytes]], methods: tuple[str, ...]
) -> tuple[str, ...]:
    """The example grid's columns: ``methods``, then the clean target when any example has one."""
    with_target = any(TARGET in by_method for by_method in thumbnails.values())
    return (*methods, TARGET) if with_target else methods


def example_grid(thumbnails: dict[tuple[str, str], dict[str, bytes]], methods: tuple[str, ...]) -> bytes:
    """PNG grid: one line per example image (``(dataset, image)``), one cell per method in ``methods`` order, then
    the clean target (key :data:`TARGET`) where any example has one: input | restored | target. A method (or
    target) without that image (failed, no baseline output, a set without targets) gets a grey cell, so columns
    stay aligned."""
    columns = grid_columns(thumbnails, methods)
    lines = []
    for by_method in thumbnails.values():
        decoded = {m: np.asarray(Image.open(io.BytesIO(png)).convert("RGB")) for m, png in by_method.items()}
        blank = np.full_like(next(iter(decoded.values())), 128)
        lines.append([decoded.get(m, blank) for m in columns])
    return image_grid(lines, cell=160)


def _write_csv(frame: pd.DataFrame, path: Path) -> None:
    frame.to_csv(path, index=False, quoting=csv.QUOTE_MINIMAL)


def write_report(
    folder: Path,
    per_image: pd.DataFrame,
    means: pd.DataFrame,
    info: ReportInfo,
    *,
    higher_better: dict[str, bool],
    thumbnails: dict[tuple[str, str], dict[str, bytes]] | None = None,
) -> list[Path]:
    """Write ``report.md``, the tables as CSV, the means and per-image scores, a chart per metric and the grid.

    Returns every file written (the stage logs them as artifacts).
    """
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "per_image.csv", folder / "means.csv"]
    _write_csv(per_image, written[0])
    _write_csv(means, written[1])
    datasets = sorted(set(means["dataset"]), key=lambda d: (d != ALL_SETS, d))
    lines = [
        f"# Evaluation {info.run_name}",
        "",
        f"- resize policy: `{info.resize_policy}` (every number below)",
    ]
    lines += [f"- checkpoint `{name}` from training run `{run}`" for name, run in info.training_runs.items()]
    lines += [
        "- a weather's value is the mean over its images; Overall is the mean over all images of the set",
        "- PSNR/SSIM: RGB in [0, 1], no border crop, no Y-channel conversion, against the clean target",
        f"- rows marked (quoted) are published numbers: {SOURCE}; – = not quoted there / no image of that weather",
        *(f"- {note}" for note in info.notes),
    ]
    extra = tuple(m for m in info.metrics if all(m not in ms for _, ms in PAPER_TABLES))
    asked = set(info.metrics) | set(info.reference_metrics) | set(info.unavailable)
    paper = [(title, metrics) for title, metrics in PAPER_TABLES if asked & set(metrics)]
    if len(paper) < len(PAPER_TABLES):  # a table of "n/a (not configured)" cells says nothing
        left_out = " and ".join(title.split(":")[0] for title, ms in PAPER_TABLES if (title, ms) not in paper)
        lines.append(
            f"- Paper A's {left_out} left out: no metric they show is configured (`evaluate.metrics`; the learned "
            "ones need `fairweather prefetch --config paper` first)"
        )
    tables = [
        *paper,
        ("Other no-reference metrics", extra),
        ("Full-reference metrics", info.reference_metrics),
    ]
    for dataset in datasets:
        counts = per_image[per_image["dataset"] == dataset] if dataset != ALL_SETS else per_image
        counts = counts.drop_duplicates(["dataset", "image"])["weather"].value_counts()
        listed = ", ".join(f"{w} {n}" for w, n in sorted(counts.items()))
        lines += ["", f"## Test set `{dataset}`", "", f"{counts.sum()} images scored ({listed})"]
        with_targets = not means[
            (means["dataset"] == dataset) & means["metric"].isin(info.reference_metrics)
        ].empty
        for title, metrics in tables:
            if not metrics or (metrics == info.reference_metrics and not with_targets):
                continue
            quoted = any(title == t for t, _ in PAPER_TABLES)
            frame = metric_table(means, dataset, metrics, info, higher_better=higher_better, quoted=quoted)
            written.append(folder / f"{_slug(dataset)}_{_slug(title.split(':')[0])}.csv")
            _write_csv(frame, written[-1])
            lines += ["", f"### {title}", "", to_markdown(frame)]
        if len(info.checkpoints) >= 2:
            frame = ablation_table(means, dataset, info)
            written.append(folder / f"{_slug(dataset)}_ablation.csv")
            _write_csv(frame, written[-1])
            lines += ["", "### Ablation (our runs, then the paper's, quoted)", "", to_markdown(frame)]
    charts = folder / "charts"
    charts.mkdir(exist_ok=True)
    for metric in sorted(set(means["metric"])):
        written.append(charts / f"{_slug(datasets[0])}_{metric}.png")
        bar_chart(means, datasets[0], metric, info.methods, written[-1])
        lines += ["", f"![{metric}](charts/{written[-1].name})"]
    if thumbnails:
        written.append(folder / "examples.png")
        written[-1].write_bytes(example_grid(thumbnails, info.methods))
        columns = ", ".join("target" if c == TARGET else c for c in grid_columns(thumbnails, info.methods))
        lines += ["", f"Examples, left to right: {columns}", "", "![examples](examples.png)"]
    written.append(folder / "report.md")
    written[-1].write_text("\n".join(lines) + "\n")
    return written
