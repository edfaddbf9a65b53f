"""The one place fairweather uses a Ray internal, and why no public API does the job (Ray 2.60, pinned).

``fairweather sweep`` runs a Ray Train V2 trainer inside each Tune trial. When ASHA stops a trial, Tune ends the
trial's actor and the nested Train controller dies with it; Ray Train's own clean-up of the workers' placement group
(``PlacementGroupCleanerCallback``) asks the State API, which a private local Ray without a dashboard does not serve,
so the group would keep its CPUs reserved and no later trainer could start. The sweep therefore records every worker
group's placement group and removes it itself when the trial ends (:mod:`fairweather.stages.sweep.trial`).

No public API reaches that placement group: the public ``ray.train.UserCallback`` hears of reports and worker
exceptions only, never of the worker group, and ``ray.util.get_current_placement_group()`` answers only inside the
workers (our training loop, which must not know about sweeps). Ray Train's internal ``WorkerGroupCallback`` is
called with the worker group as soon as it starts, and the group's state holds the placement group. Both are used
here and only here; ``tests/test_ray_compat.py`` fails, naming this module, when a Ray upgrade moves either.
Everything else (the CPU count included: :mod:`fairweather.stages.infra.cpus`) uses public APIs.
"""

from __future__ import annotations

from typing import Any

try:
    from ray.train.v2._internal.execution.callback import WorkerGroupCallback
except ImportError as err:  # pragma: no cover - only on a Ray upgrade
    raise ImportError(
        f"fairweather.stages.infra.ray_compat: Ray Train's internal WorkerGroupCallback moved ({err}); the sweep "
        "needs it to release a stopped trial's placement group: update this module for the new Ray"
    ) from err

__all__ = ["WorkerGroupCallback", "worker_group_placement_group"]


def worker_group_placement_group(worker_group: Any) -> Any:
    """The placement group (``ray.util.placement_group.PlacementGroup``) of the worker group a
    ``WorkerGroupCallback.after_worker_group_start`` is called with."""
    return worker_group.get_worker_group_state().placement_group_handle.placement_group
