"""`fairweather train` in rounds: two rounds on tiny settings, pseudo-labels between them, a crash between rounds.

The pseudo-label job is injected (``pseudolabel=``): a stand-in that files one new, always better candidate per real
image and round, as ``run_pseudolabel`` would, straight into the ``pseudo_labels`` table (the contract training
reads). The real job runs in ``tests/test_pseudolabel*.py``.
"""

from __future__ import annotations

import functools
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from mlflow.tracking import MlflowClient
from ray import cloudpickle

from fairweather.contracts.metric_logger import NullLogger
from fairweather.contracts.tables import TableStore
from fairweather.data.views import real_view
from fairweather.stages.infra.runtime import tracking_uri
from fairweather.stages.label.driver import run_label
from fairweather.stages.pseudolabel.driver import PseudolabelSummary
from fairweather.stages.synth.driver import run_synth
from fairweather.training.state import load_state

from . import train_fixtures
from .test_label_job import FakeFactory
from .train_fixtures import read_records, tiny_config

cloudpickle.register_pickle_by_value(train_fixtures)

PER_ROUND = 4


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, model_cache, local_ray):
    """Generated pairs and 6 real images, labeled by a fake VLM backend (the tiny VLM's labeling is
    test_label_job's; the rounds read the labels table, whoever filled it)."""
    root = tmp_path_factory.mktemp("rounds")
    cfg = tiny_config(root, model_cache, **{"synth.num_unlabeled": 6, "synth.num_paired": 20})
    run_synth(cfg)
    run_label(cfg, NullLogger(), backend_factory=FakeFactory("ok", root / "marker"))
    return root


def _config(root: Path, model_cache: Path, name: str, **extra: object):
    values = {
        "runtime.runs_dir": root / name / "runs",
        "runtime.storage_path": root / name / "train",
        "synth.num_unlabeled": 6,
        "synth.num_paired": 20,
        "train.rounds": 2,
        "train.iterations_per_round": PER_ROUND,
        "train.checkpoint_every": PER_ROUND,
        "train.log_every": PER_ROUND,
        "train.real_batch_size": 1,
        "loss.weights.ps": 0.5,
        **extra,
    }
    return tiny_config(root, model_cache, **values)


class FakePseudolabel:
    """Files ``<candidates>/round-<k>/<image_id>.png`` (the input's bytes) for every real image as the new
    selected pseudo-label of round k, unselecting the previous one; records its calls; raises at ``fail_at``."""

    def __init__(self, folder: Path, fail_at: int | None = None):
        self.folder, self.fail_at, self.calls = folder, fail_at, []

    def __call__(self, cfg, logger, *, lineage: str, checkpoint: str | None, round_index: int):
        self.calls.append((round_index, checkpoint))
        if round_index == self.fail_at:
            raise RuntimeError(f"injected failure of the pseudo-label update {round_index}")
        store, now = TableStore(cfg.data.tables), datetime.now(UTC)
        table = store.read("pseudo_labels")
        previous = {
            row["image_id"]: row
            for row in table.filter(
                pc.and_(pc.equal(table.column("lineage"), lineage), table.column("selected"))
            ).to_pylist()
        }
        rows = []
        for image in real_view(store, None).to_pylist():
            target = self.folder / f"round-{round_index}" / f"{image['image_id']}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image["uri"], target)
            source = "input" if round_index == 0 else f"ema@round-{round_index}"
            rows.append(
                {
                    "lineage": lineage,
                    "image_id": image["image_id"],
                    "round": round_index,
                    "source": source,
                    "candidate_uri": str(target),
                    "candidate_sha256": "0" * 64,
                    "weather": image["weather"],
                    "scores": {"piqe": 50.0 - round_index},
                    "normalised": {"piqe": 0.5},
                    "combined_score": 0.5 + 0.1 * round_index,
                    "combination": "{}",
                    "decided": True,
                    "selected": True,
                    "replaced_by": None,
                    "created_at": now,
                    "decided_at": now,
                }
            )
            if image["image_id"] in previous:
                old = previous[image["image_id"]]
                rows.append({**old, "selected": False, "replaced_by": f"{round_index}:{source}"})
        store.write("pseudo_labels", pa.Table.from_pylist(rows, schema=store.spec("pseudo_labels").schema))
        selected = len(rows) - len(previous)
        return PseudolabelSummary(
            lineage, round_index, selected, selected, 0, 0, 0.5 + 0.1 * round_index, {}, 0.0, {}
        )


def _selected(root: Path, lineage: str) -> dict[str, str]:
    view = real_view(TableStore(str(root / "tables")), lineage)
    return dict(zip(view.column("image_id").to_pylist(), view.column("pseudo_uri").to_pylist(), strict=True))


