"""Shared fixtures: ONE private local Ray per test process, tiny-model cache per session, and the modules' order.

``make test`` runs the suite in two worker processes (``pytest -n 2 --dist loadfile``, set in ``pyproject.toml``):
a module runs whole in one worker, and the longest modules (``LONGEST_FIRST``) start first so that the workers end
together. ``-n 0`` runs it in this process (for ``-s``, ``--pdb`` or a single test).

The shared Ray (``shared_ray``, through the module-scoped ``local_ray``) starts at the first module of a process
that asks for it and stops at the end of the session, only if the fixture started it. Starting a private Ray costs
seconds on the 2-core machine (and a stage that finds no Ray starts and stops one of its own each time), so every
test that runs stages in the process shares it.

The session runs outside the checkout (its working directory is a folder of its own, and the shared Ray's daemons
and workers run in another): a relative path a test, a command or a worker writes lands there, never in the
repository, and the session fails if anything appears under the checkout's ``runs/``. The checkout is on
``PYTHONPATH`` for every process the tests start, so Ray workers import step hooks from ``tests/``. Tests whose
workers must share their working directory (the demo on the smoke profile's relative ``runs/`` paths) start their
own Ray.

Tests that need the process *without* the shared Ray (a ``ray.cluster_utils.Cluster``, a Ray started by
``ray_session`` itself with its own options or working directory) are marked ``own_ray``: the shared Ray is stopped
before their module starts (the next module that needs it starts it again), so they never join it or skip because
a Ray is up; in a module they run first. Tests that start their Ray in a subprocess (loopback probe, job submit, lock
holders, killed drivers) need no mark: a child process has no Ray of this one.
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: CPUs of the shared private Ray: what the tiny configs ask for (``runtime.num_cpus=2``) and what this machine has.
SHARED_CPUS = 2


def _share_the_cores_between_workers() -> None:
    """Each xdist worker's OpenMP threads (torch's intra-op pool) get their share of the cores, set here before any
    test imports torch, and inherited by every process the worker starts (its Ray, commands, probes).

    Why: torch starts one OpenMP thread per core in every process, and OpenMP threads spin at each parallel
    region's barrier. Two workers with two threads each on two cores wait at every barrier for a thread that is
    not running: the in-process tests of the default suite took 178 s in two workers, and 80 s with one thread
    each (docs/benchmarks.md, "Where the test suite's CPU goes"). The cores are the stages' own count
    (``machine_cpus``: the affinity mask capped by the cgroup quota, not the host's). A variable already set wins;
    ``-n 0`` keeps every core."""
    from fairweather.stages.infra.cpus import machine_cpus

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        os.environ.setdefault("OMP_NUM_THREADS", str(max(1, machine_cpus() // workers)))


_share_the_cores_between_workers()


#: The longest modules, longest first (seconds in a 2-worker run on the 2-core machine, 2026-12-05: 183, 127, 104,
#: 84, 77, 58, 52). They start first so that no worker is left with one long module at the end; the others follow
#: in file order. A stale list only costs balance, never a test.
LONGEST_FIRST = (
    "test_train_stage",
    "test_demo",
    "test_sweep",
    "test_label_consistency",
    "test_label_job",
    "test_train_multinode",
    "test_rounds",
)


def pytest_collection_modifyitems(config, items):
    """The longest modules first, then the rest in file order; in a module, its ``own_ray`` tests first (fewer
    restarts of the shared Ray). A stable sort: every group keeps its order."""

    def key(item) -> tuple[int, bool]:
        module = item.module.__name__.rsplit(".", 1)[-1]
        rank = LONGEST_FIRST.index(module) if module in LONGEST_FIRST else len(LONGEST_FIRST)
        return rank, item.get_closest_marker("own_ray") is None

    items.sort(key=key)


#: Whether this process's shared Ray is up now (a module of own_ray tests stops it; ``local_ray`` starts it again).
_SHARED = {"up": False}


@pytest.fixture(scope="module", autouse=True)
def _own_ray_guard(request):
    """Before a module with ``own_ray`` tests the shared Ray stops (they would otherwise join it or skip, and test
    nothing), and any other Ray up in the process fails the module, loudly. Module-scoped and autouse, so it runs
    before the module's own fixtures (the demo's starts its Ray); its own_ray tests run first in it, and a later
    test that needs the shared Ray starts it again through ``local_ray``."""
    if any(
        item.get_closest_marker("own_ray") for item in request.session.items if item.module is request.module
    ):
        import ray

        if _SHARED["up"]:
            _stop_shared_ray(ray)
        assert not ray.is_initialized(), (
            "an own_ray module found a Ray up in its process that the tests did not start"
        )


@pytest.fixture(scope="session", autouse=True)
def _outside_the_checkout(tmp_path_factory):
    """The session runs in a folder of its own: a command a test runs with a profile's relative paths (``runs/smoke``
    and its run logs) writes there, not into the checkout. Nothing may appear under the checkout's ``runs/``."""

    def written() -> set[Path]:
        return set((REPO / "runs").rglob("*")) if (REPO / "runs").is_dir() else set()

    before = written()
    start, path = Path.cwd(), os.environ.get("PYTHONPATH")
    os.chdir(tmp_path_factory.mktemp("cwd"))
    # The checkout on the path of every process the tests start (Ray workers of any cluster, commands): step hooks
    # and stand-ins live in the tests package, imported by name where cloudpickle does not carry them by value.
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), path) if p)
    yield
    os.chdir(start)
    if path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = path
    leaked = sorted(str(path.relative_to(REPO)) for path in written() - before)
    assert not leaked, f"the tests wrote into the checkout: {leaked[:5]}"


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One folder for tiny models built during the test session (never downloaded)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def clip(model_cache: Path):
    """The tiny random CLIP, loaded once for every test that needs a frozen CLIP."""
    from fairweather.contracts.config.encoders import CLIPEncoderConfig
    from fairweather.encoders import FrozenCLIP

    return FrozenCLIP.from_config(CLIPEncoderConfig(model_name="tiny:clip"), model_cache)


