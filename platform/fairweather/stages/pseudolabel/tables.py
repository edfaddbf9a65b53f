"""The pseudo-label job's table writes: candidate rows streamed in as they are scored, then one decision part.

Two phases, each crash-safe without transactions:

1. Every scored candidate is written (flushed every ``pseudo.flush_rows`` rows or ``pseudo.flush_seconds``) as a
   *pending* row (``decided = False``, ``combined_score`` NaN): a crash keeps it, and a rerun skips its key.
2. At the end the driver compares, per image, every pending row of the lineage with the image's current
   pseudo-label (:func:`fairweather.pseudo.select`) and writes all outcomes as ONE table part (atomic): the winner
   ``selected``, the previous pseudo-label unselected with ``replaced_by`` naming the winner, every candidate
   ``decided`` with its combined score. A crash before that part leaves pending rows, which the next run decides.

Rows are keyed ``(lineage, image_id, round, source)``; candidate URIs inside the table root are stored relative.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter, defaultdict
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fairweather.contracts.errors import FairweatherError
from fairweather.contracts.io import relative_uri, resolve_uri
from fairweather.contracts.tables import TableStore
from fairweather.pseudo import Candidate, Rule, normalised_scores, select
from fairweather.stages.engine.rows import INPUT_SOURCE

TABLE = "pseudo_labels"


def _table(rows: list[dict]) -> pa.Table:
    """Rows (score maps as dicts) as a table of the ``pseudo_labels`` schema."""
    return pa.Table.from_pylist(rows, schema=TableStore.spec(TABLE).schema)


def history_key(row: dict) -> str:
    """The id of a candidate within its image and lineage: ``"<round>:<source>"`` (what ``replaced_by`` holds)."""
    return f"{row['round']}:{row['source']}"


def lineage_rows(store: TableStore, lineage: str) -> list[dict]:
    """Every ``pseudo_labels`` row of ``lineage`` (score maps as dicts)."""
    table = store.read(TABLE)
    return _as_dicts(table.filter(pc.equal(table.column("lineage"), lineage)).to_pylist())


def _as_dicts(rows: list[dict]) -> list[dict]:
    for row in rows:  # Arrow gives map columns back as (key, value) pairs
        row["scores"], row["normalised"] = dict(row["scores"]), dict(row["normalised"])
    return rows


def pool_ids_of_file(store: TableStore, ref: str) -> list[str]:
    """The ``image_id`` of every ``pool`` row whose file ``ref`` names: its path as typed (relative to the current
    folder or absolute; the table stores it relative to its root), its uri, or the uri's last parts
    (``photo.jpg``, ``rain/photo.jpg``)."""
    pool = store.read("pool", ["image_id", "uri"]).to_pylist()
    tail, path = "/" + ref.lstrip("./"), resolve_uri(os.getcwd(), ref)
    return sorted(
        {
            row["image_id"]
            for row in pool
            if row["uri"] == ref or row["uri"].endswith(tail) or resolve_uri(store.root, row["uri"]) == path
        }
    )


def resolve_image_id(store: TableStore, ref: str) -> str:
    """The full ``image_id`` in ``pseudo_labels`` that ``ref`` names: itself, a unique prefix of one, or the pool
    file it was listed from (its path or name). A user error (one line) for an empty table, an unknown id or file,
    or an ambiguous one."""
    ref = ref.strip()
    ids = store.read(TABLE, ["image_id"]).column("image_id")
    if len(ids) == 0:
        raise FairweatherError(f"no pseudo-labels under {store.root}: run `fairweather pseudolabel` first")
    prefix = ref.lower()
    matches = sorted(set(ids.filter(pc.starts_with(ids, prefix)).to_pylist())) if prefix else []
    if prefix in matches:
        return prefix
    if not matches and ref:
        known = set(ids.to_pylist())
        matches = [image_id for image_id in pool_ids_of_file(store, ref) if image_id in known]
    if not matches:
        raise FairweatherError(
            f"no image id {ref!r} (nor one starting with it, nor a pool file of that name) in the pseudo_labels "
            f"under {store.root}"
        )
    if len(matches) > 1:
        shown = ", ".join(m[:16] for m in matches[:4]) + (", ..." if len(matches) > 4 else "")
        raise FairweatherError(
            f"image id prefix {ref!r} is ambiguous: {len(matches)} images ({shown}); give more of it"
        )
    return matches[0]


def image_rows(store: TableStore, image_id: str) -> list[dict]:
    """Every ``pseudo_labels`` row of one image, all lineages (score maps as dicts)."""
    table = store.read(TABLE)
    return _as_dicts(table.filter(pc.equal(table.column("image_id"), image_id)).to_pylist())


def missing_scores(scores: dict[str, float], rule: Rule) -> list[str]:
    """The rule's scorers that gave no finite value (the candidate then cannot be compared: an ``errors`` row)."""
    return [name for name in rule.metrics if not math.isfinite(scores.get(name, math.nan))]


