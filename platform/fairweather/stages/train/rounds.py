"""``fairweather train``: Paper A's rounds of mean-teacher training with a pseudo-label update between rounds.

The run is named once, before any pseudo-label exists (``stages.train.run_name`` of the config and the ``paired``,
``pool`` and ``labels`` versions), and that name is pinned into the config (``train.run_name``,
``train.new_run=false``), so every round's ``fit()`` continues the same Ray Train run: round k (1-based) trains
until step ``k * train.iterations_per_round``, resuming from the previous round's last checkpoint through Ray
Train's own restore, with new datasets that carry the pseudo-labels selected so far. The name is also the
*lineage* of the run's pseudo-labels in the ``pseudo_labels`` table.

Order: the init candidates (input + existing methods) when ``pseudo.init``, after the supervised warm-up that
gives them a restorer where there is none (``pseudo.warmup_steps``; with ``pseudo.warmup_starts_rounds`` round 1
starts from its network, ``train.init_weights``); then per round: train; unless it is
the last round, and when ``pseudo.iterate`` or after round 1: score the new EMA teacher's restorations
(``ema@round-<k>``) and replace the pseudo-labels they beat.

A rerun of the same command resumes where the last one stopped: the run's latest checkpoint step says which rounds
are trained (they are skipped: no fit, no second test scoring), the lineage's rows say which updates finished (an
update with undecided rows, or none, runs again; the pseudo-label job itself skips what it already scored).

MLflow: the parent run (stage ``train``, keyed by the run name) gets the training curves, each round's test scores
and model, and the headline of every update at the step it happened (the init at step 0); a child run
``round-<k>`` per round gets its steps, time, the ``pseudo_labels`` version it trained on, and the update after it:
the pseudo-label job's own numbers, a histogram of the selection and the audit grid (``stages.rounds_report``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ray.train.v2.api.callback import RayTrainCallback

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import full_uri
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view, real_view, table_versions
from fairweather.stages.infra.console import say
from fairweather.stages.infra.locks import run_lock
from fairweather.stages.infra.preflight import check_weights
from fairweather.stages.infra.runtime import ray_session
from fairweather.stages.infra.tracking import closing, stage_run
from fairweather.stages.pseudolabel.driver import PseudolabelSummary, run_pseudolabel
from fairweather.stages.pseudolabel.tables import lineage_rows
from fairweather.stages.train.driver import default_lineage, run_train, storage_path, trained_until
from fairweather.stages.train.progress import train_progress
from fairweather.stages.train.prompts import PROMPTS_FILE, learn_prompts
from fairweather.stages.train.rounds_report import report_update, update_complete
from fairweather.stages.train.warmup import (
    WARMUP_SOURCE,
    finished_warmup,
    warmup_checkpoint,
    warmup_due,
    with_warmup,
)
from fairweather.stages.train.worker import StepHook

#: ``(cfg, logger, *, lineage, checkpoint, round_index) -> PseudolabelSummary``: the update (``run_pseudolabel``).
Pseudolabel = Callable[..., PseudolabelSummary]


@dataclass(frozen=True)
class RoundSummary:
    #: 1-based, as in the ``pseudo_labels`` table (round k's update files candidates of round k).
    round: int
    #: ``trained`` in this call, or ``done`` before (a rerun skipped its training).
    status: str
    #: The step the round ends at (``round * train.iterations_per_round``).
    steps: int
    seconds: float
    #: The pseudo-label update after this round; None when none ran in this call.
    pseudo: PseudolabelSummary | None


@dataclass(frozen=True)
class RoundsSummary:
    run_name: str
    #: Folder (or URI) of the run's latest checkpoint.
    checkpoint: str
    steps: int
    seconds: float
    #: ``{"<weather>": {"input_psnr", "psnr", "input_ssim", "ssim"}}`` of the last round trained in this call
    #: (empty when every round was trained before).
    test: dict[str, dict[str, float]]
    #: The init pseudo-labels scored in this call; None: off, or done before.
    init: PseudolabelSummary | None
    rounds: tuple[RoundSummary, ...]


def pinned(cfg: FairweatherConfig, name: str) -> FairweatherConfig:
    """``cfg`` with ``train.run_name=name`` and ``train.new_run=false``: every fit continues run ``name``."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, run_name=name, new_run=False))


