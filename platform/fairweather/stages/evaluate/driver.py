"""``fairweather evaluate``: score methods on the same test images, as one Ray Data job, and write Paper A's tables.

Pipeline: test sets listed on the driver (``evaluate.io``) -> one engine row per (image, method) -> the engine
(:func:`fairweather.stages.engine.pipeline.restore_and_score`): read + decode + resize by ``evaluate.resize`` (Ray
tasks) -> restore with each checkpoint's EMA teacher (actor pool, only when checkpoints are given) -> score with
every available metric (actor pool) -> the driver writes per-image rows and per-weather means to the ``metrics``
table, failures to ``errors``, and the report (``evaluate.report``) to ``evaluate.report_dir``; everything is
logged to an MLflow run tagged with the checkpoints' training runs. :func:`score_checkpoint_here` computes the same
numbers for one checkpoint in-process (``fairweather train``'s final test table).

Start-up checks run before Ray or MLflow start: test sets list, baseline folders and checkpoints read, output
folders writable, the actors leave a CPU for reading on a private local Ray, and every metric's weights are
present. A metric whose weights are missing is reported (with the ``fairweather prefetch`` command that gets them)
and shown as ``n/a (weights missing)`` in the report; the job fails only when no metric can run at all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pyarrow as pa
import ray

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import relative_uri
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.metrics import METRICS, missing_weights
from fairweather.stages.engine.pipeline import Scoring, Sizing, restore_and_score
from fairweather.stages.engine.rows import CheckpointRef, OutputFolder
from fairweather.stages.evaluate.io import (
    INPUT_METHOD,
    TestSet,
    list_test_set,
    metric_rows,
    name_test_sets,
    work_rows,
)
from fairweather.stages.evaluate.report import (
    TARGET,
    ReportInfo,
    console_lines,
    weather_means,
    write_report,
)
from fairweather.stages.infra.console import progress, say
from fairweather.stages.infra.cpus import check_cpu_budget
from fairweather.stages.infra.runtime import check_output_locations, ray_session
from fairweather.stages.infra.tracking import stage_run, stamped_name
from fairweather.training.checkpoint_file import peek_state

if TYPE_CHECKING:
    import torch

    from fairweather.stages.engine.score import Restores

log = logging.getLogger(__name__)

#: Example images per test set in the report's grid.
EXAMPLES = 4


@dataclass(frozen=True)
class EvaluateSummary:
    run_name: str
    report_dir: str
    #: Test images listed over all test sets, and (image, method) rows scored / failed.
    images: int
    scored: int
    failed: int
    #: Metrics that could not run here, with the reason (shown as n/a in the report).
    unavailable: dict[str, str]
    seconds: float
    #: Scored (image, method) rows per second of the Ray Data job.
    rows_per_s: float
    #: Seconds each metric took, summed over the actors (the cost split per metric).
    metric_seconds: dict[str, float]


def _checkpoints(cfg: FairweatherConfig) -> list[CheckpointRef]:
    refs = [CheckpointRef.parse(entry) for entry in cfg.evaluate.checkpoints]
    names = Counter(ref.name for ref in refs)
    clashes = [name for name, n in names.items() if n > 1 or name == INPUT_METHOD]
    if clashes:
        raise FairweatherError(
            f"evaluate.checkpoints: method names {clashes} repeat or clash with 'input'; use name=path"
        )
    for ref in refs:
        # Fails now, naming the file, rather than in every actor; without torch, which only the actors import.
        peek_state(ref.path)
    return refs


def _unavailable(cfg: FairweatherConfig) -> dict[str, str]:
    """metric -> ``weights missing`` for every configured metric that cannot run here (the reasons, which name
    the file and the ``fairweather prefetch`` command, are logged); raises when no metric can run at all."""
    reasons = {}
    for name in dict.fromkeys(cfg.evaluate.metrics + cfg.evaluate.reference_metrics):
        if reason := missing_weights(name, cfg.evaluate.scorer, vlm=cfg.vlm):
            log.warning("evaluate: metric %s cannot run: %s", name, reason)
            reasons[name] = reason
    if len(reasons) == len(set(cfg.evaluate.metrics + cfg.evaluate.reference_metrics)):
        raise FairweatherError(f"evaluate: no configured metric can run here: {'; '.join(reasons.values())}")
    return dict.fromkeys(reasons, "weights missing")


def _check_devices(cfg: FairweatherConfig) -> None:
    """A CUDA scorer needs actors that reserve a GPU (Ray hides the GPUs from an actor that reserves none)."""
    ev = cfg.evaluate
    if ev.scorer.device.startswith("cuda") and ev.num_gpus_per_actor <= 0:
        raise FairweatherError(
            f"evaluate.scorer.device={ev.scorer.device!r} but evaluate.num_gpus_per_actor=0: the actors would see no "
            "GPU; set evaluate.num_gpus_per_actor (e.g. 1, or 0.5 to share one) or evaluate.scorer.device=cpu"
        )


def sizing(cfg: FairweatherConfig) -> Sizing:
    """Both actor pools (restore, score), or the one of ``evaluate.one_actor``, are ``evaluate.concurrency`` actors
    of the same size."""
    ev = cfg.evaluate
    return Sizing(
        ev.concurrency,
        ev.concurrency,
        ev.num_cpus_per_actor,
        ev.num_gpus_per_actor,
        ev.scorer.batch_size,
        one_actor=ev.one_actor,
    )


def evaluation_dataset(
    cfg: FairweatherConfig,
    rows: list[dict],
    checkpoints: list[CheckpointRef],
    metrics: tuple[str, ...],
    reference: tuple[str, ...],
) -> ray.data.Dataset:
    """The lazy engine pipeline: work rows -> pixels (tasks) -> restorations (actors) -> scores (actors).

    metrics / reference: the no-reference and full-reference metrics that can run (weights present).
    """
    scoring = Scoring(metrics, reference, cfg.evaluate.scorer, cfg.vlm, cfg.runtime.model_cache_dir)
    return restore_and_score(
        rows,
        checkpoints={ref.name: ref.path for ref in checkpoints},
        scoring=scoring,
        sizing=sizing(cfg),
        max_pixels=cfg.data.max_image_pixels,
        short_side=cfg.evaluate.resize_short_side,
    )


def score_checkpoint_here(
    cfg: FairweatherConfig,
    restorer: Restores,
    pairs: list[dict],
    *,
    metrics: tuple[str, ...],
    device: torch.device | str,
    name: str = "checkpoint",
) -> pd.DataFrame:
    """What ``fairweather evaluate`` reports for ``restorer`` (as method ``name``) and the untouched inputs on
    ``pairs`` (``paired`` view rows), computed in this process by the same steps: evaluation's work rows, the
    engine's read (``evaluate.resize``), restore and score (full-reference ``metrics`` on ``device``, with the
    score actors' thread count), evaluation's per-weather means. Returns the means (:func:`weather_means` rows).

    Raises when an image cannot be read or restored (a table without it would not be the test split's).
    """
    # Imported here: the driver of `fairweather evaluate` runs without torch (its actors score).
    from fairweather.metrics import build_scorers
    from fairweather.stages.engine.score import restore_and_score_here

    rows, _ = work_rows([TestSet.of_pairs("paired", pairs)], [name], {}, include_input=True, examples=0)
    reference = build_scorers(metrics, cfg.evaluate.scorer, device=device)
    scored = restore_and_score_here(
        rows,
        restorers={name: restorer},
        scorers={},
        reference=reference,
        max_pixels=cfg.data.max_image_pixels,
        short_side=cfg.evaluate.resize_short_side,
        chunk=cfg.evaluate.scorer.batch_size,
        score_threads=sizing(cfg).threads,
    )
    failed = [row for row in scored if row["status"] != "ok"]
    if failed:
        first = failed[0]
        raise FairweatherError(
            f"{len(failed)} test image(s) could not be scored; first: {first['source_uri']} "
            f"({first['error_type']}: {first['message']})"
        )
    per_image = pd.DataFrame([m for row in scored for m in metric_rows(row)])
    return weather_means(per_image.assign(resize_policy=cfg.evaluate.resize))


def _key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", text)


def run_evaluate(
    cfg: FairweatherConfig, logger: MetricLogger | None = None, *, show_means: bool = True
) -> EvaluateSummary:
    """Score ``evaluate.checkpoints``, the inputs and ``evaluate.baseline_folders`` on ``evaluate.test_sets``.

    logger: the tracking run to log into (default: a new MLflow run, closed here). show_means: print each test
    set's overall means on the console (the pipeline prints its own summary instead).
    """
    ev, store = cfg.evaluate, TableStore(cfg.data.tables)
    checkpoints = _checkpoints(cfg)
    baselines = {
        name.strip(): OutputFolder(folder.strip())
        for name, _, folder in (entry.partition("=") for entry in ev.baseline_folders)
    }
    test_sets = [
        list_test_set(
            spec, store, name=name, follow_links_out=cfg.data.follow_links_out, roots=cfg.data.roots
        )
        for spec, name in zip(ev.test_sets, name_test_sets(ev.test_sets), strict=True)
    ]
    rows, unmatched = work_rows(
        test_sets, [c.name for c in checkpoints], baselines, include_input=ev.include_input, examples=EXAMPLES
    )
    if not rows:
        raise FairweatherError(
            f"evaluate: nothing to score (test sets {list(ev.test_sets)} list no image, or no method)"
        )
    unavailable = _unavailable(cfg)
    check_output_locations(cfg)
    _check_devices(cfg)
    sized = sizing(cfg)
    check_cpu_budget(
        cfg.runtime,
        sized.actor_cpus(restoring=bool(checkpoints)),
        f"{sized.pools(restoring=bool(checkpoints))} actor pool(s) x evaluate.concurrency x "
        "evaluate.num_cpus_per_actor",
    )
    run_name = stamped_name("evaluate")
    report_dir = ev.report_dir or f"{cfg.runtime.runs_dir}/reports/{run_name}"
    methods = (
        ((INPUT_METHOD,) if ev.include_input else ()) + tuple(c.name for c in checkpoints) + tuple(baselines)
    )
    notes = [
        f"baseline {name}: no output for {len(missing)} test image(s), e.g. {missing[:3]}"
        for name, missing in unmatched.items()
        if missing
    ]
    notes += [
        f"test set {t.name}: {n} entries not listed ({reason})"
        for t in test_sets
        for reason, n in t.not_listed.items()
    ]
    info = ReportInfo(
        run_name,
        ev.resize,
        methods,
        tuple(c.name for c in checkpoints),
        tuple(ev.metrics),
        tuple(ev.reference_metrics),
        unavailable,
        {c.name: c.training_run for c in checkpoints},
        tuple(notes),
    )
    with stage_run(cfg, "evaluate", run_name) if logger is None else contextlib.nullcontext(logger) as run:
        # One searchable tag (several runs comma-joined) plus one per checkpoint.
        runs = {f"fairweather.training_run.{c.name}": c.training_run for c in checkpoints}
        if checkpoints:
            runs["fairweather.training_run"] = ",".join(sorted({c.training_run for c in checkpoints}))
        run.set_tags({"fairweather.run_name": run_name, **runs})
        summary = _evaluate(cfg, run, rows, checkpoints, info, Path(report_dir), show_means)
    say(
        f"evaluate: {summary.images} images x {len(methods)} method(s): {summary.scored} scored, {summary.failed} "
        f"failed in {summary.seconds:.1f}s; report in {report_dir}"
    )
    return summary


def _evaluate(
    cfg: FairweatherConfig,
    run: MetricLogger,
    rows: list[dict],
    checkpoints: list[CheckpointRef],
    info: ReportInfo,
    report_dir: Path,
    show_means: bool,
) -> EvaluateSummary:
    """Run the pipeline, then write the tables and the report and log them; every work row is accounted for."""
    ev, store = cfg.evaluate, TableStore(cfg.data.tables)
    runnable = tuple(m for m in ev.metrics if m not in info.unavailable)
    reference = tuple(m for m in ev.reference_metrics if m not in info.unavailable)
    per_image, failures, seconds_by_metric = [], [], Counter()
    thumbnails: dict[tuple[str, str], dict[str, bytes]] = defaultdict(dict)
    with ray_session(cfg), progress(len(rows), "evaluate", unit="row") as bar:
        start = time.perf_counter()
        received = 0
        dataset = evaluation_dataset(cfg, rows, checkpoints, runnable, reference)
        for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
            received += batch.num_rows
            bar.update(batch.num_rows)
            for row in batch.to_pylist():
                if row["status"] != "ok":
                    failures.append(row)
                    continue
                per_image += metric_rows(row)
                seconds_by_metric.update(json.loads(row["seconds"]))
                if row["message"]:
                    log.warning("evaluate: %s %s: %s", row["source"], row["image"], row["message"])
                if row["thumbnail"]:
                    thumbnails[(row["group"], row["image"])][row["source"]] = row["thumbnail"]
                if row["target_thumbnail"]:
                    thumbnails[(row["group"], row["image"])][TARGET] = row["target_thumbnail"]
        seconds = time.perf_counter() - start
    if received != len(rows):  # Ray Data fails the job on a lost block by default; never report a partial run
        raise RuntimeError(f"evaluate: {received} results for {len(rows)} (image, method) rows")
    if not per_image:
        raise FairweatherError(
            f"evaluate: every one of the {len(rows)} (image, method) rows failed; first: "
            f"{failures[0]['error_type'] if failures else '?'}"
        )
    frame = pd.DataFrame(per_image).assign(resize_policy=ev.resize)
    means = weather_means(frame)
    _write_tables(store, info.run_name, frame, means, failures)
    higher = {name: spec.higher_better for name, spec in METRICS.items()}
    if failures:
        reasons = Counter(f["error_type"] for f in failures).most_common(3)
        info = dataclasses.replace(
            info, notes=(*info.notes, f"{len(failures)} (image, method) rows failed: {reasons}")
        )
    if show_means:
        say("evaluate: the mean over each test set's images (per weather in the report):")
        for line in console_lines(means, info, higher):
            say(f"  {line}")
    files = write_report(report_dir, frame, means, info, higher_better=higher, thumbnails=thumbnails)
    for path in files:
        run.log_artifact(path, "report" if path.parent == report_dir else f"report/{path.parent.name}")
    run.log_metrics(
        {_key(f"eval/{r.dataset}/{r.method}/{r.metric}/{r.weather}"): r.value for r in means.itertuples()}
    )
    scored = len(rows) - len(failures)
    summary = EvaluateSummary(
        info.run_name,
        str(report_dir),
        len({(r["group"], r["image"]) for r in rows}),
        scored,
        len(failures),
        dict(info.unavailable),
        round(seconds, 3),
        round(scored / seconds, 3),
        {k: round(v, 3) for k, v in seconds_by_metric.items()},
    )
    run.log_metrics(
        {
            "rows_scored": scored,
            "rows_failed": len(failures),
            "rows_per_s": summary.rows_per_s,
            **{f"seconds/{k}": v for k, v in summary.metric_seconds.items()},
        }
    )
    return summary


def _write_tables(
    store: TableStore, run_name: str, per_image: pd.DataFrame, means: pd.DataFrame, failures: list
) -> None:
    now = datetime.now(timezone.utc)
    rows = pd.concat([per_image.assign(num_images=1), means], ignore_index=True)
    store.write(
        "metrics", pa.Table.from_pandas(rows.assign(run_id=run_name, created_at=now), preserve_index=False)
    )
    store.compact("metrics")
    if failures:
        errors = [
            {
                "uri": relative_uri(store.root, f["source_uri"]),
                # One row per (file, method): the table's key is (uri, stage), and two methods failing on one
                # photo (an out-of-memory restore by each checkpoint) are two failures.
                "stage": f"evaluate:{f['source']}",
                "error_type": f["error_type"],
                "message": f["message"],
                "time": now,
            }
            for f in failures
        ]
        store.write("errors", pa.Table.from_pylist(errors))
        store.compact("errors")
