"""One live command per training run, Tune experiment and pipeline run (``stages/infra/locks.py``): a second command
is refused at start-up naming the first; stale locks are taken over; independent commands run side by side."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from fairweather.cli import main
from fairweather.contracts.config import load_config
from fairweather.stages.infra.locks import LockedError, hold_lock, lock_path, read_holder

from .conftest import REPO
from .train_fixtures import tiny_overrides

#: Runs a ``fairweather`` command whose Ray session, entered right after the run's lock, only says so and waits:
#: the process holds exactly the lock the real command holds, without training anything.
HOLDER = textwrap.dedent(
    """
    import contextlib, os, sys, time

    import fairweather.stages.pipeline.driver as pipeline
    import fairweather.stages.sweep.driver as sweep
    import fairweather.stages.train.rounds as rounds
    from fairweather.cli import main
    from fairweather.stages.infra.console import say


    @contextlib.contextmanager
    def hold(cfg):
        say("HELD", os.getpid())  # to the console: the command's own stdout goes to its run log
        time.sleep(600)
        yield


    for module in (rounds, sweep, pipeline):
        module.ray_session = hold
    sys.exit(main(sys.argv[1:]))
    """
)


def _holder(tmp_path: Path, argv: list[str]) -> subprocess.Popen:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    proc = subprocess.Popen(
        [sys.executable, str(script), *argv],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()  # blocks until the lock is held (or the process ends)
    while line.startswith("fairweather ") and "run log" in line:  # the command names its run log first
        line = proc.stdout.readline()
    if not line.startswith("HELD"):
        proc.kill()
        raise AssertionError(f"the holder did not take the lock: {line!r} {proc.stderr.read()[-3000:]}")
    return proc


def _stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    proc.send_signal(sig)
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()


def _refused(argv: list[str], capsys, command: str, pid: int, what: str) -> str:
    """Run the same command in this process, as the CLI runs it (a fresh interpreter would only add seconds of
    imports: the refusal comes before any of the command's work); check its one-line refusal; return its stderr."""
    capsys.readouterr()
    code, err = main(argv), capsys.readouterr().err
    assert code == 2, err[-3000:]
    (line,) = [ln for ln in err.splitlines() if ln.startswith(f"fairweather {command}: ")]
    assert line.startswith(f"fairweather {command}: error: {what}") and f"in use by PID {pid} on " in line
    assert "Traceback" not in err
    return err


def test_a_second_train_on_the_same_run_is_refused_and_a_killed_holders_lock_is_taken_over(
    tmp_path, model_cache, capsys
):
    argv = ["train", *tiny_overrides(tmp_path, model_cache, **{"train.run_name": "shared"})]
    first = _holder(tmp_path, argv)
    try:
        err = _refused(argv, capsys, "train", first.pid, "training run shared")
        assert "(`holder.py train " in err  # the holder's command line
        # Another training run on the same runs folder is independent.
        other = _holder(tmp_path, [*argv, "train.run_name=other"])
        _stop(other)
    finally:
        _stop(first)  # SIGKILL: no clean-up, the lock file stays behind
    (left,) = (tmp_path / "runs" / "locks").glob("train-shared-*.lock")
    assert read_holder(left).pid == first.pid
    third = _holder(tmp_path, argv)  # the file is there but nobody holds it: taken
    try:
        assert read_holder(left).pid == third.pid
    finally:
        _stop(third, signal.SIGTERM)


@pytest.mark.parametrize("command", ["sweep", "pipeline"])
def test_a_second_sweep_or_pipeline_on_the_same_run_is_refused(tmp_path, model_cache, command, capsys):
    overrides = tiny_overrides(tmp_path, model_cache)
    if command == "sweep":
        sweep = tmp_path / "s.yaml"
        sweep.write_text(
            "metric: val/psnr/overall\nmode: max\nparams:\n  train.lr: {distribution: grid, values: [0.001]}\n"
        )
        argv, what = ["sweep", "--sweep", str(sweep), *overrides], "sweep experiment "
    else:
        argv, what = ["pipeline", *overrides], "pipeline run pipeline-"
    first = _holder(tmp_path, argv)
    try:
        _refused(argv, capsys, command, first.pid, what)
    finally:
        _stop(first)


def test_a_lock_still_held_by_the_orphan_of_a_dead_process_is_taken_over(tmp_path):
    """The recorded holder died, but a child it forked keeps the descriptor (and the flock): stale on this host."""
    path = tmp_path / "x.lock"
    code = textwrap.dedent(
        f"""
        import os, sys, time
        from pathlib import Path
        from fairweather.stages.infra.locks import hold_lock
        with hold_lock(Path({str(path)!r}), "run x"):
            if os.fork() == 0:
                time.sleep(120)
                os._exit(0)
            print("FORKED", flush=True)
            os._exit(0)  # the holder dies without clean-up; its child keeps the lock
        """
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert parent.stdout.readline().startswith("FORKED")
        parent.wait(timeout=60)
        dead = read_holder(path).pid
        assert dead == parent.pid
        with hold_lock(path, "run x"):
            assert read_holder(path).pid == os.getpid()
            with hold_lock(
                path, "run x"
            ):  # re-entrant in one process (the rounds, then each round's training)
                pass
            assert read_holder(path).pid == os.getpid()
        assert not path.exists()  # released: the file goes with the lock
    finally:
        os.killpg(parent.pid, signal.SIGKILL)
        parent.stdout.close()


def test_a_live_holder_is_named_and_the_command_line_is_masked(tmp_path, monkeypatch):
    path = lock_path(load_config("smoke", [f"runtime.runs_dir={tmp_path}"]).runtime, "train", "r", "/s")
    monkeypatch.setattr(
        sys, "argv", ["fairweather", "train", "runtime.mlflow_tracking_uri=http://u:pw@h", "x.token=t"]
    )
    code = textwrap.dedent(
        f"""
        import fcntl, os, sys, time
        fd = os.open({str(path)!r}, os.O_RDWR | os.O_CREAT)
        fcntl.flock(fd, fcntl.LOCK_EX)
        print("HELD", flush=True)
        time.sleep(120)
        """
    )
    other = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().startswith("HELD")
        # Held by a live process that has not written its name yet: refused all the same.
        refused = pytest.raises(
            LockedError, match=r"^sweep experiment s3://\*\*\*@b/x is in use by another process"
        )
        with refused, hold_lock(path, "sweep experiment s3://k:secret@b/x"):
            pass
    finally:
        other.kill()
        other.wait()
        other.stdout.close()
    with hold_lock(path, "training run r"):  # the holder is gone: taken
        holder = json.loads(path.read_text())
    assert holder["command"] == "fairweather train runtime.mlflow_tracking_uri=http://***@h x.token=***"
    assert holder["pid"] == os.getpid() and holder["host"] and holder["started"]
