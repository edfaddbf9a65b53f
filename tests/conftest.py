"""Shared fixtures: a private local Ray per test module that needs it, tiny-model cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory) -> Path:
    """One folder for tiny models built during the test session (never downloaded)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def local_ray():
    """A private local Ray cluster for one test module; shut down only if this fixture started it."""
    import ray

    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    if started:
        ray.shutdown()
