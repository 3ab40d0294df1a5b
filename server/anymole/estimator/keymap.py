"""State-dict key maps from the published DINOv2-with-registers checkpoints to transformers' model.

Two source schemas exist:

* ``"hub"``: facebookresearch/dinov2's torch.hub files (``dinov2_vitb14_reg4_pretrain.pth``):
  ``cls_token (1, 1, D)``, ``pos_embed (1, 1 + N, D)`` (entry 0 is the class token's),
  ``register_tokens (1, R, D)``, ``mask_token (1, D)``, ``patch_embed.proj.*``, ``blocks.{i}.{norm1, norm2}.*``,
  ``blocks.{i}.attn.qkv.* (3D, D)`` (q, k, v stacked), ``blocks.{i}.attn.proj.*``, ``blocks.{i}.ls{1,2}.gamma``,
  ``blocks.{i}.mlp.{fc1, fc2}.*``, ``norm.*``.
* ``"timm"``: timm's ``vit_*_patch14_reg4_dinov2`` layout, which FiT3D's finetuned files use
  (``dinov2_reg_small_finetuned.pth``): the same block names, but ``reg_token`` for the registers, no
  ``mask_token``, and ``pos_embed (1, N, D)`` without the class entry, which timm folds into
  ``cls_token`` (timm's ``_convert_dinov2``: ``cls_token + pos_embed[:, 0]``).

transformers' `Dinov2WithRegistersModel` adds ``position_embeddings[:, 0]`` to its class token, so the
timm layout maps exactly with a zero class entry. Its attention projections are named
``attention.{q,k,v,o}_proj`` (transformers 5) or ``attention.attention.{query,key,value}`` and
``attention.output.dense`` (transformers 4); `to_transformers` writes whichever the target model uses.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import torch

from anymole.errors import InvalidInput

__all__ = ["detect_schema", "from_transformers", "to_transformers"]

_BLOCK = re.compile(r"blocks\.(\d+)\.(.+)")
# Per-block tensors whose names differ only by prefix (source suffix → transformers suffix).
_SAME = {
    "norm1": "norm1",
    "norm2": "norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_LAYER_SCALE = {"ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1"}
_V5 = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj")
_V4 = ("attention.attention.query", "attention.attention.key", "attention.attention.value", "attention.output.dense")


def detect_schema(state_dict: Mapping[str, torch.Tensor]) -> str:
    """``"hub"`` or ``"timm"`` (see the module docstring); `InvalidInput` for anything else."""
    if "register_tokens" in state_dict and "pos_embed" in state_dict:
        return "hub"
    if "reg_token" in state_dict and "pos_embed" in state_dict:
        return "timm"
    keys = sorted(state_dict)[:6]
    raise InvalidInput("checkpoint", f"is not a DINOv2-with-registers state dict (hub or timm layout); keys {keys}…")


def _attn_names(target_keys: Collection[str] | None) -> tuple[str, str, str, str]:
    if target_keys is not None and any(".attention.attention.query." in k for k in target_keys):
        return _V4
    return _V5


def to_transformers(
    state_dict: Mapping[str, torch.Tensor], target_keys: Collection[str] | None = None
) -> dict[str, torch.Tensor]:
    """Rename (and split, pad) a hub or timm checkpoint into `Dinov2WithRegistersModel` keys.

    Args:
        state_dict: the published file's tensors (``"hub"`` or ``"timm"`` schema, `detect_schema`).
        target_keys: the target model's ``state_dict()`` keys, to pick its attention naming (transformers 5's
            by default).

    Returns:
        A state dict for ``Dinov2WithRegistersModel.load_state_dict(..., strict=True)``.
    """
    schema = detect_schema(state_dict)
    q, k, v, o = _attn_names(target_keys)
    sd = dict(state_dict)
    out: dict[str, torch.Tensor] = {}
    pos = sd.pop("pos_embed")
    cls = sd.pop("cls_token")
    if schema == "timm":
        # timm folded the class token's position into cls_token; a zero class entry keeps the sum.
        pos = torch.cat((torch.zeros_like(pos[:, :1]), pos), dim=1)
        registers = sd.pop("reg_token")
        mask = torch.zeros_like(cls[0])  # (1, D): pre-training only, never used by inference
    else:
        registers = sd.pop("register_tokens")
        mask = sd.pop("mask_token")
    e = "embeddings."
    out.update({f"{e}cls_token": cls, f"{e}position_embeddings": pos, f"{e}register_tokens": registers,
                f"{e}mask_token": mask})  # fmt: skip
    for s in ("weight", "bias"):
        out[f"{e}patch_embeddings.projection.{s}"] = sd.pop(f"patch_embed.proj.{s}")
        out[f"layernorm.{s}"] = sd.pop(f"norm.{s}")
    for key in sorted(sd):
        m = _BLOCK.fullmatch(key)
        if m is None:
            if key.startswith("head."):  # a classifier some timm exports keep: not part of the backbone
                continue
            raise InvalidInput("checkpoint", f"unexpected tensor {key!r} in a {schema} DINOv2 checkpoint")
        i, rest = m.groups()
        dst = f"encoder.layer.{i}."
        name, _, kind = rest.rpartition(".")
        if rest.startswith("attn.qkv."):
            for part, chunk in zip((q, k, v), sd[key].chunk(3, dim=0), strict=True):
                out[f"{dst}{part}.{kind}"] = chunk.clone()
        elif name == "attn.proj":
            out[f"{dst}{o}.{kind}"] = sd[key]
        elif name in _SAME:
            out[f"{dst}{_SAME[name]}.{kind}"] = sd[key]
        elif rest in _LAYER_SCALE:
            out[f"{dst}{_LAYER_SCALE[rest]}"] = sd[key]
        else:
            raise InvalidInput("checkpoint", f"unexpected tensor {key!r} in a {schema} DINOv2 checkpoint")
    return out


def from_transformers(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of `to_transformers` into the ``"hub"`` schema (q, k, v stacked back into ``qkv``)."""
    sd = dict(state_dict)
    v4 = any(".attention.attention.query." in key for key in sd)
    q, k, v, o = _V4 if v4 else _V5
    e = "embeddings."
    out = {
        "cls_token": sd.pop(f"{e}cls_token"),
        "pos_embed": sd.pop(f"{e}position_embeddings"),
        "register_tokens": sd.pop(f"{e}register_tokens"),
        "mask_token": sd.pop(f"{e}mask_token"),
    }
    for s in ("weight", "bias"):
        out[f"patch_embed.proj.{s}"] = sd.pop(f"{e}patch_embeddings.projection.{s}")
        out[f"norm.{s}"] = sd.pop(f"layernorm.{s}")
    layers = sorted({int(key.split(".")[2]) for key in sd if key.startswith("encoder.layer.")})
    for i in layers:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for s in ("weight", "bias"):
            out[f"{dst}attn.qkv.{s}"] = torch.cat([sd.pop(f"{src}{p}.{s}") for p in (q, k, v)], dim=0)
            out[f"{dst}attn.proj.{s}"] = sd.pop(f"{src}{o}.{s}")
            for a, b in _SAME.items():
                out[f"{dst}{a}.{s}"] = sd.pop(f"{src}{b}.{s}")
        for a, b in _LAYER_SCALE.items():
            out[f"{dst}{a}"] = sd.pop(f"{src}{b}")
    if sd:
        raise InvalidInput("state_dict", f"unexpected transformers tensors {sorted(sd)[:4]}")
    return out
