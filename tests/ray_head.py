"""A real ``ray start --head`` beside the tests: free ports, its own temp dir, stopped by its own PIDs.

Two heads on one machine collide on Ray's fixed default ports (6379, 10001 for the client server, 52365 for the
dashboard agent, ...), so every port is picked free here. ``ray stop`` is never used: it kills every Ray on the
machine, including other users' and other tests'. The head runs with ``--block`` and is stopped by SIGTERM to that
process, then the processes it spawned (collected while it ran) are waited for and killed if they linger. A start
that fails (Ray's own start-up deadline on a loaded machine) is cleaned up the same way and tried once more.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

#: Every port `ray start --head` would otherwise take from Ray's fixed defaults (6379, 10001, ...); worker ports
#: are random unless set.
PORT_FLAGS = (
    "--port",
    "--node-manager-port",
    "--object-manager-port",
    "--ray-client-server-port",
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
)


def free_ports(count: int) -> list[int]:
    """Ports the OS reports free right now (all sockets held until every port is picked, so they differ)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def stop_by_pids(head: subprocess.Popen, children: list[psutil.Process]) -> None:
    """Stop the head we started and the processes it spawned, by their PIDs only (never `ray stop`)."""
    head.send_signal(signal.SIGTERM)  # `ray start --block` shuts its own cluster down on SIGTERM
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for process in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(alive, timeout=10)


@dataclass(frozen=True)
class Head:
    """A running head: its GCS address, the dashboard URL (None without dashboard), its temp root, its process."""

    gcs_address: str
    dashboard_url: str | None
    root: Path
    process: subprocess.Popen

    def processes(self) -> list[psutil.Process]:
        """The head process and everything it spawned, now."""
        parent = psutil.Process(self.process.pid)
        return [parent, *parent.children(recursive=True)]


class HeadStartFailed(Exception):
    """`ray start --head` exited or did not write its address in time; the message is its log's tail."""


def _start_head(
    command: list[str], root: Path, env: dict[str, str], ready_timeout: float
) -> tuple[subprocess.Popen, list[psutil.Process], str]:
    """Start one head and wait for its address file; return (process, its children so far, address).

    The children are collected while waiting so that a head which dies during start-up (under load Ray's
    `ray start` can give up with "Failed to get node info ... RPC Deadline Exceeded") is cleaned up by PID too:
    once it has exited its GCS and raylet are no longer its children.
    """
    log = open(root / "head.log", "w")  # noqa: SIM115 - closed below, once the head has come up or been stopped
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
    address_file = root / "ray" / "ray_current_cluster"
    children: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + ready_timeout
    try:
        while not address_file.exists():
            with contextlib.suppress(psutil.NoSuchProcess):
                children.update({p.pid: p for p in psutil.Process(head.pid).children(recursive=True)})
            if head.poll() is not None or time.monotonic() > deadline:
                stop_by_pids(head, list(children.values()))
                raise HeadStartFailed((root / "head.log").read_text()[-3000:])
            time.sleep(0.2)
    finally:
        log.close()
    children.update({p.pid: p for p in psutil.Process(head.pid).children(recursive=True)})
    return head, list(children.values()), address_file.read_text().strip()


@contextlib.contextmanager
def ray_head(
    *,
    num_cpus: int = 1,
    dashboard: bool = False,
    env: dict[str, str] | None = None,
    ready_timeout: float = 90,
    attempts: int = 2,
) -> Iterator[Head]:
    """Start ``ray start --head --block`` on free ports in a fresh short temp dir (Ray's socket paths must stay
    under 108 characters); yield it; stop it by PIDs and remove the temp dir.

    dashboard: bind the dashboard (and its jobs API) to 127.0.0.1 on a free port. env: the head's environment
    (default: this process's). attempts: starts tried (fresh ports and temp dir each) before the test fails; a
    start that fails on a loaded machine is Ray's start-up deadline, not what the tests check.
    """
    for attempt in range(1, attempts + 1):
        root = Path(tempfile.mkdtemp(prefix="fw-ray-", dir="/tmp"))
        ports = free_ports(len(PORT_FLAGS) + 1)
        flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, ports[: len(PORT_FLAGS)], strict=True)]
        if dashboard:
            flags += [
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={ports[-1]}",
            ]
        else:
            flags += ["--include-dashboard=false"]
        command = [
            str(Path(sys.executable).parent / "ray"),
            "start",
            "--head",
            "--block",
            f"--temp-dir={root / 'ray'}",
            *flags,
            f"--num-cpus={num_cpus}",
            "--disable-usage-stats",
        ]
        try:
            head, children, gcs_address = _start_head(command, root, env or dict(os.environ), ready_timeout)
            break
        except HeadStartFailed as failure:
            shutil.rmtree(root, ignore_errors=True)
            if attempt == attempts:
                pytest.fail(f"`ray start --head` did not come up in {attempts} attempts:\n{failure}")
    try:
        url = f"http://127.0.0.1:{ports[-1]}" if dashboard else None
        try:
            yield Head(gcs_address, url, root, head)
        finally:
            # Processes started after start-up (job supervisors, workers) are collected now, before the stop.
            with contextlib.suppress(psutil.NoSuchProcess):
                children += [
                    p for p in psutil.Process(head.pid).children(recursive=True) if p not in children
                ]
            stop_by_pids(head, children)
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        shutil.rmtree(root, ignore_errors=True)
