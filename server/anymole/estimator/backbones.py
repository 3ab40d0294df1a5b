"""Feature backbones of the joint estimator, behind one protocol.

* `ViTBackbone`: a frozen DINOv2-with-registers ViT (transformers' `Dinov2WithRegistersModel`): the paper's
  2D backbone ``dinov2_vitb14_reg`` (ViT-B/14, 4 registers) and 3D-aware ``fit3d_vits14_reg`` (FiT3D's
  finetuned ViT-S/14 with registers). Weights come from a local copy of the published file (`WEIGHT_URLS`,
  mapped by `anymole.estimator.keymap`) or of the transformers model on the Hub (`pretrained_vit`;
  ``anymole models pull estimator`` fetches both into the models folder); ``random_init`` builds the same
  architecture with random weights (benchmarks of speed, never of accuracy). Its features are encoded once per image and cached.
* `ConvBackbone`: a small CNN trained per scene from scratch with the heads; needs no weights, so it is the
  default where none exist (CPU, tests, no internet).

Every backbone maps images ``(B, 3, H, W)`` in [0, 1] to features ``(B, C, H / s, W / s)`` with ``s`` the
config's ``feature_stride`` (image pixels per feature cell).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from anymole.errors import InvalidInput, ModelUnavailable
from anymole.estimator.config import EstimatorConfig
from anymole.estimator.keymap import to_transformers

__all__ = [
    "VIT_SPECS",
    "WEIGHT_URLS",
    "Backbone",
    "ConvBackbone",
    "ViTBackbone",
    "build_backbone",
    "load_state",
    "pretrained_vit",
    "vit_model",
]

#: Published checkpoints (torch.hub's DINOv2 file; FiT3D's Hugging Face file, timm layout).
WEIGHT_URLS = {
    "dinov2_vitb14_reg": "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitb14/dinov2_vitb14_reg4_pretrain.pth",
    "fit3d_vits14_reg": "https://huggingface.co/yuanwenyue/FiT3D/resolve/main/dinov2_reg_small_finetuned.pth",
}

#: Architecture of each ViT: (hidden size, layers, heads); patch 14, 4 registers, trained at 518 px.
VIT_SPECS = {"dinov2_vitb14_reg": (768, 12, 12), "fit3d_vits14_reg": (384, 12, 6), "tiny": (32, 2, 2)}

_MEAN = (0.485, 0.456, 0.406)  # ImageNet statistics, as DINOv2 was trained
_STD = (0.229, 0.224, 0.225)


@runtime_checkable
class Backbone(Protocol):
    """What the estimator needs of a feature extractor.

    Attributes:
        channels: ``C`` of its feature map.
        trainable: trained with the heads (run every step) or frozen (encoded once and cached).
    """

    channels: int
    trainable: bool

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` in [0, 1] → ``(B, C, H / stride, W / stride)``."""
        ...


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class ConvBackbone(nn.Module):
    """Three stride-2 stages of two 3×3 conv-BN-SiLU blocks: stride 8, ``channels[-1]`` outputs."""

    trainable = True

    def __init__(self, channels: tuple[int, int, int] = (24, 48, 64)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for c in channels:
            layers += [_block(cin, c, 2), _block(c, c, 1)]
            cin = c
        self.net = nn.Sequential(*layers)
        self.channels = channels[-1]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images - 0.5)


class ViTBackbone(nn.Module):
    """A frozen DINOv2-with-registers ViT returning its last layer's normalised patch tokens as a grid.

    The image is resized so that each feature cell covers ``stride`` input pixels: ``(H, W)`` →
    ``(14·H/stride, 14·W/stride)`` (the reference's 320×512 → 560×896 at stride 8), normalised with the
    ImageNet statistics, and the patch tokens (after the class token and registers) come back as
    ``(B, hidden, H/stride, W/stride)``.

    Args:
        model: the transformers model (its weights are frozen here).
        stride: input pixels per feature cell.
    """

    trainable = False
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: nn.Module, stride: int) -> None:
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        cfg: Any = getattr(model, "config")  # noqa: B009 - a transformers PreTrainedModel's config
        self.channels = int(cfg.hidden_size)
        self.patch = int(cfg.patch_size)
        self.registers = int(cfg.num_register_tokens)
        self.stride = stride
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> ViTBackbone:
        return super().train(False)  # frozen: dropout and friends stay off

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        b, _, h, w = images.shape
        gh, gw = h // self.stride, w // self.stride
        x = nn.functional.interpolate(
            images, size=(gh * self.patch, gw * self.patch), mode="bilinear", align_corners=False, antialias=True
        )
        x = (x - self.mean) / self.std
        tokens = self.model(pixel_values=x).last_hidden_state  # (B, 1 + R + gh·gw, D)
        patches = tokens[:, 1 + self.registers :]
        return patches.transpose(1, 2).reshape(b, self.channels, gh, gw)


