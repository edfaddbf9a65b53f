"""The README's first command, `fairweather demo`, end to end on the smoke profile (smaller counts)."""

from __future__ import annotations

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.tables import TableStore


def test_demo_runs_end_to_end_and_reruns_idempotently(tmp_path, monkeypatch, model_cache, capsys):
    monkeypatch.chdir(tmp_path)  # the smoke profile's relative runs/ paths land here
    overrides = [
        f"runtime.model_cache_dir={model_cache}",
        "runtime.num_cpus=2",  # not every CPU of the machine: the demo's private Ray needs 2 (1 actor + reading)
        "synth.num_paired=12",
        "synth.num_unlabeled=6",
        "train.iterations_per_round=4",
        "train.checkpoint_every=4",
        "train.log_every=2",
        "train.val_images=2",
        "train.val_real_images=1",
        "train.prompt_images_per_weather=2",
        "loss.prompt_fit_steps=2",
    ]
    assert main(["demo", *overrides]) == 0
    out = capsys.readouterr().out
    assert "still to come" in out and "6 labeled" in out and "EMA PSNR" in out
    cfg = load_config("smoke", overrides)
    labels = TableStore(cfg.data.tables).read("labels")
    assert labels.num_rows == 6 and len(set(labels.column("image_id").to_pylist())) == 6
    assert set(labels.column("weather_hint").to_pylist()) == {"rain", "haze", "snow"}
    assert (tmp_path / "runs" / "smoke" / "mlflow.db").exists()

    assert main(["demo", *overrides]) == 0  # a rerun labels nothing new and changes no table
    assert "0 labeled, 6 skipped" in capsys.readouterr().out
    assert TableStore(cfg.data.tables).read("labels").sort_by("image_id").equals(labels.sort_by("image_id"))
