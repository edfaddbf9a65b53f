"""Secure defaults: credentials are masked wherever a config is logged or printed, checkpoints load with
``weights_only=True``, nothing binds a public interface, manifests cannot name files outside ``data.roots``."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from fairweather.cli import main
from fairweather.contracts.io import within_roots
from fairweather.contracts.redact import MASK, is_secret_key, redact, redact_text
from fairweather.stages.infra.pool import PoolError, list_pool

REPO = Path(__file__).resolve().parents[1]
SOURCES = [*(REPO / "platform" / "fairweather").rglob("*.py"), *(REPO / "jobs").glob("*.py")]


@pytest.mark.parametrize(
    "key",
    ["hf_token", "runtime.mlflow_token", "x.password", "db.PASSWD", "s3.secret_access_key", "azure.sas_key",
     "openai.api_key", "y.apikey", "client_secret", "auth", "gcs.credentials"],
)  # fmt: skip
def test_secret_keys_are_recognised(key):
    assert is_secret_key(key)
    assert redact({key: "hunter2"}) == {key: MASK}


@pytest.mark.parametrize(
    "key", ["vlm.max_new_tokens", "model.clip_prior.prior_tokens", "model.clip_prior.use_patch_tokens", "data.pool",
            "runtime.mlflow_tracking_uri", "sort_key", "keyframe"],
)  # fmt: skip
def test_ordinary_keys_keep_their_values(key):
    assert not is_secret_key(key)
    assert redact({key: 77}) == {key: 77}


@pytest.mark.parametrize(
    ("text", "kept", "hidden"),
    [
        ("https://alice:s3cret@mlflow.example.com:5000/x", "https://***@mlflow.example.com:5000/x", "s3cret"),
        ("postgresql://svc:pw@db/mlflow", "postgresql://***@db/mlflow", "pw@"),
        ("http://ghp_abc123@host/repo", "http://***@host/repo", "ghp_abc123"),
        (
            "s3://bucket/x.jpg?X-Amz-Signature=deadbeef&X-Amz-Credential=AKIA/1",
            "X-Amz-Signature=***",
            "deadbeef",
        ),
        ("https://h/p?sig=abc&sv=2020", "sig=***&sv=2020", "sig=abc"),
        ("https://h/p?key=k1&x=1", "key=***&x=1", "k1"),
        ("https://h/p?a=1&X-Api-Key=k2", "X-Api-Key=***", "k2"),
        ("https://h/p?access_key=k3", "access_key=***", "k3"),
        ("https://h/p?apiKey=k4", "apiKey=***", "k4"),
        ("see http://u:p@a and https://v:q@b", "http://***@a and https://***@b", ":q@"),
    ],
)
def test_uri_credentials_are_masked(text, kept, hidden):
    masked = redact_text(text)
    assert kept in masked
    assert hidden not in masked


def test_a_saved_view_key_in_an_mlflow_url_is_not_a_secret():
    url = "http://127.0.0.1:5000/#/experiments/1/runs?compareRunsMode=CHART&viewStateShareKey=sweep-smoke-5ba3d57b05d8"
    assert redact_text(url) == url


def test_redact_walks_nested_config_data_and_leaves_unset_secrets_visible():
    data = {
        "runtime": {"mlflow_tracking_uri": "https://u:p@h", "token": None},
        "tags": ["http://a:b@c"],
        "n": 3,
    }
    assert redact(data) == {"runtime": {"mlflow_tracking_uri": "https://***@h", "token": None},
                            "tags": ["http://***@c"], "n": 3}  # fmt: skip


def test_mlflow_params_never_carry_credentials(tmp_path):
    from fairweather.stages.infra.tracking import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    logger = MLflowLogger(uri, "secure", "params", artifact_location=(tmp_path / "art").as_uri())
    logger.log_params(
        {"runtime.mlflow_tracking_uri": "https://alice:s3cret@mlflow.example.com", "hub.api_token": "hf_xyz",
         "vlm.max_new_tokens": 32}
    )  # fmt: skip
    params = logger.client.get_run(logger.run_id).data.params
    assert params == {
        "runtime.mlflow_tracking_uri": "https://***@mlflow.example.com",
        "hub.api_token": MASK,
        "vlm.max_new_tokens": "32",
    }
    logger.close()


def test_config_show_masks_credentials(capsys):
    assert (
        main(["config", "show", "--config", "smoke", "data.pool=https://bob:pa55@data.example.com/pool.csv"])
        == 0
    )
    out = capsys.readouterr().out
    assert "pa55" not in out
    assert "https://***@data.example.com/pool.csv" in out


def test_every_torch_load_uses_weights_only():
    """A pickled checkpoint can run code when loaded; every ``torch.load`` in the package must refuse that."""
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                flags = [ast.unparse(kw.value) for kw in node.keywords if kw.arg == "weights_only"]
                if flags != ["True"]:
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert offenders == []


def test_nothing_binds_every_interface():
    """Servers the project starts bind 127.0.0.1 (the Ray dashboard, MLflow); 0.0.0.0 appears in no source."""
    offenders = [
        str(p.relative_to(REPO)) for p in [*SOURCES, REPO / "cluster.yaml"] if "0.0.0.0" in p.read_text()
    ]
    assert offenders == []


def _manifest(tmp_path: Path, lines: list[str]) -> Path:
    root = tmp_path / "data"
    (root / "rain").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        (root / "rain" / name).write_bytes(b"")
    (tmp_path / "outside.png").write_bytes(b"")
    manifest = root / "pool.txt"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def test_manifest_inside_the_roots_is_listed(tmp_path):
    manifest = _manifest(tmp_path, ["rain/a.png", str(tmp_path / "data" / "rain" / "b.png")])
    listing = list_pool(str(manifest), roots=(str(tmp_path / "data"),))
    assert [Path(item["uri"]).name for item in listing.items] == ["a.png", "b.png"]


@pytest.mark.parametrize(
    "entry", ["../outside.png", "rain/../../outside.png", "/etc/hostname", "s3://other/x.png"]
)
def test_manifest_naming_a_file_outside_the_roots_is_refused(tmp_path, entry):
    manifest = _manifest(tmp_path, ["rain/a.png", entry])
    with pytest.raises(PoolError, match=r"outside data\.roots"):
        list_pool(str(manifest), roots=(str(tmp_path / "data"),))
    # Without data.roots the same manifest lists (no restriction is the default).
    assert len(list_pool(str(manifest)).items) == 2


def test_a_link_inside_a_root_cannot_lead_out_of_it(tmp_path):
    manifest = _manifest(tmp_path, ["rain/link.png"])
    os.symlink(tmp_path / "outside.png", tmp_path / "data" / "rain" / "link.png")
    with pytest.raises(PoolError, match=r"link\.png"):
        list_pool(str(manifest), roots=(str(tmp_path / "data"),))


def test_within_roots_on_object_stores():
    roots = ("s3://bucket/pool",)
    assert within_roots("s3://bucket/pool/rain/1.jpg", roots)
    assert not within_roots("s3://bucket/pool/../private/1.jpg", roots)
    assert not within_roots("s3://bucket/pool2/1.jpg", roots)
    assert not within_roots("gs://bucket/pool/1.jpg", roots)
    assert within_roots("anything", ())


def test_printed_mlflow_links_mask_the_tracking_servers_credentials(monkeypatch, capsys):
    """The sweep prints the MLflow UI and the compare view's URL; a tracking URI's user:password never shows."""
    from fairweather.contracts.config import SweepConfig, load_config
    from fairweather.stages.infra.tracking import MLflowLogger, ui_links
    from fairweather.stages.sweep.report import print_report

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cfg = load_config("smoke", ["runtime.mlflow_tracking_uri=https://alice:s3cret@mlflow.example.com/"])
    parent = MLflowLogger.__new__(MLflowLogger)  # a run on that server (links need no connection)
    parent.run_id, parent.experiment_id = "p", "3"
    links = ui_links(cfg, parent, ["a", "b"])
    assert links is not None and "s3cret" not in "".join(links)
    assert links[1].startswith("https://***@mlflow.example.com/?workflowType=machine_learning#/compare-runs")
    sweep = SweepConfig(metric="val/psnr/overall", mode="max", name="s")
    print_report([], sweep, {"best_config.yaml": "s3://k:s3cret@b/x"}, links)
    out = capsys.readouterr().out
    assert "s3cret" not in out and "MLflow UI: open https://***@mlflow.example.com" in out


def test_the_printed_final_checkpoint_masks_its_uri(capsys):
    from fairweather.stages.train.final_score import print_test_table

    print_test_table("run", "s3://key:s3cret@bucket/train/run/checkpoint_1", {})
    assert (
        capsys.readouterr().out == "train: run run, final checkpoint s3://***@bucket/train/run/checkpoint_1\n"
    )
