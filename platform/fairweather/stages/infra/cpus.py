"""How many CPUs a stage may plan with: the one CPU count every stage's budget check uses.

``cpu_budget`` is, in order: the running Ray's ``CPU`` resource (``ray.cluster_resources()``) when this process is
connected; else ``runtime.num_cpus`` (what :func:`fairweather.stages.infra.runtime.ray_session` starts the private
Ray with); else what this process may actually run on: the CPUs of its affinity mask (``os.sched_getaffinity``:
``taskset``, cpusets) capped by the cgroup's CPU quota (v2 ``cpu.max``, v1 ``cpu.cfs_quota_us`` /
``cpu.cfs_period_us``: ``docker --cpus``, Kubernetes limits), rounded down and at least 1. ``os.cpu_count()``
counts the host's CPUs and ignores both, so a container with ``--cpus=2`` on a 64-core host would plan 64.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from fairweather.contracts.config.runtime import RuntimeConfig
from fairweather.contracts.errors import FairweatherError
from fairweather.stages.infra.runtime import is_private_local

#: Where the cgroup CPU quota is read: v2's unified hierarchy, then v1's cpu controller.
CGROUP_V2_MAX = Path("/sys/fs/cgroup/cpu.max")
CGROUP_V1 = Path("/sys/fs/cgroup/cpu")


def cgroup_cpu_quota(v2_max: Path = CGROUP_V2_MAX, v1: Path = CGROUP_V1) -> float | None:
    """CPUs the cgroup's quota allows (``quota / period``), or None without a quota (``max``, -1, no file)."""
    try:
        quota, period = v2_max.read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota = int((v1 / "cpu.cfs_quota_us").read_text())
        period = int((v1 / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


def machine_cpus() -> int:
    """CPUs this process may run on: its affinity mask capped by the cgroup quota, rounded down, at least 1."""
    try:
        cpus: float = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        cpus = min(cpus, quota)
    return max(1, math.floor(cpus))


def cpu_budget(runtime: RuntimeConfig) -> float:
    """CPUs of the Ray a stage runs on (see the module docstring for the order)."""
    import ray  # here, not at the top: the test session counts the cores (machine_cpus) before anything imports Ray

    if ray.is_initialized():
        return float(ray.cluster_resources().get("CPU", 0.0))
    return float(runtime.num_cpus or machine_cpus())


def check_cpu_budget(runtime: RuntimeConfig, wanted: float, what: str, *, spare: float = 1.0) -> None:
    """Refuse, before anything starts, ``wanted`` CPUs that leave less than ``spare`` of the private local Ray's.

    what: the settings that ask for them, named in the error (``label.concurrency x label.num_cpus_per_actor``).
    spare: CPUs that must stay free: 1 where actors must leave a CPU for the read tasks (else the job hangs
    instead of failing), 0 where every CPU may be taken (training workers). A remote cluster may autoscale, so it
    is trusted.
    """
    if not is_private_local(runtime):
        return
    cpus = cpu_budget(runtime)
    if wanted + spare > cpus:
        if spare:
            problem = f"leave less than {spare:g} of the {cpus:g} CPUs of this local Ray for reading images"
        else:
            problem = f"exceed the {cpus:g} CPUs of this local Ray (it would wait for them forever)"
        raise FairweatherError(
            f"{what} = {wanted:g} CPUs {problem}; lower them (fractions are fine) or set runtime.num_cpus"
        )
