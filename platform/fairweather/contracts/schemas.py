"""The tables every stage reads and writes: versioned pyarrow schemas and their primary keys.

A stage reads the tables the previous stage wrote and writes its own; these schemas are the whole contract between
them. Each schema carries its table name and version in its metadata, and :mod:`fairweather.contracts.tables`
refuses to read a table written with another version.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from .vocab import LABEL_KEY, RATING_WORDS

_TIME = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class TableSpec:
    """A table's name, version, schema and primary key (rows with equal keys are one row: the latest wins)."""

    name: str
    version: int
    fields: tuple[pa.Field, ...]
    key: tuple[str, ...]

    @property
    def schema(self) -> pa.Schema:
        meta = {b"fairweather.table": self.name.encode(), b"fairweather.version": str(self.version).encode()}
        return pa.schema(list(self.fields), metadata=meta)


POOL = TableSpec(
    name="pool",
    version=1,
    fields=(
        pa.field("image_id", pa.string(), nullable=False),  # sha256 of the file bytes, hex
        pa.field("uri", pa.string(), nullable=False),
        pa.field("weather_hint", pa.string()),  # from the folder name / manifest, if any
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
    ),
    key=("uri",),
)

LABELS = TableSpec(
    name="labels",
    version=2,
    fields=(
        pa.field("image_id", pa.string(), nullable=False),
        # sha256 of every setting that changes a label (model, prompt versions, generation, preprocessing)
        pa.field("labeler_fingerprint", pa.string(), nullable=False),
        pa.field("labeler_settings", pa.string(), nullable=False),  # those settings as sorted JSON
        pa.field("uri", pa.string(), nullable=False),
        pa.field("model_id", pa.string(), nullable=False),
        pa.field("rating_prompt", pa.string(), nullable=False),  # "visibility" or "quality"
        pa.field("rating_prompt_version", pa.string(), nullable=False),
        pa.field("description_prompt_version", pa.string(), nullable=False),
        pa.field("probs", pa.list_(pa.float64(), len(RATING_WORDS)), nullable=False),  # RATING_WORDS order
        pa.field("rating_complete", pa.bool_(), nullable=False),  # all five token ids were returned
        pa.field("r_vlm", pa.float64(), nullable=False),  # in [1, 5]
        pa.field("vlm_vis", pa.float64(), nullable=False),  # (r_vlm - 1) / 4, in [0, 1]
        pa.field("description", pa.string(), nullable=False),  # d_neg
        pa.field("d_pos", pa.string(), nullable=False),
        pa.field("weather", pa.string(), nullable=False),  # one of WEATHER_CLASSES
        pa.field("weather_hint", pa.string()),
        pa.field("labeled_at", _TIME, nullable=False),
    ),
    key=LABEL_KEY,
)

ERRORS = TableSpec(
    name="errors",
    version=1,
    fields=(
        pa.field("uri", pa.string(), nullable=False),
        pa.field("stage", pa.string(), nullable=False),
        pa.field("error_type", pa.string(), nullable=False),
        pa.field("message", pa.string(), nullable=False),
        pa.field("time", _TIME, nullable=False),
    ),
    key=("uri", "stage"),
)

PSEUDO_LABELS = TableSpec(
    name="pseudo_labels",
    # v2: one history per lineage (training run / Tune trial), every candidate's file, scores and the decision.
    version=2,
    fields=(
        pa.field("lineage", pa.string(), nullable=False),  # the training run the pseudo-labels belong to
        pa.field("image_id", pa.string(), nullable=False),  # the pool image (sha256 of its file bytes)
        pa.field("round", pa.int32(), nullable=False),  # 0: init candidates; k: the EMA teacher after round k
        pa.field("source", pa.string(), nullable=False),  # "input", a method's name, or "ema@round-<k>"
        # the candidate image (relative to the table root when inside it); "input" points at the pool file
        pa.field("candidate_uri", pa.string(), nullable=False),
        pa.field("candidate_sha256", pa.string(), nullable=False),  # of the file at candidate_uri
        pa.field("weather", pa.string(), nullable=False),
        pa.field("scores", pa.map_(pa.string(), pa.float64()), nullable=False),  # raw scorer outputs
        pa.field("normalised", pa.map_(pa.string(), pa.float64()), nullable=False),  # in [0, 1], 1 = best
        pa.field("combined_score", pa.float64(), nullable=False),
        # the rule as JSON (kind, metrics, weights, ranges, directions, margin): recorded, not implied
        pa.field("combination", pa.string(), nullable=False),
        pa.field("decided", pa.bool_(), nullable=False),  # False: scored, not yet compared (a job died)
        pa.field("selected", pa.bool_(), nullable=False),  # the image's current pseudo-label in its lineage
        pa.field("replaced_by", pa.string()),  # "<round>:<source>" of the candidate that replaced this one
        pa.field("created_at", _TIME, nullable=False),  # when the candidate was scored
        pa.field("decided_at", _TIME),  # when it was last compared (selected or not)
    ),
    key=("lineage", "image_id", "round", "source"),
)

