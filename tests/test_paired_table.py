"""The ``paired`` table: its contract, URIs that survive a move, and generated splits that are stable and complete."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pytest

from fairweather.contracts.config import load_config
from fairweather.contracts.io import read_bytes, resolve_uri
from fairweather.contracts.schemas import PAIRED, TABLES
from fairweather.contracts.tables import TableError, TableStore
from fairweather.stages.synth.driver import run_synth
from fairweather.synth import SPLITS, PairRecord, paired_table
from fairweather.synth.paired import hash_fraction, sequence_fraction, split_for


def synth_cfg(project, num_paired: int = 12):
    """Smoke config whose generated data and tables both live in ``project``."""
    overrides = [
        f"synth.out={project / 'data'}",
        f"data.tables={project / 'tables'}",
        f"synth.num_paired={num_paired}",
        "synth.num_unlabeled=0",
        "synth.size=[16,16]",
    ]
    return load_config("smoke", overrides)


def test_schema_is_registered_with_its_key():
    assert TABLES["paired"] is PAIRED and PAIRED.key == ("pair_id",)
    names = [f.name for f in PAIRED.fields]
    assert names == [
        "pair_id",
        "dataset",
        "split",
        "weather",
        "input_uri",
        "target_uri",
        "width",
        "height",
        "clean_source",
        "degradation",
        "depth_source",
        "created_at",
    ]
    optional = {"clean_source", "degradation", "depth_source"}  # generated pairs only
    assert all(f.nullable == (f.name in optional) for f in PAIRED.fields)
    assert PAIRED.schema.field("created_at").type == pa.timestamp("us", tz="UTC")


def test_rows_round_trip_and_bad_rows_are_refused(tmp_path):
    store = TableStore(str(tmp_path / "tables"))
    record = PairRecord("x/a", "x", "train", "rain", str(tmp_path / "in/a.png"), "s3://b/t/a.png", 8, 6)
    table = paired_table([record], store.root, created_at=datetime(2026, 1, 1, tzinfo=timezone.utc))
    store.write("paired", table)
    row = store.read("paired").to_pylist()[0]
    assert row["input_uri"] == "../in/a.png" and row["target_uri"] == "s3://b/t/a.png"
    assert (row["width"], row["height"]) == (8, 6)
    with pytest.raises(ValueError, match="split"):
        paired_table([PairRecord("x/b", "x", "holdout", "rain", "a", "b", 1, 1)], store.root)
    with pytest.raises(ValueError, match="duplicate pair_id"):
        paired_table([record, record], store.root)
    with pytest.raises(TableError, match="null"):
        store.write("paired", table.set_column(1, "dataset", pa.array([None], pa.string())))


def test_split_rule():
    assert [split_for(u, 0.1, 0.2) for u in (0.0, 0.19, 0.2, 0.89, 0.9, 0.999)] == [
        "test",
        "test",
        "train",
        "train",
        "val",
        "val",
    ]
    assert split_for(0.95, 0.0, 0.0) == "train"
    assert [round(sequence_fraction(k), 3) for k in range(4)] == [0.0, 0.618, 0.236, 0.854]
    assert hash_fraction("a") == hash_fraction("a") != hash_fraction("b") and 0 <= hash_fraction("a") < 1


def test_generated_table_uris_are_relative_and_resolve_from_another_working_directory(tmp_path, monkeypatch):
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    cfg = load_config(
        "smoke",
        [
            "synth.out=data",
            "data.tables=tables",
            "synth.num_paired=6",
            "synth.num_unlabeled=0",
            "synth.size=[16,16]",
        ],
    )
    run_synth(cfg)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    store = TableStore(str(project / "tables"))
    rows = store.read("paired").to_pylist()
    assert len(rows) == 6
    for row in rows:
        assert not row["input_uri"].startswith("/") and str(tmp_path) not in row["input_uri"]
        for uri in (row["input_uri"], row["target_uri"]):
            assert read_bytes(resolve_uri(store.root, uri))[:4] == b"\x89PNG"


def test_a_moved_table_root_still_resolves(tmp_path):
    project = tmp_path / "project"
    run_synth(synth_cfg(project, 6))
    before = TableStore(str(project / "tables")).read("paired").sort_by("pair_id").to_pylist()
    moved = tmp_path / "somewhere" / "else"
    moved.parent.mkdir()
    shutil.move(project, moved)
    store = TableStore(str(moved / "tables"))
    rows = store.read("paired").sort_by("pair_id").to_pylist()
    assert rows == before
    for row in rows:
        path = resolve_uri(store.root, row["target_uri"])
        assert path.startswith(str(moved)) and os.path.exists(path)


def test_splits_are_deterministic_and_stable_when_num_paired_grows(tmp_path):
    run_synth(synth_cfg(tmp_path / "small", 30))
    run_synth(synth_cfg(tmp_path / "large", 90))
    small = {
        r["pair_id"]: r["split"]
        for r in TableStore(str(tmp_path / "small/tables")).read("paired").to_pylist()
    }
    large = {
        r["pair_id"]: r["split"]
        for r in TableStore(str(tmp_path / "large/tables")).read("paired").to_pylist()
    }
    assert len(small) == 30 and all(large[pair_id] == split for pair_id, split in small.items())


def test_every_weather_is_in_every_split_and_fractions_hold(tmp_path):
    run_synth(synth_cfg(tmp_path, 30))  # 10 pairs per weather
    rows = TableStore(str(tmp_path / "tables")).read("paired").to_pylist()
    assert {(r["split"], r["weather"]) for r in rows} == {
        (s, w) for s in SPLITS for w in ("rain", "haze", "snow")
    }
    counts = Counter(sequence_fraction(k) < 0.1 for k in range(1000))
    assert 95 <= counts[True] <= 105  # the sequence fills [0, 1) evenly: proportions hold at any count
    large = [split_for(sequence_fraction(k), 0.1, 0.1) for k in range(100)]
    assert abs(Counter(large)["val"] - 10) <= 1 and abs(Counter(large)["test"] - 10) <= 1


def test_rerun_adds_no_part_and_growth_adds_only_new_rows(tmp_path):
    first = run_synth(synth_cfg(tmp_path, 6))
    parts = sorted((tmp_path / "tables/paired").glob("part-*.parquet"))
    assert first.rows_written == 6 and len(parts) == 1
    again = run_synth(synth_cfg(tmp_path, 6))
    assert again.rows_written == 0 and sorted((tmp_path / "tables/paired").glob("part-*.parquet")) == parts
    grown = run_synth(synth_cfg(tmp_path, 9))
    assert grown.rows_written == 3
    table = TableStore(str(tmp_path / "tables")).read("paired")
    assert table.num_rows == 9 and len(set(table.column("pair_id").to_pylist())) == 9
