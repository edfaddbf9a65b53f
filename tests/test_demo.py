"""The README's first command, `fairweather demo`, end to end on the smoke profile (smaller counts, no sweep: the
sweep has its own tests in test_sweep.py)."""

from __future__ import annotations

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.tables import TableStore


def test_demo_runs_the_pipeline_end_to_end_and_a_rerun_skips_every_stage(
    tmp_path, monkeypatch, model_cache, capsys
):
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
        "pseudo.warmup_steps=2",
        # NIQE's parameters come through `fairweather prefetch` from the package registry: not in tests.
        "pseudo.metrics=[piqe]",
        "evaluate.metrics=[piqe]",
    ]
    assert main(["demo", "--no-sweep", *overrides]) == 0
    out = capsys.readouterr().out
    assert (
        "6 labeled" in out
        and "test split, input -> EMA: PSNR" in out
        and "synthetic test split, overall" in out
    )
    assert "evaluation report: " in out and "tiny random encoders" in out
    cfg = load_config("smoke", overrides)
    store = TableStore(cfg.data.tables)
    labels = store.read("labels")
    assert labels.num_rows == 6 and set(labels.column("weather_hint").to_pylist()) == {"rain", "haze", "snow"}
    # init (input vs. the warm-up), then round 1's EMA teacher
    pseudo = store.read("pseudo_labels").to_pylist()
    assert len(pseudo) == 18 and {(row["round"], row["source"]) for row in pseudo} == {
        (0, "input"),
        (0, "warmup"),
        (1, "ema@round-1"),
    }
    assert store.read("metrics").num_rows > 0
    assert sorted(store.read("pipeline").column("stage").to_pylist()) == [
        "evaluate",
        "init",
        "label",
        "prompts",
        "rounds",
        "warmup",
    ]
    assert (tmp_path / "runs" / "smoke" / "mlflow.db").exists()

    assert main(["demo", "--no-sweep", *overrides]) == 0  # a rerun finds every stage done on the same inputs
    out = capsys.readouterr().out
    assert out.count("done before on the same inputs, skipped") == 6
    assert TableStore(cfg.data.tables).read("labels").sort_by("image_id").equals(labels.sort_by("image_id"))
