"""Shared fixtures: a private local Ray per test module that needs it, tiny-model cache per session."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
