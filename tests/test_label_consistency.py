"""The label job's tables after crashes, reruns and failures: repair, compaction, fingerprint key, early checks.

Fake backends (``test_label_job.FakeFactory``) keep each job to seconds; one private Ray session for the module.
"""

from __future__ import annotations

import os
import time
import warnings

import pandas as pd
import pyarrow as pa
import pytest

from fairweather.cli import main as cli_main
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import LocationError
from fairweather.contracts.metric_logger import NullLogger
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.pool import RESULT_SCHEMA
from fairweather.stages.label.actors import label_dataset
from fairweather.stages.label.driver import Labeler, NothingLabeledError, run_label
from fairweather.stages.label.tables import ResultWriter

from .test_label_job import FakeFactory, job_config, make_pool, tables


def ok(tmp_path) -> FakeFactory:
    return FakeFactory("ok", tmp_path / "marker")


def test_unnameable_file_is_an_errors_row_and_the_rest_is_labeled(tmp_path, local_ray):
    make_pool(tmp_path / "pool", per_weather=1)
    with open(os.path.join(os.fsencode(tmp_path / "pool"), b"caf\xe9.png"), "wb") as sink:
        sink.write(b"x")
    cfg = job_config(tmp_path, tmp_path / "pool")
    summary = run_label(cfg, NullLogger(), backend_factory=ok(tmp_path))
    assert (summary.listed, summary.labeled, summary.failed) == (4, 3, 1)
    (error,) = tables(cfg)["errors"].to_pylist()
    assert (error["uri"], error["stage"], error["error_type"]) == (
        f"{tmp_path}/pool/caf\\xe9.png",
        "list",
        "bad_name",
    )


def test_resume_repairs_a_crash_between_the_table_writes(tmp_path, local_ray, monkeypatch):
    make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool")
    real_write = TableStore.write

    def crash_at_labels(self, name, table):
        if name == "labels" and table.num_rows:
            raise KeyboardInterrupt("killed between the pool and the labels write")
        return real_write(self, name, table)

    monkeypatch.setattr(TableStore, "write", crash_at_labels)
    with pytest.raises(KeyboardInterrupt):
        run_label(cfg, NullLogger(), backend_factory=ok(tmp_path))
    monkeypatch.undo()
    assert tables(cfg)["pool"].num_rows == 3 and tables(cfg)["labels"].num_rows == 0
    assert run_label(cfg, NullLogger(), backend_factory=ok(tmp_path)).labeled == 3


def test_resume_relabels_labels_that_have_no_pool_row(tmp_path, local_ray):
    """Tables left by the old write order (labels, then a crash before pool): such labels are not done."""
    make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool")
    run_label(cfg, NullLogger(), backend_factory=ok(tmp_path))
    store = TableStore(cfg.data.tables)
    for part in (tmp_path / "tables" / "pool").glob("part-*"):
        part.unlink()
    summary = run_label(cfg, NullLogger(), backend_factory=ok(tmp_path))
    assert (summary.labeled, summary.skipped_done) == (3, 0)
    assert set(store.read("pool").column("image_id").to_pylist()) == set(
        store.read("labels").column("image_id").to_pylist()
    )


def test_a_later_success_clears_errors_and_plain_readers_see_one_row_per_key(tmp_path, local_ray):
    make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool")
    for _ in range(2):
        with pytest.raises(NothingLabeledError, match="every one of the 3 listed files failed"):
            run_label(cfg, NullLogger(), backend_factory=FakeFactory("broken", tmp_path / "m"))
    assert len(pd.read_parquet(tmp_path / "tables" / "errors")) == 3  # not 6
    run_label(cfg, NullLogger(), backend_factory=ok(tmp_path))
    assert tables(cfg)["errors"].num_rows == 0 and not list((tmp_path / "tables" / "errors").glob("part-*"))
    for name in ("labels", "pool"):
        assert len(pd.read_parquet(tmp_path / "tables" / name)) == 3
        assert len(list((tmp_path / "tables" / name).glob("part-*"))) == 1


