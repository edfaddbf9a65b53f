"""The supervised warm-up: Paper A's "init" chooses the first pseudo-labels among the outputs of an existing
restorer and the input itself. Where no restorer is given (``pseudo.init_checkpoints`` / ``init_folders``), this
trains one: ``pseudo.warmup_steps`` steps of L_sup alone on the paired set, as a Ray Train run of its own named
``<lineage>-warmup``; its EMA teacher then restores every pool image as the init candidate ``warmup``, next to the
input, so the selection really decides between sources.

The run is resumable and idempotent like any training run: a warm-up that reached its steps is not trained again.
"""

from __future__ import annotations

import dataclasses

from fairweather.contracts.config import FairweatherConfig
from fairweather.contracts.config.loss import LossWeights
from fairweather.contracts.io import full_uri
from fairweather.contracts.metric_logger import MetricLogger
from fairweather.stages.infra.console import say
from fairweather.stages.train.driver import run_train, storage_path, trained_until
from fairweather.stages.train.progress import train_progress

#: Source name of the warm-up restorer's candidates in the ``pseudo_labels`` table.
WARMUP_SOURCE = "warmup"


def warmup_due(cfg: FairweatherConfig) -> bool:
    """A warm-up runs when the init needs a restorer and the config asks for one."""
    return cfg.pseudo.init and cfg.pseudo.warmup_steps > 0


def warmup_config(cfg: FairweatherConfig, lineage: str) -> FairweatherConfig:
    """The warm-up run's config: one round of ``pseudo.warmup_steps``, L_sup only, no real images."""
    steps = cfg.pseudo.warmup_steps
    train = dataclasses.replace(
        cfg.train,
        run_name=f"{lineage}-{WARMUP_SOURCE}",
        new_run=False,
        rounds=1,
        iterations_per_round=steps,
        warmup_steps=min(cfg.train.warmup_steps, steps // 2),
        checkpoint_every=steps,
        real_batch_size=0,
        val_real_images=0,
    )
    weights = LossWeights(
        **{term.name: float(term.name == "sup") for term in dataclasses.fields(LossWeights)}
    )
    loss = dataclasses.replace(cfg.loss, weights=weights)
    return dataclasses.replace(cfg, train=train, loss=loss)


def _progress(cfg: FairweatherConfig, lineage: str) -> tuple[FairweatherConfig, int, str | None]:
    """The warm-up run's config, the steps it has trained, and its final checkpoint once it reached
    ``pseudo.warmup_steps`` (else None): one read of its registered checkpoints."""
    warm = warmup_config(cfg, lineage)
    done, checkpoint = trained_until(storage_path(warm), warm.train.run_name)
    return warm, done, checkpoint if done >= cfg.pseudo.warmup_steps else None


def finished_warmup(cfg: FairweatherConfig, lineage: str) -> str | None:
    """The warm-up's final checkpoint if it reached ``pseudo.warmup_steps``, else None."""
    return _progress(cfg, lineage)[2]


def warmup_checkpoint(cfg: FairweatherConfig, logger: MetricLogger, lineage: str) -> str:
    """The warm-up's final checkpoint, trained now unless it already reached ``pseudo.warmup_steps``."""
    warm, done, finished = _progress(cfg, lineage)
    if finished:
        return finished
    steps = cfg.pseudo.warmup_steps
    say(f"train: supervised warm-up {warm.train.run_name}: {steps} steps of L_sup (the init's restorer)")
    with train_progress("train warm-up", steps, done) as bar:
        summary = run_train(warm, logger, until_step=steps, callbacks=bar)
    return full_uri(storage_path(warm), summary.checkpoint)


def with_warmup(cfg: FairweatherConfig, checkpoint: str) -> FairweatherConfig:
    """``cfg`` whose init candidates include the warm-up restorer's outputs."""
    entry = f"{WARMUP_SOURCE}={checkpoint}"
    pseudo = dataclasses.replace(cfg.pseudo, init_checkpoints=(*cfg.pseudo.init_checkpoints, entry))
    return dataclasses.replace(cfg, pseudo=pseudo)
