"""The README's first command, `fairweather demo`, end to end on the smoke profile (smaller counts, no sweep: the
sweep has its own tests in test_sweep.py), and `fairweather pipeline`'s crash between stages and its reruns.

One pipeline run for both (it used to run twice, here and in test_pipeline.py): the demo crashes in the training
rounds, the same command resumes (the finished stages skipped, one MLflow run per stage), and a third finds every
stage done. The tests assert on what the three commands printed and left.

Its own Ray (``own_ray``: the process's shared one is stopped first): the smoke profile's paths are relative, so
the Ray's workers must run in the demo's folder, as they do when the command starts its Ray there. One Ray for the
three commands, started as the command starts it (``ray_session``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io

import pytest
import ray
from mlflow.tracking import MlflowClient

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.runtime import ray_session, tracking_uri
from fairweather.stages.pipeline import demo as demo_module
from fairweather.stages.pipeline import driver as pipeline

STAGE_NAMES = [stage.name for stage in pipeline.STAGES]

pytestmark = pytest.mark.own_ray

OVERRIDES = [
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
    "loss.weights.wpl=0.02",  # the smoke profile has no L_wpl: this pipeline runs stage 1 (prompts) too
    # NIQE's parameters come through `fairweather prefetch` from the package registry: not in tests.
    "pseudo.metrics=[piqe]",
    "evaluate.metrics=[piqe]",
]


@dataclasses.dataclass
class Command:
    """One `fairweather demo --no-sweep` command: exit code, console output, the pipeline's summary (None when
    it raised), and the pipeline table's finished stages right after it."""

    code: int
    out: str
    err: str
    summary: pipeline.PipelineSummary | None
    finished: list[str]


def _crash(cfg, logger, state):
    raise RuntimeError("simulated crash in the training rounds")


@pytest.fixture(scope="module")
def demo(tmp_path_factory, model_cache):
    """The three commands (crash in the rounds, resume, rerun) in a fresh folder, the module's working directory
    while its tests run (the smoke profile's paths are relative); yields (root, cfg, commands)."""
    root = tmp_path_factory.mktemp("demo")
    overrides = [f"runtime.model_cache_dir={model_cache}", *OVERRIDES]
    commands: list[Command] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)  # the smoke profile's relative runs/ paths land here
        cfg = load_config("smoke", overrides)
        summaries: list[pipeline.PipelineSummary] = []
        assert not ray.is_initialized(), "the demo's Ray must start in its folder"
        run_pipeline = demo_module.run_pipeline

        def spy(cfg):
            summaries.append(run_pipeline(cfg))
            return summaries[-1]

        patch.setattr(demo_module, "run_pipeline", spy)
        with ray_session(cfg):  # the three commands find it up and keep it
            for crash in (True, False, False):
                summaries.clear()
                out, err = io.StringIO(), io.StringIO()
                with (
                    patch.context() as inner,
                    contextlib.redirect_stdout(out),
                    contextlib.redirect_stderr(err),
                ):
                    if crash:
                        crashing = tuple(
                            dataclasses.replace(stage, run=_crash) if stage.name == "rounds" else stage
                            for stage in pipeline.STAGES
                        )
                        inner.setattr(pipeline, "STAGES", crashing)
                    code = main(["demo", "--no-sweep", *overrides])
                finished = TableStore(cfg.data.tables).read("pipeline").column("stage").to_pylist()
                summary = summaries[-1] if summaries else None
                commands.append(Command(code, out.getvalue(), err.getvalue(), summary, sorted(finished)))
            yield root, cfg, commands


def test_demo_runs_the_pipeline_end_to_end_and_a_rerun_skips_every_stage(demo):
    root, cfg, (crashed, resumed, again) = demo
    assert crashed.code == 1 and "simulated crash in the training rounds" in crashed.err
    assert "6 labeled" in crashed.out  # the label stage ran in the first command
    # the init's pseudo-labels: where they came from, and their audit grid, named and written
    assert "round 0: " in crashed.out and "; labels now from " in crashed.out
    audit = crashed.out.split("pseudo-label audit of round 0 (input | previous label | new candidate): ")[1]
    assert (root / audit.splitlines()[0]).is_file()
    assert resumed.code == 0
    out = resumed.out
    assert "test split, input -> EMA: PSNR" in out and "synthetic test split, overall" in out
    assert "evaluation report: " in out and "tiny random models" in out
    assert out.count("done before on the same inputs, skipped") == 4  # label, warmup, init, prompts
    # round 1 starts from the warm-up's network (pseudo.warmup_starts_rounds), found again after the crash
    start = out.split("starts from the network of ")[1].splitlines()[0]
    assert "-warmup/checkpoint_" in start
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
    assert resumed.finished == ["evaluate", "init", "label", "prompts", "rounds", "warmup"]
    assert (root / "runs" / "smoke" / "mlflow.db").exists()

    assert again.code == 0  # a rerun finds every stage done on the same inputs
    assert again.out.count("done before on the same inputs, skipped") == 6
    assert TableStore(cfg.data.tables).read("labels").sort_by("image_id").equals(labels.sort_by("image_id"))


def test_a_rerun_after_a_crash_skips_finished_stages_and_keeps_one_run_per_stage(demo):
    """(Was test_pipeline.py, on its own pipeline run.)"""
    _, cfg, (crashed, resumed, again) = demo
    assert crashed.summary is None  # the pipeline raised
    assert crashed.finished == ["init", "label", "prompts", "warmup"]

    summary = resumed.summary
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
        # Exactly one won at round 0 (round 1's update may have replaced it since: then it names its successor).
        assert sum(row["selected"] or row["replaced_by"] is not None for row in candidates) == 1, image

    assert {result.status for result in again.summary.stages} == {"skipped"}
    assert again.summary.checkpoint == summary.checkpoint and again.summary.report_dir == summary.report_dir

    # The runs folder is relative: the fixture keeps the working directory at the demo's folder.
    client = MlflowClient(tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    parents = client.search_runs([experiment], "tags.`fairweather.stage` = 'pipeline'")
    top = [run for run in parents if "mlflow.parentRunId" not in run.data.tags]
    assert len(top) == 1 and top[0].info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{top[0].info.run_id}'")
    names = sorted(run.info.run_name for run in children)
    assert names == sorted(STAGE_NAMES)  # the crashed rounds child was reopened, not duplicated
    assert {run.info.status for run in children} == {"FINISHED"}
    # The rounds went on from the warm-up stage's checkpoint without a second (empty) warm-up run of their own.
    (rounds,) = (run for run in children if run.info.run_name == "rounds")
    below = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{rounds.info.run_id}'")
    assert all(run.info.run_name != "warmup" for run in below), [run.info.run_name for run in below]
