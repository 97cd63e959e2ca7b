"""cluster.yaml: Ray's own launcher schema accepts it, and it keeps the project's contract.

Offline and fast: `prepare_config` only merges the file with Ray's AWS defaults
(ray/autoscaler/aws/defaults.yaml) and `validate_config` checks it against
ray/autoscaler/ray-schema.json; neither calls AWS (that happens later, in `ray up`'s
bootstrap step), which `no_connections` below enforces.

`ray.autoscaler._private.util` is a private Ray API: these tests rely on the Ray version
that constraints.txt pins (ray==2.60.0); re-check them when that pin moves.
"""

from __future__ import annotations

import copy
import re
import shlex
import socket
from pathlib import Path

import jsonschema
import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

CLUSTER_YAML = Path(__file__).resolve().parents[1] / "cluster.yaml"

# vCPUs of single-GPU instance types a user is likely to pick for the worker type.
SINGLE_GPU_VCPUS = {
    "g5.xlarge": 4, "g5.2xlarge": 8, "g5.4xlarge": 16, "g5.8xlarge": 32, "g5.16xlarge": 64,
    "g6.xlarge": 4, "g6.2xlarge": 8, "g6.4xlarge": 16, "g6.8xlarge": 32, "g6.16xlarge": 64,
}


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture
def raw(text) -> dict:
    config = yaml.safe_load(text)
    assert isinstance(config, dict)
    return config


@pytest.fixture
def no_connections(monkeypatch):
    """Any attempt to open a connection (e.g. to AWS) fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access during config validation: {args}")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def prepared(raw, no_connections) -> dict:
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def check(config: dict) -> None:
    validate_config(prepare_config(copy.deepcopy(config)))


def _worker_types(config: dict) -> dict:
    return {name: spec for name, spec in config["available_node_types"].items()
            if name != config["head_node_type"]}


# --- Ray's schema --------------------------------------------------------------------------

def test_ray_schema_accepts_cluster_yaml(prepared):
    assert prepared["provider"]["type"] == "aws"


def test_schema_rejects_unknown_top_level_key(raw, no_connections):
    raw["max_worker"] = 4  # a typo of max_workers
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        check(raw)


def test_schema_rejects_head_type_not_in_node_types(raw, no_connections):
    raw["head_node_type"] = "no.such.type"
    with pytest.raises(ValueError, match="head_node_type"):
        check(raw)


def test_schema_rejects_unknown_node_type_key(raw, no_connections):
    raw["available_node_types"][raw["head_node_type"]]["min_worker"] = 0
    with pytest.raises(jsonschema.ValidationError, match="Additional properties"):
        check(raw)


# --- this project's contract ---------------------------------------------------------------

def test_head_is_a_cpu_node(raw):
    assert raw["head_node_type"] in raw["available_node_types"]
    head = raw["available_node_types"][raw["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) > 0


def test_gpu_worker_type_autoscales_from_zero(raw):
    gpu_workers = {name: spec for name, spec in _worker_types(raw).items()
                   if spec["resources"].get("GPU", 0) > 0}
    assert len(gpu_workers) == 1, gpu_workers
    (spec,) = gpu_workers.values()
    assert spec["resources"]["GPU"] == 1
    assert spec["min_workers"] == 0
    assert 1 <= spec["max_workers"] <= raw["max_workers"]
    instance = spec["node_config"]["InstanceType"]
    if instance in SINGLE_GPU_VCPUS:  # resources must match the instance
        assert spec["resources"]["CPU"] == SINGLE_GPU_VCPUS[instance]


def test_every_node_type_has_a_string_image_id(raw):
    for name, spec in raw["available_node_types"].items():
        image = spec["node_config"]["ImageId"]
        assert isinstance(image, str) and re.fullmatch(r"ami-[0-9a-f]{8,17}", image), name


def test_project_is_shipped_and_installed_with_the_pins(prepared):
    assert prepared["file_mounts"].get("~/sharpsweep") == "."
    assert ".gitignore" in prepared["rsync_filter"]  # .venv, data/, results/ stay local
    # prepare_config has merged setup_commands into both of these.
    for key in ("head_setup_commands", "worker_setup_commands"):
        installs = [shlex.split(c.split("&&")[-1]) for c in prepared[key] if "pip install" in c]
        torch = [a for a in installs if "torch" in a and "torchvision" in a]
        project = [a for a in installs if "-e" in a and a[a.index("-e") + 1] == ".[sweep]"]
        for found in (torch, project):
            assert len(found) == 1, (key, installs)
            args = found[0]
            assert args[args.index("-c") + 1] == "constraints.txt"
        assert installs.index(torch[0]) < installs.index(project[0])
        assert any("cd ~/sharpsweep" in c and ".[sweep]" in c for c in prepared[key])


def test_ray_start_commands(prepared):
    head = " ".join(prepared["head_start_ray_commands"])
    assert "ray stop" in head
    assert re.search(r"ray start --head --port=6379\b", head)
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head
    assert re.findall(r"--dashboard-host[= ](\S+)", head) == ["127.0.0.1"]
    worker = " ".join(prepared["worker_start_ray_commands"])
    assert "ray stop" in worker
    assert "ray start --address=$RAY_HEAD_IP:6379" in worker


def test_head_starts_mlflow_server_for_the_cluster(raw):
    (cmd,) = [c for c in raw["head_start_ray_commands"] if "mlflow server" in c]
    assert "--host 127.0.0.1 --port 5000" in cmd  # no authentication: loopback, reached by ssh
    assert "--backend-store-uri sqlite:///$HOME/mlflow.db" in cmd
    assert "nohup" in cmd and "&" in cmd  # in the background, outliving the ssh session


def test_no_credentials_in_file(text, raw):
    lowered = text.lower()
    for name in ("aws_secret_access_key", "aws_access_key_id", "aws_session_token",
                 "private key-----"):
        assert name not in lowered, name
    assert not re.search(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", text)
    assert "aws_credentials" not in raw["provider"]
    assert "ssh_private_key" not in raw["auth"]  # the launcher creates the key pair
