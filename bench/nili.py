"""NILI: the vectorized K-point query against K calls of the single-query path.

Both run on the same RS tokens (base width 768, 12x12 grid), so the ratio isolates the
query itself. Timed side by side in one run, interleaved, median of repeats.

    python bench/nili.py [--batch 8] [--width 768] [--device cpu|cuda] [--repeats 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from gair.models.nili import NILI


def _timed(fn, device: str) -> float:
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8, help="RS tiles per batch")
    p.add_argument("--width", type=int, default=768, help="token width D")
    p.add_argument("--grid", type=int, default=12, help="token grid side")
    p.add_argument("--points", type=int, nargs="+", default=[1, 16, 256], help="K values")
    p.add_argument(
        "--repeats",
        type=int,
        default=7,
        help="timed runs of each path per K, interleaved, after one warm-up (median printed)",
    )
    p.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="torch device (default: cuda when available, else cpu)",
    )
    p.add_argument("--backward", action="store_true", help="time forward + backward")
    args = p.parse_args()

    torch.manual_seed(0)
    dev = args.device
    nili = NILI(args.width).to(dev)
    tokens = torch.randn(args.batch, args.grid * args.grid, args.width, device=dev, requires_grad=args.backward)
    grid = (args.grid, args.grid)
    print(f"device={dev} batch={args.batch} width={args.width} grid={args.grid} backward={args.backward}")
    print(f"{'K':>5} {'vectorized ms':>14} {'K x single ms':>14} {'speedup':>8} {'max |diff|':>11}")
    for K in args.points:
        xy = torch.rand(args.batch, K, 2, device=dev) * 2 - 1

        def vectorized(xy=xy):
            out = nili(tokens, xy, grid)
            if args.backward:
                out.sum().backward()
            return out

        def looped(xy=xy, K=K):
            out = torch.stack([nili.forward_single(tokens, xy[:, k], grid) for k in range(K)], 1)
            if args.backward:
                out.sum().backward()
            return out

        with torch.no_grad():
            diff = (
                (
                    nili(tokens, xy, grid)
                    - torch.stack([nili.forward_single(tokens, xy[:, k], grid) for k in range(K)], 1)
                )
                .abs()
                .max()
                .item()
            )
        vectorized(), looped()  # warm-up
        tv, tl = [], []
        for _ in range(args.repeats):  # interleaved so drift hits both alike
            tv.append(_timed(vectorized, dev))
            tl.append(_timed(looped, dev))
        mv, ml = statistics.median(tv) * 1e3, statistics.median(tl) * 1e3
        print(f"{K:>5} {mv:>14.3f} {ml:>14.3f} {ml / mv:>7.1f}x {diff:>11.2e}")


if __name__ == "__main__":
    main()