def vit_model(spec: str) -> nn.Module:
    """A randomly initialised `Dinov2WithRegistersModel` of architecture ``spec`` (`VIT_SPECS`)."""
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    hidden, layers, heads = VIT_SPECS[spec]
    cfg = Dinov2WithRegistersConfig(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518 if spec != "tiny" else 56,
        num_register_tokens=4,
        layerscale_value=1.0,
        layer_norm_eps=1e-6,
    )
    return Dinov2WithRegistersModel(cfg)


def pretrained_vit(name: str, path: str | Path) -> nn.Module:
    """The ViT ``name`` (`VIT_SPECS`) with the published weights at ``path``: a transformers model folder
    (``config.json`` + safetensors, e.g. the Hub's ``facebook/dinov2-with-registers-base``, loaded with
    ``from_pretrained``) or a torch.hub/timm checkpoint file (`anymole.estimator.keymap`). The file's width must
    be ``name``'s (or the tiny test architecture's); `InvalidInput` names the file otherwise."""
    p = Path(path)
    if p.is_dir():
        from transformers import Dinov2WithRegistersModel

        if not (p / "config.json").is_file():
            raise ModelUnavailable(name, f"{p} is a folder without config.json: give a transformers model folder "
                                         "or a checkpoint file")  # fmt: skip
        model: nn.Module = Dinov2WithRegistersModel.from_pretrained(str(p))
        width = int(getattr(model, "config").hidden_size)  # noqa: B009 - a transformers PreTrainedModel's config
    else:
        sd = load_state(p)
        width = int(sd["pos_embed"].shape[-1]) if "pos_embed" in sd else -1
        arch = next((a for a in (name, "tiny") if VIT_SPECS[a][0] == width), None)
        if arch is None:
            raise InvalidInput("weights", f"{p} holds a {width}-wide ViT, not {name} ({VIT_SPECS[name][0]} wide)")
        model = vit_model(arch)
        try:
            model.load_state_dict(to_transformers(sd, target_keys=model.state_dict().keys()), strict=True)
        except RuntimeError as exc:  # missing or mis-shaped tensors: the file is of another architecture
            raise InvalidInput("weights", f"{p} does not fit {name}: {str(exc).splitlines()[0]}") from exc
    if width not in (VIT_SPECS[name][0], VIT_SPECS["tiny"][0]):
        raise InvalidInput("weights", f"{p} holds a {width}-wide ViT, not {name} ({VIT_SPECS[name][0]} wide)")
    return model


def load_state(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.pth``/``.pt`` (plain or under ``"model"``/``"state_dict"``) or ``.safetensors`` file."""
    p = Path(path)
    if not p.is_file():
        raise ModelUnavailable(str(p), f"no file at {p}; download it (see anymole.estimator.WEIGHT_URLS)")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(p))
    obj = torch.load(p, map_location="cpu", weights_only=True)
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return dict(obj)


def build_backbone(
    name: str,
    config: EstimatorConfig,
    *,
    weights: str | Path | None = None,
    random_init: bool = False,
    tiny: bool = False,
) -> nn.Module:
    """The backbone called ``name`` (`anymole.estimator.config.BACKBONES`).

    Args:
        name: ``"conv"``, ``"dinov2_vitb14_reg"`` or ``"fit3d_vits14_reg"``.
        config: its widths and stride, and the ViTs' weights (`EstimatorConfig.weights`) when ``weights`` is
            not given.
        weights: a local copy of the ViT's published weights (`pretrained_vit`); a ViT needs it (or
            ``config.weights``) unless ``random_init``.
        random_init: a ViT with random weights (speed measurements only).
        tiny: with ``random_init``, a 2-layer, 32-wide ViT of the same code path (tests).
    """
    if name == "conv":
        return ConvBackbone(config.conv_channels)
    if weights is None and config.weights and name in config.frozen:
        weights = config.weights[config.frozen.index(name)]
    if weights is not None:
        return ViTBackbone(pretrained_vit(name, weights), config.feature_stride)
    if not random_init:
        raise ModelUnavailable(
            name, f"pass a local copy of {WEIGHT_URLS.get(name, name)} (torch.hub or timm layout), "
            "or use the 'draft' preset, whose conv backbone needs no weights",
        )  # fmt: skip
    return ViTBackbone(vit_model("tiny" if tiny else name), config.feature_stride)
