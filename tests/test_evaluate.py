"""``fairweather evaluate``: per-weather means, the report's layout (quoted rows, n/a cells), the job end to end.

The end-to-end test builds its checkpoints directly (no training): "identity" has its last convolution zeroed, so
the residual network returns its input and its scores must equal the input's exactly; "random" is the untrained
network. Metrics are the offline ones (PIQE, PSNR, SSIM); a metric without weights shows up as n/a.
"""

from __future__ import annotations

import dataclasses
import io
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from PIL import Image

from fairweather.contracts.config import load_config
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.metric_logger import DiskLogger
from fairweather.contracts.tables import TableStore
from fairweather.stages.engine.rows import OutputFolder, read_one
from fairweather.stages.evaluate.io import name_test_sets
from fairweather.stages.evaluate.report import (
    TARGET,
    ReportInfo,
    console_lines,
    metric_table,
    weather_means,
    write_report,
)
from fairweather.training.state import save_state
from tests.test_restore import checkpoint_state


def per_image(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    """``(method, dataset, weather, metric, value)`` rows, one image each, named in order."""
    return pd.DataFrame(
        [
            {
                "method": m,
                "dataset": d,
                "resize_policy": "none",
                "weather": w,
                "image": f"img{i}",
                "metric": k,
                "value": v,
            }
            for i, (m, d, w, k, v) in enumerate(rows)
        ]
    )


def test_weather_means_per_weather_overall_and_all_sets():
    rows = [
        ("ours", "a", "rain", "musiq", 1.0),
        ("ours", "a", "rain", "musiq", 3.0),
        ("ours", "a", "haze", "musiq", 5.0),
        ("ours", "a", "unknown", "musiq", 7.0),
        ("ours", "b", "snow", "musiq", 10.0),
    ]
    means = weather_means(per_image(rows)).set_index(["dataset", "weather"])
    assert means.loc[("a", "rain"), "value"] == 2.0 and means.loc[("a", "rain"), "num_images"] == 2
    assert means.loc[("a", "haze"), "value"] == 5.0
    # Overall is the mean over every image (unknown weather included), not the mean of the weather means.
    assert means.loc[("a", "overall"), "value"] == 4.0 and means.loc[("a", "overall"), "num_images"] == 4
    assert means.loc[("all", "overall"), "value"] == 26.0 / 5 and means.loc[("all", "snow"), "value"] == 10.0
    assert set(means["image"]) == {""}


def report_info(**extra: object) -> ReportInfo:
    values = dict(
        run_name="evaluate-test",
        resize_policy="none",
        methods=("input", "ours"),
        checkpoints=("ours",),
        metrics=("nima", "musiq", "clipiqa", "liqe", "qalign"),
        reference_metrics=("psnr",),
        unavailable={"liqe": "weights missing"},
    )
    return ReportInfo(**{**values, **extra})


HIGHER = {
    "nima": True,
    "musiq": True,
    "clipiqa": True,
    "liqe": True,
    "qalign": True,
    "vlm_vis": True,
    "psnr": True,
}


def test_report_table_layout_quoted_rows_and_na_cells():
    rows = [
        (m, "set", w, k, v)
        for m, base in (("input", 50.0), ("ours", 60.0))
        for w in ("rain", "haze", "snow")
        for k, v in (("musiq", base), ("nima", base / 10), ("clipiqa", base / 100))
    ]
    means = weather_means(per_image(rows))
    table = metric_table(
        means, "set", ("nima", "musiq", "clipiqa"), report_info(), higher_better=HIGHER, quoted=True
    )
    assert list(table.columns[:4]) == ["method", "Rain NIMA ↑", "Rain MUSIQ ↑", "Rain CLIP-IQA ↑"]
    assert list(table.columns[-3:]) == ["Overall NIMA ↑", "Overall MUSIQ ↑", "Overall CLIP-IQA ↑"]
    ours = table.set_index("method").loc["ours"]
    assert ours["Haze MUSIQ ↑"] == "60.00" and ours["Overall NIMA ↑"] == "6.000"
    quoted = table.set_index("method").loc["Paper A (quoted)"]
    assert quoted["Overall MUSIQ ↑"] == "59.34" and quoted["Overall CLIP-IQA ↑"] == "0.456"
    assert quoted["Rain MUSIQ ↑"] == "–"  # METHOD.md quotes the Overall column only
    assert list(table["method"][:2]) == ["input", "ours"] and len(table) == 2 + 4
    second = metric_table(
        means, "set", ("liqe", "qalign", "vlm_vis"), report_info(), higher_better=HIGHER, quoted=True
    )
    row = second.set_index("method").loc["ours"]
    assert row["Overall LIQE ↑"] == "n/a (weights missing)" and row["Rain LIQE ↑"] == "n/a (weights missing)"
    assert row["Overall VLM-Vis ↑"] == "n/a (not configured)"
    assert row["Overall Q-Align ↑"] == "–"  # configured and available, but no image scored it
    assert second.set_index("method").loc["Paper A (quoted)", "Overall VLM-Vis ↑"] == "0.387"


def test_test_sets_named_alike_take_their_parent_folders_and_one_listed_twice_is_refused():
    specs = ["devdata/rain100l", "paired:test", "runs/a/test", "runs/b/test/", "sets.csv", "x/y/test"]
    assert name_test_sets(specs) == ["rain100l", "paired:test", "a/test", "b/test", "sets", "y/test"]
    assert name_test_sets(["test", "a/test"]) == ["test", "a/test"]
    with pytest.raises(FairweatherError, match="lists 'a/test' more than once"):
        name_test_sets(["a/test", "b", "a/test"])


def test_console_lines_count_a_sets_images_when_the_first_method_scored_none_of_them():
    """``evaluate.include_input=false`` and the first checkpoint failed every image of set b: its rows are dashes."""
    frame = per_image(
        [
            ("ours", "a", "rain", "piqe", 30.0),
            ("other", "a", "rain", "piqe", 35.0),
            ("other", "b", "haze", "piqe", 20.0),
        ]
    )
    info = report_info(methods=("ours", "other"), checkpoints=("ours", "other"), metrics=("piqe",))
    lines = console_lines(weather_means(frame), info, higher_better={"piqe": False})
    (header,) = [i for i, line in enumerate(lines) if line.startswith("b (1 images), overall:")]
    assert lines[header + 1].split() == ["ours", "–"] and lines[header + 2].split() == ["other", "20.00"]


def test_a_paper_table_with_no_metric_configured_is_one_note_not_a_table_of_n_a(tmp_path: Path):
    frame = per_image([(m, "set", "rain", "piqe", v) for m, v in (("input", 40.0), ("ours", 30.0))])
    info = report_info(metrics=("piqe",), reference_metrics=(), unavailable={})
    write_report(tmp_path, frame, weather_means(frame), info, higher_better=HIGHER)
    text = (tmp_path / "report.md").read_text()
    assert "### Table" not in text and "n/a (not configured)" not in text
    assert "- Paper A's Table 1 and Table 2 left out: no metric they show is configured" in text
    assert "### Other no-reference metrics" in text


def test_report_files_with_ablation(tmp_path: Path):
    rows = [
        (m, "set", w, "musiq", v)
        for m, v in (("input", 50.0), ("run1", 55.0), ("run2", 58.0))
        for w in ("rain", "snow")
    ]
    frame = per_image(rows)
    info = report_info(methods=("input", "run1", "run2"), checkpoints=("run1", "run2"))
    files = write_report(tmp_path, frame, weather_means(frame), info, higher_better=HIGHER)
    text = (tmp_path / "report.md").read_text()
    assert "### Table 1: NIMA / MUSIQ / CLIP-IQA" in text and "### Table 2: LIQE / Q-Align / VLM-Vis" in text
    assert "| Restormer (quoted) |" in text and "n/a (weights missing)" in text
    assert "### Ablation" in text and "| + L_sem (quoted) | 58.91 | 0.445 | 0.381 |" in text
    ablation = pd.read_csv(tmp_path / "set_ablation.csv", dtype=str)
    assert list(ablation["run"][:2]) == ["run1", "run2"] and ablation["Overall MUSIQ"][1] == "58.00"
    assert (tmp_path / "charts" / "set_musiq.png").stat().st_size > 0
    assert {p.name for p in files} >= {
        "report.md",
        "means.csv",
        "per_image.csv",
        "set_table_1.csv",
        "set_table_2.csv",
    }


def test_example_grid_is_input_restored_target_where_a_target_exists(tmp_path: Path):
    colour = {"input": 40, "run1": 120, TARGET: 250}
    cell = {name: png(np.full((160, 160, 3), value, np.uint8)) for name, value in colour.items()}
    thumbnails = {("set", "a"): dict(cell), ("pool", "b"): {"input": cell["input"], "run1": cell["run1"]}}
    frame = per_image([("input", "set", "rain", "musiq", 50.0), ("run1", "set", "rain", "musiq", 55.0)])
    info = report_info(methods=("input", "run1"), checkpoints=("run1",))
    write_report(tmp_path, frame, weather_means(frame), info, higher_better=HIGHER, thumbnails=thumbnails)
    assert "Examples, left to right: input, run1, target" in (tmp_path / "report.md").read_text()
    grid = np.asarray(Image.open(tmp_path / "examples.png").convert("RGB"))
    assert grid.shape == (320, 480, 3)
    assert [int(grid[80, x, 0]) for x in (80, 240, 400)] == [40, 120, 250]  # input | restored | target
    assert int(grid[240, 400, 0]) == 128  # a set without targets: a grey cell keeps the columns aligned
    # No example with a target: no target column.
    del thumbnails[("set", "a")][TARGET]
    write_report(tmp_path, frame, weather_means(frame), info, higher_better=HIGHER, thumbnails=thumbnails)
    assert "Examples, left to right: input, run1\n" in (tmp_path / "report.md").read_text()


def test_checkpoint_names_and_training_runs():
    from fairweather.stages.engine.rows import CheckpointRef

    ray_layout = CheckpointRef.parse("/runs/train/train-abc123/checkpoint_000002")
    assert (ray_layout.name, ray_layout.training_run) == ("train-abc123", "train-abc123")
    artifact = CheckpointRef.parse("mine=/mlruns/1/run/artifacts/model/model.pt")
    assert (artifact.name, artifact.training_run) == ("mine", "run")  # the MLflow run id folder
    assert CheckpointRef.parse("/ckpts/ablation-lsup").name == "ablation-lsup"


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "PNG")
    return buffer.getvalue()


