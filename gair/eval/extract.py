"""Parallel embedding extraction with Ray Data: manifests and CSV-listed images -> numpy arrays.

The model travels to the workers through the object store (the export's bytes, put once),
so the actors need neither the driver's disk nor MLflow. Each actor of a
``map_batches`` actor pool holds one copy of the model (CPU or GPU) and turns a batch of
rows into embeddings; the driver streams the results back and prints progress lines.

Output granularity:
- :class:`ManifestEmbedder`: one output row per *observation* (street view) of a manifest
  tile: its projected SV embedding and the RS query features at its location.
- :class:`RSFileEmbedder` / :class:`SVFileEmbedder`: one output row per CSV row.
A row that cannot be used (undecodable image, missing file) comes back with ``ok=False``
and a ``bad_reason``; the caller decides whether that is fatal.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import torch

from gair.configs.eval import ExtractConfig
from gair.data import decode, storage, transforms
from gair.hub import CONFIG_NAME, WEIGHTS_NAME, load_config_json
from gair.models.gair import GAIR

LOCAL_MODES = ("nili", "bilinear", "bicubic")


def sv_statistics(extract_cfg: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(mean, std) for street views: the configured ones, else the data defaults."""
    from gair.configs.data import DataConfig

    d = DataConfig()
    return tuple(extract_cfg.sv_mean or d.sv_mean), tuple(extract_cfg.sv_std or d.sv_std)


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class ModelPayload:
    """An export's files as bytes: what the actors rebuild the model from."""

    config_json: str
    weights: bytes

    @classmethod
    def from_dir(cls, directory: str | Path) -> ModelPayload:
        directory = Path(directory)
        load_config_json(directory)  # fail early on a bad export
        return cls((directory / CONFIG_NAME).read_text(), (directory / WEIGHTS_NAME).read_bytes())

    def build(self, device: str | torch.device = "cpu") -> GAIR:
        from safetensors.torch import load as load_safetensors

        from gair.configs import from_dict
        from gair.configs.model import ModelConfig

        cfg = from_dict(ModelConfig, json.loads(self.config_json)["model"])
        model = GAIR(cfg)
        model.load_state_dict(load_safetensors(self.weights), strict=True)
        return model.to(device).eval()


def _device(num_gpus: float) -> torch.device:
    return torch.device("cuda") if num_gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


class _Embedder:
    """Base of the actor classes: rebuilds the model from the object store once per actor."""

    def __init__(self, payload: dict[str, Any], num_gpus: float, torch_threads: int) -> None:
        value = payload["ref"]
        if isinstance(value, ModelPayload):  # in-process use (tests, a single GPU box without Ray)
            payload_obj = value
        else:
            import ray

            payload_obj = ray.get(value)
        if torch_threads > 0:
            torch.set_num_threads(torch_threads)
        self.device = _device(num_gpus)
        self.model = payload_obj.build(self.device)
        self.cfg = self.model.cfg
        self.dim = self.model.embed_dim
        print(f"[embed] {type(self).__name__}: {self.cfg.size} model on {self.device}", flush=True)


# ------------------------------------------------------------------ manifest rows


