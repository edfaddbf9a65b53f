"""The labeling job's outputs: stream result rows into ``pool`` / ``labels`` / ``errors``, then check and compact.

Crash consistency without transactions: each flush writes ``pool`` first, then ``labels``, then ``errors``, and a
resume counts an image as done only when it has both a ``labels`` row of this labeler and a ``pool`` row
(:func:`done_image_ids`). A crash between two writes therefore leaves at most pool rows whose labels are missing
(relabeled on resume) or failures not yet in ``errors`` (retried on resume), and a table written by older code with
labels but no pool rows is repaired by the next run. At the end :func:`finish_tables` compacts the three tables
(one row per key for any reader; a file's label-stage errors disappear once it is labeled) and checks, on the
tables themselves, that every file of the job is where its outcome says.
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.compute as pc

from fairweather.contracts.io import relative_uri
from fairweather.contracts.tables import TableStore
from fairweather.stages.infra.pool import RESULT_SCHEMA

log = logging.getLogger(__name__)

#: Failed files named one by one on the console; the rest are counted (all of them are in the errors table).
REPORTED_FAILURES = 20
#: ``errors.stage`` values the label job writes; a later success of the same file clears them.
LABEL_ERROR_STAGES = ("list", "read", "decode", "label")


def done_image_ids(store: TableStore, fingerprint: str) -> frozenset[str]:
    """Images labeled with ``fingerprint`` that also have a ``pool`` row (else: relabel, which repairs pool)."""
    labels = store.read("labels", ["image_id", "labeler_fingerprint"])
    labeled = labels.filter(pc.equal(labels.column("labeler_fingerprint"), fingerprint)).column("image_id")
    pooled = store.read("pool", ["image_id"]).column("image_id")
    return frozenset(labeled.filter(pc.is_in(labeled, pooled)).to_pylist())


class ResultWriter:
    """Buffers result rows and writes them as ``pool`` / ``labels`` / ``errors`` parts; counts every outcome.

    Flushes every ``flush_rows`` rows or, from a background thread while used as a context manager, every
    ``flush_seconds``, whichever comes first, so a crash keeps what finished more than ``flush_seconds`` ago.
    URIs are stored relative to the table root (:func:`fairweather.contracts.io.relative_uri`).
    """

    def __init__(
        self, store: TableStore, label_columns: dict[str, str], flush_rows: int, flush_seconds: float
    ) -> None:
        """label_columns: the string columns every ``labels`` row of this job shares (fingerprint, model id, ...)."""
        self.store, self.label_columns = store, label_columns
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.pending: list[pa.Table] = []
        self.counts = {"labeled": 0, "skipped": 0, "failed": 0}
        #: listed URI -> (status, image_id or None, error stage or None): what finish_tables checks.
        self.outcomes: dict[str, tuple[str, str | None, str | None]] = {}
        #: One ``{uri, stage, error_type, message}`` per failed file of this job.
        self.failures: list[dict[str, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="label-flush", daemon=True)

    def __enter__(self) -> ResultWriter:
        self._ticker.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._stop.set()
        self._ticker.join()
        if exc_type is None:
            self.flush()
            return
        try:
            self.flush()  # keep every finished row, even when the job dies
        except Exception:  # the job's own error is the one to report; this one goes to the log
            log.exception("could not write the last finished rows while the job was failing")

    def _tick(self) -> None:
        while not self._stop.wait(self.flush_seconds):
            try:
                self.flush()
            except Exception:  # the main thread's next flush raises it again; a timer must not die silently
                log.exception("periodic flush failed")

    def add(self, batch: pa.Table) -> None:
        rows = batch.select(["uri", "status", "image_id", "error_stage"]).to_pylist()
        with self._lock:
            for row in rows:
                self.counts[row["status"]] += 1
                self.outcomes[row["uri"]] = (row["status"], row["image_id"], row["error_stage"])
            self.pending.append(batch)
            due = sum(t.num_rows for t in self.pending) >= self.flush_rows
        if due:
            self.flush()

    def add_failures(self, uris: list[str], stage: str, error_type: str, message: str) -> None:
        """Files that never reached the pipeline (unnameable) or that Ray Data dropped: one ``errors`` row each."""
        rows = [
            {"uri": u, "status": "failed", "error_stage": stage, "error_type": error_type, "message": message}
            for u in uris
        ]
        self.add(pa.Table.from_pylist(rows, schema=RESULT_SCHEMA))

    def _relative(self, rows: pa.Table) -> pa.Table:
        uris = [relative_uri(self.store.root, uri) for uri in rows.column("uri").to_pylist()]
        return rows.set_column(rows.schema.get_field_index("uri"), "uri", pa.array(uris, pa.string()))

    def flush(self) -> None:
        with self._lock:
            if not self.pending:
                return
            listed = pa.concat_tables(self.pending)
            rows = self._relative(listed)
            now = pa.scalar(datetime.now(timezone.utc), pa.timestamp("us", tz="UTC"))
            # Order matters for crash consistency (module docstring): pool, then labels, then errors.
            self.store.write("pool", rows.filter(pc.is_valid(rows.column("width"))))
            labeled = rows.filter(pc.equal(rows.column("status"), "labeled"))
            for name, value in self.label_columns.items():
                labeled = labeled.append_column(name, pa.array([value] * labeled.num_rows, pa.string()))
            self.store.write(
                "labels", labeled.append_column("labeled_at", pa.array([now] * labeled.num_rows))
            )
            is_failed = pc.equal(rows.column("status"), "failed")
            failed = rows.filter(is_failed).rename_columns({"error_stage": "stage"})
            self.store.write("errors", failed.append_column("time", pa.array([now] * failed.num_rows)))
            self.pending = []  # only now: a failed write keeps the rows for the final flush to retry
        self._report(listed.filter(is_failed).rename_columns({"error_stage": "stage"}))

    def _report(self, failed: pa.Table) -> None:
        """Remember each failure (with its listed URI) and name it on the console, up to REPORTED_FAILURES."""
        for row in failed.select(["uri", "stage", "error_type", "message"]).to_pylist():
            self.failures.append(row)
            if len(self.failures) <= REPORTED_FAILURES:
                kind, message = row["error_type"], row["message"]
                reason = message if message.startswith(f"{kind}:") else f"{kind}: {message}"
                log.warning("not labeled: %s (%s)", row["uri"], reason)
            elif len(self.failures) == REPORTED_FAILURES + 1:
                log.warning("more files failed; every one is in the errors table under %s", self.store.root)

    def failures_by_reason(self) -> Counter[str]:
        """``{"decode.truncated": 2, "label.ValueError": 1, ...}`` over this job's failures."""
        return Counter(f"{row['stage']}.{row['error_type']}" for row in self.failures)


