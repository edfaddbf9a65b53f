"""What a person reads, and where everything else goes: the console and the per-run log file.

Every command of the CLI calls :func:`setup_run_log` once (and :func:`close_run_log` at its end). From then on:

* the **console** shows only what a person needs: the stages' own lines (:func:`say`: one line per stage start
  and finish with counts and seconds), progress bars with an ETA for long work (:func:`progress`,
  :func:`step_feed`; only on a terminal), warnings of ``fairweather.*`` loggers (they need action) and the final
  summary;
* **everything else** goes to ``<runs_dir>/logs/<command>-<timestamp>.log``: every log record at INFO and above,
  Python warnings, whatever any library prints to ``sys.stdout`` / ``sys.stderr`` (Ray's worker logs forwarded to
  the driver, Ray Data's progress, Ray Train's and Tune's reports, MLflow, alembic, transformers, tqdm bars of
  libraries) and what native code and child processes (Ray's daemons) write to file descriptors 1 and 2.

``verbose`` (``fairweather -v``) streams the log to the console as it is written (and logs at DEBUG).

How: the process's ``sys.stdout`` and ``sys.stderr`` become a stream into the log file, and when they were the
real descriptors 1 and 2 those descriptors are pointed at the log file too (``dup2``); the console keeps copies of
the original descriptors. Without :func:`setup_run_log` (a library call, a test) :func:`say` is ``print`` and the
progress bars are off.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TextIO

from tqdm import tqdm

#: The run log's line format.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Set in this process's environment for the run (and so for Ray's processes started during it), unless already
#: set: Ray Data draws no progress bars of its own (read when ``ray.data`` is imported; the stages show theirs).
_QUIET_ENV = {"RAY_DATA_DISABLE_PROGRESS_BARS": "1"}


def _now() -> str:
    return datetime.now().strftime("%H:%M:%S.%f")[:-3]


class _LogStream(io.TextIOBase):
    """``sys.stdout`` / ``sys.stderr`` during a run: writes into the log file, each line with the time it was
    written (Ray's forwarded worker lines carry none); after the run (a library kept a reference, e.g. a logging
    handler created meanwhile) into the stream it replaced."""

    def __init__(self, log: TextIO, fallback: TextIO, lock: threading.RLock):
        self._log, self._fallback, self._lock, self.active = log, fallback, lock, True
        self._partial = ""

    def write(self, text: str) -> int:
        if not (self.active and not self._log.closed):
            return self._fallback.write(text)
        with self._lock:
            *lines, self._partial = (self._partial + text).split("\n")
            if lines:
                stamp = _now()
                self._log.write("".join(f"{stamp} {line}\n" for line in lines))
        return len(text)

    def flush(self) -> None:
        if self.active and not self._log.closed:
            self._log.flush()
        else:
            self._fallback.flush()

    def close_line(self) -> None:
        """Write a last line left without its newline."""
        if self._partial and not self._log.closed:
            with self._lock:
                self._log.write(f"{_now()} {self._partial}\n")
                self._partial = ""

    def isatty(self) -> bool:
        return False  # libraries' own progress bars switch themselves off

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    def fileno(self) -> int:
        return (self._log if self.active and not self._log.closed else self._fallback).fileno()


@dataclass
class _Console:
    path: Path
    verbose: bool
    log: TextIO
    out: TextIO
    err: TextIO
    tty: bool
    #: (fd, saved copy of it) for each descriptor pointed at the log.
    saved_fds: list[tuple[int, int]]
    saved_streams: tuple[TextIO, TextIO]
    handlers: list[logging.Handler]
    saved_level: int
    saved_env: dict[str, str | None]
    bars: list[tqdm] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)
    tail: threading.Thread | None = None
    stop: threading.Event = field(default_factory=threading.Event)

    def write(self, stream: TextIO, text: str) -> None:
        """``text`` (one or more lines) on ``stream`` of the console, the progress bars redrawn below it."""
        with self.lock:
            for bar in self.bars:
                bar.clear()
            stream.write(text if text.endswith("\n") else text + "\n")
            stream.flush()
            for bar in self.bars:
                bar.refresh()


_active: _Console | None = None


class _ConsoleHandler(logging.Handler):
    """Warnings (and errors) of fairweather's own loggers on the console: those need action."""

    def emit(self, record: logging.LogRecord) -> None:
        console = _active
        if console is None:
            return
        try:
            console.write(console.err, self.format(record))
        except Exception:
            self.handleError(record)


