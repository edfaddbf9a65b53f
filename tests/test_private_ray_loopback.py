"""The private local Ray a command starts listens on 127.0.0.1 only (issue 19: its GCS, raylet and workers listened
on every interface)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: Run in a fresh interpreter (this test process imported Ray long ago): ``fairweather synth`` through the CLI's
#: ``main``, its stage replaced by a probe that starts the private Ray, runs a task and an actor, and prints every
#: listening TCP socket of this process and its descendants (the Ray daemons, workers and agents).
PROBE = textwrap.dedent(
    """
    import dataclasses, json, sys
    import psutil
    from fairweather import cli

    def probe(args, cfg):
        import ray
        from fairweather.stages.infra.console import say
        from fairweather.stages.infra.runtime import ray_session

        @ray.remote(num_cpus=0)
        class Actor:
            def ping(self):
                return 1

        with ray_session(cfg):
            ray.get(ray.remote(lambda: 1).remote())
            ray.get(Actor.remote().ping.remote())
            me = psutil.Process()
            tree = {me.pid} | {p.pid for p in me.children(recursive=True)}
            names = {}
            for pid in tree:
                try:
                    names[pid] = psutil.Process(pid).name()
                except psutil.Error:
                    names[pid] = "?"
            sockets = [
                [c.laddr.ip, c.laddr.port, names[c.pid]]
                for c in psutil.net_connections(kind="inet")
                if c.status == psutil.CONN_LISTEN and c.pid in tree
            ]
            # say: the console line of a stage (a print goes to the command's run log)
            say("PROBE " + json.dumps({"node_ip": ray.util.get_node_ip_address(), "sockets": sockets}))
        return None

    assert "ray" not in sys.modules, "importing the CLI must not import Ray"
    cli.COMMANDS["synth"] = dataclasses.replace(cli.COMMANDS["synth"], run=probe)
    sys.exit(cli.main(["synth", "--config", "smoke", *sys.argv[1:]]))
    """
)

#: Loopback addresses as the kernel reports them (an IPv6 socket bound to 127.0.0.1 reads ``::ffff:127.0.0.1``).
LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def test_private_ray_listens_on_loopback_only(tmp_path):
    env = {
        k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER")
    }
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "runtime.num_cpus=1", f"runtime.runs_dir={tmp_path / 'runs'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("PROBE ")]
    assert done.returncode == 0 and lines, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(lines[-1].removeprefix("PROBE "))
    assert report["node_ip"] == "127.0.0.1"
    assert report["sockets"], "the probe found no listening socket of the Ray processes"
    # Nothing is left on a public interface: GCS, raylet (node manager, object manager), the driver's and the
    # workers' core-worker servers, the dashboard agent (gRPC, HTTP, metrics) and the runtime-env agent all follow
    # the node IP. The dashboard itself is off (include_dashboard=False).
    public = [s for s in report["sockets"] if s[0] not in LOOPBACK]
    assert public == [], public
    # Nothing this process starts afterwards inherits Ray's single-node switch.
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