def finish_tables(store: TableStore, writer: ResultWriter, fingerprint: str, started: datetime) -> None:
    """Compact ``pool`` / ``labels`` / ``errors`` and check on the tables that every file of the job is accounted.

    started: when the job began; older label-stage errors of a file that this job labeled, skipped or failed
    again are dropped (a success clears the file's error; a new failure replaces the old one).
    """
    outcomes = {relative_uri(store.root, uri): outcome for uri, outcome in writer.outcomes.items()}
    succeeded = pa.array([u for u, (status, _, _) in outcomes.items() if status != "failed"], pa.string())
    seen = pa.array(list(outcomes), pa.string())
    since = pa.scalar(started, pa.timestamp("us", tz="UTC"))

    def cleared(errors: pa.Table) -> pa.Array:
        ours = pc.is_in(errors.column("stage"), pa.array(LABEL_ERROR_STAGES))
        stale = pc.and_(pc.is_in(errors.column("uri"), seen), pc.less(errors.column("time"), since))
        return pc.and_(ours, pc.or_(pc.is_in(errors.column("uri"), succeeded), stale))

    store.compact("pool")
    store.compact("labels")
    store.compact("errors", drop=cleared)
    _check_tables(store, outcomes, fingerprint)


def _check_tables(store: TableStore, outcomes: dict[str, tuple], fingerprint: str) -> None:
    """Raise RuntimeError (a bug, not a user error) if the tables disagree with the job's outcomes."""
    labels = store.read("labels", ["image_id", "labeler_fingerprint"])
    labeled = set(
        labels.filter(pc.equal(labels.column("labeler_fingerprint"), fingerprint))["image_id"].to_pylist()
    )
    pool = store.read("pool", ["uri", "image_id"])
    pool_uris, pool_ids = set(pool.column("uri").to_pylist()), set(pool.column("image_id").to_pylist())
    errors = store.read("errors", ["uri", "stage"])
    error_keys = set(zip(errors.column("uri").to_pylist(), errors.column("stage").to_pylist(), strict=True))
    problems = [f"labels of {image_id} without a pool row" for image_id in sorted(labeled - pool_ids)]
    for uri, (status, image_id, stage) in sorted(outcomes.items()):
        if status == "labeled" and not (image_id in labeled and uri in pool_uris):
            problems.append(f"{uri} was labeled but its labels or pool row is missing")
        elif status == "skipped" and image_id not in labeled:
            problems.append(f"{uri} was skipped as done but has no label")
        elif status == "failed" and (uri, stage) not in error_keys:
            problems.append(f"{uri} failed but has no errors row")
    if problems:
        raise RuntimeError(f"label: the tables under {store.root} disagree with the job: {problems[:5]}")
