"""One live command per training run, Tune experiment and pipeline run: a lock file held for the command's life.

Two ``fairweather train`` with the same config would share one Ray Train folder and one MLflow run (metrics logged
twice, one process dying on a checkpoint the other pruned); two sweeps of one experiment, or two pipelines of one
config, likewise. :func:`run_lock` refuses the second at start-up with one line that names the first (PID, host,
command, start time): a :class:`LockedError`, exit code 2.

The lock is ``<runs_dir>/locks/<kind>-<name>-<8 hex of where>.lock`` (``where``: the storage folder of the run),
held with ``fcntl.flock`` on an open descriptor, so the kernel releases it when the holder dies however it dies
(SIGKILL included); the file's content (JSON: ``pid``, ``host``, ``command``, ``started``) only names the holder.
A lock whose file is left behind but not held is simply taken. A lock still held although its recorded holder is
gone (a dead PID on this host: a child the holder forked kept the descriptor) is stale too: the file is replaced
and the new one taken. Independent commands on one runs folder take different locks and run side by side.

Scope: ``flock`` coordinates processes on one machine (and on file systems that honour it across machines); a
second command on another machine with its own runs folder is not seen.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from fairweather.contracts.config.runtime import RuntimeConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.redact import MASK, is_secret_key, redact_text
from fairweather.stages.infra.runtime import runs_path


class LockedError(FairweatherError):
    """Another live process holds the lock of the run this command would share (a user error: exit code 2)."""


@dataclass(frozen=True)
class Holder:
    """Who holds a lock (the lock file's content)."""

    pid: int
    host: str
    command: str
    started: str

    def describe(self) -> str:
        return f"PID {self.pid} on {self.host} (`{self.command}`, started {self.started})"


#: Locks this process holds: path -> (descriptor, depth), so a stage may take a lock its caller already holds.
_HELD: dict[str, tuple[int, int]] = {}
_ATTEMPTS = 5


def _command() -> str:
    """This process's command line with credentials masked (the lock file is read by other users' commands)."""
    words = []
    for word in [os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python", *sys.argv[1:]]:
        key, sep, value = word.partition("=")
        words.append(f"{key}={MASK}" if sep and is_secret_key(key) and value else redact_text(word))
    return " ".join(words)


def lock_path(runtime: RuntimeConfig, kind: str, name: str, where: str = "") -> Path:
    """The lock file of ``kind`` run ``name`` (under ``where``, e.g. its storage folder) in the runs folder."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80]
    digest = hashlib.sha256(f"{kind}\0{name}\0{where}".encode()).hexdigest()[:8]
    return runs_path(runtime, "locks") / f"{kind}-{slug}-{digest}.lock"


def read_holder(path: Path) -> Holder | None:
    """The holder a lock file names; None when it names none (being written, or not ours)."""
    try:
        data = json.loads(path.read_text())
        return Holder(int(data["pid"]), str(data["host"]), str(data["command"]), str(data["started"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _same_file(fd: int, path: Path) -> bool:
    """True while ``path`` still names the file open on ``fd`` (a stale lock's taker may have replaced it)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path))
    except FileNotFoundError:
        return False


def _acquire(path: Path, what: str) -> int:
    """Open and lock ``path``; write this process's :class:`Holder` into it. Returns the locked descriptor."""
    for _ in range(_ATTEMPTS):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            holder = read_holder(path)
            if holder is not None and holder.host == socket.gethostname() and not _alive(holder.pid):
                # Held, but its process is gone (an orphaned child keeps the descriptor): replace the file.
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            who = holder.describe() if holder else "another process (starting now)"
            raise LockedError(
                f"{redact_text(what)} is in use by {who}; wait for it to finish or stop it, then rerun (lock: {path})"
            ) from None
        if not _same_file(fd, path):  # locked a file a stale lock's taker had just replaced: try again
            os.close(fd)
            continue
        holder = Holder(os.getpid(), socket.gethostname(), _command(), time.strftime("%Y-%m-%d %H:%M:%S %z"))
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder.__dict__).encode())
        os.fsync(fd)
        return fd
    raise LockedError(
        f"{redact_text(what)}: could not take the lock {path} (other processes keep replacing it)"
    )


@contextlib.contextmanager
def hold_lock(path: Path, what: str) -> Iterator[Path]:
    """Hold the lock file ``path`` for the block, or raise :class:`LockedError` naming its live holder. ``what``
    names the run in the refusal (``training run train-0123abcd under /runs/train``). Re-entrant in a process."""
    key = str(path)
    if key in _HELD:
        fd, depth = _HELD[key]
        _HELD[key] = (fd, depth + 1)
        try:
            yield path
        finally:
            fd, depth = _HELD[key]
            _HELD[key] = (fd, depth - 1)
        return
    fd = _acquire(path, what)
    _HELD[key] = (fd, 1)
    try:
        yield path
    finally:
        del _HELD[key]
        # Remove the file while still holding it: a waiting opener of this inode finds it gone and retries.
        with contextlib.suppress(FileNotFoundError):
            if _same_file(fd, path):
                path.unlink()
        os.close(fd)


def run_lock(runtime: RuntimeConfig, kind: str, name: str, where: str = "", *, what: str | None = None):
    """:func:`hold_lock` on :func:`lock_path`: ``with run_lock(cfg.runtime, "train", name, storage): ...``."""
    described = what or f"{kind} run {name}" + (f" under {where}" if where else "")
    return hold_lock(lock_path(runtime, kind, name, where), described)
