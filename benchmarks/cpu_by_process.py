"""Where a command's CPU time goes, by kind of process: Ray's actors by class, its daemons, test workers, the rest.

    .venv/bin/python benchmarks/cpu_by_process.py -- .venv/bin/pytest -q
    .venv/bin/python benchmarks/cpu_by_process.py --json out.json -- .venv/bin/fairweather demo --config smoke

Runs the command and samples every process that was not running before it (Ray's daemons and workers are not its
children once daemonised, so a process tree would miss them) every ``--interval`` seconds, keeping each one's last
user + system CPU time. A process's kind is its Ray title (``ray::RayTrainWorker``, ``ray::MapWorker(...)``, the
most specific one it had: a worker shows ``ray::IDLE`` between tasks), its daemon name (raylet, gcs_server, ...),
or its command line. The machine's CPU counters give the total and the idle share over the same wall time, so the
table also says how much CPU no sampled process accounts for (processes older than the command, the kernel, and
up to one interval of each process that exited between samples).

Written to find where ``make test`` spends its time (docs/benchmarks.md, "Where the test suite's CPU goes"):
on a 2-core machine a suite that leaves no CPU idle is shortened only by less work, not by more parallelism.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass

import psutil

#: Ray's daemons, by the name or script their command line shows.
RAY_DAEMONS = (
    "raylet",
    "gcs_server",
    "dashboard_agent",
    "dashboard",
    "log_monitor",
    "monitor.py",
    "runtime_env",
)


@dataclass
class Seen:
    """One sampled process: the most specific kind it showed and its last CPU seconds (user + system)."""

    kind: str
    cpu: float


def kind_of(name: str, cmdline: list[str]) -> str:
    """The group a process counts in, from its name (Ray retitles its workers) and its command line."""
    title = " ".join(cmdline) if cmdline else name
    if title.startswith("ray::"):
        # "ray::Class.method" while it runs a method, "ray::Class" between calls: the class is the kind.
        head = title.split()[0]
        return head.split(".", 1)[0] if "(" not in head else title[:60]
    for daemon in RAY_DAEMONS:
        if daemon in name or any(daemon in part for part in cmdline[:3]):
            return f"ray daemon: {daemon.removesuffix('.py')}"
    if "default_worker.py" in title:
        return "ray::IDLE"  # a worker not yet retitled
    if any("xdist" in part or "execnet" in part for part in cmdline) or cmdline[1:3] == ["-u", "-c"]:
        return "pytest worker (xdist)"
    if any(part.endswith("pytest") for part in cmdline[:2]):
        return "pytest"
    if "-c" in cmdline[1:3]:
        return "python -c"
    if "-m" in cmdline[:-1]:
        return f"python -m {cmdline[cmdline.index('-m') + 1]}"
    if len(cmdline) > 1 and "python" in cmdline[0].rsplit("/", 1)[-1] and not cmdline[1].startswith("-"):
        return f"python {cmdline[1].rsplit('/', 1)[-1]}"
    return name or title[:60]


def sample(older: set[int], seen: dict[int, Seen]) -> None:
    """Add or update every process but the ``older`` ones (pids alive before the command started)."""
    for proc in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
        info = proc.info
        if info["pid"] in older or info["cpu_times"] is None:
            continue
        cpu = info["cpu_times"].user + info["cpu_times"].system
        kind = kind_of(info["name"] or "", info["cmdline"] or [])
        old = seen.get(info["pid"])
        if old is None:
            seen[info["pid"]] = Seen(kind, cpu)
            continue
        old.cpu = max(old.cpu, cpu)
        if old.kind == "ray::IDLE" and kind != "ray::IDLE":
            old.kind = kind  # an idle worker that became an actor or ran a task counts as what it became


def busy_and_idle(before, after) -> tuple[float, float]:
    """CPU seconds the machine was busy and idle between two ``psutil.cpu_times()``."""
    idle = (after.idle - before.idle) + (getattr(after, "iowait", 0) - getattr(before, "iowait", 0))
    total = sum(after) - sum(before)
    return total - idle, idle


def by_kind(seen: dict[int, Seen]) -> dict[str, tuple[int, float]]:
    """``{kind: (processes, CPU seconds)}``, largest CPU first."""
    count, cpu = defaultdict(int), defaultdict(float)
    for proc in seen.values():
        count[proc.kind] += 1
        cpu[proc.kind] += proc.cpu
    return {kind: (count[kind], cpu[kind]) for kind in sorted(cpu, key=cpu.get, reverse=True)}


def table(kinds: dict[str, tuple[int, float]], busy: float, idle: float, wall: float) -> list[str]:
    """The report: one row per kind, in ``kinds``' order, then what no sampled process accounts for."""
    sampled = sum(cpu for _, cpu in kinds.values())
    lines = [
        f"wall {wall:.0f} s; machine busy {busy:.0f} CPU-s, idle {idle:.0f} CPU-s "
        f"({100 * idle / max(busy + idle, 1e-9):.1f} % idle)",
        "",
        "| kind | processes | CPU s | share of busy |",
        "|---|---|---|---|",
    ]
    for kind, (count, cpu) in kinds.items():
        lines.append(f"| {kind} | {count} | {cpu:.1f} | {100 * cpu / max(busy, 1e-9):.1f} % |")
    lines.append(
        f"| (not sampled: older processes, kernel, exits between samples) | | {busy - sampled:.1f} | "
        f"{100 * (busy - sampled) / max(busy, 1e-9):.1f} % |"
    )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=0.5, help="seconds between samples (default 0.5)")
    parser.add_argument("--json", help="also write {kind: [processes, cpu_s]} and the totals to this file")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="the command, after --")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to measure after --")
    seen: dict[int, Seen] = {}
    # By pid, not by creation time: psutil's creation times are only as exact as the boot time (a second).
    older = set(psutil.pids())
    before, start = psutil.cpu_times(), time.time()
    child = subprocess.Popen(command)
    while child.poll() is None:
        sample(older, seen)
        time.sleep(args.interval)
    sample(older, seen)
    wall, (busy, idle) = time.time() - start, busy_and_idle(before, psutil.cpu_times())
    kinds = by_kind(seen)
    print("\n".join(table(kinds, busy, idle, wall)))
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"wall_s": wall, "busy_cpu_s": busy, "idle_cpu_s": idle, "kinds": kinds}, out, indent=1)
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
