"""No credential leaves the config (issue 19): a planted secret appears in no file a run writes (checkpoints, the
MLflow store and its artifacts, tables) and in none of its output; MLflow's own "View run ... at: <URI>" lines,
which would show a tracking server's ``user:password``, are replaced by a masked line."""

from __future__ import annotations

import http.server
import json
import logging
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from fairweather.cli import main
from fairweather.contracts.redact import MASK
from fairweather.stages.synth.driver import run_synth

from .train_fixtures import tiny_config, tiny_overrides

SECRET = "SECRETPLANT"
#: Credentials planted where the run carries them but does not use them (train never opens these locations).
PLANTED = [
    f'data.roots=["s3://KEYPLANT:{SECRET}@bucket/x"]',
    f"data.paired=s3://KEYPLANT:{SECRET}@bucket/paired",
]


def _leaks(root: Path) -> list[str]:
    """Every file under ``root`` whose bytes (or, for a zip such as a torch checkpoint, a member's bytes) hold the
    secret."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        members = []
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                members = [archive.read(name) for name in archive.namelist()]
        if any(SECRET.encode() in blob for blob in (data, *members)):
            found.append(str(path.relative_to(root)))
    return found


def test_a_train_run_writes_and_prints_no_planted_secret(local_ray, model_cache, tmp_path, capfd):
    from fairweather.training.state import load_state

    root = tmp_path / "project"
    run_synth(tiny_config(root, model_cache))
    capfd.readouterr()
    overrides = [
        *tiny_overrides(root, model_cache, **{"train.iterations_per_round": 3}),
        "train.run_name=secret",
        *PLANTED,
    ]
    assert main(["train", "--config", "smoke", *overrides]) == 0
    out, err = capfd.readouterr()

    assert SECRET not in out + err
    assert (
        root / "runs" / "mlflow.db"
    ).exists()  # the store and its artifacts are under the root: searched too
    assert _leaks(root) == []
    # The masked config is still there, with what is not secret (the bucket) kept.
    states = sorted((root / "train" / "secret").rglob("state.pt"))
    models = sorted((root / "runs" / "mlartifacts").rglob("model/model.pt"))
    assert states and models
    for path in (states[-1], models[-1]):
        assert load_state(path)["config"]["data"]["roots"] == [f"s3://{MASK}@bucket/x"]


# -- MLflow's console lines for a tracking server -----------------------------------------------------------------


class _TrackingStub(http.server.BaseHTTPRequestHandler):
    """The two calls MLflow makes when a run on a tracking server ends: ``runs/update``, then (only to print the
    run's URL) ``runs/get``."""

    paths: ClassVar[list[str]] = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.paths.append(self.path.split("?")[0])
        self._reply({"run_info": {"run_id": "r1", "experiment_id": "7", "status": "FINISHED"}})

    def do_GET(self) -> None:
        self.paths.append(self.path.split("?")[0])
        info = {
            "run_id": "r1",
            "run_uuid": "r1",
            "experiment_id": "7",
            "run_name": "planted",
            "status": "FINISHED",
        }
        self._reply({"run": {"info": info, "data": {}}})

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def tracking_server() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TrackingStub)
    _TrackingStub.paths = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://KEYPLANT:{SECRET}@127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_closing_a_run_on_a_tracking_server_prints_no_credentials(tracking_server, capfd, caplog):
    from mlflow.tracking import MlflowClient

    from fairweather.stages.infra.tracking import MLflowLogger

    logger = MLflowLogger.__new__(MLflowLogger)  # a run on the server (creating one needs the whole REST API)
    logger.client, logger.run_id, logger.experiment_id = MlflowClient(tracking_uri=tracking_server), "r1", "7"
    with caplog.at_level(logging.INFO, logger="fairweather.stages.infra.tracking"):
        logger.close()
    out, err = capfd.readouterr()
    assert "/api/2.0/mlflow/runs/update" in _TrackingStub.paths
    assert SECRET not in out + err + caplog.text
    assert "View run" not in out  # MLflow's own line is off ...
    assert f"http://{MASK}@127.0.0.1" in caplog.text  # ... and the link is logged masked
