"""Table contracts: versioned schemas, atomic part writes, latest-wins keys, idempotent re-runs."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from fairweather.contracts import tables as tables_module
from fairweather.contracts.schemas import LABELS, TABLES
from fairweather.contracts.tables import TableError, TableStore

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)


def error_rows(uris, message="m"):
    n = len(uris)
    return pa.table(
        {
            "uri": uris,
            "stage": ["label"] * n,
            "error_type": ["x"] * n,
            "message": [message] * n,
            "time": [NOW] * n,
        }
    )


def test_every_schema_is_versioned_and_keyed():
    assert {"pool", "labels", "errors", "pseudo_labels", "metrics"} <= set(TABLES)
    for spec in TABLES.values():
        meta = spec.schema.metadata
        assert meta[b"fairweather.table"] == spec.name.encode() and meta[b"fairweather.version"]
        assert set(spec.key) <= set(spec.schema.names)
    assert "probs" in LABELS.schema.names and LABELS.schema.field("probs").type.list_size == 5


def test_empty_table_reads_with_schema(tmp_path):
    table = TableStore(str(tmp_path)).read("labels")
    assert table.num_rows == 0 and table.schema.equals(LABELS.schema)


def test_rewrites_never_duplicate_and_latest_wins(tmp_path):
    store = TableStore(str(tmp_path / "tables"))
    store.write("errors", error_rows(["a", "b"], "first"))
    store.write("errors", error_rows(["a", "b"], "first"))  # a re-run of the same stage
    store.write("errors", error_rows(["b"], "second"))
    table = store.read("errors")
    assert sorted(table.column("uri").to_pylist()) == ["a", "b"]
    assert dict(zip(table["uri"].to_pylist(), table["message"].to_pylist(), strict=True)) == {
        "a": "first",
        "b": "second",
    }
    assert store.keys("errors") == {("a", "label"), ("b", "label")}
    before = store.read("errors")
    store.compact("errors")
    assert len(list((tmp_path / "tables" / "errors").glob("part-*.parquet"))) == 1
    assert store.read("errors").sort_by("uri").equals(before.sort_by("uri"))


def test_crash_mid_write_leaves_nothing_visible(tmp_path, monkeypatch):
    store = TableStore(str(tmp_path))
    store.write("errors", error_rows(["a"]))

    def crash(table, sink, **kwargs):
        sink.write(b"PAR1 half a file")
        raise KeyboardInterrupt  # the process dies while the part is being written

    monkeypatch.setattr(tables_module.pq, "write_table", crash)
    with pytest.raises(KeyboardInterrupt):
        store.write("errors", error_rows(["b"]))
    monkeypatch.undo()
    assert store.read("errors").column("uri").to_pylist() == ["a"]
    assert [p.name for p in (tmp_path / "errors").iterdir() if not p.name.startswith("part-")] == []
    assert all(pq.read_table(p).num_rows == 1 for p in (tmp_path / "errors").glob("part-*.parquet"))


def test_compaction_gives_plain_readers_one_row_per_key(tmp_path):
    store = TableStore(str(tmp_path))
    store.write("errors", error_rows(["a", "b"], "first"))
    store.write("errors", error_rows(["a"], "second"))  # a rerun: pandas would see 'a' twice
    store.compact("errors")
    plain = pd.read_parquet(tmp_path / "errors")
    assert sorted(plain["uri"]) == ["a", "b"]
    assert dict(zip(plain["uri"], plain["message"], strict=True)) == {"a": "second", "b": "first"}

    store.write("errors", error_rows(["c"]))
    store.compact("errors", drop=lambda rows: pc.equal(rows.column("uri"), "a"))  # 'a' succeeded later
    assert sorted(pd.read_parquet(tmp_path / "errors")["uri"]) == ["b", "c"]
    (part,) = (tmp_path / "errors").glob("part-*.parquet")
    store.compact("errors", drop=lambda rows: pc.equal(rows.column("uri"), "a"))  # nothing to do: untouched
    assert list((tmp_path / "errors").glob("part-*.parquet")) == [part]
    store.compact("errors", drop=lambda rows: pc.is_valid(rows.column("uri")))  # every row cleared
    assert store.read("errors").num_rows == 0 and not list((tmp_path / "errors").glob("part-*"))


def test_a_compaction_by_another_process_loses_no_row_of_a_read_or_a_compaction(tmp_path, monkeypatch):
    """A sweep's trials share the tables: a part listed by one can be compacted away by another before it is
    opened (the read lists again), and two compactions of the same parts each delete what the other took."""
    reader, other = TableStore(str(tmp_path)), TableStore(str(tmp_path))
    reader.write("errors", error_rows(["a"]))
    reader.write("errors", error_rows(["b"]))
    listed = reader._parts

    def listed_then_compacted(name):
        parts = listed(name)
        if len(parts) > 1:  # the first listing only: the other process writes and compacts right after it
            other.write("errors", error_rows(["c"]))
            other.compact("errors")
        return parts

    monkeypatch.setattr(reader, "_parts", listed_then_compacted)
    assert sorted(reader.read("errors").column("uri").to_pylist()) == ["a", "b", "c"]
    monkeypatch.undo()

    reader.write("errors", error_rows(["d"]))
    read = reader.read

    def read_then_compacted(name, columns=None):
        rows = read(name, columns)
        other.compact("errors")  # the other process compacts the parts this compaction listed and read
        return rows

    monkeypatch.setattr(reader, "read", read_then_compacted)
    reader.compact("errors")
    monkeypatch.undo()
    assert sorted(reader.read("errors").column("uri").to_pylist()) == ["a", "b", "c", "d"]
    assert len(list((tmp_path / "errors").glob("part-*.parquet"))) == 1

    monkeypatch.setattr(
        reader, "_read_part", lambda spec, path: (_ for _ in ()).throw(FileNotFoundError(path))
    )
    with pytest.raises(TableError, match=r"kept disappearing while being read \(5 listings\)"):
        reader.read("errors")


def test_schema_violations_are_named(tmp_path):
    store = TableStore(str(tmp_path))
    with pytest.raises(TableError, match="missing column"):
        store.write("errors", error_rows(["a"]).drop_columns(["message"]))
    with pytest.raises(TableError, match="'uri' has 1 null"):
        store.write("errors", error_rows([None]))
    with pytest.raises(TableError, match="unknown table"):
        store.read("nope")


def test_other_schema_version_is_refused(tmp_path):
    store = TableStore(str(tmp_path))
    store.write("errors", error_rows(["a"]))
    part = next((tmp_path / "errors").glob("part-*.parquet"))
    old = pq.read_table(part)
    pq.write_table(
        old.replace_schema_metadata({b"fairweather.table": b"errors", b"fairweather.version": b"0"}), part
    )
    with pytest.raises(TableError, match=r"schema version 0.*set data.tables to a new folder"):
        store.read("errors")


def test_cloud_style_uri_goes_through_pyarrow_filesystems(tmp_path):
    store = TableStore(tmp_path.as_uri())  # file:// URI, the same code path as s3:// or gs://
    store.write("errors", error_rows(["a"]))
    assert TableStore(str(tmp_path)).read("errors").num_rows == 1
