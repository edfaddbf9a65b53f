"""`fairweather pipeline`: every stage once, a crash between stages, and the rerun that skips finished stages."""

from __future__ import annotations

import dataclasses

import pytest
from mlflow.tracking import MlflowClient

from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.runtime import tracking_uri
from fairweather.stages.pipeline import driver as pipeline
from fairweather.stages.synth.driver import run_synth

from .train_fixtures import tiny_config

STAGE_NAMES = [stage.name for stage in pipeline.STAGES]


@pytest.fixture(scope="module")
def cfg(tmp_path_factory, model_cache, local_ray):
    root = tmp_path_factory.mktemp("pipeline")
    config = tiny_config(
        root,
        model_cache,
        **{
            "synth.num_unlabeled": 6,
            "synth.num_paired": 20,
            "train.rounds": 2,
            "train.iterations_per_round": 3,
            "train.checkpoint_every": 3,
            "train.real_batch_size": 1,
            "train.prompt_images_per_weather": 2,
            "loss.weights.ps": 0.5,
            "loss.weights.wpl": 0.02,
            "pseudo.warmup_steps": 2,
            "evaluate.metrics": "[piqe]",
        },
    )
    run_synth(config)
    return config


def _crash(cfg, logger, state):
    raise RuntimeError("simulated crash in the training rounds")


def test_a_rerun_after_a_crash_skips_finished_stages_and_keeps_one_run_per_stage(cfg, monkeypatch):
    with monkeypatch.context() as patch:
        crashing = tuple(
            dataclasses.replace(stage, run=_crash) if stage.name == "rounds" else stage
            for stage in pipeline.STAGES
        )
        patch.setattr(pipeline, "STAGES", crashing)
        with pytest.raises(RuntimeError, match="simulated crash"):
            pipeline.run_pipeline(cfg)
    finished = TableStore(cfg.data.tables).read("pipeline").column("stage").to_pylist()
    assert sorted(finished) == ["init", "label", "prompts", "warmup"]

    summary = pipeline.run_pipeline(cfg)
    status = {result.stage: result.status for result in summary.stages}
    assert status == {
        "label": "skipped",
        "warmup": "skipped",
        "init": "skipped",
        "prompts": "skipped",
        "rounds": "ran",
        "evaluate": "ran",
    }
    assert summary.checkpoint and summary.report_dir
    store = TableStore(cfg.data.tables)
    assert store.read("metrics").num_rows > 0
    lineage = pipeline.default_lineage(cfg)
    rows = store.read("pseudo_labels").to_pylist()
    rounds = {row["round"] for row in rows if row["lineage"] == lineage}
    assert rounds == {0, 1}, lineage  # init, then the update after round 1 (none after the last round)
    init = [row for row in rows if row["lineage"] == lineage and row["round"] == 0]
    by_image: dict[str, list[dict]] = {}
    for row in init:
        by_image.setdefault(row["image_id"], []).append(row)
    for image, candidates in by_image.items():  # the input and the warm-up restorer compete for every image
        assert {row["source"] for row in candidates} == {"input", "warmup"}, image
        assert sum(row["selected"] for row in candidates) == 1, image

    again = pipeline.run_pipeline(cfg)
    assert {result.status for result in again.stages} == {"skipped"}
    assert again.checkpoint == summary.checkpoint and again.report_dir == summary.report_dir

    client = MlflowClient(tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    parents = client.search_runs([experiment], "tags.`fairweather.stage` = 'pipeline'")
    top = [run for run in parents if "mlflow.parentRunId" not in run.data.tags]
    assert len(top) == 1 and top[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{top[0].info.run_id}'")
    names = sorted(run.info.run_name for run in children)
    assert names == sorted(STAGE_NAMES)  # the crashed rounds child was reopened, not duplicated
    assert {run.info.status for run in children} == {"FINISHED"}
