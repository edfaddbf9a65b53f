"""The evaluation job's inputs and its rows: test sets listed on the driver, one engine row per (image, method).

A test set is ``paired:<split>`` (the ``paired`` table: inputs with clean targets, every dataset in it),
``paired:<dataset>:<split>`` (one dataset of it: ``synth`` for the generated pairs, or the name an
``import-pairs --dataset`` gave, so imported and generated pairs are scored apart), or a folder / glob / manifest of
images listed under the labeling stage's rules (:func:`fairweather.stages.infra.pool.list_pool`: weather from the
sub-folder name or the manifest, nothing skipped silently). Each image is scored once per method: ``input`` (the
untouched image), every checkpoint (restored in actors), every baseline folder (another method's output for the
same image, matched by name). The engine (:mod:`fairweather.stages.engine`) reads, restores and scores them; a
scored row maps back to the ``metrics`` table's columns with :func:`metric_rows` (dataset = the row's group,
method = its source).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.tables import TableStore
from fairweather.data.views import paired_datasets, paired_view
from fairweather.stages.engine.rows import (
    INPUT_SOURCE,
    KIND_CHECKPOINT,
    KIND_FILE,
    KIND_INPUT,
    OutputFolder,
    work_row,
)
from fairweather.stages.infra.pool import list_pool

#: The ``paired`` table's splits.
SPLITS = ("train", "val", "test")
#: Method name of the untouched inputs.
INPUT_METHOD = INPUT_SOURCE


@dataclass
class TestSet:
    """The images of one test set: ``{"image", "weather", "input_uri", "target_uri"}`` rows sorted by image.

    image: the image's name in the set (a pair id, or the path below the folder without suffix), which is also
    what baseline outputs are matched on. not_listed: listing skips by reason (hidden, suffix, ...).
    """

    name: str
    images: list[dict]
    not_listed: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of_pairs(cls, name: str, pairs: list[dict]) -> TestSet:
        """A test set of ``paired`` view rows (``pair_id``, ``weather``, resolved ``input_uri`` / ``target_uri``)."""
        keys = ("weather", "input_uri", "target_uri")
        return cls(name, [{"image": row["pair_id"], **{k: row[k] for k in keys}} for row in pairs])


def _stem(path: str) -> str:
    return str(PurePosixPath(path).with_suffix(""))


def _paired_rows(spec: str, store: TableStore) -> list[dict]:
    parts = spec.split(":")[1:]
    if len(parts) not in (1, 2) or parts[-1] not in SPLITS or not all(parts):
        raise FairweatherError(
            f"evaluate.test_sets: {spec!r} is not paired:<split> or paired:<dataset>:<split> "
            f"(split one of {', '.join(SPLITS)})"
        )
    dataset, split = (None, parts[0]) if len(parts) == 1 else parts
    rows = paired_view(store, split, None if dataset is None else [dataset]).to_pylist()
    if dataset is not None and not rows:
        held = paired_datasets(store)
        listed = "; ".join(
            f"{name}: " + ", ".join(f"{n} {s}" for s, n in sorted(splits.items()))
            for name, splits in sorted(held.items())
        )
        raise FairweatherError(
            f"evaluate.test_sets: {spec!r} has no pairs; the paired table holds {listed or 'no pairs'}"
        )
    return rows


def name_test_sets(specs: Sequence[str]) -> list[str]:
    """A name per ``evaluate.test_sets`` entry that tells it from the others (the ``metrics`` table's dataset): a
    ``paired:`` spec as written; a folder, glob or manifest by its last path part without suffix
    (``devdata/rain100l`` -> ``rain100l``), with as many parent folders as it takes to differ from another entry's
    (``a/test`` and ``b/test``, whose images would otherwise be scored as one set). An entry listed twice is
    refused."""
    repeated = sorted({spec for spec in specs if specs.count(spec) > 1})
    if repeated:
        raise FairweatherError(f"evaluate.test_sets lists {', '.join(map(repr, repeated))} more than once")

    def tail(spec: str, depth: int) -> str:
        if spec.startswith("paired:"):
            return spec
        path = PurePosixPath(spec.rstrip("/"))
        parts = [*path.parent.parts, path.stem or path.name]
        return "/".join(parts[-depth:]) if depth <= len(parts) else spec

    depths = [1] * len(specs)
    names = [tail(spec, 1) for spec in specs]
    while len(set(names)) < len(names):  # terminates: at full depth every entry is its distinct spec
        for i, name in enumerate(names):
            if names.count(name) > 1:
                depths[i] += 1
        names = [tail(spec, depth) for spec, depth in zip(specs, depths, strict=True)]
    return names


def list_test_set(
    spec: str,
    store: TableStore,
    *,
    name: str | None = None,
    follow_links_out: bool = False,
    roots: tuple[str, ...] = (),
) -> TestSet:
    """List ``paired:<split>`` or ``paired:<dataset>:<split>`` from ``store``'s paired table, or a folder / glob /
    manifest of images, as test set ``name`` (default: its name in :func:`name_test_sets` alone). A ``paired:``
    spec that names an unknown split or dataset, or one without pairs of that split, raises
    :class:`FairweatherError` naming what the table holds."""
    name = name or name_test_sets([spec])[0]
    if spec.startswith("paired:"):
        return TestSet.of_pairs(name, _paired_rows(spec, store))
    listing = list_pool(spec, follow_links_out=follow_links_out, roots=roots, what="test set")
    root = spec.rstrip("/")
    images = []
    for item in listing.items:
        uri = str(item["uri"])
        # Names relative to the listed folder keep rain/001 and snow/001 apart; manifests list arbitrary paths.
        relative = uri[len(root) + 1 :] if uri.startswith(root + "/") else PurePosixPath(uri).name
        images.append(
            {
                "image": _stem(relative),
                "weather": item["weather_hint"] or "unknown",
                "input_uri": uri,
                "target_uri": None,
            }
        )
    not_listed = {reason: len(uris) for reason, uris in listing.skipped.items()}
    if listing.bad_names:
        not_listed["name_not_utf8"] = len(listing.bad_names)
    return TestSet(name, images, not_listed)


def work_rows(
    test_sets: list[TestSet],
    checkpoints: list[str],
    baselines: dict[str, OutputFolder],
    *,
    include_input: bool,
    examples: int,
) -> tuple[list[dict], dict[str, list[str]]]:
    """One engine work row per (image, method), and per baseline the test images it has no output for.

    The first ``examples`` images of each test set are flagged for the report's grid of example restorations.
    """
    rows, unmatched = [], {name: [] for name in baselines}
    for test_set in test_sets:
        for number, image in enumerate(test_set.images):
            common = {
                "group": test_set.name,
                "image": image["image"],
                "weather": image["weather"],
                "target_uri": image["target_uri"],
                "example": number < examples,
            }
            if include_input:
                rows.append(
                    work_row(**common, source=INPUT_METHOD, kind=KIND_INPUT, source_uri=image["input_uri"])
                )
            for name in checkpoints:
                rows.append(
                    work_row(**common, source=name, kind=KIND_CHECKPOINT, source_uri=image["input_uri"])
                )
            for name, outputs in baselines.items():
                uri = outputs.match(image["image"])
                if uri is None:
                    unmatched[name].append(f"{test_set.name}:{image['image']}")
                else:
                    rows.append(
                        work_row(
                            **common,
                            source=name,
                            kind=KIND_FILE,
                            source_uri=uri,
                            input_uri=image["input_uri"],
                        )
                    )
    return rows, unmatched


def metric_rows(scored: dict) -> list[dict]:
    """A scored engine row as per-image ``metrics`` rows (without the resize policy): one per metric it has."""
    base = {
        "method": scored["source"],
        "dataset": scored["group"],
        "weather": scored["weather"],
        "image": scored["image"],
    }
    return [{**base, "metric": name, "value": value} for name, value in json.loads(scored["scores"]).items()]
