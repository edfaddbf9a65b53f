"""`fairweather sweep` on a private local Ray (2 CPUs): tiny trials, MLflow on SQLite, ASHA, resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fairweather.contracts.config import load_sweep
from fairweather.stages.synth.driver import run_synth

from .conftest import REPO
from .train_fixtures import tiny_config, tiny_overrides

#: The tiny trials: 12 steps, validated (and reported to Tune) every 3 steps, 1 worker of 1 CPU.
TINY = {
    "train.iterations_per_round": 12,
    "train.checkpoint_every": 3,
    "train.log_every": 3,
    "train.val_images": 4,
}


def write_sweep(path: Path, **extra: str) -> Path:
    """A 4-trial sweep over the learning rate (one good value, three hopeless ones: ASHA's cut is certain) and
    w1-w4 (zero on the pairs-only data: they only travel into the params)."""
    text = {
        "base": "smoke",
        "metric": "val/psnr/overall",
        "mode": "max",
        "num_samples": 1,
        "params": "\n  train.lr: {distribution: grid, values: [0.003, 0.0000001, 0.0000002, 0.0000003]}"
        + "".join(
            f"\n  loss.weights.{k}: {{distribution: choice, values: [0.0]}}"
            for k in ("ps", "wpl", "sem", "feat")
        ),
        "scheduler": "{kind: none}",
        "max_concurrent_trials": 2,
        **extra,
    }
    path.write_text("".join(f"{k}: {v}\n" for k, v in text.items()))
    return path


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, model_cache):
    root = tmp_path_factory.mktemp("sweep")
    run_synth(tiny_config(root, model_cache))
    return root


def overrides(root: Path, model_cache: Path) -> list[str]:
    return tiny_overrides(root, model_cache, **TINY)


def children(root: Path) -> tuple[dict, list]:
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'runs' / 'mlflow.db'}")
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], "tags.`fairweather.stage` = 'sweep'"
    )
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    # The trials' runs (their rounds are runs nested one level further).
    ids = {p.info.run_id for p in parents}
    kids = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in ids]
    return {"client": client, "parents": parents}, kids


def checkpoints(root: Path, trial_id: str) -> list[str]:
    """The checkpoint folders of a trial's training run (``<storage>/<sweep key>-<trial id>``)."""
    (run,) = (root / "train").glob(f"*-{trial_id}")
    return sorted(p.name for p in run.glob("checkpoint_*"))


def linked_root(tmp_path: Path, data_root: Path) -> Path:
    """A project root of its own (runs, MLflow store, training storage) on the module's generated data."""
    root = tmp_path / "root"
    root.mkdir()
    for name in ("tables", "data"):
        (root / name).symlink_to(data_root / name)
    return root


def check_sweep(root: Path, summary, trials: int, out: str) -> None:
    """What every sweep with ASHA leaves: one parent run, one child per trial (the good lr wins, at least one trial
    stopped early), summary artifacts, every run FINISHED with the sampled values and the objective on the trials'
    rounds, and the MLflow compare URL on the console."""
    assert summary.trials == trials and summary.failed == 0
    assert summary.stopped_early >= 1 and summary.completed + summary.stopped_early == trials
    assert summary.best is not None and summary.best["params"]["train.lr"] == 0.003
    info, kids = children(root)
    (parent,) = info["parents"]
    assert len(kids) == trials and {k.data.tags["mlflow.parentRunId"] for k in kids} == {parent.info.run_id}
    assert all(k.info.status == "FINISHED" for k in kids) and parent.info.status == "FINISHED"
    statuses = sorted(k.data.tags["fairweather.trial_status"] for k in kids)
    assert statuses.count("stopped_early") == summary.stopped_early
    for kid in kids:
        assert {"loss.weights.ps", "loss.weights.wpl", "loss.weights.sem", "loss.weights.feat"} <= set(
            kid.data.params
        )
        history = info["client"].get_metric_history(kid.info.run_id, "val/psnr/overall")
        steps = [m.step for m in history]
        assert steps and steps == sorted(set(steps))  # one value per validation, none twice
    best_kid = next(k for k in kids if k.data.tags["fairweather.trial_id"] == summary.best["trial_id"])
    assert [m.step for m in info["client"].get_metric_history(best_kid.info.run_id, "val/psnr/overall")] == [
        3,
        6,
        9,
        12,
    ]
    assert "test/psnr/overall" in best_kid.data.metrics  # the completed trial's final test score
    artifacts = {a.path for a in info["client"].list_artifacts(parent.info.run_id, "summary")}
    assert {
        f"summary/{n}" for n in ("table.md", "table.csv", "metric_vs_params.png", "best_config.yaml")
    } <= artifacts
    assert parent.data.tags["best.trial_id"] == summary.best["trial_id"]
    # No run left RUNNING or FAILED: the rounds of the trials ASHA stopped end FINISHED too, tagged, and every
    # round carries its trial's sampled values and objective (before: RUNNING or FAILED, no params, no objective).
    runs = info["client"].search_runs([parent.info.experiment_id])
    assert {r.info.status for r in runs} == {"FINISHED"}, [(r.info.run_name, r.info.status) for r in runs]
    by_id = {k.info.run_id: k for k in kids}
    rounds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in by_id]
    assert len(rounds) == trials
    for run in rounds:
        trial = by_id[run.data.tags["mlflow.parentRunId"]]
        status = trial.data.tags["fairweather.trial_status"]
        assert run.data.tags.get("fairweather.trial_status", "completed") == status
        assert (status == "stopped_early") == run.data.tags.get("fairweather.end", "").startswith(
            "stopped early"
        )
        assert {f"loss.weights.{w}" for w in ("ps", "wpl", "sem", "feat")} | {"train.lr"} <= set(
            run.data.params
        )
        assert "val/psnr/overall" in run.data.metrics
    assert "mlflow ui --backend-store-uri sqlite:///" in out
    # The compare URL (since 692f0cf: the experiment's chart view saved for the sweep, test_mlflow_tidy.py).
    assert summary.compare_url and summary.compare_url in out
    assert "workflowType=machine_learning#/experiments/" in summary.compare_url


