"""Weights of the reference implementation (github zpl99/GAIR, ``gair/model.py`` at HEAD).

The official release (``checkpoint.pth`` of ``PingL/GAIR``) is ``{"model": state_dict}``
with the reference's parameter names. This module maps those names onto ours and back.
Every reference key is either placed or reported: nothing is silently dropped.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from gair.configs.model import ModelConfig
from gair.models._vit_layouts import convert_vit_state_dict
from gair.models.gair import GAIR

# Reference keys that have no counterpart in the GAIR model (training-only or unused parts).
_UNUSED_PREFIXES = (
    "nerf_fn.",  # transformer query head, an ablation not used by NILI
    "query_feature",
    "rs_patch_pos_encoding",
    "radar_proj.",
    "location_proj.",
    "queue_for_location",  # training state; our queue lives in GAIRPretrainModule
    "queue_ptr_location",
    "queue_for_rs_encoding",
    "queue_ptr_rs",
    "logit_scale",  # a fixed temperature; ours is a loss setting
    "rs_encoder.layer_norm.",  # CROMA classification head, not used for embeddings
    "rs_encoder.head.",
    "sv_encoder.pooler.activation",
)

_RS = r"rs_encoder\.s2_encoder\."
_SV = r"sv_encoder\.encoder\.layer\.(\d+)\."
_LOC = r"location_encoder\.LocEnc(\d+)\."

# (reference regex, our template). Applied to every key in order; first match wins.
_RULES: list[tuple[str, str]] = [
    (_RS + r"linear_input\.(weight|bias)$", r"rs_encoder.patch_embed.\1"),
    (_RS + r"transformer\.layers\.(\d+)\.0\.to_qkv\.weight$", r"rs_encoder.blocks.\1.attn.qkv.weight"),
    (_RS + r"transformer\.layers\.(\d+)\.0\.to_out\.(weight|bias)$", r"rs_encoder.blocks.\1.attn.proj.\2"),
    (_RS + r"transformer\.layers\.(\d+)\.0\.input_norm\.(weight|bias)$", r"rs_encoder.blocks.\1.attn.norm.\2"),
    (_RS + r"transformer\.layers\.(\d+)\.1\.net\.0\.(weight|bias)$", r"rs_encoder.blocks.\1.mlp.fc1.\2"),
    (_RS + r"transformer\.layers\.(\d+)\.1\.net\.3\.(weight|bias)$", r"rs_encoder.blocks.\1.mlp.fc2.\2"),
    (_RS + r"transformer\.layers\.(\d+)\.1\.input_norm\.(weight|bias)$", r"rs_encoder.blocks.\1.mlp.norm.\2"),
    (_RS + r"transformer\.norm_out\.(weight|bias)$", r"rs_encoder.norm.\1"),
    (r"sv_encoder\.embeddings\.cls_token$", "sv_encoder.vit.cls_token"),
    (r"sv_encoder\.embeddings\.position_embeddings$", "sv_encoder.vit.pos_embed"),
    (r"sv_encoder\.embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"sv_encoder.vit.patch_embed.proj.\1"),
    (_SV + r"attention\.output\.dense\.(weight|bias)$", r"sv_encoder.vit.blocks.\1.attn.proj.\2"),
    (_SV + r"layernorm_before\.(weight|bias)$", r"sv_encoder.vit.blocks.\1.norm1.\2"),
    (_SV + r"layernorm_after\.(weight|bias)$", r"sv_encoder.vit.blocks.\1.norm2.\2"),
    (_SV + r"intermediate\.dense\.(weight|bias)$", r"sv_encoder.vit.blocks.\1.mlp.fc1.\2"),
    (_SV + r"output\.dense\.(weight|bias)$", r"sv_encoder.vit.blocks.\1.mlp.fc2.\2"),
    (r"sv_encoder\.layernorm\.(weight|bias)$", r"sv_encoder.vit.norm.\1"),
    (r"sv_encoder\.pooler\.dense\.(weight|bias)$", r"sv_encoder.pooler.\1"),
    (r"optical_proj\.(weight|bias)$", r"sv_proj.\1"),
    (_LOC + r"capsule\.0\.b$", r"location_encoder.branches.\1.freqs"),
    (_LOC + r"capsule\.1\.(weight|bias)$", r"location_encoder.branches.\1.mlp.0.\2"),
    (_LOC + r"capsule\.3\.(weight|bias)$", r"location_encoder.branches.\1.mlp.2.\2"),
    (_LOC + r"capsule\.5\.(weight|bias)$", r"location_encoder.branches.\1.mlp.4.\2"),
    (_LOC + r"head\.0\.(weight|bias)$", r"location_encoder.branches.\1.head.\2"),
    (r"imnet\.(weight|bias)$", r"nili.\1"),
]
_COMPILED = [(re.compile(p), t) for p, t in _RULES]


@dataclass
class LoadReport:
    """What happened to each key of a reference checkpoint."""

    loaded: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)  # known reference-only parts
    unexpected: list[str] = field(default_factory=list)  # keys we do not recognise
    missing: list[str] = field(default_factory=list)  # our keys the checkpoint did not fill
    shape_mismatch: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.unexpected or self.missing or self.shape_mismatch)

    def summary(self) -> str:
        parts = [f"{len(self.loaded)} tensors loaded", f"{len(self.unused)} reference-only tensors not used"]
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unrecognised: {self.unexpected[:5]}")
        if self.missing:
            parts.append(f"{len(self.missing)} of ours not in the checkpoint: {self.missing[:5]}")
        if self.shape_mismatch:
            parts.append(f"shape mismatches: {dict(list(self.shape_mismatch.items())[:5])}")
        return "; ".join(parts)


def convert_reference_state_dict(ref: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Reference names -> our names. Returns (our state dict, report of unplaced keys)."""
    out: dict[str, torch.Tensor] = {}
    report = LoadReport()
    sv: dict[str, torch.Tensor] = {}  # the street-view ViTModel: transformers 4.x or 5.x names
    for raw_key, tensor in ref.items():
        key = raw_key[len("module.") :] if raw_key.startswith("module.") else raw_key
        if key.startswith(_UNUSED_PREFIXES):
            report.unused.append(raw_key)
            continue
        if key.startswith("sv_encoder."):
            sv[key[len("sv_encoder.") :]] = tensor
            continue
        for pattern, template in _COMPILED:
            m = pattern.match(key)
            if m:
                out[m.expand(template)] = tensor
                break
        else:
            report.unexpected.append(raw_key)
    conv = convert_vit_state_dict(sv)
    out.update({"sv_encoder." + k: v for k, v in conv.state.items()})
    report.unused.extend("sv_encoder." + k for k in conv.unused)
    report.unexpected.extend("sv_encoder." + k for k in conv.unexpected)
    return out, report


