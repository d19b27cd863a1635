"""The KubeRay manifests parse and hold what a GPU pretraining run needs."""

from __future__ import annotations

import pytest

from gair.configs.data import DataConfig
from tests.cluster._cluster_files import (
    IMAGE_TAG_RE,
    RAYCLUSTER_YAML,
    RAYJOB_YAML,
    SERVICEACCOUNT_YAML,
    kuberay_node_groups,
    load_yaml,
    preprocessing_groups,
    ray_start_custom_resources,
)


def cluster_specs():
    return {
        "RayCluster": load_yaml(RAYCLUSTER_YAML)["spec"],
        "RayJob": load_yaml(RAYJOB_YAML)["spec"]["rayClusterSpec"],
    }


SPECS = pytest.mark.parametrize("kind", ["RayCluster", "RayJob"])


def test_kinds_and_api_version():
    assert load_yaml(RAYCLUSTER_YAML)["apiVersion"] == "ray.io/v1"
    assert load_yaml(RAYCLUSTER_YAML)["kind"] == "RayCluster"
    assert load_yaml(RAYJOB_YAML)["apiVersion"] == "ray.io/v1"
    assert load_yaml(RAYJOB_YAML)["kind"] == "RayJob"
    assert load_yaml(SERVICEACCOUNT_YAML)["kind"] == "ServiceAccount"


def test_rayjob_runs_the_same_cluster_as_raycluster():
    # One definition of the cluster; the RayJob copy must not drift from it.
    specs = cluster_specs()
    assert specs["RayJob"] == specs["RayCluster"]


@SPECS
def test_autoscaling_gpu_groups_from_zero(kind):
    spec = cluster_specs()[kind]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"].startswith("2.60.")
    assert "rayStartParams" in spec["headGroupSpec"]
    head_limits = spec["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert "nvidia.com/gpu" not in head_limits, "the head must be CPU-only"
    for group in spec["workerGroupSpecs"]:
        assert "rayStartParams" in group
        assert group["minReplicas"] == 0 and group["replicas"] == 0
        assert group["maxReplicas"] > 0
    groups = kuberay_node_groups(spec)
    assert {g.gpus_per_node for g in groups} >= {1, 8}
    for group in spec["workerGroupSpecs"]:
        (worker,) = group["template"]["spec"]["containers"]
        resources = worker["resources"]
        assert resources["limits"].get("nvidia.com/gpu") == resources["requests"].get("nvidia.com/gpu")


@SPECS
def test_cpu_only_preprocessing_group_offers_the_decode_resource(kind):
    # Read and decode ask for data.decode_resource; one CPU-only group offers it, from 0 pods.
    resource = DataConfig().decode_resource
    (group,) = preprocessing_groups(kuberay_node_groups(cluster_specs()[kind]), resource)
    assert group.cpus_per_node >= 8 and group.max_nodes > 0
    (spec,) = [g for g in cluster_specs()[kind]["workerGroupSpecs"] if g["groupName"] == group.name]
    assert spec["minReplicas"] == 0 and spec["replicas"] == 0
    (worker,) = spec["template"]["spec"]["containers"]
    assert "nvidia.com/gpu" not in worker["resources"]["requests"]
    assert worker["resources"]["requests"]["cpu"] == worker["resources"]["limits"]["cpu"]


def test_ray_start_resources_parse_in_the_quoted_form():
    assert ray_start_custom_resources({"resources": '"{\\"preprocess\\": 30}"'}) == {"preprocess": 30.0}
    assert ray_start_custom_resources({"resources": '{"a": 1, "b": 2}'}) == {"a": 1.0, "b": 2.0}
    assert ray_start_custom_resources({}) == {}


@SPECS
def test_token_auth_and_workload_identity(kind):
    spec = cluster_specs()[kind]
    assert spec["authOptions"]["mode"] == "token"
    templates = [spec["headGroupSpec"]["template"]] + [g["template"] for g in spec["workerGroupSpecs"]]
    service_account = load_yaml(SERVICEACCOUNT_YAML)
    for template in templates:
        assert template["spec"]["serviceAccountName"] == service_account["metadata"]["name"]
        for container in template["spec"]["containers"]:
            assert IMAGE_TAG_RE.match(container["image"]), container["image"]
            env_names = {e["name"] for e in container.get("env", [])}
            assert not env_names & {
                "AWS_ACCESS_KEY_ID",
                "AWS_SECRET_ACCESS_KEY",
                "GOOGLE_APPLICATION_CREDENTIALS",
            }
    annotations = service_account["metadata"]["annotations"]
    assert "eks.amazonaws.com/role-arn" in annotations
    assert "iam.gke.io/gcp-service-account" in annotations


def test_rayjob_entrypoint_is_pretraining_with_resume_settings():
    job = load_yaml(RAYJOB_YAML)["spec"]
    entrypoint = job["entrypoint"]
    assert entrypoint.startswith("python jobs/pretrain.py --config configs/pretrain_gpu.yaml")
    # A fixed run name and remote storage are what make a retried job resume.
    assert "--set run.name=" in entrypoint
    assert "--set run.storage_path=s3://" in entrypoint or "--set run.storage_path=gs://" in entrypoint
    assert job["backoffLimit"] >= 1
    assert job["shutdownAfterJobFinishes"] is True
