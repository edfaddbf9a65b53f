"""``fairweather pipeline``: label the pool -> supervised warm-up -> initial pseudo-labels -> stage-1 prompts -> training rounds -> report.

Each stage reads the tables the one before it wrote. Before a stage runs, the pipeline computes its *input key*: a
hash of the config sections it reads and of the versions of the tables (or the pool listing) it consumes. A stage
whose key is already in the ``pipeline`` table finished on exactly these inputs and is skipped, so rerunning the
same command after a crash continues with the first unfinished stage, and a changed upstream table or config reruns
what depends on it. The stages themselves are resumable too (labels, pseudo-labels and checkpoints are kept), so a
stage interrupted half-way does not start from zero either.

MLflow: one parent run ``pipeline-<key>`` with a child run per stage (the rounds' own children nest below theirs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa

from fairweather.contracts.config import FairweatherConfig, to_dict
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import table_versions
from fairweather.stages.evaluate.driver import run_evaluate
from fairweather.stages.infra.console import say
from fairweather.stages.infra.locks import run_lock
from fairweather.stages.infra.pool import list_pool
from fairweather.stages.infra.preflight import check_weights
from fairweather.stages.infra.runtime import check_output_locations, ray_session
from fairweather.stages.infra.tracking import closing, stage_run
from fairweather.stages.label.driver import run_label
from fairweather.stages.pseudolabel.driver import run_pseudolabel
from fairweather.stages.train.driver import default_lineage
from fairweather.stages.train.rounds import learn_run_prompts, pinned, run_rounds
from fairweather.stages.train.rounds_report import report_update
from fairweather.stages.train.warmup import warmup_checkpoint, warmup_config, warmup_due, with_warmup

log = logging.getLogger(__name__)


def _digest(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class StageResult:
    stage: str
    #: ``ran``, ``skipped`` (finished before on the same inputs) or ``off`` (the config switches it off).
    status: str
    input_key: str
    seconds: float
    summary: dict


@dataclass(frozen=True)
class PipelineSummary:
    run_name: str
    stages: tuple[StageResult, ...]
    #: The final training checkpoint and the evaluation report's folder.
    checkpoint: str
    report_dir: str
    seconds: float


@dataclass(frozen=True)
class _Stage:
    name: str
    #: (cfg, store, state) -> the stage's input key; ``state`` carries what earlier stages produced. The lineage
    #: (the training run's name) is computed when needed: it fingerprints the tables the label stage writes.
    key: Callable[[FairweatherConfig, TableStore, dict], str]
    #: (cfg, logger, state) -> the stage's summary as a JSON-able dict (and updates ``state``).
    run: Callable[[FairweatherConfig, MetricLogger, dict], dict]
    #: cfg -> True when the config switches the stage off (e.g. no L_wpl: no prompts to learn).
    off: Callable[[FairweatherConfig], bool] = lambda cfg: False


def _label_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    listing = list_pool(cfg.data.pool, follow_links_out=cfg.data.follow_links_out, roots=cfg.data.roots)
    uris = [item["uri"] for item in listing.items]
    return _digest("label", to_dict(cfg.vlm), to_dict(cfg.label), cfg.data.max_image_pixels, uris)


def _warmup_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    warm = warmup_config(cfg, default_lineage(cfg))
    return _digest(
        "warmup",
        to_dict(warm.train),
        to_dict(warm.loss),
        to_dict(warm.model),
        table_versions(store, ("paired",)),
    )


def _init_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    vlm = to_dict(cfg.vlm) if cfg.pseudo.use_vlm else None
    return _digest(
        "init",
        to_dict(cfg.pseudo),
        vlm,
        default_lineage(cfg),
        state.get("warmup"),
        table_versions(store, ("pool", "labels")),
    )


def _prompts_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    # The lineage fingerprints the config and the input tables.
    return _digest("prompts", default_lineage(cfg))


def _rounds_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    return _digest(
        "rounds", default_lineage(cfg), to_dict(cfg.pseudo), table_versions(store, ("pool", "labels"))
    )


def _evaluate_key(cfg: FairweatherConfig, store: TableStore, state: dict) -> str:
    return _digest("evaluate", to_dict(cfg.evaluate), state["checkpoint"], table_versions(store, ("paired",)))


def _as_dict(summary: object) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(summary), default=str))


def _label(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    return _as_dict(run_label(cfg, logger))


def _warmup(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    state["warmup"] = warmup_checkpoint(cfg, logger, default_lineage(cfg))
    return {"warmup": state["warmup"], "steps": cfg.pseudo.warmup_steps}


def _init(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    if "warmup" in state:
        cfg = with_warmup(cfg, state["warmup"])
    lineage = default_lineage(cfg)
    summary = run_pseudolabel(cfg, logger, lineage=lineage)
    # The init's histogram and audit grid, as every round's update has them.
    report_update(logger, cfg.runtime, TableStore(cfg.data.tables), lineage, 0)
    return _as_dict(summary)


def _prompts(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    return {"prompts": learn_run_prompts(cfg, logger)}


def _rounds(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    summary = _as_dict(run_rounds(cfg, logger))
    state["checkpoint"] = summary["checkpoint"]
    return summary


def _evaluate(cfg: FairweatherConfig, logger: MetricLogger, state: dict) -> dict:
    evaluate = dataclasses.replace(
        cfg.evaluate, checkpoints=(f"{default_lineage(cfg)}={state['checkpoint']}",)
    )
    summary = _as_dict(run_evaluate(dataclasses.replace(cfg, evaluate=evaluate), logger, show_means=False))
    state["report_dir"] = summary["report_dir"]
    return summary


STAGES = (
    _Stage("label", _label_key, _label),
    _Stage("warmup", _warmup_key, _warmup, off=lambda cfg: not warmup_due(cfg)),
    _Stage("init", _init_key, _init, off=lambda cfg: not cfg.pseudo.init),
    _Stage("prompts", _prompts_key, _prompts, off=lambda cfg: not cfg.loss.weights.on("wpl")),
    _Stage("rounds", _rounds_key, _rounds),
    _Stage("evaluate", _evaluate_key, _evaluate, off=lambda cfg: not cfg.evaluate.test_sets),
)


def _finished(store: TableStore, stage: str, key: str) -> dict | None:
    """The summary a finished run of ``stage`` recorded for ``key``, or None."""
    done = store.read("pipeline")
    for row in done.to_pylist():
        if row["stage"] == stage and row["input_key"] == key:
            return json.loads(row["summary"])
    return None


def _record(store: TableStore, stage: str, key: str, summary: dict, seconds: float) -> None:
    row = {
        "stage": stage,
        "input_key": key,
        "summary": json.dumps(summary, sort_keys=True),
        "seconds": seconds,
        "finished_at": datetime.now(UTC),
    }
    store.write("pipeline", pa.Table.from_pylist([row]))


def run_pipeline(cfg: FairweatherConfig, logger: MetricLogger | None = None) -> PipelineSummary:
    """Run every stage not yet finished on its current inputs; see the module docstring."""
    start = time.perf_counter()
    check_output_locations(cfg)
    # Every weight any stage needs, checked before the first stage runs: not an hour later in the evaluation.
    for stage, metrics in (
        ("label", ()),
        ("pseudolabel", cfg.pseudo.scorer_names),
        ("train", ()),
        ("evaluate", cfg.evaluate.metrics + cfg.evaluate.reference_metrics),
    ):
        check_weights(cfg, stage, metrics)
    store = TableStore(cfg.data.tables)
    name = f"pipeline-{_digest(to_dict(cfg))[:12]}"
    results: list[StageResult] = []
    state: dict = {}
    own = stage_run(cfg, "pipeline", name, key=name) if logger is None else contextlib.nullcontext(logger)
    with (
        run_lock(cfg.runtime, "pipeline", name, what=f"pipeline run {name}"),
        ray_session(cfg),
        own as parent,
    ):
        for position, stage in enumerate(STAGES, 1):
            if results and results[-1].stage == "label":
                # The training run's name (the pseudo-labels' lineage) fingerprints the labels: fix it once they
                # exist, so every later stage (and train.new_run=true) names the same run.
                cfg = pinned(cfg, default_lineage(cfg))
            prefix = f"pipeline: [{position}/{len(STAGES)}] {stage.name}"
            if stage.off(cfg):
                say(f"{prefix}: off in this config")
                results.append(StageResult(stage.name, "off", "", 0.0, {}))
                continue
            key = stage.key(cfg, store, state)
            done = _finished(store, stage.name, key)
            if done is not None:
                say(f"{prefix}: done before on the same inputs, skipped")
                state.update({k: done[k] for k in ("checkpoint", "report_dir", "warmup") if k in done})
                results.append(StageResult(stage.name, "skipped", key, 0.0, done))
                continue
            say(f"{prefix}: running")
            began = time.perf_counter()
            with closing(parent.child(stage.name, key=f"{stage.name}-{key}")) as child:
                summary = stage.run(cfg, child, state)
            seconds = round(time.perf_counter() - began, 1)
            _record(store, stage.name, key, summary, seconds)
            say(f"{prefix}: finished in {seconds:.0f} s")
            results.append(StageResult(stage.name, "ran", key, seconds, summary))
        parent.log_metrics({f"pipeline/seconds/{r.stage}": r.seconds for r in results if r.status == "ran"})
    summary = PipelineSummary(
        run_name=name,
        stages=tuple(results),
        checkpoint=state.get("checkpoint", ""),
        report_dir=state.get("report_dir", ""),
        seconds=round(time.perf_counter() - start, 1),
    )
    report = f"; report in {summary.report_dir}" if summary.report_dir else ""
    say(f"pipeline: final checkpoint {summary.checkpoint}{report}")
    return summary
