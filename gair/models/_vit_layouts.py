"""ViT-B/16 weights in the layouts they come in, mapped onto :class:`~gair.models.sv_encoder.SVEncoder`.

Accepted layouts (a leading ``module.`` or ``vit.`` is ignored):
- Hugging Face ``ViTModel``, transformers 4.x names: ``embeddings.*``,
  ``encoder.layer.N.attention.attention.{query,key,value}``, ``...attention.output.dense``,
  ``...intermediate.dense``, ``...output.dense``, ``...layernorm_{before,after}``,
  ``layernorm``, ``pooler.dense``;
- the same model under transformers 5.x names: ``layers.N.attention.{q,k,v,o}_proj``,
  ``layers.N.mlp.fc{1,2}`` (5.x renames on load; a file saved by 5.x has these names);
- timm ``VisionTransformer``: ``cls_token``, ``pos_embed``, ``patch_embed.proj``,
  ``blocks.N.*``, ``norm``, with the tanh pooler as ``pre_logits.fc`` (timm's in21k
  ViT-B/16 representation layer) or ``pooler`` (our own SVEncoder layout).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

_B = r"(?:encoder\.layer|layers)\.(\d+)\."
_RULES: list[tuple[str, str]] = [
    # Hugging Face, both major versions.
    (r"embeddings\.cls_token$", "vit.cls_token"),
    (r"embeddings\.position_embeddings$", "vit.pos_embed"),
    (r"embeddings\.patch_embeddings\.projection\.(weight|bias)$", r"vit.patch_embed.proj.\1"),
    (_B + r"attention\.output\.dense\.(weight|bias)$", r"vit.blocks.\1.attn.proj.\2"),  # 4.x
    (_B + r"attention\.o_proj\.(weight|bias)$", r"vit.blocks.\1.attn.proj.\2"),  # 5.x
    (_B + r"layernorm_before\.(weight|bias)$", r"vit.blocks.\1.norm1.\2"),
    (_B + r"layernorm_after\.(weight|bias)$", r"vit.blocks.\1.norm2.\2"),
    (_B + r"intermediate\.dense\.(weight|bias)$", r"vit.blocks.\1.mlp.fc1.\2"),  # 4.x
    (_B + r"output\.dense\.(weight|bias)$", r"vit.blocks.\1.mlp.fc2.\2"),  # 4.x
    (_B + r"mlp\.fc1\.(weight|bias)$", r"vit.blocks.\1.mlp.fc1.\2"),  # 5.x
    (_B + r"mlp\.fc2\.(weight|bias)$", r"vit.blocks.\1.mlp.fc2.\2"),  # 5.x
    (r"layernorm\.(weight|bias)$", r"vit.norm.\1"),
    (r"pooler\.dense\.(weight|bias)$", r"pooler.\1"),
    # timm.
    (r"(cls_token|pos_embed)$", r"vit.\1"),
    (r"patch_embed\.proj\.(weight|bias)$", r"vit.patch_embed.proj.\1"),
    (r"blocks\.(\d+)\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias)$", r"vit.blocks.\1.\2.\3"),
    (r"norm\.(weight|bias)$", r"vit.norm.\1"),
    (r"(?:pre_logits\.fc|pooler)\.(weight|bias)$", r"pooler.\1"),
]
_COMPILED = [(re.compile(p), t) for p, t in _RULES]
# Hugging Face keeps q, k and v apart (4.x: attention.attention.query, 5.x: attention.q_proj).
_QKV = re.compile(_B + r"attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)$")
_QKV_NAMES = {"q": "query", "k": "key", "v": "value"}
# Parts of the released models that an SV encoder does not use.
_UNUSED = re.compile(r"^(classifier\.|head\.|fc_norm\.|embeddings\.mask_token$|mask_token$)")


@dataclass
class VitConversion:
    state: dict[str, torch.Tensor] = field(default_factory=dict)  # SVEncoder names
    unused: list[str] = field(default_factory=list)  # known heads we do not need
    unexpected: list[str] = field(default_factory=list)  # keys in no known layout


def strip_prefix(key: str) -> str:
    for prefix in ("module.", "vit."):
        if key.startswith(prefix):
            key = key[len(prefix) :]
    return key


def convert_vit_state_dict(state: Mapping[str, torch.Tensor]) -> VitConversion:
    """Hugging Face (4.x or 5.x names) or timm ViT weights -> SVEncoder state dict names."""
    out = VitConversion()
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for raw_key, tensor in state.items():
        key = strip_prefix(raw_key)
        if _UNUSED.match(key):
            out.unused.append(raw_key)
            continue
        m = _QKV.match(key)
        if m:
            part = m.group(2) or _QKV_NAMES[m.group(3)]
            qkv.setdefault((m.group(1), m.group(4)), {})[part] = tensor
            continue
        for pattern, template in _COMPILED:
            m = pattern.match(key)
            if m:
                out.state[m.expand(template)] = tensor
                break
        else:
            out.unexpected.append(raw_key)
    for (layer, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            out.unexpected.extend(f"layers.{layer}.attention.{p}.{kind}" for p in sorted(parts))
            continue
        out.state[f"vit.blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


def hf_vit_state_dict(ours: Mapping[str, torch.Tensor], *, major: int = 4) -> dict[str, torch.Tensor]:
    """SVEncoder names -> Hugging Face ``ViTModel`` names of transformers ``major`` (4 or 5)."""
    layer = "encoder.layer" if major == 4 else "layers"
    out: dict[str, torch.Tensor] = {}
    for key, t in ours.items():
        m = re.match(r"vit\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            i, part, kind = m.groups()
            p = f"{layer}.{i}."
            if part == "attn.qkv":
                for name, chunk in zip(("query", "key", "value"), t.chunk(3)):
                    sub = f"attention.attention.{name}" if major == 4 else f"attention.{name[0]}_proj"
                    out[f"{p}{sub}.{kind}"] = chunk.clone()
                continue
            sub = {
                "attn.proj": "attention.output.dense" if major == 4 else "attention.o_proj",
                "norm1": "layernorm_before",
                "norm2": "layernorm_after",
                "mlp.fc1": "intermediate.dense" if major == 4 else "mlp.fc1",
                "mlp.fc2": "output.dense" if major == 4 else "mlp.fc2",
            }[part]
            out[f"{p}{sub}.{kind}"] = t
            continue
        fixed = {
            "vit.cls_token": "embeddings.cls_token",
            "vit.pos_embed": "embeddings.position_embeddings",
            "vit.patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
            "vit.patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
            "vit.norm.weight": "layernorm.weight",
            "vit.norm.bias": "layernorm.bias",
            "pooler.weight": "pooler.dense.weight",
            "pooler.bias": "pooler.dense.bias",
        }
        if key not in fixed:
            raise KeyError(f"no Hugging Face ViTModel name for {key!r}")
        out[fixed[key]] = t
    return out
