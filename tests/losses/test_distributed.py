"""Two gloo processes give the same loss and gradients as one process over the whole batch."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gair.configs.model import LossConfig
from gair.losses.contrastive import GAIRLoss
from gair.models.pretrain import GAIRPretrainModule
from tests.models._factory import tiny_cfg

WORLD = 2
N_PER_RANK, E_PER_RANK, Q, D = 4, 3, 16, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _embeddings(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    N, E = N_PER_RANK * WORLD, E_PER_RANK * WORLD
    mask = torch.ones(N, dtype=torch.bool)
    mask[[2, 5, 6]] = False  # uneven valid counts per rank: 3 and 2
    return {
        "s": torch.randn(N, D, generator=g),
        "r": torch.randn(N, D, generator=g),
        "mask": mask,
        "loc": torch.randn(N, D, generator=g),
        "r_extra": torch.randn(E, D, generator=g),
        "loc_extra": torch.randn(E, D, generator=g),
        "neg": torch.randn(Q, D, generator=g),
    }


def _batch(seed: int = 0, B: int = 2 * WORLD, K: int = 2, M: int = 3):
    g = torch.Generator().manual_seed(seed)
    mask = torch.ones(B, K, dtype=torch.bool)
    mask[1, 1] = mask[3, 0] = mask[2, 1] = False
    return {
        "rs": torch.randn(B, 10, 32, 32, generator=g),
        "sv": torch.randn(B, K, 3, 32, 32, generator=g),
        "sv_mask": mask,
        "lonlat": torch.rand(B, K, 2, generator=g) * torch.tensor([360.0, 170.0]) - torch.tensor([180.0, 85.0]),
        "xy": torch.rand(B, K, 2, generator=g) * 2 - 1,
        "xy_extra": torch.rand(B, M, 2, generator=g) * 2 - 1,
        "lonlat_extra": torch.rand(B, M, 2, generator=g) * 20,
    }


def _loss_single(emb, cfg):
    leaves = {k: v.clone().requires_grad_(v.is_floating_point()) for k, v in emb.items()}
    total, metrics = GAIRLoss(cfg)(*[leaves[k] for k in ("s", "r", "mask", "loc", "r_extra", "loc_extra", "neg")])
    total.backward()
    return total.item(), metrics, {k: v.grad for k, v in leaves.items() if v.requires_grad}


def _module(seed=0):
    torch.manual_seed(seed)
    return GAIRPretrainModule(tiny_cfg(), LossConfig(queue_size=32))


def _worker(rank: int, port: int, out: dict, mode: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        if mode == "loss":
            emb = _embeddings()
            n, e = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK), slice(rank * E_PER_RANK, (rank + 1) * E_PER_RANK)
            local = {k: (v if k == "neg" else v[e] if "extra" in k else v[n]) for k, v in emb.items()}
            loss, metrics, grads = _loss_single(local, LossConfig(temperature=0.1))
            out[rank] = {"loss": loss, "metric": metrics["loss"].item(), "grads": grads}
        else:
            module = _module()
            batch = {k: v[rank * 2 : (rank + 1) * 2] for k, v in _batch().items()}
            loss, metrics = module(batch)
            loss.backward()
            grads = {n: p.grad.clone() for n, p in module.named_parameters() if p.grad is not None}
            for g in grads.values():  # what DDP / DeepSpeed do: average over workers
                dist.all_reduce(g)
                g /= WORLD
            out[rank] = {
                "loss": loss.item(),
                "metric": metrics["loss"].item(),
                "grads": grads,
                "queue": module.queue.lonlat.clone(),
            }
    finally:
        dist.destroy_process_group()


def _run(mode: str) -> dict:
    with mp.Manager() as manager:
        out = manager.dict()
        mp.spawn(_worker, args=(_free_port(), out, mode), nprocs=WORLD, join=True)
        return dict(out)


def test_two_gloo_workers_equal_one_process_over_the_concatenated_batch():
    results = _run("loss")
    loss, metrics, grads = _loss_single(_embeddings(), LossConfig(temperature=0.1))
    # The global loss is the mean of the per-worker losses; each reports it in its metrics.
    assert sum(results[r]["loss"] for r in range(WORLD)) / WORLD == pytest.approx(loss, rel=1e-5)
    for r in range(WORLD):
        assert results[r]["metric"] == pytest.approx(loss, rel=1e-5)
    # Gathered with gradient: each worker's embedding gradients, averaged as data
    # parallelism does (divide by W), equal the single-process gradients of its rows.
    for key in ("s", "r", "loc"):
        dist_grad = torch.cat([results[r]["grads"][key] for r in range(WORLD)]) / WORLD
        assert torch.allclose(dist_grad, grads[key], atol=1e-6), key
    for key in ("r_extra", "loc_extra"):
        dist_grad = torch.cat([results[r]["grads"][key] for r in range(WORLD)]) / WORLD
        assert torch.allclose(dist_grad, grads[key], atol=1e-6), key
    neg_grad = sum(results[r]["grads"]["neg"] for r in range(WORLD)) / WORLD
    assert torch.allclose(neg_grad, grads["neg"], atol=1e-6)


def test_without_gather_the_negatives_are_per_worker_and_differ():
    """Control: the reference's per-GPU negatives do not reproduce the global loss."""
    emb = _embeddings()
    loss, _, _ = _loss_single(emb, LossConfig(temperature=0.1))
    halves = []
    for rank in range(WORLD):
        n, e = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK), slice(rank * E_PER_RANK, (rank + 1) * E_PER_RANK)
        local = {k: (v if k == "neg" else v[e] if "extra" in k else v[n]) for k, v in emb.items()}
        halves.append(_loss_single(local, LossConfig(temperature=0.1))[0])
    assert abs(sum(halves) / WORLD - loss) > 1e-3


@pytest.mark.slow
def test_pretrain_module_two_workers_equal_one_process():
    """The whole module: loss, averaged parameter gradients and the shared queue."""
    results = _run("module")
    module = _module()
    loss, metrics = module(_batch())
    loss.backward()
    assert results[0]["metric"] == pytest.approx(loss.item(), rel=1e-4)
    assert sum(results[r]["loss"] for r in range(WORLD)) / WORLD == pytest.approx(loss.item(), rel=1e-4)
    worst = 0.0
    for name, p in module.named_parameters():
        if p.grad is None:
            continue
        g = results[0]["grads"][name]
        worst = max(worst, ((g - p.grad).abs().max() / (p.grad.abs().max() + 1e-8)).item())
    assert worst < 1e-3, f"worst relative gradient difference {worst}"
    # The queue received the coordinates of every worker, in rank order, on every worker.
    assert torch.equal(results[0]["queue"], results[1]["queue"])
    assert torch.allclose(results[0]["queue"], module.queue.lonlat)
