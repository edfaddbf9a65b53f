"""The one small metric-logging protocol every stage uses, with no-op and on-disk implementations.

Stages never import MLflow directly: they receive a :class:`MetricLogger`. The MLflow implementation lives in
``fairweather.stages.infra.tracking``; tests use :class:`DiskLogger` (inspectable JSON files) or :class:`NullLogger`.
Only rank 0 of a distributed job gets a real logger; the other ranks get a :class:`NullLogger`.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable


@runtime_checkable
class MetricLogger(Protocol):
    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def close(self, status: str = "FINISHED") -> None: ...

    def child(self, run_name: str, key: str) -> MetricLogger:
        """A nested run (a training round, a Tune trial, a pipeline stage) under this one.

        ``key`` identifies the child within its parent: asking again for the same key (a resumed round or trial)
        returns the run it started, never a duplicate. The caller closes the child.
        """
        ...


class NullLogger:
    """Drops everything (non-zero ranks, dry runs)."""

    def log_params(self, params: Mapping[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def set_tags(self, tags: Mapping[str, str]) -> None:
        pass

    def close(self, status: str = "FINISHED") -> None:
        pass

    def child(self, run_name: str, key: str) -> NullLogger:
        return self


class DiskLogger:
    """Writes ``params.json``, ``tags.json``, ``metrics.jsonl`` and ``artifacts/`` under one folder (children in
    ``children/<key>/``)."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        # A folder opened again (a resumed child) keeps what it already holds.
        self.params: dict[str, Any] = self._load("params.json")
        self.tags: dict[str, str] = self._load("tags.json")
        self.status: str | None = None

    def _load(self, name: str) -> dict[str, Any]:
        path = self.folder / name
        return json.loads(path.read_text()) if path.exists() else {}

    def _dump(self, name: str, data: Mapping[str, Any]) -> None:
        (self.folder / name).write_text(json.dumps(data, indent=1, sort_keys=True, default=str))

    def log_params(self, params: Mapping[str, Any]) -> None:
        self.params.update(params)
        self._dump("params.json", self.params)

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        record = {"step": step, "time": time.time(), **{k: float(v) for k, v in metrics.items()}}
        with open(self.folder / "metrics.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        target = self.folder / "artifacts" / (artifact_path or "")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target / Path(path).name)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        self.tags.update(tags)
        self._dump("tags.json", self.tags)

    def close(self, status: str = "FINISHED") -> None:
        self.status = status
        self._dump("status.json", {"status": status})

    def child(self, run_name: str, key: str) -> DiskLogger:
        """The child's files under ``children/<key>/`` (the same folder again for the same key)."""
        child = DiskLogger(self.folder / "children" / key)
        child.set_tags({"run_name": run_name, "key": key})
        return child

    def read_metrics(self) -> list[dict[str, Any]]:
        path = self.folder / "metrics.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