def test_two_trials_one_after_the_other_asha_stops_the_hopeless_one(
    local_ray, data_root, model_cache, tmp_path, capsys
):
    """The default suite's sweep: the good lr first, then a hopeless one, one trial at a time, so ASHA compares
    the second at step 3 with the first and stops it (certain, not a race): one completed trial, one stopped
    early, and everything the 4-trial sweep below checks."""
    from fairweather.stages.sweep.driver import run_sweep

    root = linked_root(tmp_path, data_root)
    sweep = load_sweep(
        write_sweep(
            tmp_path / "two.yaml",
            params="\n  train.lr: {distribution: grid, values: [0.003, 0.0000001]}"
            + "".join(
                f"\n  loss.weights.{k}: {{distribution: choice, values: [0.0]}}"
                for k in ("ps", "wpl", "sem", "feat")
            ),
            scheduler="{kind: asha, grace_period: 3, reduction_factor: 2}",
            max_concurrent_trials=1,
        )
    )
    summary = run_sweep(sweep, overrides(root, model_cache))
    check_sweep(root, summary, 2, capsys.readouterr().out)
    assert (summary.completed, summary.stopped_early) == (1, 1)


@pytest.mark.slow  # the default suite's 2-trial sweep above checks the same, one trial at a time
def test_four_trials_with_asha_log_one_parent_and_four_children(
    local_ray, data_root, model_cache, tmp_path, capsys
):
    from fairweather.stages.sweep.driver import run_sweep

    root = linked_root(tmp_path, data_root)
    sweep = load_sweep(
        write_sweep(tmp_path / "tiny.yaml", scheduler="{kind: asha, grace_period: 3, reduction_factor: 2}")
    )
    summary = run_sweep(sweep, overrides(root, model_cache))
    check_sweep(root, summary, 4, capsys.readouterr().out)


@pytest.mark.slow
def test_a_killed_driver_resumes_without_rerunning_or_duplicating(data_root, model_cache, tmp_path):
    """SIGKILL of the sweep command once a trial has finished; the same command finishes the sweep."""
    root = linked_root(tmp_path, data_root)
    sweep_file = write_sweep(tmp_path / "resume.yaml", max_concurrent_trials=1)
    command = [sys.executable, "-m", "fairweather.cli", "sweep", "--sweep", str(sweep_file)]
    command += [o for o in overrides(root, model_cache)]
    proc = subprocess.Popen(command, cwd=REPO, start_new_session=True, stdout=subprocess.DEVNULL)
    try:
        deadline, done = time.monotonic() + 240, []
        while time.monotonic() < deadline:
            time.sleep(1)
            # The driver creates the store before any trial starts; reading it earlier would race its creation.
            if list((root / "train").glob("sweep-*/*/result.json")):
                done = [k for k in children(root)[1] if k.info.status == "FINISHED"]
                if done:
                    break
        assert done, "no trial finished in time"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    # A finished trial's training run: its checkpoints (a rerun of its training would add some).
    finished = {k.data.tags["fairweather.trial_id"] for k in done}
    before = {t: checkpoints(root, t) for t in finished}
    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    info, kids = children(root)
    assert len(info["parents"]) == 1 and len(kids) == 4
    assert all(k.info.status == "FINISHED" for k in kids + info["parents"])
    for kid in kids:
        trial = kid.data.tags["fairweather.trial_id"]
        if trial in finished:  # not trained again (Tune may call it again if its state was not yet saved)
            assert checkpoints(root, trial) == before[trial]
        steps = [m.step for m in info["client"].get_metric_history(kid.info.run_id, "val/psnr/overall")]
        assert steps == [3, 6, 9, 12], (trial, steps)


def test_a_relative_config_reaches_the_trials_and_a_sweep_without_a_completed_trial_exits_1(
    local_ray, tmp_path, model_cache, monkeypatch, capsys
):
    """No pairs in the tables: both trials fail at their start, for one reason, and the command exits 1 with one
    line per reason. Before, a relative --config failed every trial instead (trials load it in Ray's working
    directory) and the command exited 0."""
    from fairweather.cli import main

    (tmp_path / "base.yaml").write_text((REPO / "platform/fairweather/profiles/smoke.yaml").read_text())
    (tmp_path / "s.yaml").write_text(
        "metric: val/psnr/overall\nmode: max\nparams:\n  train.lr: {distribution: grid, values: [0.001, 0.002]}\n"
    )
    monkeypatch.chdir(tmp_path)
    argv = [
        "sweep",
        "--sweep",
        "s.yaml",
        "--config",
        "base.yaml",
        *overrides(tmp_path / "empty", model_cache),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err
    start = err.index("fairweather sweep: failed: no trial of sweep s completed (2 of 2 failed;")
    reasons = err[start:].splitlines()[1:]
    assert len(reasons) == 1 and reasons[0].startswith("2 trials: FairweatherError: no labeled pairs"), (
        reasons
    )
    assert "no such config file" not in err
