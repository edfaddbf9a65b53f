"""What the engine hands its callers, without torch: the scored rows' schema, the input-checks hook, and the
per-weather means of the scores.

A stage's driver (``fairweather evaluate``, ``fairweather pseudolabel``) builds the pipeline and reads its output
through this module and :mod:`~fairweather.stages.engine.rows`; the restoring and scoring themselves
(:mod:`~fairweather.stages.engine.score`) need torch and run in the actors. Keeping torch out of the driver keeps its
process at Ray's, pandas' and MLflow's size (about 0.3 GiB instead of 0.75 GiB) next to actors holding big photos.
Means are :func:`mean_of`: ``math.fsum`` (exactly rounded), so the order in which rows arrive from Ray never changes
a digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from fairweather.stages.engine.rows import ROW_SCHEMA, WORK_FIELDS

#: Weather name of the mean over every image of a group.
OVERALL = "overall"
#: ``input_checks(candidate, input) -> {name: value}``: scores of a candidate relative to the degraded input it
#: restores (both ``(H, W, 3)`` uint8, the candidate at the input's size); the values join the row's scores.
InputChecks = Callable[[np.ndarray, np.ndarray], Mapping[str, float]]

#: One row per row after scoring: the pixels are dropped; ``scores`` and ``seconds`` are JSON ``{name: value}``
#: (``seconds``: each metric's share of its calls, and ``input_checks``); example rows carry a PNG thumbnail, and
#: of their clean target where they have one. Columns a caller added between the steps pass through after these.
SCORED_SCHEMA = pa.schema(
    [ROW_SCHEMA.field(name) for name in (*WORK_FIELDS, "status", "error_type", "message", "restore_seconds")]
    + [("scores", pa.string()), ("seconds", pa.string()), ("thumbnail", pa.binary())]
    + [("target_thumbnail", pa.binary())]
)


def mean_of(values: Iterable[float]) -> float:
    """The mean, exactly rounded (``math.fsum``): the same digits in whatever order the values come."""
    values = list(values)
    return math.fsum(values) / len(values)


def weather_means(per_image: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Per-image scores -> one mean row per (``by`` ..., weather | ``overall``, metric).

    per_image: columns ``*by, weather, metric, value`` (one row per image and metric). Returns ``*by, weather,
    metric, value, num_images``; ``overall`` is the mean over every image of the ``by`` group (images of unknown
    weather count in overall only), not the mean of the weather means.
    """
    keys = [*by, "weather", "metric"]
    stacked = pd.concat([per_image, per_image.assign(weather=OVERALL)], ignore_index=True)
    grouped = stacked.groupby(keys, sort=True)["value"]
    return grouped.agg(value=mean_of, num_images="count").reset_index()[[*keys, "value", "num_images"]]