METRICS = TableSpec(
    name="metrics",
    # v2: per-image rows next to the per-weather means, and method + resize policy in the key (two methods or
    # two policies of one evaluation run no longer overwrite each other).
    version=2,
    fields=(
        pa.field("run_id", pa.string(), nullable=False),  # the evaluation run's name
        pa.field("method", pa.string(), nullable=False),  # "input", a checkpoint or a baseline folder
        pa.field("dataset", pa.string(), nullable=False),  # the test set ("paired:test", a folder, "all")
        pa.field("resize_policy", pa.string(), nullable=False),  # scores depend on it: always recorded
        pa.field("weather", pa.string(), nullable=False),  # rain/haze/snow/unknown; "overall" on means
        pa.field("image", pa.string(), nullable=False),  # the image's name in its test set; "" on a mean row
        pa.field("metric", pa.string(), nullable=False),
        pa.field("value", pa.float64(), nullable=False),
        pa.field("num_images", pa.int64(), nullable=False),  # 1 on a per-image row
        pa.field("created_at", _TIME, nullable=False),
    ),
    key=("run_id", "method", "dataset", "resize_policy", "weather", "image", "metric"),
)

PAIRED = TableSpec(
    name="paired",
    # v1; clean_source, degradation and depth_source were added as nullable columns (parts written before them
    # read as null, see tables.read), so version 1 tables stay readable.
    version=1,
    fields=(
        pa.field("pair_id", pa.string(), nullable=False),  # "<dataset>/<relative name, no suffix>", unique
        pa.field("dataset", pa.string(), nullable=False),  # "synth", or the adapter's dataset name
        pa.field("split", pa.string(), nullable=False),  # train | val | test
        pa.field("weather", pa.string(), nullable=False),  # rain | haze | snow
        pa.field("input_uri", pa.string(), nullable=False),  # relative to the table root, or absolute URI
        pa.field("target_uri", pa.string(), nullable=False),
        pa.field("width", pa.int32(), nullable=False),
        pa.field("height", pa.int32(), nullable=False),
        # Generated pairs: where the clean image came from (photo path/URI or "procedural"), the degradation's
        # parameters as sorted JSON (weather, model, drawn values, crop), the depth's origin ("model:<name>",
        # "prior:ground-sky-darkchannel/v1", "procedural"). Null for imported pairs.
        pa.field("clean_source", pa.string()),
        pa.field("degradation", pa.string()),
        pa.field("depth_source", pa.string()),
        pa.field("created_at", _TIME, nullable=False),
    ),
    key=("pair_id",),
)

PIPELINE = TableSpec(
    name="pipeline",
    version=1,
    fields=(
        pa.field("stage", pa.string(), nullable=False),  # label | init | prompts | rounds | evaluate
        # sha256 prefix of the config sections the stage reads and of the versions of its input tables
        pa.field("input_key", pa.string(), nullable=False),
        pa.field("summary", pa.string(), nullable=False),  # the stage's summary as JSON
        pa.field("seconds", pa.float64(), nullable=False),
        pa.field("finished_at", _TIME, nullable=False),
    ),
    key=("stage", "input_key"),
)

TABLES: dict[str, TableSpec] = {
    spec.name: spec for spec in (POOL, LABELS, ERRORS, PSEUDO_LABELS, METRICS, PAIRED, PIPELINE)
}
