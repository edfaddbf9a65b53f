"""The console and the run log (fairweather.stages.infra.console): a person sees the stages' lines, our warnings
and the summary; everything else (library prints and logs, Python warnings, native code and child processes
writing to descriptors 1 and 2) lands in <runs_dir>/logs/<command>-<timestamp>.log; -v streams it."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from fairweather.cli import main
from fairweather.stages.infra import console

SCRIPT = textwrap.dedent(
    """
    import logging, os, subprocess, sys, warnings
    from fairweather.stages.infra import console

    path = console.setup_run_log(sys.argv[1], "demo", verbose=sys.argv[2] == "1")
    console.say("stage: 3 images in 1 s")
    print("library chatter on stdout")
    print("library chatter on stderr", file=sys.stderr)
    os.write(2, b"native chatter on fd 2\\n")
    subprocess.run([sys.executable, "-c", "print('a child process')"], check=True)
    ray_logger = logging.getLogger("ray")  # a library logger with its own handler, not propagating
    ray_logger.addHandler(logging.StreamHandler())  # bound to sys.stderr now: the log
    ray_logger.propagate = False
    ray_logger.warning("ray says something")
    logging.getLogger("mlflow.store").info("Creating initial MLflow database tables")
    warnings.warn("a library's DeprecationWarning", DeprecationWarning)
    logging.getLogger("fairweather.stages.x").warning("no labeled real images: run label")
    with console.progress(10, "work") as bar:
        bar.update(10)
    console.say("summary: done")
    console.close_run_log()
    print(f"after the run, log {path}")
    """
)


def _run(tmp_path: Path, verbose: bool) -> tuple[subprocess.CompletedProcess, str]:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "runs"), "1" if verbose else "0"],
        capture_output=True,
        text=True,
        check=True,
    )
    (log,) = (tmp_path / "runs" / "logs").glob("demo-*.log")
    return result, log.read_text()


def test_the_console_shows_our_lines_and_the_log_holds_everything_else(tmp_path):
    result, log = _run(tmp_path, verbose=False)
    assert result.stdout.splitlines() == [
        "stage: 3 images in 1 s",
        "summary: done",
        f"after the run, log {next((tmp_path / 'runs' / 'logs').glob('demo-*.log'))}",
    ]
    assert result.stderr == "WARNING: no labeled real images: run label\n"
    for line in (
        "stage: 3 images in 1 s",
        "library chatter on stdout",
        "library chatter on stderr",
        "native chatter on fd 2",
        "a child process",
        "ray says something",
        "Creating initial MLflow database tables",
        "a library's DeprecationWarning",
        "no labeled real images: run label",
        "summary: done",
    ):
        assert line in log, line
    assert "after the run" not in log


def test_verbose_streams_the_log_to_the_console(tmp_path):
    result, log = _run(tmp_path, verbose=True)
    for line in (
        "library chatter on stdout",
        "native chatter on fd 2",
        "ray says something",
        "summary: done",
    ):
        assert line in result.stdout and line in log
    assert result.stdout.count("summary: done") == 1  # once, from the log


def test_every_command_names_its_run_log_at_the_start_and_the_end(tmp_path, monkeypatch, capsys):
    from fairweather import cli

    def noisy(args, cfg):
        print("a library printed this")
        console.say("synth: 3 pairs")
        return None

    monkeypatch.setitem(cli.COMMANDS, "synth", dataclasses.replace(cli.COMMANDS["synth"], run=noisy))
    assert main(["synth", f"runtime.runs_dir={tmp_path / 'runs'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    (log,) = (tmp_path / "runs" / "logs").glob("synth-*.log")
    assert out[0].startswith("fairweather synth: run log ") and out[0].split()[4] == str(log)
    assert out[1] == "synth: 3 pairs"
    assert out[2].startswith("fairweather synth: done in ") and out[2].endswith(f"run log {log}")
    assert len(out) == 3 and "a library printed this" in log.read_text()
    assert console.run_log_path() is None  # main() put the process's output back


def test_a_bar_fed_from_another_process_moves_on_a_terminal_and_is_gone_after(tmp_path, capsys):
    console.setup_run_log(tmp_path / "runs", "train")
    try:
        console._active.tty = True  # capsys is no terminal: pretend, to see the bar
        with console.step_feed(100, "train round 1/2", initial=20) as path:
            assert path is not None
            console.feed(path, 60)  # what FeedProgress does in Ray Train's controller
            time.sleep(1.2)
            console.say("a stage line between two redraws")
    finally:
        console.close_run_log()
    out = capsys.readouterr().out
    assert "60/100" in out and "a stage line between two redraws\n" in out
    # leave=False: at its end the bar's line is overwritten with blanks, nothing of it stays on the terminal
    assert out.endswith("\r") and out.split("\r")[-2].strip() == ""
    with console.step_feed(100, "off") as path:  # no command: no bar, nothing to feed
        assert path is None
