"""The Ray Data labeling job: pool listing, hostile files, resume/idempotence, failing and crashing backends, CLI.

One private Ray session for the module (``local_ray``). The end-to-end test uses the real tiny LLaVA; the failure
tests use fake backends, shipped to the actors by value through Ray's own cloudpickle (the ``cloudpickle``
package's registry is not Ray's): by name, every actor imported this module and with it the label driver's MLflow
and plotting, about 1.9 CPU-s per actor.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from ray import cloudpickle

from fairweather.cli import main as cli_main
from fairweather.contracts.config import load_config
from fairweather.contracts.io import read_bytes, resolve_uri
from fairweather.contracts.metric_logger import DiskLogger, NullLogger
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.pool import PoolError, list_pool
from fairweather.stages.label.driver import Labeler, NothingLabeledError, run_label

from .test_imaging import MAX_PIXELS, hostile_files

cloudpickle.register_pickle_by_value(sys.modules[__name__])

WEATHERS = ("rain", "haze", "snow")
GOOD_LOGITS = (0.0, 5.0, 0.0, 0.0, 0.0)  # "good" dominates: r_vlm close to 4


def make_pool(root: Path, per_weather: int, seed: int = 0) -> list[Path]:
    """Distinct random PNGs in ``root/<weather>/`` folders."""
    rng = np.random.default_rng(seed)
    paths = []
    for weather in WEATHERS:
        (root / weather).mkdir(parents=True, exist_ok=True)
        for index in range(per_weather):
            path = root / weather / f"{index}.png"
            Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    return paths


def job_config(tmp: Path, pool: Path | str, *extra: str):
    return load_config(
        "smoke",
        [f"data.pool={pool}", f"data.tables={tmp}/tables", f"runtime.runs_dir={tmp}/runs",
         f"runtime.model_cache_dir={tmp}/models", *extra],
    )  # fmt: skip


def tables(cfg) -> dict[str, pa.Table]:
    """The job's tables with their URIs resolved against the table root (they are stored relative to it)."""
    store = TableStore(cfg.data.tables)
    out = {}
    for name in ("labels", "errors", "pool"):
        table = store.read(name)
        uris = pa.array([resolve_uri(store.root, u) for u in table.column("uri").to_pylist()], pa.string())
        out[name] = table.set_column(table.schema.get_field_index("uri"), "uri", uris)
    return out


def uris_of(pool: str, **kwargs) -> list[str]:
    return [row["uri"] for row in list_pool(pool, **kwargs).items]


class FakeBackend:
    """Scores ``GOOD_LOGITS`` and describes every image as rainy; fails on purpose as ``mode`` says.

    flaky: the first call raises. poison: a call with an all-black image raises. broken: every call raises.
    crash_once / crash_always: the actor process dies (once per ``marker`` file / every time).
    """

    model_id = "fake"

    def __init__(self, mode: str, marker: str) -> None:
        self.mode, self.marker, self.calls = mode, marker, 0

    def rating_token_ids(self, prompt: str) -> tuple[int, ...]:
        return (1, 2, 3, 4, 5)

    def rating_logprobs(self, images: list[np.ndarray], prompt: str) -> list[dict[int, float]]:
        self.calls += 1
        if self.mode == "crash_always" or (self.mode == "crash_once" and not os.path.exists(self.marker)):
            Path(self.marker).touch()
            os._exit(1)
        if self.mode == "broken" or (self.mode == "flaky" and self.calls == 1):
            raise RuntimeError(f"backend failure ({self.mode})")
        if self.mode == "poison" and any(image.max() == 0 for image in images):
            raise ValueError("poisoned image")
        return [dict(zip((1, 2, 3, 4, 5), GOOD_LOGITS, strict=True)) for _ in images]

    def generate(self, images, prompts: list[str], max_new_tokens: int) -> list[str]:
        return ["A rainy street with cars."] * len(prompts)


class FakeFactory:
    def __init__(self, mode: str, marker: Path) -> None:
        self.mode, self.marker = mode, str(marker)

    def __call__(self) -> FakeBackend:
        return FakeBackend(self.mode, self.marker)


