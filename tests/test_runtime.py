"""The embedded runtime: a private local Ray never joins a cluster someone else started on the same machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import ray

from fairweather.contracts.config import load_config
from fairweather.stages.infra.runtime import ray_session

from .ray_head import ray_head

#: ray_session must start its own Ray here: runs before the session's shared Ray starts (tests/conftest.py).
pytestmark = pytest.mark.own_ray


@pytest.fixture
def foreign_head(monkeypatch) -> Iterator[str]:
    """A `ray start --head` cluster beside the test, as another user might leave one; yields its GCS address.

    It runs in its own temp dir, and ``RAY_TMPDIR`` points this test's Ray at the same place, so Ray's
    ``address=None`` discovery (``<RAY_TMPDIR>/ray/ray_current_cluster``) finds it, exactly like ``/tmp/ray`` would.
    """
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_head(num_cpus=1) as head:
        monkeypatch.setenv("RAY_TMPDIR", str(head.root))
        yield head.gcs_address


def test_private_runtime_does_not_join_a_cluster_started_beside_it(foreign_head):
    assert not ray.is_initialized()
    cfg = load_config("smoke", ["runtime.num_cpus=1"])
    with ray_session(cfg):
        assert ray.get_runtime_context().gcs_address != foreign_head
        assert ray.cluster_resources()["CPU"] == 1
    assert not ray.is_initialized()


def test_a_training_run_builds_its_datasets_in_its_own_ray_and_leaves_none_behind(
    tmp_path, model_cache, monkeypatch
):
    """``run_train`` with no Ray up: its datasets are made inside the private Ray it starts (``ray.data`` would
    otherwise auto-start a default Ray, with a dashboard and every CPU, that outlived the run)."""
    from fairweather.contracts.metric_logger import NullLogger
    from fairweather.stages.synth.driver import run_synth
    from fairweather.stages.train import driver

    from .train_fixtures import tiny_config

    cfg = tiny_config(tmp_path, model_cache, **{"runtime.num_cpus": 1})
    run_synth(cfg)
    seen = {}

    def fit(cfg, job, datasets, *rest):  # stands in for Ray Train: what the run's Ray looked like
        seen.update(cpus=ray.cluster_resources()["CPU"], datasets=sorted(datasets))
        raise RuntimeError("stop before Ray Train")

    monkeypatch.setattr(driver, "_fit", fit)
    assert not ray.is_initialized()
    with pytest.raises(RuntimeError, match="stop before Ray Train"):
        driver.run_train(cfg, NullLogger())
    assert seen == {"cpus": 1, "datasets": ["paired", "val"]}
    assert not ray.is_initialized()
