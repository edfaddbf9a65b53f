"""The engine's Ray Data actors: restore with checkpoints, then score with the metric scorers (two pools, or one
actor doing both: :class:`RestoreAndScoreActor`).

Both hold their heavy state (networks, metric models) for their whole life, so a model is loaded once per actor,
not once per batch; the work itself is :func:`~fairweather.stages.engine.score.restore_one` and
:func:`~fairweather.stages.engine.score.score_rows`, which the in-process path calls too. Columns a caller adds
between the steps (beyond :data:`~fairweather.stages.engine.rows.ROW_SCHEMA`) pass through both actors.

Imports: this module imports no torch, so the driver that builds the pipeline from these classes stays without it
(:mod:`~fairweather.stages.engine.scored`); each actor imports torch, the networks and the scorers in its own
process when it starts.

Memory: pixel columns are read in place from the batch's Arrow buffers (no Python ``bytes`` copy of an image), the
restore actor hands each restored row on as soon as it is done (one row per yielded table, its restored pixels
wrapped without a copy), and the score actor's output carries no pixels. So an actor holds its batch, one
restoration and the scorers' tiles, and a photo's size adds only its own bytes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from fairweather.contracts.config.evaluate import ScorerConfig
from fairweather.contracts.config.vlm import VLMConfig
from fairweather.stages.engine.rows import ROW_SCHEMA
from fairweather.stages.engine.scored import SCORED_SCHEMA, InputChecks

if TYPE_CHECKING:
    from fairweather.metrics import Scorer


def _is_binary(field: pa.Field) -> bool:
    return pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)


def _views(column: pa.ChunkedArray) -> list[pa.Buffer | None]:
    """Each value of a binary column as a slice of the column's own data buffer (``BinaryScalar.as_buffer`` copies
    the value); None for a null."""
    out: list[pa.Buffer | None] = []
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        kind = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        ends = np.frombuffer(offsets, kind)[chunk.offset : chunk.offset + len(chunk) + 1].tolist()
        valid = chunk.is_valid().to_pylist()
        for i in range(len(chunk)):
            if not valid[i]:
                out.append(None)
            else:
                out.append(
                    data.slice(ends[i], ends[i + 1] - ends[i]) if data is not None else pa.py_buffer(b"")
                )
    return out


def batch_rows(batch: pa.Table) -> list[dict]:
    """The batch's rows as dicts; binary (pixel) columns as zero-copy ``pyarrow.Buffer`` views (``np.frombuffer``
    reads them in place; an empty value stays empty, a null stays None)."""
    columns = {}
    for field in batch.schema:
        column = batch.column(field.name)
        if _is_binary(field):
            columns[field.name] = _views(column)
        else:
            columns[field.name] = column.to_pylist()
    return [dict(zip(columns, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def _binary(values: list, type_: pa.DataType) -> pa.Array:
    """A binary column of ``values`` (bytes, Arrow buffers, contiguous uint8 arrays or None); one value is wrapped
    without a copy."""
    if len(values) == 1 and values[0] is not None:
        data = values[0] if isinstance(values[0], pa.Buffer) else pa.py_buffer(values[0])
        offset_type = np.int64 if pa.types.is_large_binary(type_) else np.int32
        offsets = pa.py_buffer(np.array([0, data.size], dtype=offset_type))
        return pa.Array.from_buffers(type_, 1, [None, offsets, data])
    return pa.array([None if v is None else memoryview(v) for v in values], type=type_)


def rows_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """``rows`` as a table of ``schema``; see :func:`_binary` for the pixel columns."""
    arrays = [
        _binary([row.get(field.name) for row in rows], field.type)
        if _is_binary(field)
        else pa.array([row.get(field.name) for row in rows], type=field.type)
        for field in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


class RestoreActor:
    """Holds every checkpoint's EMA teacher (built from the config stored in the checkpoint, tiled restore);
    replaces the pixels of ``checkpoint`` rows by their restoration, keeping the input when asked."""

    def __init__(self, checkpoints: dict[str, str], num_gpus: float, threads: int, keep_input: bool = False):
        # Imported here: the networks, losses and encoders it pulls in stay out of the score actors' processes.
        import torch

        from fairweather.training.restorer import load_restorer

        torch.set_num_threads(threads)
        device = "cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu"
        self.restorers = {name: load_restorer(path, device=device) for name, path in checkpoints.items()}
        self.keep_input = keep_input

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        from fairweather.stages.engine.score import restore_one

        for row in batch_rows(batch):
            restore_one(row, self.restorers, keep_input=self.keep_input)
            yield rows_table([row], batch.schema)


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
        import torch

        from fairweather.metrics import build_scorer

        torch.set_num_threads(threads)

        def make(name: str) -> Scorer:
            if scorer_factory is not None:
                return scorer_factory(name)
            return build_scorer(name, scorer, device=scorer.device, vlm=vlm, model_cache_dir=model_cache_dir)

        self.scorers = {name: make(name) for name in metrics}
        self.reference = {name: make(name) for name in reference_metrics}
        self.input_checks = input_checks

    def __call__(self, batch: pa.Table) -> pa.Table:
        from fairweather.stages.engine.score import score_rows

        extra = [field for field in batch.schema if field.name not in ROW_SCHEMA.names]
        rows = score_rows(batch_rows(batch), self.scorers, self.reference, input_checks=self.input_checks)
        return rows_table(rows, pa.schema(list(SCORED_SCHEMA) + extra))


class RestoreAndScoreActor:
    """Restores, runs the caller's step and scores in one process, one row at a time: the restored pixels are
    scored and dropped before the next row is restored. One process holds torch, the networks and the scorers (a
    second pool would hold its own torch and its own copy of each row), at the price of the overlap two pools give
    (restoring one photo while another is scored)."""

    def __init__(
        self,
        restore: dict,
        score: dict,
        after_restore: Callable[[pa.Table], pa.Table] | None = None,
    ):
        """restore / score: the constructor arguments of :class:`RestoreActor` / :class:`ScoreActor`."""
        self.restore, self.score = RestoreActor(**restore), ScoreActor(**score)
        self.after_restore = after_restore

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        for restored in self.restore(batch):
            yield self.score(self.after_restore(restored) if self.after_restore else restored)
