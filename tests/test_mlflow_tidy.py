"""MLflow after every path (issues 18 and 19), read back from the store: a resumed run forgets how it ended before,
a failed or killed run ends its nested runs, a resumed training run logs each step once, and a sweep trial's runs
end FINISHED (completed or stopped early, with its sampled values and objective on its rounds) or FAILED."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from fairweather.contracts.config import load_config
from fairweather.stages.infra.tracking import END_TAG, RESUMED_TAG, open_logger, stage_run, stamped_name


@pytest.fixture()
def cfg(tmp_path):
    return load_config("smoke", [f"runtime.runs_dir={tmp_path}"])


def _kill_a_run(tmp_path, key: str) -> tuple[str, str]:
    """A process opens the keyed run of stage 'test' and a child, and dies by SIGKILL; returns both ids."""
    script = (
        "import os, signal\n"
        "from fairweather.contracts.config import load_config\n"
        "from fairweather.stages.infra.tracking import open_logger\n"
        f"cfg = load_config('smoke', ['runtime.runs_dir={tmp_path}'])\n"
        f"logger = open_logger(cfg, 'run', stage='test', key='{key}')\n"
        "print(logger.run_id, logger.child('round-1', key='round-1').run_id, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_id, child_id = killed.stdout.split()[-2:]
    return run_id, child_id


def test_runs_named_in_the_same_second_get_names_of_their_own_in_time_order():
    """Before: ``evaluate-<second>`` was shared by two evaluations started in one second, and so were their rows in
    the metrics table and their report folder."""
    names = [stamped_name("evaluate") for _ in range(20)]
    assert len(set(names)) == 20
    stamps = [name.rsplit("-", 1)[0] for name in names]
    assert stamps == sorted(stamps) and all(stamp.startswith("evaluate-20") for stamp in stamps)


def test_a_run_resumed_after_its_process_was_gone_does_not_keep_the_end_tag(cfg, tmp_path):
    """Before: the run finished by the rerun kept fairweather.end = "its process was gone; ..."."""
    run_id, _ = _kill_a_run(tmp_path, "k1")
    with stage_run(cfg, "test", "run", key="k1") as logger:  # marks it KILLED, then reopens it
        assert logger.run_id == run_id and logger.resumed
    run = logger.client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert END_TAG not in run.data.tags
    assert "its process was gone" in run.data.tags[RESUMED_TAG]


def test_a_failed_or_killed_run_ends_its_nested_runs_left_running(cfg):
    """Before: a parent closed FAILED (or KILLED on Ctrl-C) left a child RUNNING forever."""
    for error, status in ((ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED")):
        with pytest.raises(type(error)), stage_run(cfg, "test") as parent:
            done = parent.child("round-1", key="round-1")
            done.close()
            grandchild = parent.child("round-2", key="round-2").child("update", key="update")
            raise error
        client = parent.client
        assert client.get_run(done.run_id).info.status == "FINISHED"  # ended on its own: left as it was
        for run_id in (grandchild.run_id, client.get_run(grandchild.run_id).data.tags["mlflow.parentRunId"]):
            run = client.get_run(run_id)
            assert run.info.status == status
            assert run.data.tags[END_TAG] == f"its parent run ended {status}"


def test_a_resumed_run_does_not_log_its_replayed_steps_again(cfg):
    """The logging callback of a resumed training run skips the steps the run holds already (read from the
    store), per metric. Before: steps between the last checkpoint and the kill were logged twice."""
    from fairweather.stages.train.callback import ReportToLogger

    def report(callback: ReportToLogger, step: int, **metrics: float) -> None:
        callback.after_report(None, [{"step": step, **metrics}], None)

    with stage_run(cfg, "train", "run", key="run") as logger:
        first = ReportToLogger(logger)
        for step in range(1, 6):
            report(first, step, loss=float(step), lr=0.1)
        report(first, 3, **{"val/psnr": 20.0})
    with stage_run(cfg, "train", "run", key="run") as logger:
        resumed = ReportToLogger(logger)  # restarted from the checkpoint of step 3
        for step in range(4, 9):
            report(resumed, step, loss=10.0 + step, lr=0.1)
        report(resumed, 6, **{"val/psnr": 21.0})
    history = sorted((m.step, m.value) for m in logger.client.get_metric_history(logger.run_id, "loss"))
    assert history == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (6, 16.0), (7, 17.0), (8, 18.0)]
    assert [m.step for m in logger.client.get_metric_history(logger.run_id, "val/psnr")] == [3, 6]


def test_a_checkpoint_registered_but_not_logged_before_a_kill_is_logged_when_the_run_resumes(cfg):
    """Ray Train registers a checkpoint before its callbacks log the report: a driver killed in between left that
    step unlogged, and the resumed run starts after it (a gap in the slow killed-driver test's loss curve). The
    resumed run's callback logs the registered checkpoint's metrics where missing, once."""
    from fairweather.stages.train.callback import ReportToLogger

    with stage_run(cfg, "train", "run", key="run") as logger:
        first = ReportToLogger(logger)
        for step in (5, 10):
            first.after_report(None, [{"step": step, "loss": float(step)}], None)
    registered = {"step": 15, "loss": 15.0, "val/psnr": 20.0}  # the kill came before its report was logged
    for _ in range(2):  # a second resume from the same checkpoint logs nothing again
        with stage_run(cfg, "train", "run", key="run") as logger:
            ReportToLogger(logger, registered)
    history = sorted((m.step, m.value) for m in logger.client.get_metric_history(logger.run_id, "loss"))
    assert history == [(5, 5.0), (10, 10.0), (15, 15.0)]
    assert [m.step for m in logger.client.get_metric_history(logger.run_id, "val/psnr")] == [15]


def test_the_logging_callback_reaches_a_process_without_importing_mlflow_until_it_logs(cfg, tmp_path):
    """Ray Train ships the callback to every training worker too: unpickled there it neither imports MLflow nor
    opens the store; in the controller its first report attaches to the same run and logs. (A sweep trial's Train
    callbacks and the label job's actors, in modules of their own, import no MLflow either.)"""
    from ray import cloudpickle

    from fairweather.stages.train.callback import ReportToLogger

    with stage_run(cfg, "train", "run", key="run") as logger:
        shipped = tmp_path / "callback.pkl"
        shipped.write_bytes(cloudpickle.dumps(ReportToLogger(logger)))
        code = (
            "import pickle, sys\n"
            "import fairweather.stages.label.actors, fairweather.stages.sweep.trainers\n"
            f"callback = pickle.loads(open({str(shipped)!r}, 'rb').read())\n"
            "print(sorted({name.split('.')[0] for name in sys.modules} & {'mlflow', 'sqlalchemy'}))\n"
            "callback.after_report(None, [{'step': 7, 'loss': 0.5}], None)\n"
            "print('mlflow' in sys.modules)\n"
        )
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        assert out.split() == ["[]", "True"]
        assert [(m.step, m.value) for m in logger.client.get_metric_history(logger.run_id, "loss")] == [
            (7, 0.5)
        ]


def _trial(parent, steps: str):
    """A trial's run with one round that trained ``steps`` (``first-last``) and logged the objective there."""
    trial = parent.child("trial-1", key="t1")
    for step in (3, 6, 9, 12):
        trial.log_metrics({"val/psnr/overall": 10.0 + step}, step=step)
    round_ = trial.child("round-1", key="round-1")
    round_.set_tags({"fairweather.steps": steps})
    return trial, round_


def test_an_early_stopped_trial_ends_its_rounds_finished_with_the_objective_and_the_sampled_values(cfg):
    """ASHA ends a trial's trainer mid-round: the round closes FAILED from inside (or stays RUNNING when its task
    dies first). Before: left so; now FINISHED + fairweather.trial_status=stopped_early, and the round carries the
    trial's sampled values and its objective over the round's steps (the compare view can show it)."""
    from fairweather.stages.sweep.trial import STATUS_TAG, TrialTidy

    tidy = TrialTidy("val/psnr/overall", {"loss.weights.ps": 0.25, "train.lr": 0.003})
    with stage_run(cfg, "sweep", "sweep", key="s") as parent:
        trial, round_ = _trial(parent, "1-6")
        round_.close("FAILED")  # its trainer was killed under it
        tidy(trial, "stopped_early", step=6)
        trial.close()
    client = parent.client
    run = client.get_run(round_.run_id)
    assert run.info.status == "FINISHED" and run.data.tags[STATUS_TAG] == "stopped_early"
    assert run.data.tags[END_TAG].startswith("stopped early by the sweep's scheduler after step 6")
    assert run.data.params == {"loss.weights.ps": "0.25", "train.lr": "0.003"}
    points = client.get_metric_history(round_.run_id, "val/psnr/overall")
    assert sorted((m.step, m.value) for m in points) == [(3, 13.0), (6, 16.0)]
    tidy(trial, "stopped_early", step=6)  # the trial's own task may tidy again: nothing doubles
    assert len(client.get_metric_history(round_.run_id, "val/psnr/overall")) == 2


def test_two_writers_sharing_the_sampled_values_at_once_is_no_error(cfg, monkeypatch):
    """A sweep's driver and the stopped trial's own task tidy the same rounds at once: both read a round without the
    sampled values, one logs them first, and the other's insert of the same keys must not fail the trial (it did:
    sqlite's UNIQUE constraint on params, one of four trials in the slow sweep test). Different values still fail."""
    import mlflow.exceptions

    from fairweather.stages.infra import tracking

    with stage_run(cfg, "sweep", "sweep", key="s") as parent:
        trial, round_ = _trial(parent, "1-6")
        stale = tracking.descendants(trial)  # read before the other writer logs
        monkeypatch.setattr(tracking, "descendants", lambda logger: stale)
        round_.client.log_batch(round_.run_id, params=[tracking.Param("loss.weights.ps", "0.25")])
        tracking.share_with_descendants(trial, {"loss.weights.ps": 0.25}, "val/psnr/overall")
        with pytest.raises(mlflow.exceptions.MlflowException):
            tracking.share_with_descendants(trial, {"loss.weights.ps": 0.5}, "val/psnr/overall")
        trial.close()
    assert parent.client.get_run(round_.run_id).data.params == {"loss.weights.ps": "0.25"}


def test_a_round_that_closes_failed_while_its_trial_is_stopped_ends_finished_in_either_order(cfg):
    """Seen in CI: the driver tidies the stopped trial while its round still runs, then the round's own task sees
    its trainer gone and closes it FAILED (and is ended before it can tidy again). The driver tags the trial
    ``fairweather.stopped`` before it ends the trainer, so the round and the runs below it end FINISHED whichever
    closes first; and a failure never overwrites an end already given."""
    from fairweather.stages.infra.tracking import END_TAG, STOPPED_TAG
    from fairweather.stages.sweep.trial import STATUS_TAG, TrialTidy

    with stage_run(cfg, "sweep", "sweep", key="s") as parent:
        trial, tidied_first = _trial(parent, "1-6")
        trial.set_tags({STOPPED_TAG: "the sweep's scheduler"})
        closed_first = trial.child("round-2", key="round-2")
        below = closed_first.child("pseudo-2", key="pseudo-2")
        below.close("FAILED")  # a run nested deeper fails first
        closed_first.close("FAILED")  # the round's task first
        TrialTidy("val/psnr/overall", {})(trial, "stopped_early", step=6)
        tidied_first.close("FAILED")  # the driver first
        trial.close()
    client = parent.client
    for run in (tidied_first, closed_first, below):
        assert client.get_run(run.run_id).info.status == "FINISHED", run
    # Before: the round that closed itself first (FINISHED, through the trial's fairweather.stopped) was skipped by
    # the tidy and carried no status, so the sweep's 4-trial test saw a stopped trial's round as "completed".
    for run in (tidied_first, closed_first, below):
        assert client.get_run(run.run_id).data.tags[STATUS_TAG] == "stopped_early", run
    # And why they ended: before, the runs that closed themselves first had no fairweather.end (the tidy skips runs
    # that already ended), which the 2-trial sweep test hit once in CI (2026-12-05).
    for run in (tidied_first, closed_first, below):
        assert client.get_run(run.run_id).data.tags[END_TAG].startswith("stopped early"), run
    with stage_run(cfg, "other", "other", key="o") as other:  # no stop above: a failure stays a failure
        failed = other.child("round-1", key="round-1")
        failed.close("FAILED")
    assert client.get_run(failed.run_id).info.status == "FAILED"


def test_a_failed_trial_ends_its_running_rounds_failed(cfg):
    from fairweather.stages.sweep.trial import STATUS_TAG, TrialTidy

    with stage_run(cfg, "sweep", "sweep", key="s") as parent:
        trial, round_ = _trial(parent, "1-12")
        finished = trial.child("round-0", key="round-0")
        finished.close()
        TrialTidy("val/psnr/overall", {})(trial, "failed")
        trial.close("FAILED")
    client = parent.client
    run = client.get_run(round_.run_id)
    assert run.info.status == "FAILED" and run.data.tags[STATUS_TAG] == "failed"
    assert client.get_run(finished.run_id).info.status == "FINISHED"


def test_a_killed_process_s_runs_are_marked_killed_by_the_next_command_of_its_stage(cfg, tmp_path):
    """A killed driver: its run, and the children it had opened, are KILLED with a tag by the next command."""
    ids = _kill_a_run(tmp_path, "k2")
    logger = open_logger(cfg, stage="test")
    try:
        for run_id in ids:
            run = logger.client.get_run(run_id)
            assert run.info.status == "KILLED" and "its process was gone" in run.data.tags[END_TAG]
    finally:
        logger.close()


def test_the_printed_compare_url_opens_a_view_of_the_objective_against_every_sampled_key(cfg, capsys):
    """The sweep's URL opens the experiment page on a saved view: its trials best first and one parallel-
    coordinates chart of the objective against all sampled keys (checked in headless Chromium on MLflow 3.17).
    Before: MLflow's compare page, which plots the first 3 differing params (alphabetically: not
    loss.weights.wpl) against the first shared metric (loss/sup), with no URL parameter to choose them."""
    import json

    from fairweather.contracts.config import SweepConfig
    from fairweather.contracts.config.sweep import ParamSpace
    from fairweather.stages.infra.tracking import VIEW_TAG_PREFIX, sweep_view, ui_links
    from fairweather.stages.sweep.report import compared_keys, print_report

    weights = [f"loss.weights.{w}" for w in ("ps", "wpl", "sem", "feat")]
    space = ParamSpace("uniform", low=0.0, high=1.0)
    sweep = SweepConfig(metric="val/psnr/overall", mode="max", name="w", params=dict.fromkeys(weights, space))
    with stage_run(cfg, "sweep", "sweep-w", key="sweep-w") as parent:
        key = sweep_view(parent, "sweep-w", "sweep w", "val/psnr/overall", weights)
    tags = parent.client.get_experiment(parent.experiment_id).tags
    envelope = json.loads(tags[VIEW_TAG_PREFIX + key])
    state = json.loads(envelope["state"])
    assert envelope["name"] == "sweep w"
    assert state["searchFilter"] == f"tags.`mlflow.parentRunId` = '{parent.run_id}'"
    assert state["orderByKey"] == "metrics.`val/psnr/overall`" and state["orderByAsc"] is False
    (chart,) = state["compareRunCharts"]
    assert chart["type"] == "PARALLEL" and chart["selectedParams"] == weights
    assert chart["selectedMetrics"] == ["val/psnr/overall"]
    assert chart["metricSectionId"] == state["compareRunSections"][0]["uuid"]

    command, url = ui_links(cfg, parent, ["a"], view=key)
    program = command.split(" ui --backend-store-uri ")[0]  # runs as pasted, without an activated venv
    assert (
        program == "mlflow" or Path(program).resolve() == (Path(sys.executable).parent / "mlflow").resolve()
    )
    assert url.endswith(
        f"/?workflowType=machine_learning#/experiments/{parent.experiment_id}/runs"
        "?compareRunsMode=CHART&viewStateShareKey=sweep-w"
    )
    print_report([], sweep, {}, (command, url))
    out = capsys.readouterr().out
    assert f"compare the trials: {url}" in out
    assert compared_keys(sweep) == weights
    assert f"parallel-coordinates chart of val/psnr/overall against {', '.join(weights)}" in out