def _own_warning(record: logging.LogRecord) -> bool:
    return record.name == "fairweather" or record.name.startswith("fairweather.")


def _console_copy(stream: TextIO, fd: int) -> tuple[TextIO, bool]:
    """The console's stream for ``stream``: a copy of descriptor ``fd`` when ``stream`` writes to it (the
    descriptor is about to be pointed at the log), else ``stream`` itself (e.g. pytest's capture); and whether it
    is a copy."""
    try:
        real = stream.fileno() == fd
    except (AttributeError, OSError, ValueError):
        real = False
    if not real:
        return stream, False
    stream.flush()
    copy = os.fdopen(os.dup(fd), "w", buffering=1, encoding="utf-8", errors="replace", closefd=True)
    return copy, True


def _log_path(runs_dir: str | os.PathLike, command: str) -> tuple[Path, TextIO]:
    folder = Path(runs_dir).expanduser().resolve() / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    stem = f"{command.replace(' ', '-')}-{datetime.now():%Y%m%d-%H%M%S}"
    for n in range(1, 1000):
        path = folder / (f"{stem}.log" if n == 1 else f"{stem}-{n}.log")
        try:
            return path, open(path, "x", buffering=1, encoding="utf-8", errors="replace")
        except FileExistsError:
            continue
    raise FileExistsError(f"{folder}/{stem}*.log: too many logs of this second")


def setup_run_log(runs_dir: str | os.PathLike, command: str, verbose: bool = False) -> Path:
    """Start the run log ``<runs_dir>/logs/<command>-<timestamp>.log`` and route this process's output (module
    docstring); returns its path. Undone by :func:`close_run_log`; a second call closes the first run log."""
    global _active
    if _active is not None:
        close_run_log()
    path, log = _log_path(runs_dir, command)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    out, out_copied = _console_copy(sys.stdout, 1)
    err, err_copied = _console_copy(sys.stderr, 2)
    saved_fds = []
    for fd, copied in ((1, out_copied), (2, err_copied)):
        if copied:
            saved_fds.append((fd, os.dup(fd)))
            os.dup2(log.fileno(), fd)
    saved_streams = (sys.stdout, sys.stderr)
    lock = threading.RLock()
    sys.stdout = _LogStream(log, saved_streams[0], lock)  # type: ignore[assignment]
    sys.stderr = _LogStream(log, saved_streams[1], lock)  # type: ignore[assignment]
    root = logging.getLogger()
    file_handler = logging.StreamHandler(log)
    file_handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handlers: list[logging.Handler] = [file_handler]
    if not verbose:  # verbose: the whole log streams to the console already
        console_handler = _ConsoleHandler(logging.WARNING)
        console_handler.addFilter(_own_warning)
        console_handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        handlers.append(console_handler)
    for handler in handlers:
        root.addHandler(handler)
    saved_level = root.level
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    logging.captureWarnings(True)
    saved_env = {key: os.environ.get(key) for key in _QUIET_ENV}
    for key, value in _QUIET_ENV.items():
        os.environ.setdefault(key, value)
    tty = not verbose and _isatty(out)
    _active = _Console(
        path,
        verbose,
        log,
        out,
        err,
        tty,
        saved_fds,
        saved_streams,
        handlers,
        saved_level,
        saved_env,
        lock=lock,
    )
    if verbose:
        _active.tail = threading.Thread(
            target=_tail, args=(_active,), name="fairweather-log-tail", daemon=True
        )
        _active.tail.start()
    log.write(f"fairweather {command}: run log of pid {os.getpid()}, cwd {Path.cwd()}\n")
    return path


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _tail(console: _Console) -> None:
    """``-v``: copy the log to the console as it grows, until the run log closes."""
    with open(console.path, encoding="utf-8", errors="replace") as source:
        while True:
            stopping = console.stop.is_set()
            chunk = source.read()
            if chunk:
                with console.lock:
                    console.out.write(chunk)
                    console.out.flush()
            elif stopping:
                return
            else:
                time.sleep(0.2)