class ManifestEmbedder(_Embedder):
    """Manifest rows (tiles) -> one row per observation with its SV embedding and RS query features.

    Output columns: ``ok``, ``bad_reason``, ``tile_id``, ``obs_id``, ``obs_index`` (index of
    the observation in its tile), ``label`` (``meta_json["class"]`` when present, else
    ""), ``lonlat`` (N, 2), ``xy`` (N, 2), ``sv`` (N, D, the projected SV embedding: the
    space the contrastive loss aligns with the RS features) and ``q_<mode>`` (N, D) for
    each requested mode (``global`` = the tile's mean RS embedding, repeated).
    """

    def __init__(
        self,
        payload: dict[str, Any],
        spec: decode.DecodeSpec,
        modes: Sequence[str],
        sv_mean: Sequence[float],
        sv_std: Sequence[float],
        num_gpus: float = 0.0,
        torch_threads: int = 1,
    ) -> None:
        super().__init__(payload, num_gpus, torch_threads)
        self.spec = spec
        self.modes = tuple(modes)
        self.sv_mean, self.sv_std = tuple(sv_mean), tuple(sv_std)

    def __call__(self, table: Any) -> dict[str, np.ndarray]:
        rows = table.to_pylist()
        decoded = decode.decode_rows(rows, self.spec)
        out = self._bad_rows(rows, decoded)
        ok = decoded["ok"]
        if ok.any():
            good_rows = [r for r, k in zip(rows, ok) if k]
            out = _concat([out, self._embed({k: v[ok] for k, v in decoded.items()}, good_rows)])
        return out

    @torch.no_grad()
    def _embed(self, d: dict[str, np.ndarray], rows: list[dict]) -> dict[str, np.ndarray]:
        dev = self.device
        mask_BK = torch.from_numpy(d["sv_mask"]).to(dev)
        tokens_BND = self.model.rs_tokens(torch.from_numpy(d["rs"]).to(dev))
        xy_BK2 = torch.from_numpy(d["xy"]).to(dev)
        feats: dict[str, torch.Tensor] = {}
        for mode in self.modes:
            if mode == "global":
                feats[mode] = tokens_BND.mean(1, keepdim=True).expand(-1, xy_BK2.shape[1], -1)[mask_BK]
            else:
                feats[mode] = self.model.query_tokens(tokens_BND, xy_BK2, mode)[mask_BK]
        sv_BK3VV = transforms.normalize_sv(torch.from_numpy(d["sv"]).to(dev), mask_BK, self.sv_mean, self.sv_std)
        sv_ND = self.model.project_sv(self.model.encode_sv(sv_BK3VV[mask_BK]))
        n = int(mask_BK.sum())
        b_idx, k_idx = np.nonzero(d["sv_mask"])
        obs = [rows[b]["observations"][k] for b, k in zip(b_idx, k_idx)]
        out = {
            "ok": np.ones(n, bool),
            "bad_reason": np.array([""] * n, dtype=object),
            "tile_id": np.array([str(rows[b]["tile_id"]) for b in b_idx], dtype=object),
            "obs_id": np.array([str(o["obs_id"]) for o in obs], dtype=object),
            "obs_index": k_idx.astype(np.int64),
            "label": np.array([_meta_label(o) for o in obs], dtype=object),
            "lonlat": d["lonlat"][d["sv_mask"]].astype(np.float64),
            "xy": d["xy"][d["sv_mask"]].astype(np.float32),
            "sv": sv_ND.float().cpu().numpy(),
        }
        out.update({f"q_{m}": f.float().cpu().numpy() for m, f in feats.items()})
        return out

    def _bad_rows(self, rows: list[dict], decoded: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One placeholder row per unusable tile, so the driver can count and report them."""
        bad = np.flatnonzero(~decoded["ok"])
        n = len(bad)
        out = {
            "ok": np.zeros(n, bool),
            "bad_reason": np.array([str(decoded["bad_reason"][i]) for i in bad], dtype=object),
            "tile_id": np.array([str(rows[i].get("tile_id")) for i in bad], dtype=object),
            "obs_id": np.array([""] * n, dtype=object),
            "obs_index": np.zeros(n, np.int64),
            "label": np.array([""] * n, dtype=object),
            "lonlat": np.zeros((n, 2)),
            "xy": np.zeros((n, 2), np.float32),
            "sv": np.zeros((n, self.dim), np.float32),
        }
        out.update({f"q_{m}": np.zeros((n, self.dim), np.float32) for m in self.modes})
        return out


def _meta_label(obs: dict) -> str:
    text = obs.get("meta_json")
    if not text:
        return ""
    try:
        meta = json.loads(text)
    except (TypeError, ValueError):
        return ""
    return str(meta.get("class", "")) if isinstance(meta, dict) else ""


def _concat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    parts = [p for p in parts if p]
    keys = parts[0].keys()
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}


# ----------------------------------------------------------------------- CSV rows


class RSFileEmbedder(_Embedder):
    """CSV rows (``uri``, ``row``) -> global RS embedding (``emb``) and per-band mean/std (``stats``)."""

    def __init__(
        self,
        payload: dict[str, Any],
        band_names: Sequence[str],
        s3: storage.S3Options,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
    ) -> None:
        super().__init__(payload, num_gpus, torch_threads)
        self.band_names = list(band_names)
        self.s3 = s3
        self.bands = tuple(self.cfg.rs_bands)

    def load(self, uri: str) -> np.ndarray:
        """A tile as the model sees it: (C, S, S) float32 in [0, 1]."""
        image, _ = decode.decode_geotiff(storage.read_bytes(uri, self.s3))
        if image.shape[0] != len(self.band_names):
            raise ValueError(f"{uri} has {image.shape[0]} bands but rs_probe.band_names lists {len(self.band_names)}")
        image = transforms.select_bands(image, self.band_names, self.bands)
        return transforms.resize_chw(transforms.normalize_s2(image, self.bands), self.cfg.rs_image_size)

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, ok, reasons = _load_all(batch["uri"], self.load)
        c, s = len(self.bands), self.cfg.rs_image_size
        x = np.stack([im if im is not None else np.zeros((c, s, s), np.float32) for im in images])
        emb = self.model.encode_rs(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        stats = np.concatenate([x.mean(axis=(2, 3)), x.std(axis=(2, 3))], axis=1)
        return {"row": batch["row"], "ok": ok, "bad_reason": reasons, "emb": emb, "baseline": stats.astype(np.float32)}


class SVFileEmbedder(_Embedder):
    """CSV rows (``uri``, ``row``) -> SV embedding (``emb``, encoder output) and an 8x8 RGB thumbnail (``baseline``)."""

    THUMB = 8

    def __init__(
        self,
        payload: dict[str, Any],
        sv_mean: Sequence[float],
        sv_std: Sequence[float],
        s3: storage.S3Options,
        num_gpus: float = 0.0,
        torch_threads: int = 1,
    ) -> None:
        super().__init__(payload, num_gpus, torch_threads)
        self.sv_mean, self.sv_std, self.s3 = tuple(sv_mean), tuple(sv_std), s3

    def load(self, uri: str) -> np.ndarray:
        return decode.decode_jpeg(storage.read_bytes(uri, self.s3))

    @torch.no_grad()
    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images, ok, reasons = _load_all(batch["uri"], self.load)
        v = self.cfg.sv_image_size
        resized = np.stack(
            [transforms.resize_sv(im, v) if im is not None else np.zeros((v, v, 3), np.uint8) for im in images]
        )
        thumbs = np.stack(
            [transforms.resize_sv(im, self.THUMB) if im is not None else np.zeros((8, 8, 3), np.uint8) for im in images]
        )
        sv = torch.from_numpy(resized)[:, None].to(self.device)  # (B, 1, V, V, 3)
        mask = torch.ones(sv.shape[:2], dtype=torch.bool, device=self.device)
        x = transforms.normalize_sv(sv, mask, self.sv_mean, self.sv_std)[:, 0]
        emb = self.model.encode_sv(x).float().cpu().numpy()
        baseline = thumbs.reshape(len(thumbs), -1).astype(np.float32) / 255.0
        return {"row": batch["row"], "ok": ok, "bad_reason": reasons, "emb": emb, "baseline": baseline}


def _load_all(uris: np.ndarray, load: Any) -> tuple[list[np.ndarray | None], np.ndarray, np.ndarray]:
    images, ok, reasons = [], [], []
    for uri in uris:
        try:
            images.append(load(str(uri)))
            ok.append(True)
            reasons.append("")
        except Exception as exc:  # noqa: BLE001 - reported per row to the driver, which decides
            images.append(None)
            ok.append(False)
            reasons.append(f"{uri}: {type(exc).__name__}: {exc}")
    return images, np.array(ok, bool), np.array(reasons, dtype=object)


# ------------------------------------------------------------------------ running


def map_with_model(ds: Any, cls: type, kwargs: dict[str, Any], cfg: ExtractConfig, batch_format: str) -> Any:
    """``ds.map_batches`` with an actor pool of ``cfg.num_workers`` copies of the model."""
    import ray.data

    threads = cfg.torch_threads or max(1, int(np.ceil(cfg.num_cpus_per_worker)))
    return ds.map_batches(
        cls,
        fn_constructor_kwargs={**kwargs, "num_gpus": cfg.num_gpus_per_worker, "torch_threads": threads},
        batch_size=cfg.batch_size,
        batch_format=batch_format,
        compute=ray.data.ActorPoolStrategy(size=cfg.num_workers),
        num_cpus=cfg.num_cpus_per_worker,
        num_gpus=cfg.num_gpus_per_worker or None,
    )


def quiet_data_context() -> None:
    """Ray Data's tqdm bars garble job logs; :func:`collect` prints its own progress lines."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False


def collect(
    ds: Any,
    *,
    what: str,
    total: int | None,
    count_key: str | None = None,
    every_s: float = 5.0,
    stream: TextIO | None = sys.stderr,
) -> dict[str, np.ndarray]:
    """Stream a dataset's output to the driver as concatenated numpy arrays, printing progress.

    Progress counts input units: distinct values of ``count_key`` per batch (tiles, when the
    output has one row per observation), else output rows.
    """
    parts: list[dict[str, np.ndarray]] = []
    done, start, last = 0, time.monotonic(), 0.0

    def line(prefix: str = "") -> None:
        of = f"/{total} ({100 * done / max(1, total):.0f}%)" if total else ""
        rate = done / max(1e-9, time.monotonic() - start)
        print(f"[embed {what}] {prefix}{done}{of} {rate:.1f}/s", file=stream, flush=True)

    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        if not batch or not len(next(iter(batch.values()))):
            continue
        parts.append(batch)
        done += len(set(batch[count_key].tolist())) if count_key else len(next(iter(batch.values())))
        now = time.monotonic()
        if stream is not None and now - last >= every_s:
            last = now
            line()
    if stream is not None:
        line("done: ")
    if not parts:
        return {}
    return _concat(parts)
