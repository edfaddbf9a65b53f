"""``paired_view``'s dataset filter and ``evaluate.test_sets`` entries ``paired:<split>`` / ``paired:<dataset>:<split>``."""

from __future__ import annotations

import pytest

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_datasets, paired_view
from fairweather.stages.evaluate.io import list_test_set
from fairweather.synth.paired import PairRecord, write_pairs


@pytest.fixture
def store(tmp_path) -> TableStore:
    store = TableStore(str(tmp_path / "tables"))
    records = [
        PairRecord(
            f"{dataset}/{i}",
            dataset,
            split,
            "rain",
            f"/d/{dataset}/in/{i}.png",
            f"/d/{dataset}/gt/{i}.png",
            8,
            8,
        )
        for dataset, splits in (("synth", ("train", "test", "test")), ("rain100l", ("test", "test", "train")))
        for i, split in enumerate(splits)
    ]
    write_pairs(store, records)
    return store


def test_paired_view_keeps_the_named_datasets(store):
    assert paired_view(store, "test").column("pair_id").to_pylist() == [
        "rain100l/0",
        "rain100l/1",
        "synth/1",
        "synth/2",
    ]
    assert paired_view(store, "test", ["synth"]).column("pair_id").to_pylist() == ["synth/1", "synth/2"]
    assert paired_view(store, "train", ("rain100l", "synth")).num_rows == 2
    assert paired_view(store, "train", []).num_rows == 2  # empty: every dataset
    assert paired_datasets(store) == {"synth": {"train": 1, "test": 2}, "rain100l": {"test": 2, "train": 1}}


def test_test_sets_pick_one_dataset_or_all(store):
    imported = list_test_set("paired:rain100l:test", store)
    assert imported.name == "paired:rain100l:test"
    assert [row["image"] for row in imported.images] == ["rain100l/0", "rain100l/1"]
    assert imported.images[0]["target_uri"] == "/d/rain100l/gt/0.png"
    assert len(list_test_set("paired:test", store).images) == 4
    assert [row["image"] for row in list_test_set("paired:synth:test", store).images] == [
        "synth/1",
        "synth/2",
    ]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            "paired:nope:test",
            r"has no pairs; the paired table holds rain100l: 2 test, 1 train; synth: 2 test, 1 train",
        ),
        ("paired:rain100l:val", "has no pairs"),
        ("paired:tset", "not paired:<split> or paired:<dataset>:<split>"),
        ("paired:a:b:test", "not paired:<split>"),
        ("paired::test", "not paired:<split>"),
    ],
)
def test_bad_paired_specs_name_what_the_table_holds(store, spec, message):
    with pytest.raises(FairweatherError, match=message):
        list_test_set(spec, store)
