"""Shared fixtures: ONE private local Ray for the whole test session, tiny-model cache per session.

The shared Ray (``shared_ray``, through the module-scoped ``local_ray``) starts at the first test that asks for it
and stops at the end of the session, only if the fixture started it. Starting a private Ray costs seconds on the
2-core machine (and a stage that finds no Ray starts and stops one of its own each time), so every test that runs
stages in this process shares it.

The session runs outside the checkout (its working directory is a folder of its own, and the shared Ray's daemons
and workers run in another): a relative path a test, a command or a worker writes lands there, never in the
repository, and the session fails if anything appears under the checkout's ``runs/``. The checkout is on
``PYTHONPATH`` for every process the tests start, so Ray workers import step hooks from ``tests/``. Tests whose
workers must share their working directory (the demo on the smoke profile's relative ``runs/`` paths) start their
own Ray.

Tests that need this process *without* the shared Ray (a ``ray.cluster_utils.Cluster``, a Ray started by
``ray_session`` itself with its own options or working directory) are marked ``own_ray``: they run first, before
the shared Ray starts, and fail (never skip) if it is up all the same. Tests that start their Ray in a subprocess
(loopback probe, job submit, lock holders, killed drivers) need no mark: a child process has no Ray of this one.
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


def pytest_collection_modifyitems(config, items):
    """``own_ray`` tests first (a stable sort: each group keeps its order), so they run before the shared Ray."""
    items.sort(key=lambda item: item.get_closest_marker("own_ray") is None)


#: Whether the session's shared Ray is up now (own_ray tests check it; their own fixtures may start a Ray).
_SHARED = {"up": False}


@pytest.fixture(autouse=True)
def _own_ray_guard(request):
    """An ``own_ray`` test fails, loudly, if the shared Ray is up (it would otherwise join it or skip, and test
    nothing)."""
    if request.node.get_closest_marker("own_ray") and _SHARED["up"]:
        pytest.fail(
            "an own_ray test found the shared Ray up in this process: own_ray tests must run before it starts "
            "(tests/conftest.py orders them first)"
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
    """The session's private local Ray: started once, shut down at the end only if this fixture started it."""
    import ray

    folder = tmp_path_factory.mktemp("shared-ray-cwd")
    started = not ray.is_initialized()
    if started:
        _start_shared_ray(folder)
    yield ray
    if started and ray.is_initialized():
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
    yield shared_ray
    if shared_ray.is_initialized() and not _cpus_given_back(shared_ray, timeout=20):
        warnings.warn(
            f"{request.module.__name__} left Ray CPUs held: the shared Ray is restarted", stacklevel=1
        )
        _stop_shared_ray(shared_ray)
        _start_shared_ray(tmp_path_factory.mktemp("shared-ray-cwd"))
