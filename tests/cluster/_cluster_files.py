"""What the cluster tests read: the cluster definitions and the GPU capacity they offer.

A node group is one launcher node type or one KubeRay worker group; its GPU capacity is
what the autoscaler can grow it to (max nodes times GPUs per node).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CLUSTER_DIR = REPO_ROOT / "cluster"
LAUNCHER_YAMLS = [CLUSTER_DIR / "aws-gpu.yaml", CLUSTER_DIR / "gcp-gpu.yaml"]
KUBERAY_DIR = CLUSTER_DIR / "kuberay"
RAYCLUSTER_YAML = KUBERAY_DIR / "raycluster.yaml"
RAYJOB_YAML = KUBERAY_DIR / "rayjob.yaml"
SERVICEACCOUNT_YAML = KUBERAY_DIR / "serviceaccount.yaml"
DOCKERFILE = CLUSTER_DIR / "docker" / "Dockerfile"
RUNBOOK = REPO_ROOT / "docs" / "runbook.md"
GPU_TRAIN_CONFIG = REPO_ROOT / "configs" / "pretrain_gpu.yaml"

# Pinned by the project: Ray 2.60.x, Python 3.11, a CUDA 12.x build.
IMAGE_TAG_RE = re.compile(r"^(?P<repo>[\w./-]+):2\.60\.\d+-py311-cu12\d$")


@dataclass(frozen=True)
class NodeGroup:
    name: str
    gpus_per_node: int
    cpus_per_node: float
    max_nodes: int
    custom_resources: dict[str, float] = field(default_factory=dict)  # e.g. {"preprocess": 32}

    @property
    def gpu_capacity(self) -> int:
        return self.gpus_per_node * self.max_nodes


def load_yaml(path: Path) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def launcher_node_groups(config: dict) -> list[NodeGroup]:
    """Worker node types of a launcher config; each capped by the global max_workers."""
    groups = []
    for name, node_type in config["available_node_types"].items():
        if name == config["head_node_type"]:
            continue
        resources = node_type["resources"]
        max_nodes = min(node_type.get("max_workers", config["max_workers"]), config["max_workers"])
        groups.append(
            NodeGroup(
                name,
                int(resources.get("GPU", 0)),
                float(resources.get("CPU", 0)),
                max_nodes,
                {k: float(v) for k, v in resources.items() if k not in ("CPU", "GPU", "memory")},
            )
        )
    return groups


def _cpu_quantity(value: str | int) -> float:
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def ray_start_custom_resources(ray_start_params: dict) -> dict[str, float]:
    """Custom resources of a KubeRay group's ``rayStartParams.resources``: the JSON of
    ``ray start --resources`` written as a quoted string, e.g. ``'"{\\"preprocess\\": 30}"'``."""
    value = ray_start_params.get("resources")
    if value is None:
        return {}
    parsed = json.loads(value)
    if isinstance(parsed, str):  # the quoted form KubeRay documents: a JSON string holding the JSON
        parsed = json.loads(parsed)
    return {k: float(v) for k, v in parsed.items()}


def kuberay_node_groups(cluster_spec: dict) -> list[NodeGroup]:
    groups = []
    for group in cluster_spec["workerGroupSpecs"]:
        (container,) = [c for c in group["template"]["spec"]["containers"] if c["name"] == "ray-worker"]
        limits = container["resources"]["limits"]
        groups.append(
            NodeGroup(
                group["groupName"],
                int(limits.get("nvidia.com/gpu", 0)),
                _cpu_quantity(limits["cpu"]),
                int(group["maxReplicas"]),
                ray_start_custom_resources(group.get("rayStartParams", {})),
            )
        )
    return groups


def preprocessing_groups(groups: list[NodeGroup], resource: str) -> list[NodeGroup]:
    """The CPU-only groups that offer the data pipeline's decode resource."""
    return [g for g in groups if g.gpus_per_node == 0 and g.custom_resources.get(resource, 0) > 0]


def largest_node_group(groups: list[NodeGroup]) -> NodeGroup:
    return max(groups, key=lambda g: (g.gpu_capacity, g.gpus_per_node))


def check_training_fits(train: dict, group: NodeGroup) -> list[str]:
    """Why a ``train:`` config (num_workers, use_gpu, cpus_per_worker) cannot run on
    ``group``; empty when it fits. One GPU per worker when use_gpu is true."""
    problems = []
    workers = int(train["num_workers"])
    gpus_per_worker = 1 if train.get("use_gpu", False) else 0
    if workers < 1:
        problems.append(f"num_workers={workers} < 1")
    if gpus_per_worker and group.gpus_per_node < gpus_per_worker:
        problems.append(f"{group.name} has no GPUs")
    if workers * gpus_per_worker > group.gpu_capacity:
        problems.append(
            f"{workers} workers x {gpus_per_worker} GPU > {group.name} capacity "
            f"{group.max_nodes} nodes x {group.gpus_per_node} GPUs = {group.gpu_capacity}"
        )
    cpus = train.get("cpus_per_worker")
    if cpus is not None and gpus_per_worker and group.gpus_per_node:
        # Workers pack one per GPU, so each node must also hold their CPUs.
        needed = float(cpus) * group.gpus_per_node
        if needed > group.cpus_per_node:
            problems.append(
                f"{group.gpus_per_node} workers x {cpus} CPUs = {needed} > {group.cpus_per_node} CPUs on a "
                f"{group.name} node"
            )
    return problems


# Paths of repo scripts and configs inside commands and entrypoints.
REPO_PATH_RE = re.compile(r"(?<![\w/.~-])((?:jobs|configs)/[\w./-]+\.(?:py|yaml|yml))")


def referenced_repo_paths(text: str) -> set[str]:
    return set(REPO_PATH_RE.findall(text))
