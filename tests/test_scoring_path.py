"""One scoring path for test-split numbers: ``fairweather train``'s final table and ``fairweather evaluate``'s
report agree to the last digit on the same checkpoint and images.

Both go through the engine's read / restore / score functions and the same per-weather mean
(:mod:`fairweather.stages.engine.score`); train's runs in-process in the run's driver (in a Ray task on GPU runs),
evaluate's in Ray Data actors with other batches and thread counts. Images of 128 px make PSNR's mean a
multi-threaded reduction.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import torch

from fairweather.contracts.config import load_config
from fairweather.contracts.metric_logger import DiskLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_view
from fairweather.stages.engine.scored import mean_of, weather_means
from fairweather.training.state import save_state
from tests.test_evaluate import png, scene
from tests.test_restore import checkpoint_state

WEATHERS = ("rain", "rain", "haze", "haze", "snow", "snow")


def test_means_are_exact_whatever_the_order():
    values = [0.1, 1e16, 0.2, -1e16, 0.3] * 3
    assert mean_of(values) == mean_of(reversed(values)) == mean_of(sorted(values))
    frame = pd.DataFrame(
        {"method": "m", "weather": ["rain", "rain", "snow"], "metric": "psnr", "value": [1.0, 2.0, 4.0]}
    )
    means = weather_means(frame, by=["method"]).set_index("weather")
    assert means.loc["rain", "value"] == 1.5 and means.loc["overall", "value"] == 7.0 / 3
    assert means.loc["overall", "num_images"] == 3


@pytest.fixture(scope="module")
def setup(tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("scoring")
    rows = []
    for i, weather in enumerate(WEATHERS):
        size = 128 if i % 2 else 64
        clean, noisy = scene(i, size=size)
        for kind, rgb in (("input", noisy), ("target", clean)):
            (root / "data" / kind).mkdir(parents=True, exist_ok=True)
            (root / "data" / kind / f"{i}.png").write_bytes(png(rgb))
        rows.append({"pair_id": f"synth/{i}", "dataset": "synth", "split": "test", "weather": weather,
                     "input_uri": f"../data/input/{i}.png", "target_uri": f"../data/target/{i}.png",
                     "width": size, "height": size, "created_at": datetime.now(timezone.utc)})  # fmt: skip
    TableStore(str(root / "tables")).write("paired", pa.Table.from_pylist(rows))
    checkpoint = root / "train" / "train-scoring" / "checkpoint_000001"
    save_state(checkpoint_state(), checkpoint)  # the untrained network: far from the identity
    cfg = load_config(
        "smoke",
        [f"runtime.runs_dir={root}/runs", f"runtime.model_cache_dir={model_cache}", f"data.tables={root}/tables",
         "runtime.num_cpus=2"],
    )  # fmt: skip
    return root, cfg, checkpoint


def _means(cfg, run_id: str) -> dict[tuple[str, str, str], float]:
    """``(method, weather, metric) -> mean`` of one evaluation run, from the metrics table."""
    metrics = TableStore(cfg.data.tables).read("metrics").to_pandas()
    means = metrics[(metrics["run_id"] == run_id) & (metrics["image"] == "")]
    return {(r.method, r.weather, r.metric): r.value for r in means.itertuples()}


@pytest.mark.usefixtures("local_ray")
def test_train_final_table_equals_evaluate_report_to_the_last_digit(setup, capsys):
    import ray.train

    from fairweather.stages.evaluate.driver import run_evaluate
    from fairweather.stages.train.final_score import evaluate_checkpoint, print_test_table

    root, cfg, checkpoint = setup
    ev = dataclasses.replace(
        cfg.evaluate,
        metrics=("piqe",),
        reference_metrics=("psnr", "ssim"),
        test_sets=("paired:test",),
        checkpoints=(f"ema={checkpoint}",),
        num_cpus_per_actor=0.5,
        report_dir=str(root / "report"),
    )
    summary = run_evaluate(dataclasses.replace(cfg, evaluate=ev), DiskLogger(root / "evaluate"))
    assert summary.failed == 0
    evaluated = _means(cfg, summary.run_name)
    # evaluate.one_actor (restore and score in one actor per image, for memory): the same numbers.
    one = dataclasses.replace(ev, one_actor=True, report_dir=str(root / "report-one"))
    again = run_evaluate(dataclasses.replace(cfg, evaluate=one), DiskLogger(root / "evaluate-one"))
    assert again.failed == 0 and again.run_name != summary.run_name
    assert _means(cfg, again.run_name) == evaluated

    store = TableStore(cfg.data.tables)
    threads = torch.get_num_threads()
    # Not cpus_per_worker: a CPU run scores in its driver's process and must give the driver its threads back.
    torch.set_num_threads(3)
    try:
        table = evaluate_checkpoint(
            cfg, ray.train.Checkpoint.from_directory(str(checkpoint)), paired_view(store, "test").to_pylist(),
            DiskLogger(root / "train"),
        )  # fmt: skip
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert set(table) == {"rain", "haze", "snow", "overall"}
    for weather, row in table.items():
        for metric in ("psnr", "ssim"):
            assert row[metric] == evaluated[("ema", weather, metric)], (weather, metric)
            assert row[f"input_{metric}"] == evaluated[("input", weather, metric)], (weather, metric)
    assert table["overall"]["psnr"] != table["overall"]["input_psnr"]  # the network did change the images

    print_test_table("train-scoring", str(checkpoint), table)
    printed = capsys.readouterr().out
    report = (Path(summary.report_dir) / "report.md").read_text()
    overall = f"{evaluated[('ema', 'overall', 'psnr')]:.2f}"
    assert overall in printed and overall in report  # the same digits on the console and in the report
    assert np.isfinite(table["overall"]["ssim"])
