"""``cluster.yaml``: valid for the Ray autoscaler shipped in the venv, and no port of the cluster is opened to the
world (the dashboard and its jobs API stay on 127.0.0.1; reach them through ``ray dashboard cluster.yaml``)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import ray.autoscaler
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

REPO = Path(__file__).resolve().parents[1]
CLUSTER = REPO / "cluster.yaml"
#: Addresses that mean "every interface" / "every network".
WORLD = ("0.0.0.0", "::/0", "[::]", "*:")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(CLUSTER.read_text())


@pytest.fixture(scope="module")
def prepared(raw) -> dict:
    """The config as ``ray up`` sees it after filling in the provider's defaults (no cloud call)."""
    return prepare_config(json.loads(json.dumps(raw)))


def _commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [command for key in keys for command in config.get(key, [])]


def _flag(command: str, name: str) -> list[str]:
    """Values of ``--name=value`` / ``--name value`` in a shell command."""
    words = shlex.split(command.replace("&&", " ; "), comments=False)
    values = []
    for i, word in enumerate(words):
        if word.startswith(f"{name}="):
            values.append(word.split("=", 1)[1])
        elif word == name and i + 1 < len(words):
            values.append(words[i + 1])
    return values


def test_cluster_yaml_validates_against_the_autoscaler_schema(raw, prepared):
    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(raw, schema)  # the file as written (no key the launcher does not know)
    validate_config(prepared)  # and what `ray up` validates: defaults filled, node types, min/max workers


def test_one_cpu_head_and_a_gpu_worker_group_with_declared_gpus(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_groups = {name: t for name, t in types.items() if t["resources"].get("GPU", 0) > 0}
    assert gpu_groups, "no node type declares GPU resources"
    for group in gpu_groups.values():
        assert group["max_workers"] >= 1 and group["min_workers"] == 0  # scales to zero when idle
        assert any(key.startswith("accelerator_type:") for key in group["resources"])
    setup = " ".join(_commands(prepared))
    assert "[vllm]" in setup  # the GPU environment installs the vLLM extra
    assert (
        "MLFLOW_TRACKING_URI" in setup and "/mnt/fairweather" in setup
    )  # shared storage, tracking URI from env


def test_no_port_is_opened_to_the_world(raw, prepared):
    text = CLUSTER.read_text()
    assert not [w for w in WORLD if w in text], (
        "an every-interface address or world-wide CIDR in cluster.yaml"
    )
    heads = [c for c in prepared["head_start_ray_commands"] if re.search(r"\bray start\b.*--head", c)]
    assert len(heads) == 1
    # The dashboard (and with it the jobs API) binds the loopback interface, explicitly.
    assert _flag(heads[0], "--dashboard-host") == ["127.0.0.1"]
    for command in _commands(prepared):
        for host in _flag(command, "--dashboard-host") + _flag(command, "--host") + _flag(command, "-h"):
            assert host not in ("0.0.0.0", "::", ""), command
    # Without SecurityGroupIds on every node type, the AWS launcher creates its default group, which opens SSH to
    # every address; with them, the group you created (members + your admin network) is the only way in.
    for name, node_type in prepared["available_node_types"].items():
        assert node_type["node_config"].get("SecurityGroupIds"), f"{name}: no SecurityGroupIds"
    assert prepared["provider"].get("use_internal_ips") is True  # no public addresses on the nodes
    for rule in raw["provider"].get("security_group", {}).get("IpPermissions", []):
        assert all(r.get("CidrIp") != "0.0.0.0/0" for r in rule.get("IpRanges", []))


def test_ray_token_authentication_is_on_every_node(prepared):
    starts = prepared["head_start_ray_commands"] + prepared["worker_start_ray_commands"]
    setup = " ".join(prepared["setup_commands"])
    assert "RAY_AUTH_MODE=token" in setup
    assert all("fairweather.env" in c for c in starts if "ray start" in c)
    assert "~/.ray/auth_token" in prepared["file_mounts"]


def test_stages_log_to_the_tracking_uri_the_cluster_exports(monkeypatch, tmp_path):
    from fairweather.contracts.config import load_config
    from fairweather.stages.infra.runtime import artifact_root, tracking_uri

    runtime = load_config("smoke", [f"runtime.runs_dir={tmp_path}"]).runtime
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(runtime).startswith("sqlite:///") and artifact_root(runtime) is not None
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    assert (
        tracking_uri(runtime) == "http://10.0.0.5:5000" and artifact_root(runtime) is None
    )  # the server decides
    explicit = load_config("smoke", ["runtime.mlflow_tracking_uri=http://mlflow:5000"]).runtime
    assert tracking_uri(explicit) == "http://mlflow:5000"  # the config key wins over the environment
