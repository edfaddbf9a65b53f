"""Atomic, idempotent Parquet tables at a local path or a cloud URI (through pyarrow filesystems).

A table is a folder ``<root>/<name>/`` of immutable part files, each written atomically through
:func:`fairweather.contracts.io.atomic_write_bytes`, so a reader never sees a half-written part. Rows with equal
primary keys are one logical row: :meth:`TableStore.read` keeps the most recent, so re-running a stage never
duplicates rows, and a crash loses at most the part being written. A stage ends with :meth:`TableStore.compact`,
after which plain readers (``pandas.read_parquet(<root>/<name>)``) also see exactly one row per key.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from .errors import FairweatherError
from .io import atomic_write_bytes, filesystem_for, full_uri
from .schemas import TABLES, TableSpec

_ROW = "__row"
_COMPACTED = "-compacted.parquet"
#: Listings :meth:`TableStore.read` makes when parts it listed vanish before it opens them (concurrent compactions).
RELIST_TRIES = 5


class TableError(FairweatherError, ValueError):
    """A table could not be read or written as its contract says."""


def with_optional_columns(spec: TableSpec, table: pa.Table) -> pa.Table:
    """``table`` with every nullable column of the spec that it lacks added as nulls (a nullable column can be
    added to a schema without a version bump: writers and parts that predate it still fit)."""
    for field in spec.fields:
        if field.nullable and field.name not in table.column_names:
            table = table.append_column(field, pa.nulls(table.num_rows, field.type))
    return table


def conform(spec: TableSpec, table: pa.Table) -> pa.Table:
    """Select and cast ``table``'s columns to the spec's schema, naming the first column that does not fit.

    A missing nullable column is filled with nulls; a missing required column is an error."""
    table = with_optional_columns(spec, table)
    missing = [f.name for f in spec.fields if f.name not in table.column_names]
    if missing:
        raise TableError(f"table '{spec.name}': missing column(s) {missing}")
    columns = []
    for field in spec.fields:
        column = table.column(field.name)
        if not field.nullable and column.null_count:
            raise TableError(
                f"table '{spec.name}': column '{field.name}' has {column.null_count} null value(s)"
            )
        try:
            columns.append(column.cast(field.type))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
            raise TableError(
                f"table '{spec.name}': column '{field.name}' cannot be {field.type}: {err}"
            ) from err
    return pa.Table.from_arrays(columns, schema=spec.schema)


def latest_per_key(table: pa.Table, key: Iterable[str]) -> pa.Table:
    """Keep, for every key, the last row in table order (later parts override earlier ones)."""
    key = list(key)
    if table.num_rows == 0:
        return table
    indexed = table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))
    last = indexed.group_by(key, use_threads=False).aggregate([(_ROW, "max")])
    rows = pc.sort_indices(last.column(f"{_ROW}_max"))
    return table.take(pc.take(last.column(f"{_ROW}_max"), rows))


class TableStore:
    """The stage tables under one root URI (``runs/tables``, ``s3://bucket/fairweather/tables``, ...)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.path = filesystem_for(root)

    @staticmethod
    def spec(name: str) -> TableSpec:
        if name not in TABLES:
            raise TableError(f"unknown table '{name}' (known: {', '.join(TABLES)})")
        return TABLES[name]

    def _table_dir(self, name: str) -> str:
        return f"{self.path.rstrip('/')}/{self.spec(name).name}"

    def _parts(self, name: str) -> list[str]:
        selector = pafs.FileSelector(self._table_dir(name), allow_not_found=True)
        infos = self.fs.get_file_info(selector)
        # Part names start with a zero-padded nanosecond time stamp, so name order is write order.
        return sorted(
            i.path
            for i in infos
            if i.type == pafs.FileType.File
            and i.base_name.startswith("part-")
            and i.base_name.endswith(".parquet")
        )

    def _put(self, path: str, table: pa.Table) -> None:
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(full_uri(self.root, path), sink.getvalue().to_pybytes())

    def write(self, name: str, table: pa.Table) -> str | None:
        """Atomically add ``table`` as a new part of table ``name``; returns the part's path (None if empty)."""
        spec = self.spec(name)
        table = conform(spec, table)
        if table.num_rows == 0:
            return None
        path = f"{self._table_dir(name)}/part-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
        self._put(path, table)
        return path

    def read(self, name: str, columns: list[str] | None = None) -> pa.Table:
        """All rows of table ``name``, one per primary key (the latest write wins); empty if never written.

        Processes share a table (a sweep's trials run their pseudo-label jobs at once), so a part listed here can
        be gone before it is opened: another process compacted it, after writing a part that holds its rows.
        The table is then listed again."""
        spec = self.spec(name)
        for attempt in range(RELIST_TRIES):
            try:
                pieces = [self._read_part(spec, path) for path in self._parts(name)]
                break
            except FileNotFoundError as err:
                if attempt == RELIST_TRIES - 1:
                    raise TableError(
                        f"table '{name}': its parts kept disappearing while being read ({RELIST_TRIES} "
                        f"listings); is something deleting them? ({err})"
                    ) from err
        table = pa.concat_tables(pieces) if pieces else spec.schema.empty_table()
        table = latest_per_key(table, spec.key)
        return table.select(columns) if columns else table

    def _read_part(self, spec: TableSpec, path: str) -> pa.Table:
        """One part in the spec's current schema (a nullable column it predates filled with nulls)."""
        with self.fs.open_input_file(path) as source:
            piece = pq.read_table(source)
        version = (piece.schema.metadata or {}).get(b"fairweather.version", b"?").decode()
        if version != str(spec.version):
            raise TableError(
                f"table '{spec.name}' part {path} has schema version {version}, this code reads version "
                f"{spec.version}: move the table folder away (or set data.tables to a new folder) and rerun"
            )
        piece = with_optional_columns(spec, piece).select(spec.schema.names)
        return piece.replace_schema_metadata(spec.schema.metadata)

    def keys(self, name: str) -> set[tuple]:
        """The primary keys present in table ``name``."""
        spec = self.spec(name)
        table = self.read(name, list(spec.key))
        return (
            set(zip(*(table.column(k).to_pylist() for k in spec.key), strict=True))
            if table.num_rows
            else set()
        )

    def compact(self, name: str, drop: Callable[[pa.Table], pa.Array] | None = None) -> None:
        """Rewrite table ``name`` as one part with one row per key, optionally without the rows ``drop`` marks.

        drop: rows -> boolean mask of rows to delete (e.g. errors of files that later succeeded).
        Crash-safe: the new part lands before the old ones go, and it is named right after the newest part it
        replaces, so a part another writer adds meanwhile still sorts (and wins) after it. A crash in between
        leaves extra parts that :meth:`read` resolves and the next compaction removes.
        """
        parts = self._parts(name)
        before = self.read(name)
        table = before.filter(pc.invert(drop(before))) if drop is not None and before.num_rows else before
        if len(parts) <= 1 and table.num_rows == before.num_rows:
            return
        # Re-compacting replaces the previous compacted part in place (same name), so names never grow.
        target = (
            parts[-1] if parts[-1].endswith(_COMPACTED) else parts[-1].removesuffix(".parquet") + _COMPACTED
        )
        if table.num_rows:
            self._put(target, table)
        for path in parts:
            if path != target or not table.num_rows:
                # Gone already: a concurrent compaction of the same rows deleted it.
                with contextlib.suppress(FileNotFoundError):
                    self.fs.delete_file(path)