def test_settings_that_change_labels_change_the_key(tmp_path, local_ray):
    make_pool(tmp_path / "pool", per_weather=1)
    base = job_config(tmp_path, tmp_path / "pool")
    fingerprints = {Labeler.of(base).labeler_fingerprint}
    for override in ("vlm.max_new_tokens=7", "label.image_short_side=64", "vlm.dtype=bfloat16"):
        fingerprints.add(Labeler.of(job_config(tmp_path, tmp_path / "pool", override)).labeler_fingerprint)
    assert len(fingerprints) == 4
    assert run_label(base, NullLogger(), backend_factory=ok(tmp_path)).labeled == 3
    shorter = job_config(tmp_path, tmp_path / "pool", "vlm.max_new_tokens=7")
    assert run_label(shorter, NullLogger(), backend_factory=ok(tmp_path)).labeled == 3  # not kept as stale
    assert run_label(shorter, NullLogger(), backend_factory=ok(tmp_path)).skipped_done == 3
    labels = tables(base)["labels"]
    assert labels.num_rows == 6 and len(set(labels.column("labeler_fingerprint").to_pylist())) == 2


def test_rows_are_flushed_after_flush_seconds_even_below_flush_rows(tmp_path):
    store = TableStore(str(tmp_path))
    row = {
        "uri": "/pool/a.png",
        "status": "failed",
        "error_stage": "decode",
        "error_type": "empty",
        "message": "m",
    }
    labeler = vars(Labeler.of(job_config(tmp_path, tmp_path)))
    with ResultWriter(store, labeler, flush_rows=10_000, flush_seconds=0.1) as writer:
        writer.add(pa.Table.from_pylist([row], schema=RESULT_SCHEMA))
        deadline = time.monotonic() + 5
        while not store.read("errors").num_rows and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.read("errors").num_rows == 1  # written while the job is still running


def test_bad_output_locations_and_cpu_budget_fail_before_any_run(tmp_path, local_ray):
    make_pool(tmp_path / "pool", per_weather=1)
    (tmp_path / "a_file").write_text("x")
    for override, error in [
        (f"data.tables={tmp_path}/a_file", LocationError),
        (f"runtime.model_cache_dir={tmp_path}/a_file/models", LocationError),
        ("label.concurrency=8", FairweatherError),
    ]:
        cfg = job_config(tmp_path, tmp_path / "pool", override)
        with pytest.raises(error, match=r"a_file|label\.concurrency"):
            run_label(cfg, backend_factory=ok(tmp_path))  # the MLflow logger would open a run
        assert not (tmp_path / "runs" / "mlflow.db").exists()


def test_every_file_failing_exits_non_zero_from_the_command(tmp_path, local_ray, capsys):
    (tmp_path / "pool").mkdir()
    for name in ("a.png", "b.jpg"):
        (tmp_path / "pool" / name).write_bytes(b"")
    argv = ["label", "--config", "smoke", f"data.pool={tmp_path}/pool", f"data.tables={tmp_path}/tables",
            f"runtime.runs_dir={tmp_path}/runs", f"runtime.model_cache_dir={tmp_path}/models"]  # fmt: skip
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    # The error is the last line and carries no traceback of its own. (Not `"Traceback" not in err`: a logging
    # handler that an earlier CLI test bound to its own, now closed, captured stderr prints "Logging error" ones.)
    assert "every one of the 2 listed files failed (2 decode.empty)" in err.strip().splitlines()[-1]
    assert "NothingLabeledError" not in err


def test_building_the_pipeline_prints_no_deprecation_noise(tmp_path, local_ray):
    cfg = job_config(tmp_path, tmp_path / "pool")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        label_dataset(cfg, [{"uri": "x", "weather_hint": None}], frozenset(), ok(tmp_path))
    assert not [w for w in caught if "ray_remote_args" in str(w.message)]
