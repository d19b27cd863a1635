"""The pretraining module as the config asks: CROMA start of the RS encoder and the frozen teachers.

Weights come from a local path or an object-storage URI (``model.rs_init``,
``model.sv_teacher``); ``.safetensors`` files are read with safetensors, anything else
with ``torch.load(weights_only=True)``. A local directory means the Hugging Face snapshot
file in it (``model.safetensors``, else ``pytorch_model.bin``).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from gair.configs.train import PretrainConfig
from gair.data import storage
from gair.models.croma import load_croma_into_rs_encoder
from gair.models.gair import GAIR
from gair.models.pretrain import GAIRPretrainModule
from gair.models.teachers import Teachers, copy_rs_teacher, load_sv_teacher

_SNAPSHOT_FILES = ("model.safetensors", "pytorch_model.bin")


def read_weights(uri: str, s3: storage.S3Options | None = None) -> Mapping[str, object]:
    """A state dict (or dict of state dicts) from a local file, a local HF snapshot directory or a URI."""
    if not storage.is_remote(uri) and Path(uri).is_dir():
        for name in _SNAPSHOT_FILES:
            if (Path(uri) / name).is_file():
                uri = str(Path(uri) / name)
                break
        else:
            raise FileNotFoundError(f"{uri}: a directory without {' or '.join(_SNAPSHOT_FILES)}")
    data = storage.read_bytes(uri, s3)
    if uri.endswith(".safetensors"):
        from safetensors.torch import load  # noqa: PLC0415

        return load(data)
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def build_pretrain_module(cfg: PretrainConfig, log: Callable[[str], None] = print) -> GAIRPretrainModule:
    """GAIR (RS encoder from ``model.rs_init`` if set) wrapped with its objectives and teachers.

    Call it after seeding torch: the random parts of the model, and so the RS teacher when
    there is no ``rs_init``, come out the same on every worker and on every restart.
    """
    s3 = storage.S3Options.from_config(cfg.data)
    model = GAIR(cfg.model)
    if cfg.model.rs_init:
        report = load_croma_into_rs_encoder(model.rs_encoder, read_weights(cfg.model.rs_init, s3))
        log(f"rs_init {cfg.model.rs_init}: {report.summary()}")
    teachers = None
    if cfg.loss.distill_weight > 0:
        sv = load_sv_teacher(read_weights(cfg.model.sv_teacher, s3), cfg.model)
        teachers = Teachers(copy_rs_teacher(model.rs_encoder), sv)
        log(f"teachers: SV from {cfg.model.sv_teacher}, RS = frozen copy of the initialized RS encoder")
    return GAIRPretrainModule(cfg.model, cfg.loss, model=model, teachers=teachers)