# ---------------------------------------------------------------- listing (no Ray)


def test_list_pool_folder_glob_and_manifests(tmp_path):
    paths = make_pool(tmp_path / "pool", per_weather=1)
    (tmp_path / "pool" / "notes.md").write_text("not listed")
    (tmp_path / "pool" / ".hidden.png").write_bytes(b"hidden")
    uris = sorted(str(p) for p in paths)
    folder = list_pool(str(tmp_path / "pool")).items
    assert [row["uri"] for row in folder] == uris
    assert {row["uri"]: row["weather_hint"] for row in folder}[str(paths[0])] == "rain"
    assert uris_of(f"{tmp_path}/pool/*/*.png") == uris
    assert uris_of(f"{tmp_path}/pool/s*/*.png") == [str(paths[2])]
    assert uris_of(f"file://{tmp_path}/pool") == [f"file://{u}" for u in uris]
    assert read_bytes(f"file://{paths[0]}") == paths[0].read_bytes()

    (tmp_path / "m.txt").write_text(f"# comment\npool/rain/0.png\n\n{paths[1]}\n")
    assert [r["uri"] for r in list_pool(str(tmp_path / "m.txt")).items] == [str(paths[1]), str(paths[0])]
    (tmp_path / "m.csv").write_text(f"uri,weather\n{paths[0]},Snow\npool/haze/0.png,\n")
    csv = {r["uri"]: r["weather_hint"] for r in list_pool(str(tmp_path / "m.csv")).items}
    assert csv == {str(paths[0]): "snow", str(paths[1]): "haze"}  # manifest hint wins, else the folder
    pq.write_table(
        pa.table({"uri": [str(p) for p in paths], "weather_hint": ["clear"] * 3}), tmp_path / "m.parquet"
    )
    assert {r["weather_hint"] for r in list_pool(str(tmp_path / "m.parquet")).items} == {"clear"}


def test_folder_name_aliases_give_weather_hints(tmp_path):
    for folder in ("clean", "foggy", "Rainy", "misc"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "a.png").write_bytes(b"x")
    hints = {Path(r["uri"]).parent.name: r["weather_hint"] for r in list_pool(str(tmp_path)).items}
    assert hints == {"clean": "clear", "foggy": "haze", "Rainy": "rain", "misc": None}


