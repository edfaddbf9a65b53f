"""DDP across two Ray nodes (a `ray.cluster_utils.Cluster` on this machine), one worker per node."""

from __future__ import annotations

import functools
from collections import Counter

import pytest
from ray import cloudpickle

from fairweather.contracts.metric_logger import DiskLogger
from fairweather.stages.synth.driver import run_synth

from . import train_fixtures
from .train_fixtures import read_records, tiny_config

cloudpickle.register_pickle_by_value(train_fixtures)

#: A Cluster of its own: runs before the session's shared Ray starts (tests/conftest.py), never inside it.
pytestmark = pytest.mark.own_ray


@pytest.fixture()
def two_nodes(tmp_path_factory):
    """Two one-CPU nodes in a private cluster; this test's Ray only (fails inside another session, never skips)."""
    import ray
    from ray.cluster_utils import Cluster

    assert not ray.is_initialized(), "another Ray session is active in this process"
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_two_nodes_train_on_disjoint_shards_that_cover_the_epoch(two_nodes, model_cache, tmp_path):
    import ray

    from fairweather.contracts.tables import TableStore
    from fairweather.data.views import paired_view
    from fairweather.stages.train.driver import run_train
    from fairweather.training.state import load_state

    overrides = {
        "train.run_name": "two-nodes",
        "train.scaling.num_workers": 2,
        "train.scaling.placement_strategy": "STRICT_SPREAD",
        "train.iterations_per_round": 5,
        "train.batch_size": 3,  # 5 steps x 3 cover a rank's 15 positions of an epoch (18 pairs, rain and snow twice)
        "train.checkpoint_every": 5,
        "train.calibration.enabled": False,  # the colour calibration's fit is rank 0's: checked off here
    }
    cfg = tiny_config(tmp_path, model_cache, **overrides)
    run_synth(cfg)
    train = paired_view(TableStore(cfg.data.tables), "train").to_pylist()
    # An epoch holds each pair its weather's train.weather_repeats times (the smoke profile: rain and snow twice).
    epoch = Counter(
        row["pair_id"] for row in train for _ in range(cfg.train.weather_repeats.of(row["weather"]))
    )
    steps = tmp_path / "steps.jsonl"
    summary = run_train(
        cfg,
        DiskLogger(tmp_path / "log"),
        step_hook=functools.partial(train_fixtures.record_steps, str(steps)),
    )
    assert summary.steps == 5 and len(ray.nodes()) == 2
    assert load_state(summary.checkpoint)["calibration"] is None  # train.calibration.enabled=false
    records = read_records(steps)
    seen = {rank: [i for r in records if r["rank"] == rank for i in r["ids"]] for rank in (0, 1)}
    n = sum(epoch.values())
    assert n > len(epoch)  # repeats on: the ranks share an epoch's positions, not its pair ids
    per_rank = {0: (n + 1) // 2, 1: n // 2}  # positions r, r + 2, ... of each epoch's permutation
    first_epoch = {rank: seen[rank][: per_rank[rank]] for rank in (0, 1)}
    # Together the two ranks' first epochs are the epoch exactly: every position once, none dropped or duplicated.
    assert Counter(first_epoch[0]) + Counter(first_epoch[1]) == epoch