def updates_after(cfg: FairweatherConfig) -> tuple[int, ...]:
    """The rounds (1-based) after which the pseudo-labels are updated: every round but the last with
    ``pseudo.iterate``, else round 1 only (the ablation without iterative updates); none with one round."""
    return tuple(k for k in range(1, cfg.train.rounds) if cfg.pseudo.iterate or k == 1)


def learn_run_prompts(cfg: FairweatherConfig, logger: MetricLogger) -> str:
    """Stage 1 (weather prompts) of this config's run ahead of its rounds (the pipeline shows it as a stage of
    its own); the rounds reuse the file. Returns its path."""
    name = default_lineage(cfg)
    store = TableStore(cfg.data.tables)
    rows = {"train": paired_view(store, "train").to_pylist(), "real": real_view(store, name).to_pylist()}
    folder = f"{storage_path(cfg)}/{name}"
    learn_prompts(cfg, rows, folder, logger)
    return f"{folder}/{PROMPTS_FILE}"


def run_rounds(
    cfg: FairweatherConfig,
    logger: MetricLogger | None = None,
    *,
    step_hook: StepHook | None = None,
    callbacks: Sequence[RayTrainCallback] = (),
    pseudolabel: Pseudolabel = run_pseudolabel,
) -> RoundsSummary:
    """Train ``train.rounds`` rounds with pseudo-label updates between them (see the module docstring).

    logger: the parent run (default: the ``train`` stage's MLflow run keyed by the run name, reopened by a rerun).
    step_hook, callbacks: passed to every round's :func:`~fairweather.stages.train.driver.run_train`.
    pseudolabel: the update job (tests inject a fast one, or one that fails).
    """
    check_weights(
        cfg, "train"
    )  # CLIP / Depth Anything where the losses need them, before Ray or a run starts
    if cfg.pseudo.init or cfg.train.rounds > 1:
        check_weights(cfg, "pseudolabel", cfg.pseudo.scorer_names)
    name = default_lineage(cfg)
    cfg = pinned(cfg, name)
    # One live command per training run: a second one is refused here, before Ray or MLflow start.
    with (
        run_lock(cfg.runtime, "train", name, storage_path(cfg), what=f"training run {name}"),
        ray_session(cfg),
    ):
        if logger is None:
            with stage_run(cfg, "train", name, key=name) as own:
                return _rounds(cfg, own, name, step_hook, callbacks, pseudolabel)
        return _rounds(cfg, logger, name, step_hook, callbacks, pseudolabel)