def close_run_log() -> Path | None:
    """Put the process's output back as :func:`setup_run_log` found it; returns the closed log's path."""
    global _active
    console = _active
    if console is None:
        return None
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    for bar in list(console.bars):
        bar.close()
    root = logging.getLogger()
    for handler in console.handlers:
        root.removeHandler(handler)
    root.setLevel(console.saved_level)
    logging.captureWarnings(False)
    for key, value in console.saved_env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    if console.tail is not None:
        console.log.flush()
        console.stop.set()
        console.tail.join(timeout=10)
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, _LogStream):
            stream.close_line()
            stream.active = False
    sys.stdout, sys.stderr = console.saved_streams
    for fd, saved in console.saved_fds:
        os.dup2(saved, fd)
        os.close(saved)
    _active = None
    for stream in (console.out, console.err):
        if stream not in console.saved_streams:  # our copies of descriptors 1 and 2
            with contextlib.suppress(Exception):
                stream.close()
    console.log.close()
    return console.path


def run_log_path() -> Path | None:
    """The current run log, or None outside a command."""
    return _active.path if _active is not None else None


def say(*parts: object, sep: str = " ", err: bool = False) -> None:
    """A line for the person at the console (and in the run log); plain ``print`` outside a command."""
    text = sep.join(str(part) for part in parts).rstrip("\n")
    console = _active
    if console is None:
        print(text, file=sys.stderr if err else sys.stdout)
        return
    stamp = _now()
    with console.lock:  # in the log with the time, so the log tells where the time went
        console.log.write("".join(f"{stamp} | {line}\n" for line in text.split("\n")))
        console.log.flush()
    if not console.verbose:  # verbose: the tail copies the log's line
        console.write(console.err if err else console.out, text)


def console_stream(err: bool = False) -> TextIO:
    """The console's stdout (stderr) during a command, else ``sys.stdout`` (``sys.stderr``)."""
    if _active is None:
        return sys.stderr if err else sys.stdout
    return _active.err if err else _active.out


@contextlib.contextmanager
def progress(total: int | None, desc: str, unit: str = "it", initial: int = 0) -> Iterator[tqdm]:
    """A progress bar with ETA on the console: shown on a terminal during a command (not with ``-v``), else a
    silent counter with the same API (``update``, ``n``). It disappears when done: the stage's finish line says
    what was done."""
    console = _active
    enabled = console is not None and console.tty
    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        initial=initial,
        file=console.out if enabled else io.StringIO(),
        disable=not enabled,
        leave=False,
        dynamic_ncols=True,
        mininterval=0.5,
    )
    if enabled:
        with console.lock:
            console.bars.append(bar)
    try:
        yield bar
    finally:
        if enabled:
            with console.lock:
                console.bars.remove(bar)
        bar.close()


@contextlib.contextmanager
def step_feed(total: int, desc: str, unit: str = "step", initial: int = 0) -> Iterator[str | None]:
    """A progress bar moved by another process on this node (Ray Train's controller): yields a file path it
    writes its latest count to (:func:`feed`), or None when no bar is shown (then nothing needs feeding)."""
    with progress(total, desc, unit, initial) as bar:
        if bar.disable:
            yield None
            return
        folder = tempfile.mkdtemp(prefix="fairweather-progress-")
        path = os.path.join(folder, "count")
        stop = threading.Event()

        def follow() -> None:
            while not stop.wait(0.5):
                with contextlib.suppress(OSError, ValueError):
                    count = int(Path(path).read_text() or 0)
                    with _active.lock if _active is not None else contextlib.nullcontext():
                        if count > bar.n:
                            bar.update(count - bar.n)

        thread = threading.Thread(target=follow, name="fairweather-progress", daemon=True)
        thread.start()
        try:
            yield path
        finally:
            stop.set()
            thread.join(timeout=2)
            with contextlib.suppress(OSError):
                os.remove(path)
            with contextlib.suppress(OSError):
                os.rmdir(folder)


def feed(path: str | None, count: int) -> None:
    """Tell the bar of :func:`step_feed` at ``path`` that ``count`` units are done (no-op for None)."""
    if not path:
        return
    try:
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as file:
            file.write(str(int(count)))
        os.replace(tmp, path)
    except OSError:
        pass  # the bar is cosmetic: never fail a training run over it
