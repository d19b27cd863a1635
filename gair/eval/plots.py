"""Evaluation figures (matplotlib, Agg): retrieval examples, world map of location embeddings,
predicted against true."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def retrieval_grid(examples: list[dict[str, Any]], images: dict[Any, np.ndarray], path: str | Path) -> Path:
    """One row per query: the tile with the query point, the true street view, the top-k retrieved.

    A retrieved street view has a green frame when it is the true one, red otherwise.
    """
    plt = _plt()
    top_k = max((len(e["retrieved"]) for e in examples), default=1)
    cols = 2 + top_k
    fig, axes = plt.subplots(len(examples), cols, figsize=(1.6 * cols, 1.7 * len(examples)), squeeze=False)
    for row, ex in enumerate(examples):
        q = ex["query"]
        ax = axes[row, 0]
        tile = images.get(q["tile_id"])
        if tile is not None:
            h, w = tile.shape[:2]
            ax.imshow(tile)
            x, y = (q["xy"][0] + 1) * w / 2, (q["xy"][1] + 1) * h / 2
            ax.plot([x], [y], marker="+", color="yellow", markersize=12, mew=2)
        ax.set_title(f"tile {q['tile_id'][-8:]}\nrank {ex['rank']}", fontsize=7)
        _show(axes[row, 1], images.get((q["tile_id"], q["obs_index"])), f"true{_lab(q)}", "blue")
        for j, r in enumerate(ex["retrieved"]):
            colour = "limegreen" if r["correct"] else "red"
            _show(
                axes[row, 2 + j],
                images.get((r["tile_id"], r["obs_index"])),
                f"#{j + 1} {r['sim']:.2f}{_lab(r)}",
                colour,
            )
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    mode = examples[0]["mode"] if examples else ""
    fig.suptitle(f"RS -> SV retrieval ({mode}): query point, true street view, top {top_k}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _lab(ref: dict[str, Any]) -> str:
    return f" c{ref['label']}" if ref.get("label") not in (None, "") else ""


def _show(ax: Any, image: np.ndarray | None, title: str, colour: str) -> None:
    if image is not None:
        ax.imshow(image)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(3)
    ax.set_title(title, fontsize=7)


def world_map(rgb_HW3: np.ndarray, points_lonlat: np.ndarray | None, path: str | Path, title: str) -> Path:
    """An equirectangular map of PCA colours of location embeddings, with the task's points."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 5))
    ax.imshow(rgb_HW3, extent=(-180, 180, -90, 90), origin="upper", interpolation="nearest")
    if points_lonlat is not None and len(points_lonlat):
        ax.scatter(points_lonlat[:, 0], points_lonlat[:, 1], s=1.5, c="black", alpha=0.6, linewidths=0)
    ax.set_xlabel("longitude")
    ax.set_ylabel("latitude")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def predicted_vs_true(series: dict[str, tuple[np.ndarray, np.ndarray, str]], path: str | Path, target: str) -> Path:
    """One panel per feature set: out-of-fold prediction against truth, with y = x."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(series), figsize=(4.2 * len(series), 4), squeeze=False)
    for ax, (name, (y_true, y_pred, note)) in zip(axes[0], series.items()):
        ax.scatter(y_true, y_pred, s=3, alpha=0.4)
        lo, hi = float(min(y_true.min(), y_pred.min())), float(max(y_true.max(), y_pred.max()))
        ax.plot([lo, hi], [lo, hi], color="black", lw=1)
        ax.set_xlabel(f"true {target}")
        ax.set_ylabel(f"predicted {target} (out of fold)")
        ax.set_title(f"{name}: {note}", fontsize=9)
        ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