def _rounds(
    cfg: FairweatherConfig,
    parent: MetricLogger,
    name: str,
    step_hook: StepHook | None,
    callbacks: Sequence[RayTrainCallback],
    pseudolabel: Pseudolabel,
) -> RoundsSummary:
    start = time.perf_counter()
    store, storage = TableStore(cfg.data.tables), storage_path(cfg)
    total, per_round = cfg.train.rounds, cfg.train.iterations_per_round
    done, checkpoint = trained_until(storage, name)
    parent.set_tags({"fairweather.run_name": name, "fairweather.rounds": str(total)})
    if 0 < done < total * per_round:
        say(f"train: run {name} resumes after step {done} of {total * per_round}")

    # Without labeled real images there is nothing to pseudo-label: the rounds train on the pairs alone.
    real = real_view(store, None).num_rows > 0
    if not real:
        say(f"train: no labeled real images under {store.root}: no pseudo-label updates")
    init = None
    needs_init = real and cfg.pseudo.init and done == 0 and not update_complete(lineage_rows(store, name), 0)
    warm = None
    starts_warm = real and done == 0 and cfg.pseudo.warmup_starts_rounds
    if real and warmup_due(cfg) and (needs_init or starts_warm):
        # A finished warm-up (the pipeline's stage, or a crashed command's) is not trained again, nor given another
        # MLflow run: a rerun before round 1's first checkpoint gets the same one back. Once the run has a
        # checkpoint of its own, train.init_weights is never read.
        warm = finished_warmup(cfg, name)
        if warm is None:
            with closing(parent.child(WARMUP_SOURCE, key=WARMUP_SOURCE)) as child:
                warm = warmup_checkpoint(cfg, child, name)
    if needs_init:
        say(f"train: run {name}: scoring the initial pseudo-labels (input and existing methods)")
        init_cfg = with_warmup(cfg, warm) if warm else cfg
        init = _update(init_cfg, pseudolabel, parent, parent, store, name, None, 0, step=0)
    if warm and starts_warm:
        cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, init_weights=warm))

    rounds, test, plan = [], {}, updates_after(cfg)
    for index in range(1, total + 1):
        end = index * per_round
        update = real and index in plan
        pending = update and done == end and not update_complete(lineage_rows(store, name), index)
        if done >= end and not pending:
            rounds.append(RoundSummary(index, "done", end, 0.0, None))
            continue
        began = time.perf_counter()
        with closing(parent.child(f"round-{index}", key=f"round-{index}")) as child:
            status = "done"
            if done < end:
                status = "trained"
                say(f"train: round {index}/{total} starts at step {done} (until step {end})")
                child.set_tags(
                    {
                        "fairweather.round": str(index),
                        "fairweather.steps": f"{done + 1}-{end}",
                        "table.pseudo_labels": table_versions(store, ("pseudo_labels",))["pseudo_labels"],
                    }
                )
                with train_progress(f"train round {index}/{total}", end, done) as bar:
                    trained = run_train(
                        cfg, parent, until_step=end, step_hook=step_hook, callbacks=[*callbacks, *bar]
                    )
                done, checkpoint, test = trained.steps, full_uri(storage, trained.checkpoint), trained.test
                child.set_tags({"fairweather.checkpoint": checkpoint})
            pseudo = None
            if update:
                pseudo = _update(cfg, pseudolabel, child, parent, store, name, checkpoint, index, step=end)
            seconds = round(time.perf_counter() - began, 1)
            child.log_metrics({"round/seconds": seconds}, step=end)
        rounds.append(RoundSummary(index, status, end, seconds, pseudo))
        replaced = f"; {pseudo.replaced} pseudo-labels replaced" if pseudo else ""
        say(f"train: round {index}/{total} done at step {end} in {seconds:.0f} s{replaced}")
    if checkpoint is None:
        raise FairweatherError(f"training run {name} has no checkpoint under {storage}")
    if not test:
        say(f"train: run {name} had trained all {total} round(s); latest checkpoint {checkpoint}")
    return RoundsSummary(
        run_name=name,
        checkpoint=checkpoint,
        steps=done,
        seconds=round(time.perf_counter() - start, 1),
        test=test,
        init=init,
        rounds=tuple(rounds),
    )


def _update(
    cfg: FairweatherConfig,
    pseudolabel: Pseudolabel,
    run: MetricLogger,
    parent: MetricLogger,
    store: TableStore,
    name: str,
    checkpoint: str | None,
    round_index: int,
    *,
    step: int,
) -> PseudolabelSummary:
    """One pseudo-label update logged into ``run`` (the job's numbers, the selection's histogram and the audit
    grid); the parent also gets its headline at ``step``, so its curves show every update against the training
    steps."""
    summary = pseudolabel(cfg, run, lineage=name, checkpoint=checkpoint, round_index=round_index)
    report_update(run, cfg.runtime, store, name, round_index)
    if run is not parent:
        headline = {"pseudo/replaced": float(summary.replaced)}
        if math.isfinite(summary.mean_combined):
            headline["pseudo/mean_combined"] = summary.mean_combined
        parent.log_metrics(headline, step=step)
    return summary
