"""Ray internals live in one module (``stages/infra/ray_compat.py``); this test fails, naming it, when a Ray upgrade
moves what it relies on. Everything else uses public Ray APIs (checked on the source)."""

from __future__ import annotations

import dataclasses
import inspect
import re

from fairweather.stages.infra import ray_compat

from .conftest import REPO

WHY = "Ray moved an internal that fairweather.stages.infra.ray_compat relies on: update that module"


def test_worker_group_hook_and_its_placement_group_are_where_ray_compat_expects():
    from ray.train.v2._internal.execution.worker_group import WorkerGroup
    from ray.train.v2._internal.execution.worker_group.placement_group_handle import (
        DefaultPlacementGroupHandle,
    )
    from ray.train.v2._internal.execution.worker_group.state import WorkerGroupState

    hook = getattr(ray_compat.WorkerGroupCallback, "after_worker_group_start", None)
    assert callable(hook), WHY
    # Ray Train still calls the hook with the started worker group ...
    assert re.search(r"\.after_worker_group_start\(self\)", inspect.getsource(WorkerGroup)), WHY
    # ... and the trainer still hands the run config's non-user callbacks to the controller.
    from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

    assert "not isinstance(cb, UserCallback)" in inspect.getsource(DataParallelTrainer), WHY
    # The group's state holds the placement group where worker_group_placement_group looks.
    assert callable(getattr(WorkerGroup, "get_worker_group_state", None)), WHY
    assert "placement_group_handle" in {f.name for f in dataclasses.fields(WorkerGroupState)}, WHY
    sentinel = object()
    state = WorkerGroupState(
        start_time=0.0,
        placement_group_handle=DefaultPlacementGroupHandle(sentinel),
        workers=[],
        sync_actor=None,
    )

    class Started:
        def get_worker_group_state(self) -> WorkerGroupState:
            return state

    assert ray_compat.worker_group_placement_group(Started()) is sentinel, WHY


def test_no_private_ray_api_outside_ray_compat():
    private = re.compile(r"\bray\.(?:_private|_raylet|[a-z0-9_.]*\._internal)\b")
    users = sorted(
        str(path.relative_to(REPO))
        for folder in ("platform", "jobs", "benchmarks")
        for path in (REPO / folder).rglob("*.py")
        if private.search(path.read_text())
    )
    assert users == ["platform/fairweather/stages/infra/ray_compat.py"], users