def candidate_row(
    scored: dict, *, store: TableStore, lineage: str, round_index: int, rule: Rule, now: datetime
) -> dict:
    """A pending ``pseudo_labels`` row from a scored engine row (its ``image`` is the pool image's ``image_id``;
    :func:`~fairweather.stages.pseudolabel.io.store_candidates` added the candidate's file and sha256)."""
    scores = {name: float(value) for name, value in json.loads(scored["scores"]).items()}
    return {
        "lineage": lineage,
        "image_id": scored["image"],
        "round": round_index,
        "source": scored["source"],
        "candidate_uri": relative_uri(store.root, scored["candidate_uri"]),
        "candidate_sha256": scored["candidate_sha256"],
        "weather": scored["weather"],
        "scores": scores,
        "normalised": normalised_scores(scores, rule),
        "combined_score": math.nan,  # set when compared (rank votes depend on the image's whole candidate set)
        "combination": rule.to_json(),
        "decided": False,
        "selected": False,
        "replaced_by": None,
        "created_at": now,
        "decided_at": None,
    }


class CandidateWriter:
    """Buffers pending rows and writes them as table parts every ``flush_rows`` rows or ``flush_seconds``
    (checked as rows arrive, and on exit even when the job fails), so a crash loses at most the last interval."""

    def __init__(self, store: TableStore, flush_rows: int, flush_seconds: float) -> None:
        self.store, self.flush_rows, self.flush_seconds = store, flush_rows, flush_seconds
        self.pending: list[dict] = []
        self.written = 0
        self._last = time.monotonic()

    def add(self, row: dict) -> None:
        self.pending.append(row)
        if len(self.pending) >= self.flush_rows or time.monotonic() - self._last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.store.write(TABLE, _table(self.pending))
            self.written += len(self.pending)
            self.pending = []
        self._last = time.monotonic()

    def __enter__(self) -> CandidateWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.flush()  # keep every finished row, also when the job is failing


def decide(store: TableStore, lineage: str, rule: Rule, now: datetime) -> tuple[int, int]:
    """Compare every pending row of ``lineage`` with its image's current pseudo-label; write the outcomes as one
    part. Returns (images whose pseudo-label changed, a first one included; images that kept theirs)."""
    rows = lineage_rows(store, lineage)
    pending: dict[str, list[dict]] = defaultdict(list)
    current: dict[str, dict] = {}
    inputs: dict[
        str, dict
    ] = {}  # every image's input as scored: the baseline no candidate is accepted without
    for row in sorted(rows, key=lambda r: (r["round"], r["source"])):  # a fixed order: ties are reproducible
        if row["source"] == INPUT_SOURCE:
            inputs.setdefault(row["image_id"], row)
        if not row["decided"]:
            pending[row["image_id"]].append(row)
        elif row["selected"]:
            current[row["image_id"]] = row
    updates, replaced = [], 0
    for image_id, candidates in pending.items():
        now_row = current.get(image_id)
        input_row = inputs.get(image_id)
        if now_row is not None and now_row["source"] == INPUT_SOURCE:
            input_row = now_row  # the input is the label: compared once, as the input (no guards apply to it)
        decision = select(
            None if now_row is None else Candidate(history_key(now_row), now_row["scores"]),
            [Candidate(history_key(row), row["scores"]) for row in candidates],
            rule,
            input=None if input_row is None else Candidate(history_key(input_row), input_row["scores"]),
        )
        for row in candidates:
            key = history_key(row)
            updates.append(
                {
                    **row,
                    "combined_score": decision.combined[key],
                    "decided": True,
                    "selected": key == decision.winner,
                    "decided_at": now,
                }
            )
        if decision.winner is not None:
            replaced += 1
            winner = decision.winner
            if input_row is not None and input_row["decided"] and winner == history_key(input_row):
                # A label that lost its standing (it fails guards tightened since) gives way to the input: a row
                # of this round says so, as the input's row of round 0 says it was chosen then.
                back = {**input_row, "round": max(row["round"] for row in candidates), "selected": True,
                        "normalised": normalised_scores(input_row["scores"], rule),
                        "combined_score": decision.combined[winner], "combination": rule.to_json(),
                        "replaced_by": None, "created_at": now, "decided_at": now}  # fmt: skip
                winner = history_key(back)
                updates.append(back)
            if now_row is not None:
                updates.append({**now_row, "selected": False, "replaced_by": winner, "decided_at": now})
    if updates:
        store.write(TABLE, _table(updates))
    return replaced, len(pending) - replaced


def selected_stats(
    store: TableStore, lineage: str
) -> tuple[float, dict[str, dict[str, float]], dict[str, int]]:
    """Mean combined score of the lineage's pseudo-labels, per weather their count, mean and quantiles, and how
    many came from each source (``input``, ``warmup``, ``ema@round-1``, ...)."""
    rows = [row for row in lineage_rows(store, lineage) if row["selected"]]
    sources = dict(Counter(row["source"] for row in rows).most_common())
    by_weather: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        by_weather[row["weather"]].append(row["combined_score"])
        by_weather["overall"].append(row["combined_score"])
    stats = {
        weather: {
            "count": len(values),
            "mean": float(np.mean(values)),
            **{f"q{int(q * 100)}": float(np.quantile(values, q)) for q in (0.1, 0.5, 0.9)},
        }
        for weather, values in sorted(by_weather.items())
    }
    return (stats["overall"]["mean"] if rows else math.nan), stats, sources