def test_two_rounds_train_on_the_pseudo_labels_of_the_round_before_and_resume_after_a_crash_between_them(
    data_root, model_cache, tmp_path
):
    """Round 1 trains on the init pseudo-labels; the update after it crashes; the same command resumes at that
    update without retraining round 1, and round 2 trains on the labels it selected. A third command finds the run
    done. (The crash used to have a test and a training of its own: the slow test below keeps its pseudo.init=false
    variant.)"""
    from fairweather.stages.train.driver import default_lineage
    from fairweather.stages.train.rounds import run_rounds

    cfg = _config(data_root, model_cache, "two")
    name = default_lineage(cfg)
    steps = tmp_path / "steps.jsonl"
    crashing = FakePseudolabel(tmp_path / "candidates", fail_at=1)
    first_uris: dict[str, str] = {}

    def pseudolabel(cfg, logger, **kw):
        summary = crashing(cfg, logger, **kw)
        if kw["round_index"] == 0:
            first_uris.update(_selected(data_root, kw["lineage"]))
        return summary

    record = functools.partial(train_fixtures.record_steps, str(steps))
    with pytest.raises(RuntimeError, match="injected failure"):
        run_rounds(cfg, step_hook=record, pseudolabel=pseudolabel)
    # The init before round 1, then the update with the EMA teacher of round 1's last checkpoint (it crashed).
    assert [c[0] for c in crashing.calls] == [0, 1]
    assert crashing.calls[0][1] is None and load_state(crashing.calls[1][1])["step"] == PER_ROUND

    fake = FakePseudolabel(tmp_path / "candidates")
    summary = run_rounds(cfg, step_hook=record, pseudolabel=fake)
    assert summary.run_name == name and summary.steps == 2 * PER_ROUND
    assert [(r.round, r.status, r.steps) for r in summary.rounds] == [(1, "done", 4), (2, "trained", 8)]
    # The resume redoes only the update that crashed, on the same checkpoint; nothing after the last round.
    assert [(c[0], c[1] == crashing.calls[1][1]) for c in fake.calls] == [(1, True)]
    assert summary.init is None and summary.rounds[0].pseudo.replaced == 6
    assert summary.rounds[1].pseudo is None

    # What the workers trained on: round 1 on the init pseudo-labels, round 2 on those selected after round 1.
    after_round_1 = _selected(data_root, name)
    assert len(after_round_1) == 6 and set(after_round_1.values()).isdisjoint(first_uris.values())
    records = read_records(steps)
    assert [r["step"] for r in records] == list(range(1, 2 * PER_ROUND + 1))  # round 1 not retrained
    for record in records:
        expected = first_uris if record["step"] <= PER_ROUND else after_round_1
        assert record["real"], record
        for image_id, pseudo_uri in record["real"]:
            assert pseudo_uri == expected[image_id], record["step"]

    # MLflow: one parent run for the training, one child per round with its update (the job logs its numbers
    # into the run it is given; the stand-in does not); round-1 reopened by the resume, not duplicated.
    client = MlflowClient(tracking_uri=tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    [parent] = client.search_runs([experiment], f"tags.`fairweather.key` = '{name}'")
    assert parent.info.status == "FINISHED"
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted((c.info.run_name, c.info.status) for c in children) == [
        ("round-1", "FINISHED"),
        ("round-2", "FINISHED"),
    ]
    round_1 = next(c for c in children if c.info.run_name == "round-1")
    assert (
        round_1.data.tags["fairweather.steps"] == f"1-{PER_ROUND}" and "round/seconds" in round_1.data.metrics
    )
    assert [a.path for a in client.list_artifacts(round_1.info.run_id, "pseudo")] == ["pseudo/round-1.png"]
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "pseudo")] == ["pseudo/round-0.png"]
    replaced = client.get_metric_history(parent.info.run_id, "pseudo/replaced")
    assert [(m.step, m.value) for m in replaced] == [(PER_ROUND, 6.0)]
    assert "loss/total" in parent.data.metrics and "test/psnr/overall" in parent.data.metrics

    # A rerun of the finished run trains nothing, scores nothing and updates nothing.
    again = FakePseudolabel(tmp_path / "candidates")
    summary = run_rounds(cfg, NullLogger(), pseudolabel=again)
    assert again.calls == [] and [r.status for r in summary.rounds] == ["done", "done"]
    assert summary.steps == 2 * PER_ROUND and summary.test == {}


