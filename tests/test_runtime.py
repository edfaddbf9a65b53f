"""The embedded runtime: a private local Ray never joins a cluster someone else started on the same machine."""

from __future__ import annotations

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
from pathlib import Path

import psutil
import pytest
import ray

from fairweather.contracts.config import load_config
from fairweather.stages.runtime import ray_session

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
        process.kill()
    psutil.wait_procs(alive, timeout=10)


@pytest.fixture
def foreign_head(monkeypatch) -> Iterator[str]:
    """A `ray start --head` cluster beside the test, as another user might leave one; yields its GCS address.

    It runs in its own temp dir, and ``RAY_TMPDIR`` points this test's Ray at the same place, so Ray's
    ``address=None`` discovery (``<RAY_TMPDIR>/ray/ray_current_cluster``) finds it, exactly like ``/tmp/ray`` would.
    """
    root = Path(
        tempfile.mkdtemp(prefix="fw-ray-", dir="/tmp")
    )  # short: Ray's socket paths must stay < 108 chars
    monkeypatch.setenv("RAY_TMPDIR", str(root))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    flags = [f"{flag}={port}" for flag, port in zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)]
    command = [
        str(Path(sys.executable).parent / "ray"),
        "start",
        "--head",
        "--block",
        f"--temp-dir={root / 'ray'}",
        *flags,
        "--num-cpus=1",
        "--include-dashboard=false",
        "--disable-usage-stats",
    ]
    log = open(root / "head.log", "w")  # noqa: SIM115 - closed below, after the head has stopped
    head = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ))
    address_file = root / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 60
        while not address_file.exists():
            if head.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"`ray start --head` did not come up:\n{(root / 'head.log').read_text()[-3000:]}")
            time.sleep(0.2)
        children = psutil.Process(head.pid).children(recursive=True)
        try:
            yield address_file.read_text().strip()
        finally:
            children += [p for p in psutil.Process(head.pid).children(recursive=True) if p not in children]
            stop_by_pids(head, children)
    finally:
        if head.poll() is None:
            head.kill()
            head.wait()
        log.close()
        shutil.rmtree(root, ignore_errors=True)


def test_private_runtime_does_not_join_a_cluster_started_beside_it(foreign_head):
    assert not ray.is_initialized()
    cfg = load_config("smoke", ["runtime.num_cpus=1"])
    with ray_session(cfg):
        assert ray.get_runtime_context().gcs_address != foreign_head
        assert ray.cluster_resources()["CPU"] == 1
    assert not ray.is_initialized()
