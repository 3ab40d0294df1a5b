"""Models folders holding tiny ViTs in the published layouts, as `anymole models pull estimator` leaves the
real ones: ``dinov2-with-registers-base/`` a transformers model folder with the Hub repo's key names (saved by
transformers 4: ``attention.attention.query`` …), ``fit3d-vits14-reg/dinov2_reg_small_finetuned.pth`` in
timm's layout (FiT3D's file)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file
from torch import nn

from anymole.estimator import from_transformers
from anymole.estimator.backbones import vit_model

#: transformers 5 names → the names the Hub's transformers-4 files use
_V4 = {
    "attention.q_proj": "attention.attention.query",
    "attention.k_proj": "attention.attention.key",
    "attention.v_proj": "attention.attention.value",
    "attention.o_proj": "attention.output.dense",
}


def random_vit(seed: int) -> nn.Module:
    """The tiny ViT with every tensor drawn from ``seed`` (its init leaves some at 0 or 1)."""
    torch.manual_seed(seed)
    model = vit_model("tiny").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.05)
    return model


def _v4_name(key: str) -> str:
    for new, old in _V4.items():
        key = key.replace(new, old)
    return key


def write_models_folder(root: Path, dinov2: nn.Module, fit3d: nn.Module) -> Path:
    """``root`` with both backbones' folders (see the module docstring); returns ``root``."""
    hf = root / "dinov2-with-registers-base"
    hf.mkdir(parents=True)
    getattr(dinov2, "config").save_pretrained(hf)  # noqa: B009 - a transformers PreTrainedModel's config
    save_file({_v4_name(k): v.contiguous() for k, v in dinov2.state_dict().items()}, str(hf / "model.safetensors"),
              metadata={"format": "pt"})  # fmt: skip
    hub = from_transformers(fit3d.state_dict())
    timm = {k: v for k, v in hub.items() if k not in ("mask_token", "register_tokens", "cls_token", "pos_embed")}
    timm |= {"reg_token": hub["register_tokens"], "cls_token": hub["cls_token"] + hub["pos_embed"][:, :1],
             "pos_embed": hub["pos_embed"][:, 1:]}  # fmt: skip
    (root / "fit3d-vits14-reg").mkdir()
    torch.save(timm, root / "fit3d-vits14-reg" / "dinov2_reg_small_finetuned.pth")
    return root
