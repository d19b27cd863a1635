"""Read and decode on CPU-only preprocessing nodes (``data.decode_placement``).

The placement rule on its own, then a two-node Ray cluster on this machine
(``ray.cluster_utils.Cluster``): a "GPU-node-like" head with CPUs and no custom resource, and a
CPU-only node offering ``preprocess``, as the cluster files' CPU worker group does.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator

import numpy as np
import pytest

from gair.data import pipeline
from tests.data.conftest import tiny_data_cfg, tiny_model_cfg


@pytest.fixture(autouse=True)
def _say_again() -> Iterator[None]:
    """Each test sees the once-per-process placement line."""
    saved = set(pipeline._placement_said)
    pipeline._placement_said.clear()
    yield
    pipeline._placement_said.clear()
    pipeline._placement_said.update(saved)


# ----------------------------------------------------------------------- the rule


def test_auto_asks_for_the_resource_only_where_a_node_offers_it(capsys) -> None:
    cfg = tiny_data_cfg()
    assert cfg.decode_resource == "preprocess" and cfg.decode_placement == "auto"
    assert pipeline.placement_resources(cfg, {"CPU": 8.0, "preprocess": 16.0}) == {"preprocess": 0.001}
    assert "only on the nodes offering resource 'preprocess' (16 in all)" in capsys.readouterr().out
    assert pipeline.placement_resources(cfg, {"CPU": 8.0, "GPU": 1.0}) == {}
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no node offers resource 'preprocess': read and decode run on any node" in out
    # One line per process, not one per epoch.
    assert pipeline.placement_resources(cfg, {"CPU": 8.0}) == {}
    assert capsys.readouterr().out == ""


def test_require_always_asks_and_anywhere_never(capsys) -> None:
    require = tiny_data_cfg(decode_placement="require", decode_resource="cpu_pool", decode_resource_per_task=0.01)
    assert pipeline.placement_resources(require, {"CPU": 8.0}) == {"cpu_pool": 0.01}
    assert "no node offers resource 'cpu_pool' yet: read and decode wait for one" in capsys.readouterr().out
    assert pipeline.placement_resources(require, {"CPU": 8.0, "cpu_pool": 1.0}) == {"cpu_pool": 0.01}
    assert pipeline.placement_resources(tiny_data_cfg(decode_placement="anywhere"), {"preprocess": 4.0}) == {}
    assert "wait" not in capsys.readouterr().out


# ----------------------------------------------------------------------- two nodes


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[tuple[str, str]]:
    """(head node id, CPU-only node id) of a two-node cluster in a private temp dir."""
    import ray
    from ray._common.utils import reset_ray_address
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    temp_dir = tempfile.mkdtemp(prefix="gair-nodes-", dir="/tmp")  # short: socket paths have a length limit
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 2, "temp_dir": temp_dir, "include_dashboard": False}
    )
    # Cluster writes its address to /tmp/ray/ray_current_cluster, where a plain ray.init() in
    # another process (a test in a parallel xdist worker) would find and join it: remove it.
    reset_ray_address()
    try:
        cpu_node = cluster.add_node(num_cpus=2, resources={"preprocess": 2})
        ray.init(address=cluster.address, log_to_driver=False)
        yield cluster.head_node.node_id, cpu_node.node_id
    finally:
        ray.shutdown()
        cluster.shutdown()  # this cluster's processes only
        shutil.rmtree(temp_dir, ignore_errors=True)


def _decode_recording_node() -> object:
    """The pipeline's decode function, also writing each decoded row's node id to a column."""
    decode_batch = pipeline._decode_batch

    def decode_and_record(table, spec):  # a closure: shipped to the workers by value
        import os

        import ray

        out = decode_batch(table, spec)
        out["node_id"] = np.full(len(out["ok"]), ray.get_runtime_context().get_node_id())
        out["pid"] = np.full(len(out["ok"]), os.getpid())
        return out

    return decode_and_record


def _nodes_by_operator(ds) -> dict[str, set[str]]:
    """Ray node ids that produced each operator's blocks (Ray Data's per-block exec stats)."""
    nodes: dict[str, set[str]] = {}
    todo = [ds._raw_stats()]
    while todo:
        stats = todo.pop()
        for name, blocks in stats.metadata.items():
            nodes.setdefault(name, set()).update(b.exec_stats.node_id for b in blocks if b.exec_stats)
        todo.extend(stats.parents)
    return nodes


@pytest.mark.slow
def test_read_and_decode_run_only_on_the_cpu_node(two_nodes, synthetic_manifest, monkeypatch, capsys) -> None:
    head, cpu_node = two_nodes
    monkeypatch.setattr(pipeline, "_decode_batch", _decode_recording_node())
    data_cfg = tiny_data_cfg(num_decode_workers=2)  # the default placement: auto, "preprocess"
    ds = pipeline.build_dataset(synthetic_manifest, data_cfg, tiny_model_cfg(), train=True)
    assert "only on the nodes offering resource 'preprocess' (2 in all)" in capsys.readouterr().out
    decoded_on = [node for b in ds.iter_batches(batch_format="numpy") for node in b["node_id"]]
    assert len(decoded_on) == 32  # 16 tiles x 2 visits (4 observations, 3 per visit)
    assert set(decoded_on) == {cpu_node}, f"decoded on {set(decoded_on) - {cpu_node}}, the head is {head}"
    # The read too: one operator reads and decodes each shard (Ray Data's per-block stats say
    # which node produced each block).
    ran = {name: nodes for name, nodes in _nodes_by_operator(ds).items() if nodes}
    readers = [name for name in ran if "_read_shards" in name]
    assert readers, ran
    for name in readers:
        assert ran[name] == {cpu_node}, (name, ran, cpu_node)


@pytest.mark.slow
def test_without_a_node_offering_it_decode_runs_anywhere(two_nodes, synthetic_manifest, capsys) -> None:
    data_cfg, model_cfg = tiny_data_cfg(decode_resource="no_such_pool"), tiny_model_cfg()
    ds = pipeline.build_dataset(synthetic_manifest, data_cfg, model_cfg, train=True)
    out = capsys.readouterr().out
    assert "no node offers resource 'no_such_pool': read and decode run on any node" in out
    batches = list(pipeline.iter_training_batches(ds, data_cfg, model_cfg))
    assert len(batches) == 8 and all(b["rs"].shape[0] == 4 for b in batches)


@pytest.mark.slow
def test_decode_workers_are_started_ahead_on_the_cpu_node(two_nodes, synthetic_manifest, monkeypatch) -> None:
    """``warm_decode_workers`` starts the decode processes where decode runs, and decode then uses them."""
    import ray

    head, cpu_node = two_nodes
    monkeypatch.setattr(pipeline, "_decode_batch", _decode_recording_node())
    data_cfg = tiny_data_cfg(num_decode_workers=2)
    warm = ray.get(pipeline.warm_decode_workers(data_cfg), timeout=120)
    assert len(warm) == 2 and {node for node, _ in warm} == {cpu_node}, (warm, head)
    ds = pipeline.build_dataset(synthetic_manifest, data_cfg, tiny_model_cfg(), train=True)
    decoded_by = {int(pid) for b in ds.iter_batches(batch_format="numpy") for pid in b["pid"]}
    assert decoded_by and decoded_by <= {pid for _, pid in warm}, (decoded_by, warm)