@pytest.mark.slow  # the default suite's test above crashes and resumes the same way, with pseudo.init on
def test_a_crash_between_rounds_resumes_at_round_2_without_retraining_round_1(
    data_root, model_cache, tmp_path
):
    """With ``pseudo.init=false``: no init candidates are scored, round 1 trains on no pseudo-labels."""
    from fairweather.stages.train.driver import default_lineage
    from fairweather.stages.train.rounds import run_rounds

    cfg = _config(data_root, model_cache, "crash", **{"pseudo.init": False})
    first, steps = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    crashing = FakePseudolabel(tmp_path / "candidates", fail_at=1)
    with pytest.raises(RuntimeError, match="injected failure"):
        run_rounds(
            cfg,
            step_hook=functools.partial(train_fixtures.record_steps, str(first)),
            pseudolabel=crashing,
        )
    assert [c[0] for c in crashing.calls] == [1]
    assert [r["step"] for r in read_records(first)] == [1, 2, 3, 4]
    assert all(pseudo is None for r in read_records(first) for _, pseudo in r["real"])  # no init

    fake = FakePseudolabel(tmp_path / "candidates")
    summary = run_rounds(
        cfg, step_hook=functools.partial(train_fixtures.record_steps, str(steps)), pseudolabel=fake
    )
    assert [(c[0], c[1] == crashing.calls[0][1]) for c in fake.calls] == [(1, True)]
    assert [(r.round, r.status) for r in summary.rounds] == [(1, "done"), (2, "trained")]
    records = read_records(steps)
    assert [r["step"] for r in records] == list(range(PER_ROUND + 1, 2 * PER_ROUND + 1))
    selected = _selected(data_root, default_lineage(cfg))
    assert all(pseudo == selected[image_id] for r in records for image_id, pseudo in r["real"])

    client = MlflowClient(tracking_uri=tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    [parent] = client.search_runs([experiment], f"tags.`fairweather.key` = '{default_lineage(cfg)}'")
    children = client.search_runs([experiment], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted((c.info.run_name, c.info.status) for c in children) == [
        ("round-1", "FINISHED"),  # reopened by the rerun, which finished its update
        ("round-2", "FINISHED"),
    ]
    assert parent.info.status == "FINISHED"

    # A rerun of the finished run trains nothing, scores nothing and updates nothing.
    again = FakePseudolabel(tmp_path / "candidates")
    summary = run_rounds(cfg, NullLogger(), pseudolabel=again)
    assert again.calls == [] and [r.status for r in summary.rounds] == ["done", "done"]
    assert summary.steps == 2 * PER_ROUND and summary.test == {}


@pytest.mark.parametrize(
    ("rounds", "iterate", "expected"), [(1, True, ()), (4, True, (1, 2, 3)), (4, False, (1,))]
)
def test_pseudo_iterate_updates_after_every_round_but_the_last_or_after_round_1_only(
    rounds, iterate, expected, tmp_path, model_cache
):
    from fairweather.stages.train.rounds import updates_after

    cfg = tiny_config(tmp_path, model_cache, **{"train.rounds": rounds, "pseudo.iterate": iterate})
    assert updates_after(cfg) == expected


@pytest.mark.slow
def test_two_rounds_with_the_real_pseudo_label_job(data_root, model_cache, tmp_path):
    """The real ``run_pseudolabel`` (PIQE + the tiny VLM's r_vlm) between the rounds: round 2 trains on what it
    selected, and the round's child run holds the job's numbers."""
    from fairweather.stages.train.rounds import run_rounds

    cfg = _config(data_root, model_cache, "real", **{"train.run_name": "real-job"})
    steps = tmp_path / "steps.jsonl"
    summary = run_rounds(cfg, step_hook=functools.partial(train_fixtures.record_steps, str(steps)))
    assert summary.init.round == 0 and summary.init.candidates == 6 and summary.init.errors == 0
    assert summary.rounds[0].pseudo.round == 1 and summary.rounds[0].pseudo.candidates == 6
    selected = _selected(data_root, "real-job")
    assert len(selected) == 6
    later = [r for r in read_records(steps) if r["step"] > PER_ROUND]
    assert later and all(pseudo == selected[image_id] for r in later for image_id, pseudo in r["real"])

    client = MlflowClient(tracking_uri=tracking_uri(cfg.runtime))
    experiment = client.get_experiment_by_name(cfg.runtime.experiment).experiment_id
    [parent] = client.search_runs([experiment], "tags.`fairweather.key` = 'real-job'")
    [round_1] = client.search_runs(
        [experiment],
        f"tags.`mlflow.parentRunId` = '{parent.info.run_id}' and attributes.run_name = 'round-1'",
    )
    assert {"pseudo/replaced", "pseudo/unchanged", "pseudo/overall/q50"} <= set(round_1.data.metrics)
    assert parent.data.metrics["pseudo/replaced"] == summary.rounds[0].pseudo.replaced