def scene(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """A smooth clean image and a noisy 'weather' version of it."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    clean = np.stack([x, y, (x + y) / 2], -1) * 200 + rng.uniform(0, 40, 3)
    noisy = clean + rng.normal(0, 25, clean.shape)
    return clean.clip(0, 255).astype(np.uint8), noisy.clip(0, 255).astype(np.uint8)


def test_output_folders_match_by_path_then_unique_base_name(tmp_path: Path):
    for name in ("rain/001.png", "002.jpg", "a/003.png", "b/003.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    outputs = OutputFolder(str(tmp_path))
    assert outputs.match("rain/001") == str(tmp_path / "rain/001.png")
    assert outputs.match("synth/rain/001") == str(tmp_path / "rain/001.png")  # a pair id's dataset prefix
    assert outputs.match("snow/002") == str(tmp_path / "002.jpg")
    assert outputs.match("c/003") is None  # two files named 003: ambiguous, never guessed


def test_resize_policy_applies_to_input_and_target_and_hostile_files_become_rows(tmp_path: Path):
    clean, noisy = scene(0, size=96)
    (tmp_path / "in.png").write_bytes(png(noisy[:, :72]))
    (tmp_path / "target.png").write_bytes(png(clean[:, :72]))
    (tmp_path / "bad.png").write_bytes(b"not an image at all")
    row = {"source_uri": str(tmp_path / "in.png"), "target_uri": str(tmp_path / "target.png")}
    out = read_one(row, max_pixels=10**6, short_side=36)
    assert (out["status"], out["height"], out["width"]) == ("ok", 48, 36)  # short side 72 -> 36, aspect kept
    assert (out["target_height"], out["target_width"]) == (48, 36) and len(out["pixels"]) == 48 * 36 * 3
    assert read_one(row, max_pixels=10**6, short_side=None)["height"] == 96  # "none": full resolution
    bad = read_one({**row, "source_uri": str(tmp_path / "bad.png")}, max_pixels=10**6, short_side=None)
    assert (bad["status"], bad["error_type"]) == ("failed", "not_an_image")
    missing = read_one({**row, "target_uri": str(tmp_path / "gone.png")}, max_pixels=10**6, short_side=None)
    assert missing["status"] == "failed" and "gone.png" in missing["message"]


@pytest.fixture(scope="module")
def evaluation_setup(tmp_path_factory, model_cache):
    """Tables with a paired test split of 6 images, a real folder with a hostile file, checkpoints, a baseline."""
    root = tmp_path_factory.mktemp("evaluate")
    rows = []
    for i, weather in enumerate(("rain", "rain", "haze", "haze", "snow", "snow")):
        clean, noisy = scene(i)
        for kind, rgb in (("input", noisy), ("target", clean)):
            (root / "data" / kind).mkdir(parents=True, exist_ok=True)
            (root / "data" / kind / f"{i}.png").write_bytes(png(rgb))
        rows.append(
            {
                "pair_id": f"synth/{i}",
                "dataset": "synth",
                "split": "test",
                "weather": weather,
                "input_uri": f"../data/input/{i}.png",
                "target_uri": f"../data/target/{i}.png",
                "width": 64,
                "height": 64,
                "created_at": datetime.now(timezone.utc),
            }
        )
    TableStore(str(root / "tables")).write("paired", pa.Table.from_pylist(rows))
    for i, weather in enumerate(("rain", "snow")):
        (root / "real" / weather).mkdir(parents=True, exist_ok=True)
        (root / "real" / weather / f"r{i}.png").write_bytes(png(scene(10 + i)[1]))
    (root / "real" / "rain" / "broken.png").write_bytes(
        png(scene(20)[1])[:60]
    )  # truncated: reported, skipped
    (root / "baseline").mkdir()
    for i in range(5):  # no output for synth/5: the report says so
        (root / "baseline" / f"{i}.png").write_bytes(png(scene(i)[0]))  # a perfect method: the clean target
    train_run = root / "train" / "train-0123abcd" / "checkpoint_000003"
    save_state(checkpoint_state(identity=True), train_run)
    save_state(checkpoint_state(), root / "random")
    cfg = load_config(
        "smoke",
        [
            f"runtime.runs_dir={root}/runs",
            f"runtime.model_cache_dir={model_cache}",
            f"data.tables={root}/tables",
            "runtime.num_cpus=2",
        ],
    )
    scorer = dataclasses.replace(cfg.evaluate.scorer, weights_dir=str(root / "no-weights"))  # MUSIQ: absent
    ev = dataclasses.replace(
        cfg.evaluate,
        scorer=scorer,
        metrics=("piqe", "musiq"),
        test_sets=("paired:test", str(root / "real")),
        checkpoints=(str(train_run), f"random={root / 'random'}"),
        baseline_folders=(f"perfect={root / 'baseline'}",),
        num_cpus_per_actor=0.5,
    )
    return root, dataclasses.replace(cfg, evaluate=ev)


@pytest.mark.usefixtures("local_ray")
def test_evaluate_job_end_to_end(evaluation_setup, capsys):
    from fairweather.stages.evaluate.driver import run_evaluate

    root, cfg = evaluation_setup
    logger = DiskLogger(root / "logger")
    summary = run_evaluate(cfg, logger)
    out = capsys.readouterr().out  # the overall means of every set, then of all of them, on the console
    header = next(line for line in out.splitlines() if "paired:test (6 images), overall:" in line)
    assert header.split()[-6:] == ["PIQE", "↓", "PSNR", "↑", "SSIM", "↑"]
    perfect = next(line for line in out.splitlines() if line.startswith("    perfect "))
    assert float(perfect.split()[2]) > 60  # its PSNR against the clean targets
    assert out.index("paired:test (6 images)") < out.index("real (") < out.index("all (")
    assert summary.images == 9 and summary.failed == 3  # broken.png, once per method that reads it
    assert summary.unavailable == {"musiq": "weights missing"}
    assert summary.scored == 6 * 4 - 1 + 2 * 3 and set(summary.metric_seconds) == {"piqe", "psnr", "ssim"}

    metrics = TableStore(cfg.data.tables).read("metrics").to_pandas()
    assert set(metrics["method"]) == {"input", "train-0123abcd", "random", "perfect"}
    assert set(metrics["resize_policy"]) == {"none"} and set(metrics["run_id"]) == {summary.run_name}
    means = metrics[metrics["image"] == ""].set_index(["dataset", "method", "weather", "metric"])["value"]
    images = metrics[metrics["image"] != ""].set_index(["dataset", "method", "image", "metric"])["value"]
    # The identity network returns its input: every per-image score equals the input's.
    for metric in ("piqe", "psnr", "ssim"):
        assert images.loc[("paired:test", "train-0123abcd", "synth/2", metric)] == pytest.approx(
            images.loc[("paired:test", "input", "synth/2", metric)], abs=1e-4
        )
    assert images.loc[("paired:test", "perfect", "synth/0", "psnr")] > 60  # the clean target itself
    rain = [images.loc[("paired:test", "input", f"synth/{i}", "psnr")] for i in (0, 1)]
    assert means.loc[("paired:test", "input", "rain", "psnr")] == pytest.approx(np.mean(rain))
    assert means.loc[("paired:test", "perfect", "snow", "psnr")] > 60  # synth/4 only: no output for synth/5
    assert (
        means.loc[("real", "input", "overall", "piqe")] > 0
        and ("all", "input", "overall", "piqe") in means.index
    )
    errors = TableStore(cfg.data.tables).read("errors").to_pandas()
    assert all(uri.endswith("broken.png") for uri in errors["uri"])
    assert sorted(errors["stage"]) == ["evaluate:input", "evaluate:random", "evaluate:train-0123abcd"]

    assert logger.tags["fairweather.training_run"] == "random,train-0123abcd"
    assert logger.tags["fairweather.training_run.train-0123abcd"] == "train-0123abcd"
    report = Path(summary.report_dir) / "report.md"
    text = report.read_text()
    assert "n/a (weights missing)" in text and "Paper A (quoted)" in text and "### Ablation" in text
    assert "baseline perfect: no output for 4 test image(s)" in text and "Full-reference metrics" in text
    artifacts = {p.name for p in (root / "logger" / "artifacts").rglob("*")}
    assert {"report.md", "examples.png", "per_image.csv"} <= artifacts
    grid = Image.open(Path(summary.report_dir) / "examples.png")
    # 4 paired examples + 2 real ones, 4 methods each (a grey cell where the baseline has no output), then the
    # paired examples' clean target (grey for the real photos, which have none)
    assert grid.size == (160 * 5, 160 * 4 + 160 * 2)
    assert re.search(r"Examples, left to right: input, .+, target\n", text)
    assert "6 images scored (haze 2, rain 2, snow 2)" in text
    metrics_logged = [
        json.loads(line) for line in (root / "logger" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("eval/paired_test/input/psnr/overall" in record for record in metrics_logged)


def test_start_up_errors_are_one_line_before_ray_starts(tmp_path: Path, capsys):
    from fairweather.cli import main

    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.png").write_bytes(png(scene(0)[1]))
    base = [
        "evaluate",
        "--config",
        "smoke",
        f"runtime.runs_dir={tmp_path}/runs",
        f"data.tables={tmp_path}/tables",
        f"evaluate.test_sets=[{tmp_path}/set]",
    ]
    assert main([*base, f"evaluate.checkpoints=[{tmp_path}/nowhere]"]) == 2
    assert "nowhere" in capsys.readouterr().err
    no_weights = [
        f"evaluate.scorer.weights_dir={tmp_path}/empty",
        "evaluate.metrics=[musiq]",
        "evaluate.reference_metrics=[]",
    ]
    assert main([*base, *no_weights]) == 2
    err = capsys.readouterr().err
    assert "no configured metric can run" in err and "fairweather prefetch" in err
    assert main([*base, "evaluate.scorer.device=cuda"]) == 2
    assert "num_gpus_per_actor" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "mlflow.db").exists()  # nothing was opened
