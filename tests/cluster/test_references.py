"""Everything the cluster definitions point at exists, and the GPU training config fits."""

from __future__ import annotations

import pytest

from tests.cluster._cluster_files import (
    DOCKERFILE,
    GPU_TRAIN_CONFIG,
    IMAGE_TAG_RE,
    LAUNCHER_YAMLS,
    RAYCLUSTER_YAML,
    RAYJOB_YAML,
    REPO_ROOT,
    RUNBOOK,
    NodeGroup,
    check_training_fits,
    kuberay_node_groups,
    largest_node_group,
    launcher_node_groups,
    load_yaml,
    referenced_repo_paths,
)

REFERRING_FILES = [*LAUNCHER_YAMLS, RAYCLUSTER_YAML, RAYJOB_YAML, DOCKERFILE, RUNBOOK]


def test_reference_scanner_finds_paths():
    text = "ray job submit --working-dir . -- python jobs/tune.py --config configs/tune.yaml; cat ~/jobs/x.py"
    assert referenced_repo_paths(text) == {"jobs/tune.py", "configs/tune.yaml"}


@pytest.mark.parametrize("path", REFERRING_FILES, ids=lambda p: str(p.relative_to(REPO_ROOT)))
def test_referenced_scripts_and_configs_exist(path):
    assert path.is_file(), f"{path} is missing"
    missing = sorted(p for p in referenced_repo_paths(path.read_text()) if not (REPO_ROOT / p).is_file())
    assert not missing, f"{path.name} refers to files that do not exist: {missing}"


def test_rayjob_and_runbook_reference_the_entry_points():
    assert "jobs/pretrain.py" in referenced_repo_paths(RAYJOB_YAML.read_text())
    runbook = referenced_repo_paths(RUNBOOK.read_text())
    assert {"jobs/pretrain.py", "jobs/tune.py", "jobs/evaluate.py"} <= runbook


def test_dockerfile_base_matches_cluster_images():
    base = next(line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("FROM "))
    assert IMAGE_TAG_RE.match(base)
    for path in LAUNCHER_YAMLS:
        assert load_yaml(path)["docker"]["image"] == base
    image = load_yaml(RAYCLUSTER_YAML)["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["image"]
    assert image.split(":")[1] == base.split(":")[1]


def all_largest_groups() -> dict[str, NodeGroup]:
    groups = {path.name: largest_node_group(launcher_node_groups(load_yaml(path))) for path in LAUNCHER_YAMLS}
    groups[RAYCLUSTER_YAML.name] = largest_node_group(kuberay_node_groups(load_yaml(RAYCLUSTER_YAML)["spec"]))
    return groups


def test_gpu_training_config_fits_the_largest_node_group():
    assert GPU_TRAIN_CONFIG.is_file(), f"{GPU_TRAIN_CONFIG} is missing"
    train = load_yaml(GPU_TRAIN_CONFIG)["train"]
    assert train["use_gpu"] is True, "the GPU training config must train on GPUs"
    for name, group in all_largest_groups().items():
        problems = check_training_fits(train, group)
        assert not problems, f"{GPU_TRAIN_CONFIG.name} does not fit {name}: {problems}"


@pytest.mark.parametrize(
    ("train", "fits"),
    [
        ({"num_workers": 16, "use_gpu": True}, True),
        ({"num_workers": 17, "use_gpu": True}, False),
        ({"num_workers": 8, "use_gpu": True, "cpus_per_worker": 22}, True),
        ({"num_workers": 8, "use_gpu": True, "cpus_per_worker": 32}, False),
        ({"num_workers": 0, "use_gpu": True}, False),
    ],
)
def test_fit_check_on_a_two_node_8_gpu_group(train, fits):
    group = NodeGroup("gpu_8x", gpus_per_node=8, cpus_per_node=180, max_nodes=2)
    assert (check_training_fits(train, group) == []) is fits


def test_largest_group_is_the_one_with_most_gpus():
    groups = launcher_node_groups(load_yaml(LAUNCHER_YAMLS[0]))
    largest = largest_node_group(groups)
    assert largest.gpus_per_node == 8
    assert all(largest.gpu_capacity >= g.gpu_capacity for g in groups)