def to_reference_state_dict(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Our names -> reference names (for exchanging weights with the reference code)."""
    inverse = [
        (
            re.compile(
                "^" + re.escape(t).replace(r"\\1", r"(\d+|weight|bias)").replace(r"\\2", r"(weight|bias)") + "$"
            ),
            p,
        )
        for p, t in _RULES
    ]
    out: dict[str, torch.Tensor] = {}
    for key, tensor in ours.items():
        m = re.match(r"sv_encoder\.vit\.blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", key)
        if m:
            for name, part in zip(("query", "key", "value"), tensor.chunk(3, dim=0)):
                out[f"sv_encoder.encoder.layer.{m.group(1)}.attention.attention.{name}.{m.group(2)}"] = part.clone()
            continue
        for pattern, ref_pattern in inverse:
            m = pattern.match(key)
            if m:
                out[_fill(ref_pattern, m.groups())] = tensor
                break
        else:
            raise KeyError(f"no reference name for {key!r}")
    return out


def _fill(ref_regex: str, groups: tuple[str, ...]) -> str:
    """Instantiate a reference-name regex with captured groups (inverse of the rules)."""
    text = ref_regex.rstrip("$").replace(r"\.", ".")
    for g in groups:
        text = re.sub(r"\([^)]*\)", g, text, count=1)
    return text


def load_reference_checkpoint(
    path: str | Path,
    cfg: ModelConfig | None = None,
    *,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
) -> GAIR:
    """Load the official GAIR release (``checkpoint.pth``) into our model, in eval mode.

    The street-view encoder may carry transformers 4.x names
    (``encoder.layer.N.attention.attention.query``) or 5.x ones
    (``layers.N.attention.q_proj``). A parameter of ours the checkpoint leaves unfilled,
    a key in no known layout or a shape that does not fit raises ``RuntimeError`` naming
    them; ``strict=False`` only warns and leaves such parameters at their random values.
    Reference-only parts (the transformer query head, the CROMA classification head,
    training queues) are listed as ``unused``; the report is ``model.load_report``.
    """
    obj = torch.load(str(path), map_location=map_location, weights_only=True)
    state = obj["model"] if isinstance(obj, dict) and "model" in obj else obj
    if not isinstance(state, Mapping):
        raise TypeError(f"{path}: expected a state dict or {{'model': state_dict}}, got {type(state).__name__}")
    ours, report = convert_reference_state_dict(state)
    if cfg is None:
        # The release is base size at the paper's resolutions; a final RS norm only if present.
        cfg = ModelConfig(size="base", rs_final_norm="rs_encoder.norm.weight" in ours)
    model = GAIR(cfg)
    expected = model.state_dict()
    for key, tensor in list(ours.items()):
        if key in expected and expected[key].shape != tensor.shape:
            report.shape_mismatch[key] = (tuple(expected[key].shape), tuple(tensor.shape))
            del ours[key]
    result = model.load_state_dict(ours, strict=False)
    report.missing = list(result.missing_keys)
    report.unexpected.extend(result.unexpected_keys)
    report.loaded = sorted(k for k in ours if k not in result.unexpected_keys)
    if not report.ok:
        if strict:
            raise RuntimeError(f"reference checkpoint {path}: {report.summary()}")
        warnings.warn(f"reference checkpoint {path}: {report.summary()}", stacklevel=2)
    model.load_report = report  # type: ignore[attr-defined]
    return model.eval()