def test_list_pool_errors_name_the_pool(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("path\nx.png\n")
    (tmp_path / "x.json").write_text("{}")
    for pool, message in [
        (tmp_path / "missing", "does not exist"),
        (tmp_path / "empty", "lists no image files"),
        (tmp_path / "bad.csv", "no 'uri' column"),
        (tmp_path / "x.json", "not a manifest"),
        (f"{tmp_path}/missing/*.png", "cannot be listed"),
    ]:
        with pytest.raises(PoolError, match=message):
            list_pool(str(pool))


# ---------------------------------------------------------------- the job (Ray)


def test_end_to_end_tiny_vlm_hostile_files_and_idempotent_rerun(tmp_path, local_ray):
    pool = tmp_path / "pool"
    make_pool(pool, per_weather=2)
    hostile = hostile_files()
    for name, (data, _) in hostile.items():
        (pool / name).write_bytes(data)
    cfg = job_config(
        tmp_path, pool, "vlm.model_id=tiny:llava", f"data.max_image_pixels={MAX_PIXELS}", "label.batch_size=4"
    )
    listed = {row["uri"] for row in list_pool(str(pool)).items}
    expected_errors = {str(pool / n): reason for n, (_, reason) in hostile.items() if reason != "ok"}

    first = run_label(cfg, DiskLogger(tmp_path / "log1"))
    assert (first.listed, first.failed, first.skipped_done) == (20, len(expected_errors), 0)
    assert first.labeled == 20 - len(expected_errors) and first.images_per_s > 0
    out = tables(cfg)
    labels, errors = out["labels"], out["errors"]
    label_uris, error_uris = set(labels.column("uri").to_pylist()), set(errors.column("uri").to_pylist())
    assert label_uris | error_uris == listed and not label_uris & error_uris
    assert labels.num_rows + errors.num_rows == len(listed)  # no file lost or counted twice
    assert (
        dict(zip(errors.column("uri").to_pylist(), errors.column("error_type").to_pylist(), strict=True))
        == expected_errors
    )
    assert set(errors.column("stage").to_pylist()) == {"decode"}

    rows = labels.to_pylist()
    assert {r["model_id"] for r in rows} == {"tiny:llava"}
    assert all(
        1 <= r["r_vlm"] <= 5 and abs(sum(r["probs"]) - 1) < 1e-6 and r["rating_complete"] for r in rows
    )
    assert all(r["d_pos"].startswith("The weather looks good.") for r in rows)
    hints = {Path(r["uri"]).parent.name: r["weather_hint"] for r in rows if Path(r["uri"]).parent != pool}
    assert hints == {w: w for w in WEATHERS}
    pool_rows = {Path(r["uri"]).name: (r["width"], r["height"]) for r in out["pool"].to_pylist()}
    assert pool_rows["exif_rotated.jpg"] == (20, 30)  # stored 30x20; EXIF orientation 6 applied
    assert pool_rows["lzw.tif"] == (30, 20)

    log = DiskLogger(tmp_path / "log1")
    assert (log.folder / "artifacts" / "label" / "r_vlm_by_weather.png").stat().st_size > 0
    params = json.loads((log.folder / "params.json").read_text())
    assert params["labeler.model_id"] == "tiny:llava" and params["vlm.model_id"] == "tiny:llava"
    assert params["labeler.rating_prompt_version"] == Labeler.of(cfg).rating_prompt_version
    metrics = {k: v for record in log.read_metrics() for k, v in record.items()}
    assert metrics["labeled"] == first.labeled
    # what a user needs to trust the run: failures by reason, the failed files, rating statistics
    assert metrics["failed.decode.too_large"] == 1 and metrics["failed.decode.empty"] == 1
    assert metrics["rating_complete_share"] == 1.0
    assert all(1 <= metrics[f"r_vlm_mean.{w}"] <= 5 for w in WEATHERS)
    failed_csv = (log.folder / "artifacts" / "label" / "failed_files.csv").read_text()
    assert all(uri in failed_csv for uri in expected_errors) and failed_csv.count("\n") == 1 + len(
        expected_errors
    )

    second = run_label(cfg, NullLogger())
    assert (second.labeled, second.skipped_done, second.failed) == (0, first.labeled, first.failed)
    again = tables(cfg)
    assert again["labels"].sort_by("image_id").equals(labels.sort_by("image_id"))
    assert again["labels"].num_rows == len(set(again["labels"].column("image_id").to_pylist()))


def test_backend_errors_fail_only_their_images(tmp_path, local_ray):
    paths = make_pool(tmp_path / "pool", per_weather=2)
    Image.new("RGB", (24, 32)).save(paths[1])  # all black: the poison image
    cfg = job_config(tmp_path, tmp_path / "pool", "label.batch_size=3")
    summary = run_label(cfg, NullLogger(), backend_factory=FakeFactory("poison", tmp_path / "m"))
    assert (summary.labeled, summary.failed) == (5, 1)
    errors = tables(cfg)["errors"].to_pylist()
    assert [(e["uri"], e["stage"], e["error_type"]) for e in errors] == [
        (str(paths[1]), "label", "ValueError")
    ]
    labels = tables(cfg)["labels"]
    assert (
        max(abs(v - 4.0) for v in labels.column("r_vlm").to_pylist()) < 0.1
    )  # the fake's logits reached the table
    assert set(labels.column("weather").to_pylist()) == {"rain"}

    flaky = job_config(tmp_path / "flaky", tmp_path / "pool", "label.batch_size=6")
    assert run_label(flaky, NullLogger(), backend_factory=FakeFactory("flaky", tmp_path / "m")).labeled == 6


def test_broken_backend_writes_every_image_to_errors(tmp_path, local_ray):
    paths = make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool")
    with pytest.raises(
        NothingLabeledError, match=r"every one of the 3 listed files failed \(3 label.RuntimeError\)"
    ):
        run_label(cfg, NullLogger(), backend_factory=FakeFactory("broken", tmp_path / "m"))
    errors = tables(cfg)["errors"]
    assert sorted(errors.column("uri").to_pylist()) == sorted(str(p) for p in paths)
    assert set(errors.column("message").to_pylist()) == {"backend failure (broken)"}
    assert tables(cfg)["pool"].num_rows == 3  # decoded fine, so listed in the pool table


def test_crashed_actor_is_restarted_and_its_batch_retried(tmp_path, local_ray):
    make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool", "label.max_restarts=2", "label.max_task_retries=2")
    summary = run_label(cfg, backend_factory=FakeFactory("crash_once", tmp_path / "marker"))  # MLflow logger
    assert (tmp_path / "marker").exists()  # it did crash
    assert (summary.labeled, summary.failed) == (3, 0)

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/runs/mlflow.db")
    (run,) = client.search_runs([client.get_experiment_by_name(cfg.runtime.experiment).experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["labeled"] == 3
    assert (
        run.data.params["labeler.model_id"] == cfg.vlm.model_id and run.data.params["label.batch_size"] == "4"
    )
    assert [a.path for a in client.list_artifacts(run.info.run_id, "label")] == ["label/r_vlm_by_weather.png"]


def test_actor_that_keeps_crashing_loses_no_uri(tmp_path, local_ray):
    paths = make_pool(tmp_path / "pool", per_weather=1)
    cfg = job_config(tmp_path, tmp_path / "pool", "label.max_restarts=1", "label.max_task_retries=1")
    with pytest.raises(NothingLabeledError):
        run_label(cfg, NullLogger(), backend_factory=FakeFactory("crash_always", tmp_path / "marker"))
    errors = tables(cfg)["errors"]
    assert sorted(errors.column("uri").to_pylist()) == sorted(str(p) for p in paths)
    assert set(errors.column("error_type").to_pylist()) == {"lost"}


# ---------------------------------------------------------------- jobs/label.py


def test_label_command_reports_expected_errors_without_traceback(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    for argv, message in [
        (["--config", "smoke", f"data.pool={tmp_path}/missing"], "does not exist"),
        (["--config", "smoke", f"data.pool={tmp_path}/empty"], "lists no image files"),
        (["--config", "smoke", "label.batch_size=0"], "'label.batch_size': must be >= 1"),
        (["--config", "smoke", "vlm.max_new_tokens=0"], "'vlm.max_new_tokens': must be >= 1"),
        (["--config", "smoke", "data.max_image_pixels=0"], "'data.max_image_pixels': must be >= 1"),
        (["--config", "smoke", "label.flush_seconds=0"], "'label.flush_seconds': must be > 0"),
        (
            ["--config", "smoke", "vlm.gpu_memory_utilization=2"],
            "'vlm.gpu_memory_utilization': must be in (0, 1]",
        ),
        (["--config", "no-such-profile"], "no such config file or profile"),
    ]:
        assert cli_main(["label", *argv]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        cli_main(["label", "--help"])
    assert info.value.code == 0 and "data.pool" in capsys.readouterr().out


def test_failed_files_are_named_on_the_console_up_to_a_cap(tmp_path, caplog):
    from fairweather.stages.infra.pool import RESULT_SCHEMA
    from fairweather.stages.label.tables import REPORTED_FAILURES, ResultWriter

    labeler = vars(Labeler.of(load_config("smoke")))
    writer = ResultWriter(TableStore(str(tmp_path)), labeler, flush_rows=10_000, flush_seconds=3600)
    failed = {
        "status": "failed",
        "error_stage": "decode",
        "error_type": "empty",
        "message": "empty: zero-byte file",
    }
    rows = [{"uri": f"/pool/{i}.png", **failed} for i in range(REPORTED_FAILURES + 5)]
    with caplog.at_level("WARNING"):
        writer.add(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))
        writer.flush()
    assert "not labeled: /pool/0.png (empty: zero-byte file)" in caplog.text
    assert caplog.text.count("not labeled:") == REPORTED_FAILURES
    assert "every one is in the errors table" in caplog.text
    assert TableStore(str(tmp_path)).read("errors").num_rows == REPORTED_FAILURES + 5
