"""Driver-side views of the stage tables that training reads: paired pairs by split, and the labeled real pool.

Built once on the driver (plain pyarrow, no Ray) and handed to the trainer as Ray Datasets. Every URI in a view is
resolved against the table store's root, so workers on other nodes read the same files (a cloud root gives cloud URIs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc

from fairweather.contracts.io import resolve_uri
from fairweather.contracts.tables import TableStore, latest_per_key

#: Columns of :func:`paired_view`.
PAIRED_COLUMNS = ("pair_id", "weather", "input_uri", "target_uri")
#: Columns of :func:`real_view`; ``pseudo_uri`` is null for images without a selected pseudo-label yet.
REAL_COLUMNS = ("image_id", "uri", "weather", "d_pos", "d_neg", "pseudo_uri")


def _resolved(store: TableStore, column: pa.ChunkedArray) -> pa.Array:
    return pa.array(
        [None if uri is None else resolve_uri(store.root, uri) for uri in column.to_pylist()], pa.string()
    )


def paired_view(store: TableStore, split: str, datasets: Sequence[str] | None = None) -> pa.Table:
    """The ``paired`` rows of ``split`` (train / val / test), sorted by pair_id, URIs resolved.

    datasets: keep only these ``dataset`` values (``synth`` = the generated pairs, else an import's name);
    None or empty: every dataset.
    """
    paired = store.read("paired")
    keep = pc.equal(paired.column("split"), split)
    if datasets:
        keep = pc.and_(keep, pc.is_in(paired.column("dataset"), pa.array(list(datasets), pa.string())))
    rows = paired.filter(keep).sort_by("pair_id")
    return pa.table(
        {
            "pair_id": rows.column("pair_id"),
            "weather": rows.column("weather"),
            "input_uri": _resolved(store, rows.column("input_uri")),
            "target_uri": _resolved(store, rows.column("target_uri")),
        }
    )


def paired_datasets(store: TableStore) -> dict[str, dict[str, int]]:
    """``{dataset: {split: pairs}}`` of the ``paired`` table (what ``paired:<dataset>:<split>`` can name)."""
    table = store.read("paired", ["dataset", "split"])
    out: dict[str, dict[str, int]] = {}
    for dataset, split in zip(
        table.column("dataset").to_pylist(), table.column("split").to_pylist(), strict=True
    ):
        out.setdefault(dataset, {}).setdefault(split, 0)
        out[dataset][split] += 1
    return out


def real_view(store: TableStore, lineage: str | None) -> pa.Table:
    """Real images = ``pool`` ⋈ ``labels`` ⋈ the selected ``pseudo_labels`` row of ``lineage``, one row per image_id.

    The most recent label of an image is used (whatever model made it); weather is the folder/manifest hint when
    there is one, else the VLM's class; d_neg is the VLM's description and d_pos its clear-weather rewrite. Images
    that appear under several URIs (same bytes) are one training image. lineage: the training run whose
    pseudo-labels to join (each run / Tune trial has its own history); ``None``: no pseudo-labels.
    """
    pool = store.read("pool", ["image_id", "uri"])
    labels = store.read(
        "labels", ["image_id", "description", "d_pos", "weather", "weather_hint", "labeled_at"]
    )
    labels = latest_per_key(labels.sort_by("labeled_at"), ["image_id"])
    pool = latest_per_key(pool.sort_by("uri"), ["image_id"])
    joined = pool.join(labels, "image_id", join_type="inner")
    pseudo = store.read("pseudo_labels", ["lineage", "image_id", "candidate_uri", "selected", "created_at"])
    if lineage is None:
        pseudo = pseudo.slice(0, 0)
    else:
        pseudo = pseudo.filter(
            pc.and_(pseudo.column("selected"), pc.equal(pseudo.column("lineage"), lineage))
        )
    pseudo = latest_per_key(pseudo.sort_by("created_at"), ["image_id"]).select(["image_id", "candidate_uri"])
    joined = joined.join(pseudo, "image_id", join_type="left outer").sort_by("image_id")
    weather = pc.coalesce(joined.column("weather_hint"), joined.column("weather"))
    return pa.table(
        {
            "image_id": joined.column("image_id"),
            "uri": _resolved(store, joined.column("uri")),
            "weather": weather,
            "d_pos": joined.column("d_pos"),
            "d_neg": joined.column("description"),
            "pseudo_uri": _resolved(store, joined.column("candidate_uri")),
        }
    )


def table_versions(
    store: TableStore, names: tuple[str, ...] = ("paired", "pool", "labels", "pseudo_labels")
) -> dict:
    """``{table: "<rows>:<sha256 prefix of its key columns>"}``: what a run trained on, recorded in checkpoints."""
    versions = {}
    for name in names:
        keys = store.read(name, list(store.spec(name).key))
        digest = hashlib.sha256()
        for column in keys.sort_by([(k, "ascending") for k in keys.column_names]).columns:
            digest.update("\x1f".join(map(str, column.to_pylist())).encode())
        versions[name] = f"{keys.num_rows}:{digest.hexdigest()[:12]}"
    return versions
