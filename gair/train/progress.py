"""Progress accounting over one logging interval: loss terms, throughput, data wait."""

from __future__ import annotations

import time

import torch


class ProgressMeter:
    """Sums of metrics (kept on device, read once per interval) and wall-clock splits."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._micro = 0
        self._samples = 0
        self._data_wait = 0.0
        self._start = time.perf_counter()
        self._sources: dict[int, int] = {}

    def add_data_wait(self, seconds: float) -> None:
        self._data_wait += seconds

    def add(self, loss: torch.Tensor, metrics: dict[str, torch.Tensor], samples: int) -> None:
        terms = {"loss": loss.detach(), **{k: v.detach() for k, v in metrics.items()}}
        for k, v in terms.items():
            v = v.float().reshape(-1)[0] if v.numel() else v.float().sum()
            self._sums[k] = self._sums[k] + v if k in self._sums else v.clone()
        self._micro += 1
        self._samples += samples

    def add_sources(self, source: torch.Tensor) -> None:
        """Count the tiles of a micro-batch by source (its ``source`` column, data.train_manifests)."""
        for i, n in enumerate(torch.bincount(source.reshape(-1).cpu()).tolist()):
            if n:
                self._sources[i] = self._sources.get(i, 0) + n

    def source_counts(self) -> dict[int, int]:
        """Tiles of this worker per source index since the last reset."""
        return dict(self._sources)

    def summary(self) -> dict[str, float]:
        """Per-worker means and rates since the last reset (one host sync)."""
        elapsed = max(time.perf_counter() - self._start, 1e-9)
        out = {k: float(v) / max(self._micro, 1) for k, v in self._sums.items()}
        out["samples_per_s"] = self._samples / elapsed
        out["data_wait_fraction"] = min(1.0, self._data_wait / elapsed)
        return out


def format_progress(step: int, max_steps: int, metrics: dict[str, float]) -> str:
    head = f"step {step}/{max_steps}"
    order = ["loss", "lr", "temperature", "samples_per_s", "data_wait_fraction"]
    counts = [k for k in metrics if k.startswith("tiles_")]  # per source, so far (data.train_manifests)
    keys = [k for k in order if k in metrics] + sorted(k for k in metrics if k not in order and k not in counts)
    text = head + " " + " ".join(f"{k}={metrics[k]:.4g}" for k in keys)
    if counts:
        text += " src " + " ".join(f"{k[len('tiles_') :]}={int(metrics[k])}" for k in counts)
    return text
