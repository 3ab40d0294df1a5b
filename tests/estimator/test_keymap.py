"""The DINOv2-with-registers key maps: torch.hub and timm (FiT3D) layouts into transformers' model and back."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.estimator import (
    EstimatorConfig,
    ViTBackbone,
    build_backbone,
    detect_schema,
    from_transformers,
    to_transformers,
)
from anymole.estimator.backbones import vit_model

D, DEPTH, R, GRID = 32, 2, 4, 4  # the tiny ViT: width 32, 2 blocks, 4 registers, 56 px = a 4×4 patch grid


def hub_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A state dict in the torch.hub DINOv2-reg layout (the official names and shapes), random values."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.05

    sd = {
        "cls_token": r(1, 1, D),
        "pos_embed": r(1, 1 + GRID * GRID, D),
        "register_tokens": r(1, R, D),
        "mask_token": r(1, D),
        "patch_embed.proj.weight": r(D, 3, 14, 14),
        "patch_embed.proj.bias": r(D),
        "norm.weight": 1 + r(D),
        "norm.bias": r(D),
    }
    for i in range(DEPTH):
        b = f"blocks.{i}."
        sd |= {
            f"{b}norm1.weight": 1 + r(D), f"{b}norm1.bias": r(D),
            f"{b}attn.qkv.weight": r(3 * D, D), f"{b}attn.qkv.bias": r(3 * D),
            f"{b}attn.proj.weight": r(D, D), f"{b}attn.proj.bias": r(D),
            f"{b}ls1.gamma": r(D), f"{b}norm2.weight": 1 + r(D), f"{b}norm2.bias": r(D),
            f"{b}mlp.fc1.weight": r(4 * D, D), f"{b}mlp.fc1.bias": r(4 * D),
            f"{b}mlp.fc2.weight": r(D, 4 * D), f"{b}mlp.fc2.bias": r(D),
            f"{b}ls2.gamma": r(D),
        }  # fmt: skip
    return sd


def timm_state(hub: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same weights in timm's layout, as timm's own converter writes them (FiT3D's files use it)."""
    sd = {k: v for k, v in hub.items() if k not in ("mask_token", "register_tokens", "cls_token", "pos_embed")}
    sd["reg_token"] = hub["register_tokens"]
    sd["cls_token"] = hub["cls_token"] + hub["pos_embed"][:, 0]
    sd["pos_embed"] = hub["pos_embed"][:, 1:]
    return sd


def test_hub_round_trip_is_exact_and_loads_strictly() -> None:
    hub = hub_state()
    assert detect_schema(hub) == "hub"
    model = vit_model("tiny")
    hf = to_transformers(hub, target_keys=model.state_dict().keys())
    assert set(hf) == set(model.state_dict())  # nothing missing, nothing extra
    model.load_state_dict(hf, strict=True)
    # q, k, v are the thirds of qkv in that order
    k_proj = next(k for k in ("attention.k_proj", "attention.attention.key") if f"encoder.layer.1.{k}.weight" in hf)
    torch.testing.assert_close(hf[f"encoder.layer.1.{k_proj}.weight"], hub["blocks.1.attn.qkv.weight"][D : 2 * D])
    back = from_transformers(model.state_dict())
    assert set(back) == set(hub)
    for k, v in hub.items():
        assert torch.equal(back[k], v), k


def test_timm_layout_gives_the_same_features_as_the_hub_layout() -> None:
    hub = hub_state(1)
    a, b = vit_model("tiny").eval(), vit_model("tiny").eval()
    a.load_state_dict(to_transformers(hub, target_keys=a.state_dict().keys()), strict=True)
    t = timm_state(hub)
    assert detect_schema(t) == "timm"
    b.load_state_dict(to_transformers(t, target_keys=b.state_dict().keys()), strict=True)
    x = torch.rand(2, 3, 56, 84)  # not square: the position embeddings are interpolated
    with torch.no_grad():
        fa, fb = a(pixel_values=x).last_hidden_state, b(pixel_values=x).last_hidden_state
    torch.testing.assert_close(fa, fb, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(fa, vit_model("tiny").eval()(pixel_values=x).last_hidden_state)  # weights matter


def test_transformers_4_attention_names_are_written_when_the_target_uses_them() -> None:
    hub = hub_state()
    v5 = to_transformers(hub)
    v4_keys = [k.replace("attention.q_proj", "attention.attention.query") for k in v5]
    v4 = to_transformers(hub, target_keys=v4_keys)
    assert "encoder.layer.0.attention.attention.query.weight" in v4
    assert "encoder.layer.0.attention.output.dense.bias" in v4
    assert {k for k in v4 if "q_proj" in k or "o_proj" in k} == set()
    back = from_transformers(v4)
    assert all(torch.equal(back[k], hub[k]) for k in hub)


def test_unknown_tensors_and_layouts_are_refused_by_name() -> None:
    with pytest.raises(InvalidInput, match=r"^checkpoint:.*DINOv2"):
        detect_schema({"conv1.weight": torch.zeros(1)})
    bad = hub_state() | {"blocks.0.attn.rope": torch.zeros(1)}
    with pytest.raises(InvalidInput, match=r"blocks.0.attn.rope"):
        to_transformers(bad)


@pytest.mark.parametrize("layout", ["hub", "timm"])
def test_backbone_loads_a_local_checkpoint(tmp_path: Path, layout: str) -> None:
    hub = hub_state(2)
    path = tmp_path / "vit.pth"
    torch.save(hub if layout == "hub" else {"model": timm_state(hub)}, path)
    cfg = EstimatorConfig.draft()
    bb = build_backbone("dinov2_vitb14_reg", cfg, weights=path, tiny=True)
    assert isinstance(bb, ViTBackbone) and not bb.trainable and bb.channels == D
    assert all(not p.requires_grad for p in bb.parameters())
    images = torch.rand(2, 3, 32, 48)
    feats = bb(images)
    assert feats.shape == (2, D, 4, 6)  # one cell per 8 px of the input
    ref = vit_model("tiny").eval()
    ref.load_state_dict(to_transformers(hub, target_keys=ref.state_dict().keys()))
    x = torch.nn.functional.interpolate(images, size=(56, 84), mode="bilinear", align_corners=False, antialias=True)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        tokens = ref(pixel_values=(x - mean) / std).last_hidden_state[:, 1 + R :]
    torch.testing.assert_close(feats, tokens.transpose(1, 2).reshape(2, D, 4, 6))


def test_missing_weights_say_where_to_get_them(tmp_path: Path) -> None:
    cfg = EstimatorConfig.fast()
    with pytest.raises(ModelUnavailable, match=r"dinov2_vitb14_reg4_pretrain.pth"):
        build_backbone("dinov2_vitb14_reg", cfg)
    with pytest.raises(ModelUnavailable, match=r"no file at"):
        build_backbone("fit3d_vits14_reg", cfg, weights=tmp_path / "missing.pth")
