"""The engine's Ray Data actors: restore with checkpoints, then score with the metric scorers.

Both hold their heavy state (networks, metric models) for their whole life, so a model is loaded once per actor,
not once per batch; the work itself is :func:`~fairweather.stages.engine.score.restore_one` and
:func:`~fairweather.stages.engine.score.score_rows`, which the in-process path calls too. Columns a caller adds
between the steps (beyond :data:`~fairweather.stages.engine.rows.ROW_SCHEMA`) pass through both actors.
"""

from __future__ import annotations

from collections.abc import Callable

import pyarrow as pa
import torch

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.metrics import Scorer, build_scorer
from fairweather.stages.engine.rows import ROW_SCHEMA
from fairweather.stages.engine.score import SCORED_SCHEMA, InputChecks, restore_one, score_rows
from fairweather.training.restorer import load_restorer


class RestoreActor:
    """Holds every checkpoint's EMA teacher (built from the config stored in the checkpoint, tiled restore);
    replaces the pixels of ``checkpoint`` rows by their restoration, keeping the input when asked."""

    def __init__(self, checkpoints: dict[str, str], num_gpus: float, threads: int, keep_input: bool = False):
        torch.set_num_threads(threads)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.restorers = {name: load_restorer(path, device=device) for name, path in checkpoints.items()}
        self.keep_input = keep_input

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        for row in rows:
            restore_one(row, self.restorers, keep_input=self.keep_input)
        return pa.Table.from_pylist(rows, schema=batch.schema)


class ScoreActor:
    """Holds one scorer per metric; turns a batch into its scored rows (:data:`SCORED_SCHEMA`, then the
    caller's own columns)."""

    def __init__(
        self,
        metrics: tuple[str, ...],
        reference_metrics: tuple[str, ...],
        scorer: ScorerConfig,
        threads: int,
        vlm: VLMConfig,
        model_cache_dir: str,
        scorer_factory: Callable[[str], Scorer] | None = None,
        input_checks: InputChecks | None = None,
    ):
        """vlm, model_cache_dir: the labeling VLM that ``vlm_vis`` scores with (built where labeling builds it).
        scorer_factory: picklable ``name -> Scorer`` built in the actor instead of ``build_scorer`` (tests).
        input_checks: picklable ``(candidate, input) -> {name: value}`` on the rows that carry their input."""
        torch.set_num_threads(threads)

        def make(name: str) -> Scorer:
            if scorer_factory is not None:
                return scorer_factory(name)
            return build_scorer(name, scorer, device=scorer.device, vlm=vlm, model_cache_dir=model_cache_dir)

        self.scorers = {name: make(name) for name in metrics}
        self.reference = {name: make(name) for name in reference_metrics}
        self.input_checks = input_checks

    def __call__(self, batch: pa.Table) -> pa.Table:
        extra = [field for field in batch.schema if field.name not in ROW_SCHEMA.names]
        rows = score_rows(batch.to_pylist(), self.scorers, self.reference, input_checks=self.input_checks)
        return pa.Table.from_pylist(rows, schema=pa.schema(list(SCORED_SCHEMA) + extra))
