"""``fairweather pseudolabel``: restore the real pool, score every candidate, update the pseudo-label database.

Pipeline (one Ray Data job, the engine's :func:`~fairweather.stages.engine.pipeline.restore_and_score`): engine
rows for every (pool image, candidate source) not yet in the lineage's history (driver) -> read + decode (tasks) ->
restore with the EMA teacher(s) (``pseudo.restore_concurrency`` actors) -> store each restoration as a
content-addressed PNG (tasks, ``pseudolabel.io``) -> score with ``pseudo.metrics`` and r_vlm
(``pseudo.score_concurrency`` actors) -> the driver streams pending rows into ``pseudo_labels`` and failures into
``errors``, then decides per image which candidate is the pseudo-label (``pseudolabel.tables``).

Sources: round 0 ("init", ``pseudo.init``) scores the input itself, ``pseudo.init_checkpoints`` and the outputs in
``pseudo.init_folders``; round k scores the EMA teacher of the given checkpoint as ``ema@round-<k>``. Every image
that fails (unreadable, restore error, candidate not writable, a scorer without a finite value) is one ``errors``
row (stage ``pseudolabel:<lineage>:<source>``) and is retried by the next run; nothing else stops the job.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc
import ray

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import check_writable, relative_uri
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import real_view
from fairweather.metrics import Scorer
from fairweather.pseudo import Rule
from fairweather.pseudo.guards import input_checks as guard_checks
from fairweather.stages.engine.pipeline import Scoring, Sizing, restore_and_score
from fairweather.stages.engine.rows import (
    INPUT_SOURCE,
    KIND_CHECKPOINT,
    KIND_FILE,
    KIND_INPUT,
    CheckpointRef,
    OutputFolder,
)
from fairweather.stages.engine.scored import InputChecks
from fairweather.stages.infra.console import progress, say
from fairweather.stages.infra.cpus import check_cpu_budget
from fairweather.stages.infra.preflight import check_weights
from fairweather.stages.infra.runtime import check_output_locations, ray_session
from fairweather.stages.infra.tracking import stage_run
from fairweather.stages.pseudolabel.io import Source, ema_source, store_candidates, work_rows
from fairweather.stages.pseudolabel.tables import (
    CandidateWriter,
    candidate_row,
    decide,
    missing_scores,
    selected_stats,
)
from fairweather.training.state import load_state

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PseudolabelSummary:
    lineage: str
    round: int
    #: Candidates scored and written by this run (a rerun of a finished job: 0).
    candidates: int
    #: Images whose pseudo-label changed (a first pseudo-label included) / that kept theirs.
    replaced: int
    unchanged: int
    #: (image, source) rows that failed (each is an ``errors`` row).
    errors: int
    #: Mean combined score of the lineage's pseudo-labels after the update (NaN: none).
    mean_combined: float
    #: weather (and ``overall``) -> count, mean, q10, q50, q90 of the selected combined scores.
    per_weather: dict[str, dict[str, float]]
    seconds: float
    #: ``restore`` and ``score/<metric>``: seconds summed over the actors (the cost split).
    seconds_by_part: dict[str, float]
    #: Why nothing ran, when nothing did (init off).
    note: str = ""
    #: Folder sources -> pool images they have no output for.
    unmatched: dict[str, int] = field(default_factory=dict)
    #: Source -> images whose pseudo-label it is after the update, most first.
    label_sources: dict[str, int] = field(default_factory=dict)


def candidates_dir(cfg: FairweatherConfig) -> str:
    """``pseudo.candidates_dir``, else ``<data.tables>/candidates``."""
    return cfg.pseudo.candidates_dir or f"{cfg.data.tables.rstrip('/')}/candidates"


def _sources(cfg: FairweatherConfig, checkpoint: str | None, round_index: int) -> list[Source]:
    """The candidate sources of this call; every checkpoint is read now (one clear error, not one per actor)."""
    if checkpoint is None:
        if round_index != 0:
            raise FairweatherError(f"pseudolabel: round {round_index} needs the checkpoint of that round")
        sources = [Source(INPUT_SOURCE, KIND_INPUT)]
        for entry in cfg.pseudo.init_checkpoints:
            ref = CheckpointRef.parse(entry)
            sources.append(Source(ref.name, KIND_CHECKPOINT, checkpoint=ref.path))
        for entry in cfg.pseudo.init_folders:
            name, _, folder = entry.partition("=")
            sources.append(Source(name.strip(), KIND_FILE, outputs=OutputFolder(folder.strip())))
    else:
        if round_index < 1:
            raise FairweatherError("pseudolabel: a checkpoint's candidates belong to a round >= 1 (--round)")
        # The input too, once per lineage (an image already scored as input is skipped): the guarded rule accepts
        # no candidate without beating the input, also when the lineage had no init.
        sources = [
            Source(INPUT_SOURCE, KIND_INPUT),
            Source(ema_source(round_index), KIND_CHECKPOINT, checkpoint=checkpoint),
        ]
    names = [s.name for s in sources]
    if len(set(names)) != len(names) or (checkpoint is None and any(n.startswith("ema@") for n in names)):
        raise FairweatherError(
            f"pseudolabel: candidate source names {names} repeat, or take 'input' / 'ema@...'; use name=path"
        )
    for source in sources:
        if source.checkpoint is not None:
            load_state(source.checkpoint)
    return sources


def sizing(cfg: FairweatherConfig) -> Sizing:
    """``pseudo.restore_concurrency`` restore actors, ``pseudo.score_concurrency`` score actors, of one size (with
    ``pseudo.one_actor``: ``restore_concurrency`` actors that do both)."""
    pseudo = cfg.pseudo
    return Sizing(
        pseudo.restore_concurrency,
        pseudo.score_concurrency,
        pseudo.num_cpus_per_actor,
        pseudo.num_gpus_per_actor,
        pseudo.batch_size,
        one_actor=pseudo.one_actor,
    )


def _check_resources(cfg: FairweatherConfig, restoring: bool) -> None:
    """GPUs where a CUDA scorer runs, a CPU left for reading on a private local Ray."""
    pseudo = cfg.pseudo
    if pseudo.scorer.device.startswith("cuda") and pseudo.num_gpus_per_actor <= 0:
        raise FairweatherError(
            f"pseudo.scorer.device={pseudo.scorer.device!r} but pseudo.num_gpus_per_actor=0: the actors would see no GPU"
        )
    check_cpu_budget(
        cfg.runtime,
        sizing(cfg).actor_cpus(restoring),
        "pseudo.restore_concurrency (+ pseudo.score_concurrency unless pseudo.one_actor) actors x "
        "pseudo.num_cpus_per_actor",
    )


def pseudolabel_dataset(
    cfg: FairweatherConfig,
    rows: list[dict],
    sources: list[Source],
    scorer_factory: Callable[[str], Scorer] | None = None,
    input_checks: InputChecks | None = None,
) -> ray.data.Dataset:
    """The lazy engine pipeline: work rows -> pixels (tasks) -> restorations (actors) -> PNGs (tasks) -> scores
    (actors). Every candidate carries its input (folder outputs are resized to it); ``input_checks`` scores a
    candidate against it."""
    pseudo = cfg.pseudo
    if input_checks is None and pseudo.guards.enabled:  # the fidelity and artifact guards of pseudo.guards
        input_checks = functools.partial(guard_checks, grid_periods=tuple(pseudo.guards.grid_periods))
    scoring = Scoring(
        pseudo.scorer_names,
        (),
        pseudo.scorer,
        cfg.vlm,
        cfg.runtime.model_cache_dir,
        scorer_factory,
        input_checks,
    )
    return restore_and_score(
        rows,
        checkpoints={s.name: s.checkpoint for s in sources if s.checkpoint is not None},
        scoring=scoring,
        sizing=sizing(cfg),
        max_pixels=cfg.data.max_image_pixels,
        with_inputs=True,
        after_restore=functools.partial(store_candidates, candidates_dir=candidates_dir(cfg)),
    )


def run_pseudolabel(
    cfg: FairweatherConfig,
    logger: MetricLogger | None = None,
    *,
    lineage: str,
    checkpoint: str | None = None,
    round_index: int = 0,
    scorer_factory: Callable[[str], Scorer] | None = None,
) -> PseudolabelSummary:
    """Add the candidates of round ``round_index`` to ``lineage``'s pseudo-label history and update its selection.

    checkpoint None and round 0: the init candidates (nothing when ``pseudo.init`` is off); otherwise the EMA
    teacher of ``checkpoint`` (a Ray Train checkpoint folder with ``state.pt``, or ``model.pt``).
    logger: the tracking run to log into (the rounds driver passes a child run; default: a new MLflow run).
    scorer_factory: picklable ``name -> Scorer`` used in the score actors instead of the real metrics (tests).
    """
    if checkpoint is None and round_index == 0 and not cfg.pseudo.init:
        return PseudolabelSummary(
            lineage, 0, 0, 0, 0, 0, math.nan, {}, 0.0, {}, note="init is off (pseudo.init)"
        )
    if scorer_factory is None:  # the scorers' weights, before anything reads a table or starts
        check_weights(cfg, "pseudolabel", cfg.pseudo.scorer_names)
    store = TableStore(cfg.data.tables)
    sources = _sources(cfg, checkpoint, round_index)
    images = real_view(store, None).to_pylist()
    if not images:
        raise FairweatherError(
            f"pseudolabel: no labeled pool images under {cfg.data.tables} (pool ⋈ labels is empty): run "
            "`fairweather label` first"
        )
    keys = store.keys("pseudo_labels")
    # This round's candidates already scored, and every input scored in any round (once per lineage).
    done = {
        (image_id, source)
        for (line, image_id, rnd, source) in keys
        if line == lineage and (rnd == round_index or source == INPUT_SOURCE)
    }
    rows, unmatched = work_rows(images, sources, done, lineage=lineage, pool_root=cfg.data.pool)
    for name, count in unmatched.items():
        if count:
            log.warning("pseudolabel: %s has no output for %d pool image(s)", name, count)
    check_output_locations(cfg)
    check_writable(candidates_dir(cfg), "pseudo.candidates_dir")
    _check_resources(cfg, any(s.checkpoint for s in sources))
    run_name = f"pseudolabel-{lineage}-round-{round_index}"
    with stage_run(cfg, "pseudolabel", run_name) if logger is None else contextlib.nullcontext(logger) as run:
        run.set_tags({"fairweather.lineage": lineage, "fairweather.round": str(round_index)})
        summary = _update(cfg, store, rows, sources, lineage, round_index, scorer_factory, unmatched)
        _log(run, summary)
    _print(summary)
    return summary


def _update(
    cfg: FairweatherConfig,
    store: TableStore,
    rows: list[dict],
    sources: list[Source],
    lineage: str,
    round_index: int,
    scorer_factory: Callable[[str], Scorer] | None,
    unmatched: dict[str, int],
) -> PseudolabelSummary:
    """Run the pipeline over ``rows`` (may be none: a rerun still decides pending rows), decide, summarise."""
    rule = Rule.of(cfg.pseudo)
    failures, succeeded, seconds_by_part = [], set(), Counter()
    start = time.perf_counter()
    with CandidateWriter(store, cfg.pseudo.flush_rows, cfg.pseudo.flush_seconds) as writer:
        if rows:
            with ray_session(cfg), progress(len(rows), "pseudo-labels", unit="candidate") as bar:
                dataset = pseudolabel_dataset(cfg, rows, sources, scorer_factory)
                for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                    bar.update(batch.num_rows)
                    now = datetime.now(timezone.utc)
                    for row in batch.to_pylist():
                        stage = f"pseudolabel:{lineage}:{row['source']}"
                        error = _failure(row, rule)
                        if error is not None:
                            failures.append({"uri": row["source_uri"], "stage": stage, **error, "time": now})
                            continue
                        seconds_by_part.update(
                            {f"score/{k}": v for k, v in json.loads(row["seconds"]).items()}
                        )
                        seconds_by_part["restore"] += row["restore_seconds"] or 0.0
                        writer.add(
                            candidate_row(
                                row, store=store, lineage=lineage, round_index=round_index, rule=rule, now=now
                            )
                        )
                        succeeded.add((relative_uri(store.root, row["source_uri"]), stage))
    replaced, unchanged = decide(store, lineage, rule, datetime.now(timezone.utc))
    _write_errors(store, failures, succeeded)
    store.compact("pseudo_labels")
    mean, per_weather, label_sources = selected_stats(store, lineage)
    return PseudolabelSummary(
        lineage=lineage,
        round=round_index,
        candidates=writer.written,
        replaced=replaced,
        unchanged=unchanged,
        errors=len(failures),
        mean_combined=mean,
        per_weather=per_weather,
        seconds=round(time.perf_counter() - start, 3),
        seconds_by_part={k: round(v, 3) for k, v in sorted(seconds_by_part.items())},
        unmatched=unmatched,
        label_sources=label_sources,
    )


def _failure(row: dict, rule: Rule) -> dict | None:
    """``{error_type, message}`` when the row cannot become a candidate: it failed, or a scorer gave no value."""
    if row["status"] != "ok":
        return {"error_type": row["error_type"], "message": row["message"] or ""}
    missing = missing_scores(json.loads(row["scores"]), rule)
    if missing:
        return {"error_type": f"score:{','.join(missing)}", "message": row["message"] or "no finite score"}
    return None


def _write_errors(store: TableStore, failures: list[dict], succeeded: set[tuple[str, str]]) -> None:
    """Failures as ``errors`` rows; errors of (file, source) pairs that succeeded now are removed."""
    if failures:
        for failure in failures:
            failure["uri"] = relative_uri(store.root, failure["uri"])
        store.write("errors", pa.Table.from_pylist(failures))
    if succeeded:

        def fixed(errors: pa.Table) -> pa.Array:
            pairs = [
                f"{u}\x1f{s}"
                for u, s in zip(errors["uri"].to_pylist(), errors["stage"].to_pylist(), strict=True)
            ]
            return pc.is_in(pa.array(pairs, pa.string()), pa.array([f"{u}\x1f{s}" for u, s in succeeded]))

        store.compact("errors", drop=fixed)
    elif failures:
        store.compact("errors")


def _log(run: MetricLogger, summary: PseudolabelSummary) -> None:
    metrics = {
        "pseudo/candidates": summary.candidates,
        "pseudo/replaced": summary.replaced,
        "pseudo/unchanged": summary.unchanged,
        "pseudo/errors": summary.errors,
        "pseudo/seconds": summary.seconds,
        **{f"pseudo/seconds/{part}": v for part, v in summary.seconds_by_part.items()},
    }
    if not math.isnan(summary.mean_combined):
        metrics["pseudo/mean_combined"] = summary.mean_combined
    for weather, stats in summary.per_weather.items():
        metrics.update({f"pseudo/{weather}/{k}": v for k, v in stats.items()})
    run.log_metrics(metrics, step=summary.round)


def _print(summary: PseudolabelSummary) -> None:
    say(
        f"pseudolabel {summary.lineage} round {summary.round}: {summary.candidates} candidates, {summary.replaced} "
        f"pseudo-labels replaced, {summary.unchanged} kept, {summary.errors} errors in {summary.seconds:.1f}s"
        + (
            "; labels now from " + ", ".join(f"{s} {n}" for s, n in summary.label_sources.items())
            if summary.label_sources
            else ""
        )
    )
    if summary.per_weather:  # the console: the overall line; the run log: every weather
        for weather, s in summary.per_weather.items():
            line = (
                f"  {weather}: {s['count']} images, selected pseudo-labels' score mean {s['mean']:.3f} "
                f"(q10 {s['q10']:.3f}, q50 {s['q50']:.3f}, q90 {s['q90']:.3f})"
            )
            if weather == "overall":
                say(line)
            else:
                log.info("pseudolabel:%s", line)