@pytest.fixture(scope="session")
def depth(model_cache: Path):
    """The tiny random Depth Anything encoder (28-px input keeps it fast)."""
    from fairweather.contracts.config.encoders import DepthEncoderConfig
    from fairweather.encoders import FrozenDepthEncoder

    return FrozenDepthEncoder.from_config(
        DepthEncoderConfig(model_id="tiny:depth-anything", input_size=28), model_cache
    )


def _start_shared_ray(folder: Path) -> None:
    """A private local Ray as ``ray_session`` starts one (``address="local"``, the same Ray Train settings in the
    environment its daemons inherit), with 2 CPUs and no driver log forwarding; its processes run in ``folder``."""
    import ray

    from fairweather.stages.infra.runtime import PRIVATE_RAY_ENV

    saved = {key: os.environ.get(key) for key in PRIVATE_RAY_ENV}
    os.environ.update({key: value for key, value in PRIVATE_RAY_ENV.items() if not saved[key]})
    try:
        with contextlib.chdir(folder):  # the daemons (and the workers they start) keep this working directory
            ray.init(address="local", num_cpus=SHARED_CPUS, include_dashboard=False, log_to_driver=False)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    _SHARED["up"] = True


def _stop_shared_ray(ray) -> None:
    _SHARED["up"] = False
    ray.shutdown()


@pytest.fixture(scope="session")
def shared_ray(tmp_path_factory):
    """The process's private local Ray, started at first use (and again by ``local_ray`` after an own_ray module
    stopped it); shut down at the end only if this fixture started it (a Ray up before the session is used as is)."""
    import ray

    if not ray.is_initialized():
        _start_shared_ray(tmp_path_factory.mktemp("shared-ray-cwd"))
    yield ray
    if _SHARED["up"] and ray.is_initialized():
        _stop_shared_ray(ray)


def _cpus_given_back(ray, timeout: float) -> bool:
    """Whether every CPU of the Ray is free again within ``timeout`` s (actors and placement groups released)."""
    deadline = time.monotonic() + timeout
    while True:
        free = ray.available_resources().get("CPU", 0.0)
        if free >= ray.cluster_resources().get("CPU", 0.0):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


@pytest.fixture(scope="module")
def local_ray(shared_ray, request, tmp_path_factory):
    """The shared private Ray for one test module. At the module's end every CPU must be free again: a module
    that left an actor or a placement group behind would make the next module wait forever, so the shared Ray is
    then restarted (with a warning naming the module) instead."""
    if not shared_ray.is_initialized():  # an own_ray module stopped it
        _start_shared_ray(tmp_path_factory.mktemp("shared-ray-cwd"))
    yield shared_ray
    if shared_ray.is_initialized() and not _cpus_given_back(shared_ray, timeout=20):
        warnings.warn(
            f"{request.module.__name__} left Ray CPUs held: the shared Ray is restarted", stacklevel=1
        )
        _stop_shared_ray(shared_ray)
        _start_shared_ray(tmp_path_factory.mktemp("shared-ray-cwd"))
