"""The Ray cluster launcher YAMLs pass Ray's own schema and offline config checks."""

from __future__ import annotations

import copy
import re

import jsonschema
import pytest
from ray.autoscaler._private.util import prepare_config, validate_config

from gair.configs.data import DataConfig
from tests.cluster._cluster_files import (
    IMAGE_TAG_RE,
    LAUNCHER_YAMLS,
    launcher_node_groups,
    load_yaml,
    preprocessing_groups,
)

LAUNCHERS = pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)


def validate_offline(config: dict) -> dict:
    """What `ray up` checks before it talks to the cloud: defaults merged in, then the
    JSON schema (ray-schema.json) and Ray's semantic checks."""
    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


@LAUNCHERS
def test_passes_ray_schema_and_config_checks(path):
    prepared = validate_offline(load_yaml(path))
    assert prepared["head_node_type"] in prepared["available_node_types"]


@LAUNCHERS
def test_raw_file_passes_ray_schema_without_defaults(path):
    # Also without the provider defaults merged in, so the file itself is schema-clean.
    import json
    from pathlib import Path

    import ray.autoscaler

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    jsonschema.validate(load_yaml(path), schema)


@pytest.mark.parametrize(
    "breakage",
    [
        pytest.param(lambda c: c.update(not_a_ray_field=1), id="unknown-top-level-key"),
        pytest.param(
            lambda c: c["available_node_types"][c["head_node_type"]]["resources"].update(GPU="eight"),
            id="non-integer-resource",
        ),
        pytest.param(lambda c: c.update(head_node_type="no_such_type"), id="head-type-missing"),
        pytest.param(
            lambda c: next(t for n, t in c["available_node_types"].items() if n != c["head_node_type"]).update(
                min_workers=c["max_workers"] + 1
            ),
            id="min-workers-over-global-max",
        ),
    ],
)
@LAUNCHERS
def test_checks_reject_a_broken_config(path, breakage):
    config = load_yaml(path)
    breakage(config)
    with pytest.raises((jsonschema.ValidationError, ValueError)):
        validate_offline(config)


@LAUNCHERS
def test_cpu_head_and_gpu_workers_that_scale_from_zero(path):
    config = load_yaml(path)
    head = config["available_node_types"][config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0, "the head node must be CPU-only"
    groups = launcher_node_groups(config)
    gpu_counts = {g.gpus_per_node for g in groups}
    assert 1 in gpu_counts and 8 in gpu_counts, "need single-GPU and 8-GPU node types"
    for name, node_type in config["available_node_types"].items():
        if name != config["head_node_type"]:
            assert node_type.get("min_workers", 0) == 0, f"{name} must scale from 0"
            assert node_type["max_workers"] > 0
    assert config["max_workers"] >= max(g.max_nodes for g in groups)


@LAUNCHERS
def test_cpu_only_preprocessing_group_offers_the_decode_resource(path):
    # Read and decode ask for data.decode_resource; one CPU-only node type offers it, from 0 nodes.
    config = load_yaml(path)
    resource = DataConfig().decode_resource
    (group,) = preprocessing_groups(launcher_node_groups(config), resource)
    node_type = config["available_node_types"][group.name]
    assert node_type["min_workers"] == 0 and group.max_nodes > 0
    assert group.cpus_per_node >= 8
    head = config["available_node_types"][config["head_node_type"]]
    assert resource not in head["resources"], "the head must not take decode work"
    # Room for every GPU node type at its cap besides the preprocessing nodes.
    gpu_nodes = max(g.max_nodes for g in launcher_node_groups(config) if g.gpus_per_node)
    assert config["max_workers"] >= gpu_nodes + group.max_nodes


@LAUNCHERS
def test_docker_image_matches_pinned_versions(path):
    image = load_yaml(path)["docker"]["image"]
    assert IMAGE_TAG_RE.match(image), image


@LAUNCHERS
def test_token_auth_on_every_node(path):
    config = load_yaml(path)
    assert "--env RAY_AUTH_MODE=token" in config["docker"]["run_options"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in config[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), key
    # The token itself travels from the user's machine; it is never in the file.
    assert config["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"


@LAUNCHERS
def test_setup_installs_this_project_and_pinned_stack(path):
    setup = "\n".join(load_yaml(path)["setup_commands"])
    assert re.search(r"pip install .*-e ~/gair", setup)
    assert "torch==2.14.*" in setup and "/whl/cu12" in setup
    assert "ray[default,train,data,tune]==2.60.*" in setup
    assert "deepspeed==0.19.*" in setup
    assert load_yaml(path)["file_mounts"]["~/gair"] == "."


STATIC_KEY_PATTERNS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"aws_secret_access_key|AWS_SECRET_ACCESS_KEY", re.IGNORECASE),
    re.compile(r"private_key|BEGIN [A-Z ]*PRIVATE KEY"),
    re.compile(r"GOOGLE_APPLICATION_CREDENTIALS|credentials\.json"),
]


@LAUNCHERS
def test_object_storage_through_roles_not_keys(path):
    text = path.read_text()
    for pattern in STATIC_KEY_PATTERNS:
        assert not pattern.search(text), pattern.pattern
    config = load_yaml(path)
    assert "credentials" not in config["provider"]
    for name, node_type in config["available_node_types"].items():
        node_config = node_type["node_config"]
        if config["provider"]["type"] == "aws":
            assert "Name" in node_config["IamInstanceProfile"], name
        elif name != config["head_node_type"]:
            # GCP: the launcher gives the head its own service account; workers name one.
            assert node_config["serviceAccounts"][0]["email"].endswith(".iam.gserviceaccount.com"), name


def test_key_checker_catches_a_planted_key():
    planted = "AWS_SECRET_ACCESS_KEY: abc\nkey: AKIAABCDEFGHIJKLMNOP\n"
    assert sum(bool(p.search(planted)) for p in STATIC_KEY_PATTERNS) == 2


def test_gcp_node_configs_are_compute_instances():
    config = load_yaml(LAUNCHER_YAMLS[1])
    for node_type in config["available_node_types"].values():
        node_config = node_type["node_config"]
        assert "machineType" in node_config, "a Compute Engine VM, not a TPU"
        if node_type["resources"].get("GPU"):
            # GPU VMs cannot live-migrate; GCE rejects them without TERMINATE.
            assert node_config["scheduling"]["onHostMaintenance"] == "TERMINATE"
    # Ray's own classifier, where its GCP client libraries are installed.
    try:
        from ray.autoscaler._private.gcp.config import GCPNodeType, get_node_type
    except ImportError:
        return
    for node_type in config["available_node_types"].values():
        assert get_node_type(node_type["node_config"]) == GCPNodeType.COMPUTE
