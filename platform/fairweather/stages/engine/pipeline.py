"""The restore-and-score pipeline: work rows -> pixels (tasks) -> restorations (actors) -> [the caller's step]
-> scores (actors), as one lazy Ray Data dataset sized by the caller's knobs; with ``Sizing.one_actor`` the three
steps after reading run in one actor, row by row (:class:`~fairweather.stages.engine.actors.RestoreAndScoreActor`).

Callers: ``fairweather evaluate`` (test sets x methods, then its tables and report) and ``fairweather
pseudolabel`` (pool images x candidate sources; its step stores each candidate as a PNG). Each maps the scored
rows (:data:`~fairweather.stages.engine.scored.SCORED_SCHEMA`) to its own table.

Memory: a read task runs :func:`~fairweather.stages.engine.rows.read_rows`, whose module imports no torch (a read
task's process stays at Ray's and PIL's size, about 0.2 GiB, where importing this module would add torch's 0.45
GiB; when restoring, Ray Data fuses the read into the restore actor, which has torch anyway), and holds one
decoded row at a time (it yields each row as it is read), and Ray Data cuts the
yielded rows into blocks of at most ``DataContext.target_max_block_size`` (128 MiB) or one row. CPU actors take
whole blocks as batches (``batch_size=None``), so a call holds at most ``Sizing.batch_size`` rows of small images,
and a single row of a big photo (one 24-Mpx pair is 144 MB), never ``batch_size`` big photos at once. GPU actors
take ``Sizing.batch_size`` rows (Ray Data needs a batch size when an actor reserves a GPU).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import pyarrow as pa
import ray

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.stages.engine.actors import RestoreActor, RestoreAndScoreActor, ScoreActor
from fairweather.stages.engine.rows import read_rows
from fairweather.stages.engine.scored import InputChecks

if TYPE_CHECKING:
    from fairweather.metrics import Scorer


@dataclass(frozen=True)
class Sizing:
    """The actor pools: how many of each, what each reserves, rows per actor call."""

    restore_actors: int
    score_actors: int
    num_cpus_per_actor: float
    num_gpus_per_actor: float
    #: Work rows per read task, and so rows per actor call at most.
    batch_size: int
    #: Restore and score in one pool of ``restore_actors`` actors (:class:`RestoreAndScoreActor`): less memory,
    #: no overlap between restoring and scoring.
    one_actor: bool = False

    @property
    def threads(self) -> int:
        """Torch threads in each actor: its whole CPUs, at least 1."""
        return max(1, int(self.num_cpus_per_actor))

    def actor_cpus(self, restoring: bool) -> float:
        """CPUs the actors reserve (the restore pool only exists when something is restored)."""
        if restoring and self.one_actor:
            return self.restore_actors * self.num_cpus_per_actor
        return (self.score_actors + (self.restore_actors if restoring else 0)) * self.num_cpus_per_actor

    def pools(self, restoring: bool) -> int:
        """Actor pools of the pipeline: 1 (score only, or restore-and-score in one actor) or 2."""
        return 2 if restoring and not self.one_actor else 1


@dataclass(frozen=True)
class Scoring:
    """What the score actors compute: no-reference ``metrics`` on every image, ``reference_metrics`` where a
    target exists, ``input_checks`` where the input is known."""

    metrics: tuple[str, ...]
    reference_metrics: tuple[str, ...]
    scorer: ScorerConfig
    vlm: VLMConfig
    model_cache_dir: str
    #: Picklable ``name -> Scorer`` built in the actors instead of the real metrics (tests).
    scorer_factory: Callable[[str], Scorer] | None = None
    input_checks: InputChecks | None = None


def restore_and_score(
    rows: list[dict],
    *,
    checkpoints: Mapping[str, str],
    scoring: Scoring,
    sizing: Sizing,
    max_pixels: int,
    short_side: int | None = None,
    with_inputs: bool = False,
    after_restore: Callable[[pa.Table], pa.Table] | None = None,
) -> ray.data.Dataset:
    """The lazy pipeline over ``rows`` (:func:`~fairweather.stages.engine.rows.work_row` dicts).

    checkpoints: source name -> checkpoint path of every ``checkpoint`` row's source (no restore actors when
    empty). short_side: the resize policy (None: full resolution). with_inputs: carry each candidate's degraded
    input to the steps after restoring (always with ``scoring.input_checks``). after_restore: a picklable Ray Data
    map run in tasks between restoring and scoring (it may add columns; they pass through to the output).
    """
    with_inputs = with_inputs or scoring.input_checks is not None
    threads = sizing.threads
    actors = {
        "num_cpus": sizing.num_cpus_per_actor,
        "num_gpus": sizing.num_gpus_per_actor,
        "batch_format": "pyarrow",
        # Images are restored and scored one size group at a time; the batch sets how often Ray hands out work. On
        # CPU a batch is one block (see the module docstring), so a batch of big photos is one photo.
        "batch_size": sizing.batch_size if sizing.num_gpus_per_actor > 0 else None,
    }
    ds = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / sizing.batch_size)))
    ds = ds.map_batches(
        read_rows,
        batch_format="pyarrow",
        fn_kwargs={"max_pixels": max_pixels, "short_side": short_side, "with_input": with_inputs},
    )
    restore = {
        "checkpoints": dict(checkpoints),
        "num_gpus": sizing.num_gpus_per_actor,
        "threads": threads,
        "keep_input": with_inputs,
    }
    score = {
        "metrics": scoring.metrics,
        "reference_metrics": scoring.reference_metrics,
        "scorer": scoring.scorer,
        "threads": threads,
        "vlm": scoring.vlm,
        "model_cache_dir": scoring.model_cache_dir,
        "scorer_factory": scoring.scorer_factory,
        "input_checks": scoring.input_checks,
    }
    if checkpoints and sizing.one_actor:
        return ds.map_batches(
            RestoreAndScoreActor,
            fn_constructor_kwargs={"restore": restore, "score": score, "after_restore": after_restore},
            compute=ray.data.ActorPoolStrategy(size=sizing.restore_actors),
            **actors,
        )
    if checkpoints:
        ds = ds.map_batches(
            RestoreActor,
            fn_constructor_kwargs=restore,
            compute=ray.data.ActorPoolStrategy(size=sizing.restore_actors),
            **actors,
        )
    if after_restore is not None:
        ds = ds.map_batches(after_restore, batch_format="pyarrow")
    return ds.map_batches(
        ScoreActor,
        fn_constructor_kwargs=score,
        compute=ray.data.ActorPoolStrategy(size=sizing.score_actors),
        **actors,
    )
